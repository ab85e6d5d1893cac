"""End-to-end tests of the ``chemohost`` command and the small Python API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import chemohost
from chemohost.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
GEM = SCENARIOS / "gemcitabine_d1_8_15_q28_human.yaml"
GEM_CIS = SCENARIOS / "gemcitabine_cisplatin_d1_8_q21_human.yaml"

# scenario file -> extra CLI arguments (keep the 200-patient scenario small)
RUNS = {GEM.name: [], GEM_CIS.name: ["--patients", "3"]}
N_PATIENTS = {GEM.name: 1, GEM_CIS.name: 3}


def run_cli(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def sim_outputs(tmp_path_factory):
    """Run each shipped scenario once (module scope: the runs are shared by several tests)."""
    outs = {}
    for name, extra in RUNS.items():
        out = tmp_path_factory.mktemp("run") / name.removesuffix(".yaml")
        rc = main(["simulate", str(SCENARIOS / name), "--out", str(out), *extra])
        assert rc == 0
        outs[name] = out
    return outs


@pytest.mark.parametrize("name", list(RUNS))
def test_simulate_writes_timecourses(sim_outputs, name):
    out = sim_outputs[name]
    spec = yaml.safe_load((SCENARIOS / name).read_text())
    df = pd.read_parquet(out / "timecourses.parquet")
    for col in ["patient", "arm", "time_days", *spec["outputs"]]:
        assert col in df.columns, col
    assert df["patient"].nunique() == N_PATIENTS[name]
    assert list(df["arm"].astype(str).unique()) == [spec["name"]]
    values = df[["time_days", *spec["outputs"]]].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert (df["status"].astype(str) == "ok").all()
    horizon = float(spec["horizon"].split()[0])
    t = df.loc[df["patient"] == df["patient"].iloc[0], "time_days"].to_numpy()
    assert t[0] == 0.0 and t[-1] == pytest.approx(horizon) and (np.diff(t) > 0).all()
    # the drug is actually given (plasma gemcitabine is cleared within hours, so on this output
    # grid look at the long-lived intracellular triphosphate instead)
    assert df["C_gem"].max() > 0.0
    assert df["dfdctp"].max() > 1.0
    # neutrophils dip below baseline after chemotherapy
    assert df["ANC"].min() < df["ANC"].iloc[0]


@pytest.mark.parametrize("name", list(RUNS))
def test_simulate_writes_manifest_and_figure(sim_outputs, name):
    out = sim_outputs[name]
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ["scenario", "seed", "chemohost_version", "packages", "model_code_hash", "parameter_table_sha256"]:
        assert key in manifest, key
    spec = yaml.safe_load((SCENARIOS / name).read_text())
    assert manifest["seed"] == spec["seed"]
    assert manifest["scenario"]["name"] == spec["name"]
    assert manifest["chemohost_version"] == chemohost.__version__
    assert manifest["packages"].get("numpy")
    assert len(manifest["parameter_table_sha256"]) == 64
    assert manifest["model_code_hash"]
    pngs = list(out.glob("*.png"))
    assert pngs
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no temporary folders left beside the output
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_simulate_prints_summary(tmp_path, capsys):
    rc, out, err = run_cli(["simulate", str(GEM_CIS), "--out", str(tmp_path / "o"), "--patients", "2",
                            "--seed", "11"], capsys)
    assert rc == 0, err
    assert "simulated 2 patient(s)" in out and "2/2 ok" in out and "timecourses.parquet" in out


def test_same_seed_same_result(sim_outputs, tmp_path):
    first = sim_outputs[GEM_CIS.name]
    again = tmp_path / "again"
    assert main(["simulate", str(GEM_CIS), "--out", str(again), *RUNS[GEM_CIS.name]]) == 0
    a = pd.read_parquet(first / "timecourses.parquet")
    b = pd.read_parquet(again / "timecourses.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    ma = json.loads((first / "manifest.json").read_text())
    mb = json.loads((again / "manifest.json").read_text())
    assert ma["scenario"] == mb["scenario"] and ma["model_code_hash"] == mb["model_code_hash"]


def test_different_seed_different_patients(sim_outputs, tmp_path):
    other = tmp_path / "other"
    assert main(["simulate", str(GEM_CIS), "--out", str(other), "--patients", "3", "--seed", "8"]) == 0
    a = pd.read_parquet(sim_outputs[GEM_CIS.name] / "timecourses.parquet")
    b = pd.read_parquet(other / "timecourses.parquet")
    assert not np.allclose(a["C_gem"].to_numpy(), b["C_gem"].to_numpy())
    assert json.loads((other / "manifest.json").read_text())["seed"] == 8


def test_export_sbml_is_valid(tmp_path, capsys):
    libsbml = pytest.importorskip("libsbml")
    f = tmp_path / "f.xml"
    rc, out, err = run_cli(["export", "sbml", "--model", "chemo_core", "--out", str(f)], capsys)
    assert rc == 0, err
    assert f.exists() and str(f) in out
    doc = libsbml.readSBMLFromFile(str(f))
    doc.checkConsistency()
    errors = [doc.getError(i) for i in range(doc.getNumErrors())
              if doc.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR]
    assert not errors, "\n".join(e.getMessage() for e in errors[:5])
    model = doc.getModel()
    assert model is not None and model.getNumSpecies() > 0 and model.getNumReactions() > 0
    assert not list(tmp_path.glob("*.tmp"))


def test_export_sbml_with_scenario_doses(tmp_path, capsys):
    libsbml = pytest.importorskip("libsbml")
    f = tmp_path / "gem.xml"
    rc, out, err = run_cli(["export", "sbml", "--scenario", str(GEM), "--out", str(f)], capsys)
    assert rc == 0, err
    doc = libsbml.readSBMLFromFile(str(f))
    assert doc.getNumErrors(libsbml.LIBSBML_SEV_ERROR) == 0
    assert doc.getNumErrors(libsbml.LIBSBML_SEV_FATAL) == 0
    assert doc.getModel().getNumEvents() > 0


def test_export_unknown_model(tmp_path, capsys):
    rc, out, err = run_cli(["export", "sbml", "--model", "nope", "--out", str(tmp_path / "x.xml")], capsys)
    assert rc == 2 and "nope" in err and "chemo_core" in err and "Traceback" not in err
    assert not (tmp_path / "x.xml").exists()


def test_models(capsys):
    rc, out, err = run_cli(["models"], capsys)
    assert rc == 0, err
    for name in ["chemo_core", "gemcitabine_pk", "cisplatin_pk"]:
        assert f"model {name}" in out


def test_params(capsys):
    rc, out, err = run_cli(["params", "--model", "chemo_core"], capsys)
    assert rc == 0, err
    assert "CL_gem" in out and "Jiang" in out
    assert "|" in out  # a markdown table


def test_params_mouse(capsys):
    rc, out, err = run_cli(["params", "--model", "gemcitabine_pk", "--species", "mouse"], capsys)
    assert rc == 0, err
    assert "CL_gem" in out


def test_outputs(capsys):
    rc, out, err = run_cli(["outputs", "--model", "gemcitabine_pk"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert any(line.startswith("C_gem ") and "output" in line for line in lines)
    assert any(line.startswith("dfdctp ") and "species" in line for line in lines)


def test_unknown_model_in_params(capsys):
    rc, out, err = run_cli(["params", "--model", "chemo_cor"], capsys)
    assert rc == 2 and "chemo_core" in err and "Traceback" not in err


def test_python_api_parameter_override():
    sc = chemohost.load_scenario(GEM)
    default = sc.simulate().frame
    faster = sc.with_parameters(CL_gem="2.0 L/min").simulate().frame
    assert isinstance(faster, pd.DataFrame)
    assert list(faster.columns[:3]) == ["patient", "arm", "time_days"]
    assert len(faster) == len(default)
    assert not np.allclose(faster["C_gem"].to_numpy(), default["C_gem"].to_numpy())
    # the override does not modify the original scenario
    assert sc.spec.parameters == {}
    again = sc.simulate().frame
    np.testing.assert_array_equal(again["C_gem"].to_numpy(), default["C_gem"].to_numpy())


def test_python_api_bad_override():
    sc = chemohost.load_scenario(GEM)
    with pytest.raises(chemohost.ChemohostError, match="CL_gemm.*did you mean 'CL_gem'"):
        sc.with_parameters(CL_gemm="2.0 L/min")
    with pytest.raises(chemohost.ChemohostError, match="parameters.CL_gem"):
        sc.with_parameters(CL_gem="2.0 kg")
