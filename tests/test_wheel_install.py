"""Installed, not only editable (issue 10): the wheel ships the files the commands need (parameter and
measurement tables, templates, the shipped scenarios and trials the evidence checks run), so an
installed chemohost works from any folder.  The wheel is installed in a fresh venv; its third-party
dependencies are taken from this environment through PYTHONPATH (no .pth processing, so this
checkout's editable install cannot shadow the wheel), and the test proves the package comes from the
wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    d = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(d / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"cannot build the wheel here: {r.stderr[-500:]}")
    wheel = next((d / "dist").glob("chemohost-*.whl"))
    venv.EnvBuilder(with_pip=False).create(d / "venv")
    py = d / "venv" / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    deps = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": deps, "CHEMOHOST_CACHE_DIR": os.environ.get(
        "CHEMOHOST_CACHE_DIR", str(d / "cache"))}
    return py, env, d, Path(site)


def _run(py, env, cwd, *args, timeout=900):
    return subprocess.run([str(py), "-m", "chemohost.cli", *args], capture_output=True, text=True, env=env,
                          cwd=str(cwd), timeout=timeout)


def test_the_package_comes_from_the_wheel_with_its_data(installed):
    py, env, d, site = installed
    r = subprocess.run([str(py), "-c", "import chemohost, pathlib; print(pathlib.Path(chemohost.__file__).parent)"],
                       capture_output=True, text=True, env=env, cwd=str(d))
    pkg = Path(r.stdout.strip())
    assert pkg.parent == site, (pkg, site)
    for rel in ("scenarios/trial_pancreatic_il1_blockade.yaml", "model/data/parameters.csv",
                "data/measurements/pdac_gem_blood_counts.csv", "protocol/data/dose_limits.csv",
                "report/templates/fit_report.html.j2", "engine/templates/rosenbrock.py"):
        assert (pkg / rel).is_file(), rel


def test_installed_commands_run_from_another_folder(installed, tmp_path):
    py, env, d, site = installed
    trial = site / "chemohost" / "scenarios" / "trial_pancreatic_il1_blockade.yaml"
    r = _run(py, env, tmp_path, "check", str(trial))
    assert r.returncode == 0 and r.stdout.startswith("ok: trial"), r.stderr
    r = _run(py, env, tmp_path, "trial", str(trial), "--patients", "2", "--out", "t")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "t" / "patients.parquet").is_file()
    r = _run(py, env, tmp_path, "validate", "--only", "mpact_gemcitabine_arm")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "mpact_gemcitabine_arm" in r.stdout
