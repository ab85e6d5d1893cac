"""Throughput benchmark: chemohost's engine against libRoadRunner on the exported SBML of the same model.

Model ``host_response`` (the full host-response model, human), the pancreatic trial's virtual population
(``scenarios/trial_pancreatic_il1_blockade.yaml``: per-patient BSA, weight, creatinine clearance and
log-normal inter-individual variability), gemcitabine 1000 mg/m2 as a 30-min infusion on days 1, 8, 15
every 28 days x 6 cycles (18 doses, 36 dose events), daily outputs over 168 days.  The label's
dose-modification rule is off (SBML cannot express it), so both engines solve the same problem.

The peer is what an SBML user writes: the SBML exported once (``chemohost export sbml``), then per
patient ``resetAll()``, the patient's parameters (BSA included: the t = 0 dose fires at 1e-9 day, after
the parameters are set, so it is the patient's dose) and the patient's baseline species values, then
``simulate``.  Both of libRoadRunner's CVODE modes are timed: the default stiff BDF, and non-stiff Adams,
in one process and in a pool of 2 processes (one per core).  chemohost runs at the trial's tolerances
(rtol 1e-4, atol 1e-8) on all cores.

Prints patients/s of each, failed patients of each, and the agreement on the clinical outputs (ANC, NLR,
tumour size) of chemohost and of each peer mode with a tight chemohost reference (rtol 1e-10), on the
patients every run completed.

    python benchmarks/throughput.py              # N = 200 (peer) and 2,000 (chemohost)  (~5 min on 2 cores)
    python benchmarks/throughput.py --peer-n 50  # shorter
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

import chemohost as ch
from chemohost.studies.trial import Trial
from chemohost.studies.trial_runner import sample_trial_patients, setup_trial

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml"
TIMES = np.arange(0, 169.0)
TIMES[1:] -= 0.0013  # output samples off the exact event times (a peer reports pre/post ambiguously)
RR_RTOL, RR_ATOL = 1e-6, 1e-9
CLINICAL = ["ANC", "NLR", "tumour_total"]

_rr = None


def _rr_worker_init(sbml, species, names, stiff, rtol, atol):
    global _rr
    import roadrunner

    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_FATAL)
    rr = roadrunner.RoadRunner(sbml)
    rr.integrator.stiff = bool(stiff)
    rr.integrator.relative_tolerance = rtol
    rr.integrator.absolute_tolerance = atol
    rr.integrator.maximum_num_steps = 200000
    rr.timeCourseSelections = ["time"] + CLINICAL
    _rr = (rr, species, names)


def _rr_run(args):
    p, y0 = args
    rr, species, names = _rr
    rr.resetAll()
    for name, value in zip(names, p):
        rr[name] = float(value)
    for s, v in zip(species, y0):  # the patient's baseline (initial values that depend on parameters)
        rr[s] = float(v)
    try:
        return np.array(rr.simulate(times=list(TIMES)))[:, 1:]
    except RuntimeError:  # CVODE failure for this patient: counted, not fatal
        return np.full((TIMES.size, len(CLINICAL)), np.nan)


def peer(sbml, species, names, P, Y0, stiff, processes):
    """(results, seconds) of the libRoadRunner loop, excluding its one-off SBML load and JIT."""
    args = list(zip(P, Y0))
    init = (sbml, species, names, stiff, RR_RTOL, RR_ATOL)
    if processes == 1:
        _rr_worker_init(*init)
        t0 = time.perf_counter()
        res = [_rr_run(a) for a in args]
        return np.stack(res), time.perf_counter() - t0
    with mp.get_context("fork").Pool(processes, _rr_worker_init, init) as pool:
        pool.map(_rr_run, args[:processes], chunksize=1)  # workers loaded
        t0 = time.perf_counter()
        res = pool.map(_rr_run, args, chunksize=max(1, len(args) // (8 * processes)))
        return np.stack(res), time.perf_counter() - t0


def initial_states(cm, P, species):
    out = np.zeros((P.shape[0], len(species)))
    y = np.zeros(len(cm.ode_species))
    xl = np.zeros(len(cm.lin_species))
    for i, p in enumerate(P):
        cm.module.init_state(p, y, xl)
        vals = {**dict(zip(cm.ode_species, y)), **dict(zip(cm.lin_species, xl))}
        out[i] = [vals[s] for s in species]
    return out


def agreement(a, ref):
    """Largest relative error per clinical output over the patients both completed (values below 1e-6 of the
    patient's peak compared on that floor), and how many patients that is."""
    ok = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(ref).all(axis=(1, 2))
    if not ok.any():
        return {}, 0
    a, ref = a[ok], ref[ok]
    peak = np.abs(ref).max(axis=1, keepdims=True)
    err = np.abs(a - ref) / np.maximum(np.abs(ref), 1e-6 * peak)
    return {o: float(err[:, :, q].max()) for q, o in enumerate(CLINICAL)}, int(ok.sum())


def failed(res):
    return int((~np.isfinite(res).all(axis=(1, 2))).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer-n", type=int, default=200, help="patients for the libRoadRunner loops")
    ap.add_argument("--n", type=int, default=2000, help="patients for chemohost's throughput")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    a = ap.parse_args()
    import numba
    import roadrunner

    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_FATAL)
    trial = Trial.from_dict(yaml.safe_load(TRIAL.read_text()), str(TRIAL))
    st = setup_trial(trial, 1)
    cm, opts = st.cm, st.opts
    regs = [dataclasses.replace(r, rule=None) for r in trial.arms[trial.spec.control]]
    names, P, _, _ = sample_trial_patients(trial, max(a.n, a.peer_n), 1)
    bsa = P[:, names.index("BSA")]
    species = list(cm.model.species)
    sbml = ch.to_sbml(cm.model, dict(zip(names, P[0])), ch.dose_table(regs))
    ch.simulate(cm, P[:2], regs, TIMES, CLINICAL, options=opts)  # load the compiled module (excluded)
    print(f"chemohost {ch.__version__}, numba {numba.__version__} ({numba.get_num_threads()} threads), "
          f"libroadrunner {roadrunner.__version__}; {os.cpu_count()} CPUs; {sys.platform}")
    print(f"model host_response: {len(species)} species ({len(cm.ode_species)} integrated, {len(cm.lin_species)} "
          f"closed-form); pancreatic trial population (BSA {bsa.min():.2f}-{bsa.max():.2f} m2); "
          f"gemcitabine 1000 mg/m2 x 18 doses (36 dose events) over 168 days, {TIMES.size} output times")
    print(f"tolerances: chemohost rtol {opts.rtol:g} atol {opts.atol:g} (the trial's); libRoadRunner rtol {RR_RTOL:g} "
          f"atol {RR_ATOL:g}; reference: chemohost rtol 1e-10 atol 1e-14")
    t0 = time.perf_counter()
    ours = ch.simulate(cm, P[:a.n], regs, TIMES, CLINICAL, options=opts)
    t_ch = time.perf_counter() - t0
    k = a.peer_n
    ref = ch.simulate(cm, P[:k], regs, TIMES, CLINICAL, options=ch.SolverOptions(rtol=1e-10, atol=1e-14,
                                                                               max_steps=5_000_000)).values
    Y0 = initial_states(cm, P[:k], species)
    rows = {"chemohost": {"n": a.n, "s": t_ch, "pps": a.n / t_ch, "failed": int((ours.status != 0).sum()),
                          "agreement": agreement(ours.values[:k], ref)}}
    for label, stiff in (("libRoadRunner CVODE BDF (default)", True), ("libRoadRunner CVODE Adams", False)):
        for procs in (1, 2):
            res, secs = peer(sbml, species, names, P[:k], Y0, stiff, procs)
            rows[f"{label}, {procs} process{'es' if procs > 1 else ''}"] = {
                "n": k, "s": secs, "pps": k / secs, "failed": failed(res), "agreement": agreement(res, ref)}
    print()
    print("| run | patients | patients/s | chemohost / this | failed patients | max rel. error vs reference: "
          "ANC / NLR / tumour (patients compared) |")
    print("|---|---|---|---|---|---|")
    base = rows["chemohost"]["pps"]
    for name, r in rows.items():
        err, m = r["agreement"]
        e = " / ".join(f"{err[o]:.1e}" for o in CLINICAL) + f" ({m})" if err else "- (0)"
        ratio = "-" if name == "chemohost" else f"{base / r['pps']:.1f}x"
        print(f"| {name} | {r['n']:,} | {r['pps']:,.1f} | {ratio} | {r['failed']} | {e} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
