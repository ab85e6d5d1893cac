"""Throughput benchmark: chemohost engine vs a libRoadRunner per-patient loop on the same SBML.

Scenario: composed model ``chemo_core`` (human), gemcitabine 1000 mg/m2 (30-min infusion) days 1, 8,
15 every 28 days x 6 cycles (36 dose events), log-normal inter-individual variability on every
parameter with a CV in the table, daily outputs over 168 days.  Dose-modification rules are off
(SBML cannot express them), so both engines solve exactly the same problem.

Prints, for N = 1, 1,000 and 10,000 patients: patients/second of chemohost (all cores, compiled
parallel loop) and of libRoadRunner (CVODE; one process, and a 2-process pool), their ratio, the
agreement between the two, and chemohost's one-off compile time (measured in a fresh cache) and
cached load time.

    python benchmarks/throughput.py            # full run (~5 min on 2 cores)
    python benchmarks/throughput.py --quick    # N = 1 and 1,000 only
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import chemohost as ch
from chemohost.api import parameter_vector, sample_patients
from chemohost.engine.codegen import compile_model

MODEL = "chemo_core"
REGIMEN = [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 6)]
TIMES = np.arange(0, 169.0)
TIMES[1:] -= 0.0013  # keep output samples off the exact event times (roadrunner reports pre/post ambiguously)
RR_RTOL, RR_ATOL = 1e-6, 1e-9  # the settings quoted in the measurements
CH_OPTS = ch.SolverOptions(rtol=1e-5, atol=1e-9)

_rr = None


def _rr_worker_init(sbml, species, param_names, rtol, atol):
    global _rr
    import roadrunner

    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_FATAL)
    _rr = (roadrunner.RoadRunner(sbml), species, param_names)
    rr = _rr[0]
    rr.integrator.relative_tolerance = rtol
    rr.integrator.absolute_tolerance = atol
    rr.integrator.maximum_num_steps = 200000
    rr.timeCourseSelections = ["time"] + species


def _rr_run(args):
    p, y0 = args
    rr, species, names = _rr
    rr.resetAll()
    for name, value in zip(names, p):
        rr[name] = float(value)
    for s, v in zip(species, y0):  # current values at t = 0 (rr.reset() here breaks CVODE's event restarts)
        rr[s] = float(v)
    try:
        return np.array(rr.simulate(times=list(TIMES)))[:, 1:]
    except RuntimeError:  # CVODE failure for this patient: counted, not fatal
        return np.full((TIMES.size, len(species)), np.nan)


def initial_states(cm, P):
    """Initial species values per patient (param-dependent initial conditions, e.g. Circ0)."""
    out = np.zeros((P.shape[0], len(cm.model.species)))
    y = np.zeros(len(cm.ode_species))
    xl = np.zeros(len(cm.lin_species))
    order = [cm.model.species[s].name for s in cm.model.species]
    for i, p in enumerate(P):
        cm.module.init_state(p, y, xl)
        vals = dict(zip(cm.ode_species, y))
        vals.update(zip(cm.lin_species, xl))
        out[i] = [vals[s] for s in order]
    return out


def roadrunner_loop(sbml, species, names, P, Y0, rtol, atol, processes=1):
    """Results and seconds, excluding libRoadRunner's one-off SBML load/JIT (as for chemohost)."""
    args = list(zip(P, Y0))
    if processes == 1:
        _rr_worker_init(sbml, species, names, rtol, atol)
        t0 = time.perf_counter()
        res = [_rr_run(a) for a in args]
        return np.stack(res), time.perf_counter() - t0
    with mp.get_context("fork").Pool(processes, _rr_worker_init, (sbml, species, names, rtol, atol)) as pool:
        pool.map(_rr_run, args[:processes], chunksize=1)  # workers loaded
        t0 = time.perf_counter()
        res = pool.map(_rr_run, args, chunksize=max(1, len(args) // (8 * processes)))
        return np.stack(res), time.perf_counter() - t0


def compile_times():
    """Fresh-cache compile time, and cached load time in a new process (seconds)."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, CHEMOHOST_CACHE_DIR=d)
        code = (
            "import time;t=time.perf_counter();import numpy as np, chemohost as ch;"
            "from chemohost.api import parameter_vector;t1=time.perf_counter();"
            f"m=ch.get_model('{MODEL}');n,p,_=parameter_vector(m,'human');"
            "ch.simulate(m,p[None],[ch.Regimen('gemcitabine',1000,'bsa','iv',0.02,(1,),28,1)],[1.0]);"
            "print(time.perf_counter()-t1)"
        )
        first = float(subprocess.check_output([sys.executable, "-c", code], env=env, text=True))
        second = float(subprocess.check_output([sys.executable, "-c", code], env=env, text=True))
    return first, second


def rel_err(a, b):
    ok = np.isfinite(b).all(axis=(1, 2)) & np.isfinite(a).all(axis=(1, 2))
    a, b = a[ok], b[ok]
    # values below 1e-6 of the species' peak (or 1e-9 in its unit, for species that stay ~0) are
    # compared on that floor
    floor = np.maximum(1e-6 * np.abs(b).max(axis=(0, 1), keepdims=True), 1e-9)
    return float((np.abs(a - b) / np.maximum(np.abs(b), floor)).max())


def failures(res):
    return int((~np.isfinite(res).all(axis=(1, 2))).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip N = 10,000")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    import numba
    import roadrunner

    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_FATAL)
    model = ch.get_model(MODEL)
    names, typical, cvs = parameter_vector(model, "human")
    species = list(model.species)
    sbml = ch.to_sbml(model, dict(zip(names, typical)), ch.dose_table(REGIMEN))
    first, cached = compile_times()
    cm = compile_model(model)
    ch.simulate(cm, typical[None], REGIMEN, TIMES, species, options=CH_OPTS)  # warm (loads cache)
    print(f"chemohost {ch.__version__}, numba {numba.__version__} ({numba.get_num_threads()} threads), "
          f"libroadrunner {roadrunner.__version__}; {os.cpu_count()} CPUs")
    print(f"model {MODEL}: {len(species)} species ({len(cm.ode_species)} integrated, {len(cm.lin_species)} "
          f"closed-form), {len(REGIMEN[0].nominal_times())} doses = 36 dose events over 168 days, "
          f"{TIMES.size} output times")
    print(f"chemohost compile (fresh cache, one-off): {first:.1f} s; cached load in a new process: {cached:.2f} s")
    print(f"tolerances: chemohost rtol {CH_OPTS.rtol:g} atol {CH_OPTS.atol:g}; libRoadRunner rtol {RR_RTOL:g} "
          f"atol {RR_ATOL:g}")
    sizes = [1, 1000] if args.quick else [1, 1000, 10000]
    rows = []
    for n in sizes:
        P = sample_patients(typical, cvs, n, seed=42, variability=n > 1)
        Y0 = initial_states(cm, P)
        t0 = time.perf_counter()
        ours = ch.simulate(cm, P, REGIMEN, TIMES, species, options=CH_OPTS)
        t_ch = time.perf_counter() - t0
        theirs, t_rr = roadrunner_loop(sbml, species, names, P, Y0, RR_RTOL, RR_ATOL)
        row = {"n": n, "chemohost_s": t_ch, "chemohost_pps": n / t_ch, "rr_s": t_rr, "rr_pps": n / t_rr,
               "rr_failures": failures(theirs), "chemohost_failures": int((ours.status != 0).sum())}
        if n >= 1000:
            _, t_rr2 = roadrunner_loop(sbml, species, names, P, Y0, RR_RTOL, RR_ATOL, processes=2)
            row.update(rr2_s=t_rr2, rr2_pps=n / t_rr2)
        k = min(n, 20)
        tight, _ = roadrunner_loop(sbml, species, names, P[:k], Y0[:k], 1e-10, 1e-14)
        row["err_chemohost_vs_rr_tight"] = rel_err(ours.values[:k], tight)
        row["err_rr_default_vs_rr_tight"] = rel_err(theirs[:k], tight)
        row["err_chemohost_vs_rr_default"] = rel_err(ours.values, theirs)
        rows.append(row)
    print()
    print(f"{'N':>6} | {'chemohost pat/s':>15} | {'RR 1 proc pat/s':>15} | {'RR 2 proc pat/s':>15} | "
          f"{'ratio vs 1p':>11} | {'ratio vs 2p':>11} | {'max rel err vs RR(1e-10)':>24}")
    for r in rows:
        rr2 = f"{r['rr2_pps']:15.0f}" if "rr2_pps" in r else f"{'-':>15}"
        ratio2 = f"{r['chemohost_pps'] / r['rr2_pps']:10.1f}x" if "rr2_pps" in r else f"{'-':>11}"
        print(f"{r['n']:>6} | {r['chemohost_pps']:15.0f} | {r['rr_pps']:15.1f} | {rr2} | "
              f"{r['chemohost_pps'] / r['rr_pps']:10.1f}x | {ratio2} | {r['err_chemohost_vs_rr_tight']:24.2e}")
    print()
    for r in rows:
        print(f"  N={r['n']}: failed patients: chemohost {r['chemohost_failures']}, libRoadRunner {r['rr_failures']} "
              "(CVODE convergence failures after dose events; excluded from the agreement figures)")
    print("agreement (max relative error over all species, times and patients; values below 1e-6 of a "
          "species' peak, or below 1e-9 in its unit, compared on that floor):")
    for r in rows:
        print(f"  N={r['n']}: chemohost vs RR(rtol 1e-10): {r['err_chemohost_vs_rr_tight']:.2e}; "
              f"RR(rtol {RR_RTOL:g}) vs RR(rtol 1e-10): {r['err_rr_default_vs_rr_tight']:.2e}; "
              f"chemohost vs RR(rtol {RR_RTOL:g}): {r['err_chemohost_vs_rr_default']:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"compile_s": first, "cached_load_s": cached, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
