"""Checkpoint and resume (issue 10): a real `chemohost trial` killed with SIGKILL mid-way continues
with --resume from its last finished chunk, losing and duplicating no patient, and writes a
patients.parquet identical to an uninterrupted run; a stale or foreign checkpoint is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from chemohost.cli import main
from chemohost.outputs import PARTIAL, verify_output

ROOT = Path(__file__).resolve().parents[1]


def _trial_file(tmp_path: Path, n: int = 120) -> Path:
    d = yaml.safe_load((ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml").read_text())
    d["arms"] = {k: v for k, v in list(d["arms"].items())[:2]}
    for regs in d["arms"].values():
        for r in regs:
            r["cycles"] = 2
    d.update(patients=n, follow_up="3 month", chunk_size=10, keep_timecourses=15)
    f = tmp_path / "trial.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    return f


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "chemohost.cli", *args]


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    f = _trial_file(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    r = subprocess.run(_cli("trial", str(f), "--out", str(ref)), capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    p = subprocess.Popen(_cli("trial", str(f), "--out", str(out)), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    partial = out / PARTIAL
    t0 = time.time()
    while time.time() - t0 < 300:
        if partial.is_dir() and len(list(partial.glob("*.parquet"))) >= 5:
            break
        if p.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(list(partial.glob("*.parquet")))
    assert 5 <= done < 24, done  # killed mid-way: 2 arms x 12 chunks
    assert not (out / "patients.parquet").exists()
    with pytest.raises(Exception, match="no completion marker"):
        verify_output(out)
    # without --resume the checkpoints are not silently thrown away
    r = subprocess.run(_cli("trial", str(f), "--out", str(out)), capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 2 and "--resume" in r.stderr and "interrupted run" in r.stderr
    r = subprocess.run(_cli("trial", str(f), "--out", str(out), "--resume"), capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "read back from the interrupted run" in r.stdout
    verify_output(out)
    assert not partial.exists()
    a, b = pd.read_parquet(ref / "patients.parquet"), pd.read_parquet(out / "patients.parquet")
    assert len(b) == 240 and not b.duplicated(["arm", "patient"]).any()
    pd.testing.assert_frame_equal(a, b)


def test_resume_refuses_checkpoints_of_another_run(tmp_path, capsys):
    from chemohost.studies.checkpoint import Checkpoint

    out = tmp_path / "out"
    ck = Checkpoint(out / PARTIAL, {"seed": 1, "patients": 10})
    ck.save("arm0-0", pd.DataFrame({"patient": [0]}))
    f = _trial_file(tmp_path, n=20)
    assert main(["trial", str(f), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "belong to another run" in err and "seed" in err
    assert main(["trial", str(f), "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "no checkpoints" in capsys.readouterr().err
    assert main(["trial", str(f), "--out", str(out), "--force"]) == 0  # --force discards and starts over
    verify_output(out)


def test_resume_refuses_checkpoints_of_another_engine(tmp_path, monkeypatch):
    """The fingerprint names the engine (back end, C source, build flags and the CPU a native build targets): chunks
    written by one engine are not mixed with another's (e.g. after an upgrade that changed the C engine but not the
    model's code, or on another machine)."""
    from chemohost.engine import cbackend
    from chemohost.errors import ScenarioError
    from chemohost.studies.checkpoint import Checkpoint
    from chemohost.studies.trial import Trial, run_trial

    if not cbackend.available():
        pytest.skip("no C compiler")
    tr = Trial.load(_trial_file(tmp_path, n=10))
    folder = tmp_path / "ck"
    first = run_trial(tr, checkpoint=lambda fp: Checkpoint(folder, fp))
    again = run_trial(tr, checkpoint=lambda fp: Checkpoint(folder, fp, resume=True))  # the same engine: resumed
    assert again.summary.get("resumed_chunks") and again.patients.equals(first.patients)
    if cbackend.NATIVE:  # the same C engine built for a CPU with other features (another machine)
        with monkeypatch.context() as m:
            m.setattr(cbackend, "_cpu_id", lambda: "x86_64flags : fpu sse2")
            with pytest.raises(ScenarioError, match=r"another run \(differs in: engine\)"):
                run_trial(tr, checkpoint=lambda fp: Checkpoint(folder, fp, resume=True))
    monkeypatch.setattr(cbackend, "_source_digest", lambda cm, lanes: ("0" * 64, None))  # another C engine
    with pytest.raises(ScenarioError, match=r"another run \(differs in: engine\)"):
        run_trial(tr, checkpoint=lambda fp: Checkpoint(folder, fp, resume=True))


@pytest.mark.parametrize("design", ["randomized", "posterior"])
def test_other_designs_resume_from_their_checkpoints(tmp_path, capsys, design, monkeypatch):
    """The randomized and posterior-predictive designs record chunks too: a run interrupted after some
    chunks (simulated by an exception in the engine) resumes and gives the same patients.parquet."""
    import test_posterior_trial as tpt

    f = _trial_file(tmp_path, n=20)
    args = ["--design", "randomized", "--replicates", "3", "--per-arm", "10"] if design == "randomized" else \
        ["--posterior", str(tpt._posterior(tmp_path / "fit", {"il1r1_ec50": [2.0, 8.0, 30.0]})), "--draws", "3",
         "--patients", "10"]
    ref = tmp_path / "ref"
    assert main(["trial", str(f), "--out", str(ref), *args]) == 0
    calls = {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")
        return real_chunk(*a, **kw)

    import chemohost.studies.trial_runner as tr

    real_chunk = tr.simulate_arm_chunk
    monkeypatch.setattr(tr, "simulate_arm_chunk", dying)  # every design's chunks go through it (studies/cluster.py)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        main(["trial", str(f), "--out", str(out), *args])
    monkeypatch.setattr(tr, "simulate_arm_chunk", real_chunk)
    assert len(list((out / PARTIAL).glob("*.parquet"))) == 3
    capsys.readouterr()
    assert main(["trial", str(f), "--out", str(out), *args, "--resume"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(ref / "patients.parquet"), pd.read_parquet(out / "patients.parquet"))
    assert not (out / PARTIAL).exists()
