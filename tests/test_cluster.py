"""Cluster execution on Dask (issue 13 item 1): a real LocalCluster of 2 worker processes gives the same
patients as the in-process run for the same seed; a worker killed (SIGKILL) mid-run is replaced and its
chunks rescheduled with 0 lost and 0 duplicated patients; a cluster run killed mid-way resumes from its
chunk checkpoints; bad cluster options exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytest.importorskip("distributed")

from chemohost.cli import main  # noqa: E402
from chemohost.outputs import PARTIAL, verify_output  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _trial_dict(n: int, chunk: int) -> dict:
    d = yaml.safe_load((ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml").read_text())
    for regs in d["arms"].values():
        for r in regs:
            r["cycles"] = 2
    d.update(patients=n, follow_up="3 month", chunk_size=chunk, keep_timecourses=7)
    return d


def _run(d, tmp_path, ex=None):
    from chemohost.studies.trial import Trial, run_trial

    return run_trial(Trial.from_dict(d, str(tmp_path / "t.yaml")), executor=ex)


def _same(a, b):
    pd.testing.assert_frame_equal(a.patients, b.patients)
    for arm in a.samples:
        for o, v in a.samples[arm][1].items():
            assert (pd.isna(v) == pd.isna(b.samples[arm][1][o])).all()
            assert ((v == b.samples[arm][1][o]) | pd.isna(v)).all()
    import json

    assert json.dumps(a.summary["arms"], sort_keys=True, default=str) == \
        json.dumps(b.summary["arms"], sort_keys=True, default=str)  # NaN-safe comparison


def test_local_cluster_gives_the_in_process_patients(tmp_path):
    from chemohost.studies.cluster import DaskExecutor, executor

    d = _trial_dict(30, 8)
    ref = _run(d, tmp_path)
    with executor(workers=2) as ex:
        assert isinstance(ex, DaskExecutor) and len(ex.client.scheduler_info()["workers"]) == 2
        got = _run(d, tmp_path, ex)
        pids = set(ex.client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids  # two separate worker processes did the work
    _same(ref, got)


def test_a_killed_worker_loses_and_duplicates_no_patient(tmp_path):
    from chemohost.studies.cluster import executor

    d = _trial_dict(48, 4)  # 3 arms x 12 chunks
    ref = _run(d, tmp_path)
    killed = []
    with executor(workers=2) as ex:
        c = ex.client

        def killer():
            t0 = time.time()
            while time.time() - t0 < 300 and not killed:
                busy = {w: ks for w, ks in c.processing().items() if any("chemohost-" in str(k) for k in ks)}
                done = sum(1 for k in c.who_has() if "chemohost-" in str(k))
                if busy and done >= 3:
                    w = sorted(busy)[0]
                    pid = c.run(os.getpid, workers=[w])[w]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.02)

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        got = _run(d, tmp_path, ex)
        th.join(5)
    assert killed, "no worker was killed mid-run"
    p = got.patients
    assert len(p) == 48 * 3 and not p.duplicated(["arm", "patient"]).any()
    _same(ref, got)


def _trial_file(tmp_path: Path) -> Path:
    f = tmp_path / "trial.yaml"
    f.write_text(yaml.safe_dump(_trial_dict(60, 5), sort_keys=False))
    return f


def test_an_interrupted_cluster_run_resumes_from_its_checkpoints(tmp_path):
    f = _trial_file(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "chemohost.cli", "trial", str(f)]
    ref = tmp_path / "ref"
    r = subprocess.run(cli + ["--out", str(ref)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    p = subprocess.Popen(cli + ["--out", str(out), "--workers", "2"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    partial = out / PARTIAL
    t0 = time.time()
    while time.time() - t0 < 300:
        if partial.is_dir() and len(list(partial.glob("*.parquet"))) >= 4:
            break
        if p.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the main process and its cluster
    p.wait()
    done = len(list(partial.glob("*.parquet")))
    assert 4 <= done < 36, done
    r = subprocess.run(cli + ["--out", str(out), "--resume", "--workers", "2"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "read back from the interrupted run" in r.stdout
    verify_output(out)
    a, b = pd.read_parquet(ref / "patients.parquet"), pd.read_parquet(out / "patients.parquet")
    assert len(b) == 180 and not b.duplicated(["arm", "patient"]).any()
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("args, fragment", [
    (["--workers", "0"], "--workers must be a whole number from 1 to 1024"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["--scheduler", "tcp://127.0.0.1:1"], "cannot connect"),
])
def test_bad_cluster_options_exit_2(tmp_path, capsys, args, fragment):
    f = _trial_file(tmp_path)
    out = tmp_path / "o"
    assert main(["trial", str(f), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not (out / "patients.parquet").exists()


def test_randomized_design_on_the_cluster_equals_in_process(tmp_path):
    from chemohost.studies.cluster import executor
    from chemohost.studies.randomized import run_randomized
    from chemohost.studies.trial import Trial

    t = Trial.from_dict(_trial_dict(10, 7), str(tmp_path / "t.yaml"))
    ref = run_randomized(t, 3, 6)
    with executor(workers=2) as ex:
        got = run_randomized(t, 3, 6, executor=ex)
    pd.testing.assert_frame_equal(ref.patients, got.patients)


def _study_file(tmp_path, name: str, **changes) -> Path:
    d = yaml.safe_load((ROOT / "scenarios" / name).read_text())
    d.update(changes)
    d["base"] = str(ROOT / "scenarios" / Path(d["base"]).name)
    f = tmp_path / name
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    return f


def test_sensitivity_study_on_the_cluster_equals_in_process(tmp_path):
    """A Sobol study's chunks as cluster tasks give the same runs and indices as in this process."""
    from chemohost.studies.cluster import executor
    from chemohost.studies.sensitivity import SensitivityStudy

    f = _study_file(tmp_path, "study_sensitivity_pancreatic_il1.yaml", samples=8, chunk_size=16)
    ref = SensitivityStudy.load(f).run()
    with executor(workers=2) as ex:
        got = SensitivityStudy.load(f).run(executor=ex)
    pd.testing.assert_frame_equal(ref.tables["runs"], got.tables["runs"])
    pd.testing.assert_frame_equal(ref.tables["indices"], got.tables["indices"])


def test_optimize_on_the_cluster_equals_in_process(tmp_path, monkeypatch):
    """Candidates are asked and told one at a time either way; on the cluster each candidate's patients run as tasks
    in blocks (3 blocks of <= 4 here): the same candidates, metrics and comparisons as in this process."""
    from chemohost.studies import optimize
    from chemohost.studies.cluster import executor

    f = _study_file(tmp_path, "study_optimize_pancreatic_caspase1.yaml", trials=3, patients=10)
    monkeypatch.setattr(optimize, "CLUSTER_CHUNK", 4)
    ref = optimize.OptimizeStudy.load(f).run()
    with executor(workers=2) as ex:
        got = optimize.OptimizeStudy.load(f).run(executor=ex)
    assert len(ref.tables["candidates"]) == 3
    for name in ("candidates", "comparison"):
        pd.testing.assert_frame_equal(ref.tables[name], got.tables[name])


def test_phase1_pools_on_the_cluster_equal_in_process(tmp_path, monkeypatch):
    """The dose pools as cluster tasks (every dose at once, 3 blocks per dose here): the same pools, DLT rates and
    design operating characteristics as in this process."""
    from chemohost.studies import phase1
    from chemohost.studies.cluster import executor

    f = _study_file(tmp_path, "study_phase1_pancreatic_bermekimab.yaml", pool=20, trials=40)
    monkeypatch.setattr(phase1, "CLUSTER_CHUNK", 8)
    ref = phase1.Phase1Study.load(f).run()
    with executor(workers=2) as ex:
        got = phase1.Phase1Study.load(f).run(executor=ex)
    assert ref.tables and set(ref.tables) == set(got.tables)
    for name in ref.tables:
        pd.testing.assert_frame_equal(ref.tables[name], got.tables[name])


def test_remote_simulation_follows_a_model_registered_again_under_its_name():
    """simulate_remote looks the model up by its declaration on every call: a model registered again under the
    same name (a user's edited mechanism: here plasma gemcitabine read at twice its value) is simulated as it now
    is, not as first compiled."""
    import dataclasses

    import numpy as np

    from chemohost.api import parameter_vector
    from chemohost.engine.simulate import SolverOptions
    from chemohost.model import registry
    from chemohost.protocol.dosing import Regimen
    from chemohost.studies.cluster import simulate_remote

    base = registry.get_model("gemcitabine_pk")
    names, p, _ = parameter_vector(base, "human")
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1,), 21, 1)]
    t, opts = np.array([0.0, 0.005, 0.01, 0.015]), SolverOptions()  # during the 30-min infusion
    try:
        registry.register("remote_test_pk", lambda: base)
        a = simulate_remote("remote_test_pk", True, p[None], regs, t, ["C_gem"], opts)
        out = base.outputs["C_gem"]
        edited = dataclasses.replace(base, outputs={**base.outputs,
                                                    "C_gem": dataclasses.replace(out, expr=f"2*({out.expr})")})
        registry.register("remote_test_pk", lambda: edited)
        b = simulate_remote("remote_test_pk", True, p[None], regs, t, ["C_gem"], opts)
    finally:
        registry.MODELS.pop("remote_test_pk", None)
        registry._cache.pop("remote_test_pk", None)
    from chemohost.engine.simulate import simulate

    direct = simulate(edited, p[None], regs, t, ["C_gem"], options=opts)  # (C_gem also drives its elimination)
    assert np.array_equal(b.values, direct.values)
    assert not np.allclose(b.output("C_gem")[0, 1:], a.output("C_gem")[0, 1:], rtol=0.05)
