"""GPU benchmark (issue 13 item 4): one 6-cycle gemcitabine arm of ``host_response`` on the CUDA kernel
generated from the same model, against the CPU engine in the same process.

    python benchmarks/gpu.py [--n 10000,100000,1000000] [--agree 1000]

Prints patient-simulations per minute on the GPU for each N (target >= 1,000,000 per minute on one
H200), the CPU engine's patients/s on the same machine (peer), and the agreement of GPU and CPU on
``--agree`` patients (max relative difference of ANC, NLR and tumour size over the daily grid, values
below 1e-9 compared on that floor; target <= 1e-4).  Needs an NVIDIA GPU with numba-cuda
(``pip install 'chemohost[gpu]'``); without one it says so and exits 2.  No GPU was lent to the session
that wrote this script: it is ready, not yet measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="10000,100000,1000000", help="patients per GPU run (comma separated)")
    ap.add_argument("--agree", type=int, default=1000, help="patients for the GPU vs CPU agreement")
    ap.add_argument("--cpu-n", type=int, default=2000, help="patients for the CPU peer's speed")
    a = ap.parse_args()
    os.environ.setdefault("CHEMOHOST_CACHE_DIR", str(ROOT / ".chemohost-cache"))
    from numba import cuda

    from chemohost.api import parameter_vector, sample_patients
    from chemohost.engine.simulate import SolverOptions, simulate
    from chemohost.model.registry import get_model
    from chemohost.protocol.dosing import Regimen, parse_dose
    from chemohost.studies.indications import load_indication

    if not cuda.is_available():
        print("benchmarks/gpu.py: numba sees no CUDA GPU; nothing measured", file=sys.stderr)
        return 2
    dev = cuda.get_current_device()
    m = get_model("host_response")
    ind = load_indication("pancreatic_advanced", m.parameters)
    names, typ, cvs = parameter_vector(m, "human", dict(ind.parameters))
    g, gb = parse_dose("1000 mg/m2")
    regs = [Regimen(drug="gemcitabine", dose=g, basis=gb, infusion=30 / 1440, days=(1, 8, 15), cycle_length=28,
                    cycles=6)]
    t = np.arange(0.0, 169.0, 1.0)
    outs = ["ANC", "NLR", "tumour_total"]
    trial_opts = dict(rtol=1e-4, atol=1e-8)  # the trial tolerances
    print(f"benchmarks/gpu.py: {dev.name.decode() if isinstance(dev.name, bytes) else dev.name}, "
          f"compute capability {dev.compute_capability}; CPU {os.cpu_count()} cores")
    P = sample_patients(typ, cvs, a.agree, 1, True)
    t0 = time.perf_counter()
    simulate(m, P[:64], regs, t, outs, options=SolverOptions(device="gpu", **trial_opts))
    print(f"  first GPU call (kernel compile + load): {time.perf_counter() - t0:.1f} s")
    c = simulate(m, P, regs, t, outs, options=SolverOptions(**trial_opts))
    gp = simulate(m, P, regs, t, outs, options=SolverOptions(device="gpu", **trial_opts))
    ok = (c.status == 0) & (gp.status == 0)
    rel = np.abs(gp.values[ok] - c.values[ok]) / np.maximum(np.abs(c.values[ok]), 1e-9)
    print(f"  agreement on {a.agree} patients: max relative difference {np.nanmax(rel):.2e} (target <= 1e-4); "
          f"status equal {bool((c.status == gp.status).all())}, steps equal {bool((c.steps == gp.steps).all())}")
    Pc = sample_patients(typ, cvs, a.cpu_n, 2, True)
    t0 = time.perf_counter()
    simulate(m, Pc, regs, t, outs, options=SolverOptions(**trial_opts))
    cpu_rate = a.cpu_n / (time.perf_counter() - t0)
    print(f"  CPU engine (peer, {os.cpu_count()} threads): {cpu_rate:,.0f} patients/s = {60 * cpu_rate:,.0f} per minute")
    for n in (int(x) for x in a.n.split(",")):
        Pn = sample_patients(typ, cvs, n, 3, True)
        t0 = time.perf_counter()
        r = simulate(m, Pn, regs, t, outs, options=SolverOptions(device="gpu", **trial_opts))
        wall = time.perf_counter() - t0
        print(f"  GPU N={n:,}: {wall:.1f} s = {60 * n / wall:,.0f} patient-simulations per minute "
              f"({n / wall / cpu_rate:.1f}x the CPU engine; {int((r.status != 0).sum())} failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
