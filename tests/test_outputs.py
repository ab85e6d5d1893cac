"""Result folders that survive faults (issue 10): --out checked before compute, staging inside OUT (a
mount point works), a lock against a second run, a completion marker written last and verified by
readers, orphaned staging folders removed, and a failed run leaves nothing it created."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chemohost.cli import main
from chemohost.errors import ScenarioError
from chemohost.outputs import MARKER, OutputFolder, open_output, verify_output, write_atomically

ROOT = Path(__file__).resolve().parents[1]


def _scenario(tmp_path: Path) -> Path:
    d = yaml.safe_load((ROOT / "scenarios" / "gemcitabine_d1_8_15_q28_human.yaml").read_text())
    d.update(horizon="28 day", patients={"n": 1})
    d["regimens"][0]["cycles"] = 1
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


def _run(capsys, argv):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.err + cap.out


def test_complete_run_has_a_verified_marker(tmp_path, capsys):
    out = tmp_path / "o"
    rc, _ = _run(capsys, ["simulate", str(_scenario(tmp_path)), "--out", str(out)])
    assert rc == 0
    doc = verify_output(out, need=("timecourses.parquet", "manifest.json"))
    assert set(doc["files"]) == {"timecourses.parquet", "manifest.json", "timecourses.png"}
    assert sorted(p.name for p in out.iterdir()) == sorted([*doc["files"], MARKER])  # no lock, no staging left
    (out / "manifest.json").write_text("{}")
    with pytest.raises(ScenarioError, match="sha256 mismatch"):
        verify_output(out)


@pytest.mark.parametrize("bad", ["", ".", "FILE/sub", "FILE", "/proc/chemohost_out/x"])
def test_bad_out_is_refused_before_computing(tmp_path, capsys, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("a file")
    scen = _scenario(tmp_path)
    import chemohost.api as api

    monkeypatch.setattr(api.Scenario, "simulate", lambda self: pytest.fail("simulated before checking --out"))
    rc, err = _run(capsys, ["simulate", str(scen), "--out", bad])
    assert rc == 2 and "Traceback" not in err and "--out" in err, err
    assert (tmp_path / "FILE").read_text() == "a file"


def test_a_second_run_on_the_same_out_fails_clearly(tmp_path, capsys):
    out = tmp_path / "o"
    with open_output(out):
        rc, err = _run(capsys, ["simulate", str(_scenario(tmp_path)), "--out", str(out)])
    assert rc == 2 and "is in use by another chemohost run" in err and str(os.getpid()) in err


def test_a_kill_between_file_moves_leaves_no_marker(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    assert _run(capsys, ["simulate", str(_scenario(tmp_path)), "--out", str(out)])[0] == 0
    verify_output(out)
    real = os.replace
    calls = {"n": 0}

    def dying_replace(a, b):
        calls["n"] += 1
        if calls["n"] == 2:  # after the first result file moved in
            raise KeyboardInterrupt("killed")
        return real(a, b)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(out, lambda tmp: [(tmp / n).write_text("new") for n in ("a.txt", "b.txt")])
    monkeypatch.setattr(os, "replace", real)
    with pytest.raises(ScenarioError, match="no completion marker"):
        verify_output(out)  # a reader can tell the mixed folder from a complete one


def test_failed_writer_keeps_the_previous_complete_result(tmp_path, capsys):
    out = tmp_path / "o"
    assert _run(capsys, ["simulate", str(_scenario(tmp_path)), "--out", str(out)])[0] == 0
    before = verify_output(out)

    def broken(tmp):
        (tmp / "timecourses.parquet").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(out, broken)
    assert verify_output(out)["files"] == before["files"]


def test_orphaned_staging_of_a_dead_run_is_removed_and_reported(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    orphan = out / ".staging-999999999-abc"
    orphan.mkdir()
    (orphan / "x").write_text("partial")
    rc, err = _run(capsys, ["simulate", str(_scenario(tmp_path)), "--out", str(out)])
    assert rc == 0 and not orphan.exists() and "interrupted run" in err


def test_failed_run_removes_the_out_it_created(tmp_path, capsys):
    out = tmp_path / "new" / "o"
    folder = OutputFolder(out).open()
    assert out.is_dir()
    folder.close(ok=False)
    assert not out.exists()


def _mount(path: Path, ro: bool = False) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    opts = "size=16m" + (",ro" if ro else "")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_out_may_be_a_mount_point_and_a_read_only_mount_is_refused(tmp_path, capsys):
    mnt, ro = tmp_path / "mnt", tmp_path / "ro"
    if not _mount(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        rc, err = _run(capsys, ["simulate", str(_scenario(tmp_path)), "--out", str(mnt)])
        assert rc == 0, err
        verify_output(mnt)
        assert _mount(ro, ro=True)
        rc, err = _run(capsys, ["simulate", str(_scenario(tmp_path)), "--out", str(ro / "results")])
        assert rc == 2 and "cannot write" in err and "Traceback" not in err
    finally:
        for p in (mnt, ro):
            subprocess.run(["umount", str(p)], capture_output=True)
        shutil.rmtree(tmp_path / "mnt", ignore_errors=True)


def test_single_file_outputs_are_checked(tmp_path, capsys):
    (tmp_path / "FILE").write_text("x")
    rc, err = _run(capsys, ["export", "sbml", "--model", "chemo_core", "--out", str(tmp_path / "FILE" / "m.xml")])
    assert rc == 2 and "is a file" in err
    rc, err = _run(capsys, ["diagram", "--model", "chemo_core", "--out", str(tmp_path)])
    assert rc == 2 and "is a folder" in err
    rc, _ = _run(capsys, ["export", "sbml", "--model", "chemo_core", "--out", str(tmp_path / "m.xml")])
    assert rc == 0 and (tmp_path / "m.xml").read_text().startswith("<?xml")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.xml")]


def test_exit_code_says_whether_every_patient_ran(tmp_path, capsys, monkeypatch):
    """0: all ok; 3: results written but some patients failed (named); 2: an arm failed whole, nothing written."""
    import numpy as np

    import chemohost.api as api

    d = yaml.safe_load((ROOT / "scenarios" / "gemcitabine_d1_8_15_q28_human.yaml").read_text())
    d.update(horizon="28 day", patients={"n": 3, "variability": True})
    d["regimens"][0]["cycles"] = 1
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    real = api.simulate

    def failing(k):
        def sim(*a, **kw):
            r = real(*a, **kw)
            r.status[:k] = 2
            r.values[:k] = np.nan
            return r
        return sim

    monkeypatch.setattr(api, "simulate", failing(1))
    rc, err = _run(capsys, ["simulate", str(f), "--out", str(tmp_path / "some")])
    assert rc == 3 and "1 of 3 patient simulations failed" in err
    verify_output(tmp_path / "some")
    monkeypatch.setattr(api, "simulate", failing(3))
    rc, err = _run(capsys, ["simulate", str(f), "--out", str(tmp_path / "all")])
    assert rc == 2 and "every patient of arm(s)" in err and "step_size_underflow: 3" in err
    assert not (tmp_path / "all").exists()


def test_non_finite_parameters_or_outputs_are_never_ok():
    import numpy as np

    from chemohost.api import parameter_vector
    from chemohost.engine.simulate import simulate
    from chemohost.model.registry import get_model

    m = get_model("chemo_core")
    names, typical, _ = parameter_vector(m, "human")
    P = np.repeat(typical[None], 2, axis=0)
    r = simulate(m, P, [], np.linspace(0, 1, 3), ["ANC"])
    assert (r.status == 0).all()
    # the rule applies to every row: a NaN output after a successful integration is status non_finite
    P[1, names.index("BSA")] = np.inf
    r = simulate(m, P, [], np.linspace(0, 1, 3), ["ANC"])
    assert r.status[0] == 0 and r.status[1] == 3
