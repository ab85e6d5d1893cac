"""The GPU engine (issue 13 item 4): the CUDA kernel generated from the same module as the CPU engine,
run on numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, the same kernel source in Python threads, no GPU
needed), agrees with the scalar CPU engine (of which it is a translation: backend "c", or numba without a C
compiler) on a handful of patients -- with infusions, a dose-modification rule
that delays cycles, a hysteresis rule and a blocker -- to <= 1e-6 relative (measured: bit-identical), with the same steps and the
same dose decisions; a trial asked to run on a GPU where there is none exits 2 with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chemohost.cli import main

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = r'''
import json, numpy as np
from chemohost.api import parameter_vector, sample_patients
from chemohost.model.registry import get_model
from chemohost.engine.simulate import simulate, SolverOptions
from chemohost.protocol.dosing import Regimen, parse_dose
from chemohost.studies.indications import load_indication
from chemohost.engine import cbackend
CPU = "c" if cbackend.available() else "numba"  # the scalar engine: the kernel is its translation
m = get_model("host_response")
ind = load_indication("pancreatic_advanced", m.parameters)
names, typ, cvs = parameter_vector(m, "human", dict(ind.parameters))
P = sample_patients(typ, cvs, 4, 7, True)
P[0, names.index("bm_slope_gem")] *= 8.0   # deep nadir: the ANC rule holds and delays doses
P[1, names.index("tumour_k2_gem")] *= 6.0  # deep response: the hysteresis rule pauses
g, gb = parse_dose("1000 mg/m2")
b, bb = parse_dose("7.5 mg/kg")
out = {}
for name, rule in (("anc_delay", "gemcitabine_label_anc_delay"), ("adaptive", "adaptive_pause_at_half_burden")):
    regs = [Regimen(drug="gemcitabine", dose=g, basis=gb, infusion=30 / 1440, days=(1, 8, 15), cycle_length=28,
                    cycles=2, rule=rule),
            Regimen(drug="bermekimab", dose=b, basis=bb, infusion=1 / 24, days=(1,), cycle_length=14, cycles=4)]
    t = np.arange(0.0, 57.0, 1.0)
    outs = ["ANC", "NLR", "tumour_total", "il1a_pgml"]
    opts = dict(rtol=1e-6, atol=1e-10)
    c = simulate(m, P, regs, t, outs, options=SolverOptions(backend=CPU, **opts))
    gp = simulate(m, P, regs, t, outs, options=SolverOptions(device="gpu", **opts))
    rel = np.abs(gp.values - c.values) / np.maximum(np.abs(c.values), 1e-9)
    out[name] = {"status_cpu": c.status.tolist(), "status_gpu": gp.status.tolist(),
                 "steps_cpu": c.steps[:, 0].tolist(), "steps_gpu": gp.steps[:, 0].tolist(),
                 "max_rel": float(np.nanmax(rel)), "same_nan": bool((np.isnan(c.values) == np.isnan(gp.values)).all()),
                 "dose_status_cpu": c.dose_status.tolist(), "dose_status_gpu": gp.dose_status.tolist(),
                 "dose_times_equal": bool(np.allclose(c.dose_times, gp.dose_times, equal_nan=True)),
                 "factors_equal": bool(np.allclose(c.dose_factors, gp.dose_factors, equal_nan=True))}
# restartable snapshots (the trial's second pass after progression): taken and resumed on the device
regs = [Regimen(drug="gemcitabine", dose=g, basis=gb, infusion=30 / 1440, days=(1, 8, 15), cycle_length=28,
                cycles=2, rule="gemcitabine_label_anc_delay")]
t = np.arange(0.0, 57.0, 1.0)
sd = np.array([[8.0, 30.0]] * 4)
opts = dict(rtol=1e-6, atol=1e-10)
c = simulate(m, P, regs, t, ["ANC"], options=SolverOptions(backend=CPU, **opts), snapshot_days=sd)
gp = simulate(m, P, regs, t, ["ANC"], options=SolverOptions(device="gpu", **opts), snapshot_days=sd)
rows, slots, stop = np.arange(4), np.ones(4, dtype=np.int64), np.full(4, 30.0)
cr = simulate(m, P, regs, t, ["ANC"], options=SolverOptions(backend=CPU, **opts), stop_days=stop, resume_from=(c, rows, slots))
gr = simulate(m, P, regs, t, ["ANC"], options=SolverOptions(device="gpu", **opts), stop_days=stop,
              resume_from=(gp, rows, slots))
fc, fg = c.snapshots.f, gp.snapshots.f
fin = np.isfinite(fc)  # (not-yet-given doses' times are nan, padding events' times inf)
out["snapshots"] = {"f_rel": float(np.max(np.abs(fg[fin] - fc[fin]) / np.maximum(np.abs(fc[fin]), 1e-9))),
                    "f_nonfinite_equal": bool(np.array_equal(fg[~fin], fc[~fin], equal_nan=True)),
                    "i_equal": bool(np.array_equal(gp.snapshots.i, c.snapshots.i)),
                    "resume_rel": float(np.nanmax(np.abs(gr.values - cr.values) / np.maximum(np.abs(cr.values), 1e-9))),
                    "stopped": int((cr.dose_status == 3).sum()), "status": gr.status.tolist()}
print("RESULT" + json.dumps(out))
'''


def test_cuda_kernel_on_the_simulator_matches_the_cpu_engine():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.split("RESULT", 1)[1])
    snap = res.pop("snapshots")
    assert snap["f_rel"] <= 1e-6 and snap["f_nonfinite_equal"] and snap["i_equal"] and snap["resume_rel"] <= 1e-6, snap
    assert snap["stopped"] > 0 and snap["status"] == [0, 0, 0, 0], snap
    for name, d in res.items():
        assert d["status_cpu"] == d["status_gpu"] == [0, 0, 0, 0], name
        assert d["max_rel"] <= 1e-6 and d["same_nan"], (name, d["max_rel"])
        assert d["steps_cpu"] == d["steps_gpu"], name
        assert d["dose_status_cpu"] == d["dose_status_gpu"] and d["dose_times_equal"] and d["factors_equal"], name
    held = [s for row in res["anc_delay"]["dose_status_cpu"] for s in row]
    paused = [s for row in res["adaptive"]["dose_status_cpu"] for s in row]
    assert 2 in held and 2 in paused  # the ANC rule and the hysteresis rule acted, alike on both devices


def test_gpu_source_generation_refuses_an_unknown_template():
    from chemohost.engine.gpu import cuda_source
    from chemohost.errors import SolverError

    with pytest.raises(SolverError, match="update engine/gpu.py"):
        cuda_source("import numba as nb\n")


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="the simulator counts as a GPU")
def test_device_gpu_without_a_gpu_exits_2(tmp_path, capsys):
    from numba import cuda

    if cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "o"
    assert main(["trial", str(ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml"), "--device", "gpu",
                 "--patients", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "numba sees no CUDA GPU" in err and "--device cpu" in err and "Traceback" not in err
    assert not (out / "patients.parquet").exists()
