"""Throughput benchmark: chemohost's engine against libRoadRunner on the exported SBML of the same model.

Model ``host_response`` (the full host-response model, human), the pancreatic trial's virtual population
(``scenarios/trial_pancreatic_il1_blockade.yaml``: per-patient BSA, weight, creatinine clearance and
log-normal inter-individual variability), gemcitabine 1000 mg/m2 as a 30-min infusion on days 1, 8, 15
every 28 days x 6 cycles (18 doses, 36 dose events), daily outputs over 168 days.  The label's
dose-modification rule is off (SBML cannot express it), so both engines solve the same problem.

The peer is what an SBML user writes: the SBML exported once (``chemohost export sbml``), then per
patient ``resetAll()``, the patient's parameters (BSA included: the t = 0 dose fires at 1e-9 day, after
the parameters are set, so it is the patient's dose) and the patient's baseline species values, then
``simulate``, at libRoadRunner's default tolerances (rtol 1e-6, atol 1e-12).  Both of libRoadRunner's CVODE
modes are timed: the default stiff BDF, and non-stiff Adams; and COPASI's deterministic (LSODA) time
course at its default tolerances (rtol 1e-6, atol 1e-12), the model's parameters and baseline set as
initial values per patient.  Then libRoadRunner BDF and COPASI again with the one setting README recommends
for the export, an absolute tolerance of 1e-30 (``PEER_ATOL``).  Each peer runs in one process and in a pool of
2 processes (one per core).  chemohost runs at the trial's tolerances (rtol 1e-4, atol 1e-8) on all cores.

Prints patients/s of each, failed patients of each, and the agreement on the clinical outputs (ANC, NLR,
tumour size) of chemohost and of each peer mode with a tight chemohost reference (rtol 1e-10) on the patients
it completed, apart for the patients whose marrow the model drives below 1e-12 of baseline (``MARROW_FLOOR``).

    python benchmarks/throughput.py              # N = 200 (peer) and 2,000 (chemohost)  (~19 min on 2 cores)
    python benchmarks/throughput.py --peer-n 50 --peers rr-bdf,copasi  # shorter
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
from chemohost.engine.simulate import initial_states
from chemohost.studies.trial import Trial
from chemohost.studies.trial_runner import sample_trial_patients, setup_trial

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml"
TIMES = np.arange(0, 169.0)
TIMES[1:] -= 0.0013  # output samples off the exact event times (a peer reports pre/post ambiguously)
DAYS = np.arange(0, 169.0)  # COPASI's uniform output grid (the infusions change no state at their start/stop)
CLINICAL = ["ANC", "NLR", "tumour_total"]
#: marrow progenitor compartments (relative to baseline) and the level below which a peer at its default
#: absolute tolerance (1e-12) no longer resolves them: a patient whose marrow the model drives below it (the
#: benchmark applies no dose rule) is scored apart
MARROW, MARROW_FLOOR = ["hspc", "gmp", "mdp", "clp"], 1e-12
#: the absolute tolerance README recommends for running the export in a peer (the marrow of some patients falls
#: to 1e-40 of baseline and regrows); timed as peers of its own beside the defaults
PEER_ATOL = 1e-30
PEERS = ("rr-bdf", "rr-adams", "copasi", "rr-bdf-atol", "copasi-atol")

_peer = None  # this process's peer: (simulate function, its context, species, parameter names)


def _rr_worker_init(sbml, species, names, stiff, atol=None):
    global _peer
    import roadrunner

    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_FATAL)
    rr = roadrunner.RoadRunner(sbml)
    rr.integrator.stiff = bool(stiff)  # tolerances: libRoadRunner's defaults unless atol is given
    if atol is not None:
        rr.integrator.absolute_tolerance = atol
    rr.integrator.maximum_num_steps = 200000
    rr.timeCourseSelections = ["time"] + CLINICAL
    _peer = (_rr_simulate, rr, species, names)


def _rr_simulate(rr, species, names, p, y0):
    rr.resetAll()
    for name, value in zip(names, p):
        rr[name] = float(value)
    for s, v in zip(species, y0):  # the patient's baseline (initial values that depend on parameters)
        rr[s] = float(v)
    try:
        return np.array(rr.simulate(times=list(TIMES)))[:, 1:]
    except RuntimeError:  # CVODE failure for this patient: counted, not fatal
        return np.full((TIMES.size, len(CLINICAL)), np.nan)


def _copasi_worker_init(sbml, species, names, _stiff=None, atol=None):
    """COPASI's deterministic time course (LSODA, default tolerances) on the same SBML."""
    global _peer
    import COPASI

    if _peer is not None and _peer[0] is _copasi_simulate:  # this process's previous COPASI model
        COPASI.CRootContainer.removeDatamodel(_peer[1][1])
    dm = COPASI.CRootContainer.addDatamodel()
    if not dm.importSBMLFromString(sbml):
        raise SystemExit("COPASI could not import the exported SBML")
    m = dm.getModel()
    values = {m.getModelValue(k).getSBMLId(): m.getModelValue(k) for k in range(m.getNumModelValues())}
    metabs = {m.getMetabolite(k).getSBMLId(): m.getMetabolite(k) for k in range(m.getNumMetabs())}
    task = dm.getTask("Time-Course")
    task.setMethodType(COPASI.CTaskEnum.Method_deterministic)
    if atol is not None:
        task.getMethod().getParameter("Absolute Tolerance").setValue(atol)
    prob = task.getProblem()
    prob.setOutputStartTime(0.0)
    prob.setDuration(float(DAYS[-1]))
    prob.setStepNumber(DAYS.size - 1)  # COPASI reports on a uniform grid: at DAYS, not TIMES
    prob.setTimeSeriesRequested(True)
    _peer = (_copasi_simulate, (COPASI, dm, m, task, values, metabs), species, names)


def _copasi_simulate(ctx, species, names, p, y0):
    COPASI, dm, m, task, values, metabs = ctx
    for name, value in zip(names, p):
        if name in values:
            values[name].setInitialValue(float(value))
    for s, v in zip(species, y0):
        if s in metabs and not metabs[s].isFixed():
            metabs[s].setInitialConcentration(float(v))
    m.applyInitialValues()
    if not task.process(True):
        return np.full((DAYS.size, len(CLINICAL)), np.nan)
    ts = task.getTimeSeries()
    cols = {ts.getSBMLId(j, dm): j for j in range(ts.getNumVariables())}
    if ts.getRecordedSteps() != DAYS.size:
        return np.full((DAYS.size, len(CLINICAL)), np.nan)
    return np.array([[ts.getConcentrationData(i, cols[o]) for o in CLINICAL] for i in range(DAYS.size)])


def _peer_run(args):
    p, y0 = args
    fn, ctx, species, names = _peer
    return fn(ctx, species, names, p, y0)


def peer(sbml, species, names, P, Y0, stiff, processes, init_fn=None, atol=None):
    """(results, seconds) of the peer's loop, excluding its one-off SBML load and JIT."""
    init_fn = init_fn or _rr_worker_init
    args = list(zip(P, Y0))
    init = (sbml, species, names, stiff, atol)
    if processes == 1:
        init_fn(*init)
        t0 = time.perf_counter()
        res = [_peer_run(a) for a in args]
        return np.stack(res), time.perf_counter() - t0
    with mp.get_context("fork").Pool(processes, init_fn, init) as pool:
        pool.map(_peer_run, args[:processes], chunksize=1)  # workers loaded
        t0 = time.perf_counter()
        res = pool.map(_peer_run, args, chunksize=max(1, len(args) // (8 * processes)))
        return np.stack(res), time.perf_counter() - t0


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


def scored(res, ref, kept, n, secs):
    """A row of the table: speed, failures (all, and among patients whose marrow the model keeps above
    MARROW_FLOOR), agreement on the patients with and without such a marrow collapse."""
    return {"n": n, "s": secs, "pps": n / secs, "failed": failed(res), "failed_kept": failed(res[kept]),
            "agreement": agreement(res[kept], ref[kept]), "agreement_deep": agreement(res[~kept], ref[~kept])}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer-n", type=int, default=200, help="patients for the libRoadRunner loops")
    ap.add_argument("--n", type=int, default=2000, help="patients for chemohost's throughput")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"comma-separated peers to time: {', '.join(PEERS)} (default: all)")
    a = ap.parse_args()
    a.peers = {x.strip() for x in a.peers.split(",") if x.strip()}
    unknown = a.peers - set(PEERS)
    if unknown:
        ap.error(f"--peers: unknown {sorted(unknown)}; allowed: {', '.join(PEERS)}")
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
          f"libroadrunner {roadrunner.__version__}, python-copasi {_version('python-copasi')}; {os.cpu_count()} CPUs; "
          f"{sys.platform}")
    print(f"model host_response: {len(species)} species ({len(cm.ode_species)} integrated, {len(cm.lin_species)} "
          f"closed-form); pancreatic trial population (BSA {bsa.min():.2f}-{bsa.max():.2f} m2); "
          f"gemcitabine 1000 mg/m2 x 18 doses (36 dose events) over 168 days, {TIMES.size} output times")
    print(f"tolerances: chemohost rtol {opts.rtol:g} atol {opts.atol:g} (the trial's); libRoadRunner and COPASI at "
          "their defaults (rtol 1e-6, atol 1e-12); reference: chemohost rtol 1e-10 atol 1e-14")
    t0 = time.perf_counter()
    ours = ch.simulate(cm, P[:a.n], regs, TIMES, CLINICAL, options=opts)
    t_ch = time.perf_counter() - t0
    k = a.peer_n
    tight = ch.SolverOptions(rtol=1e-10, atol=1e-14, max_steps=5_000_000)
    ref = ch.simulate(cm, P[:k], regs, TIMES, CLINICAL, options=tight).values
    Y0 = initial_states(cm, P[:k])  # columns in cm.model.species order, as `species`
    fine = np.linspace(0.0, TIMES[-1], int(TIMES[-1]) * 24 + 1)  # hourly: the depth of each marrow nadir
    depth = ch.simulate(cm, P[:k], regs, fine, MARROW, options=tight).values.min(axis=(1, 2))
    kept = depth >= MARROW_FLOOR
    print(f"{(~kept).sum()} of the {k} peer patients have a marrow progenitor compartment below {MARROW_FLOOR:g} of "
          f"baseline at some time (deepest {depth.min():.1e}; no dose rule is applied)")
    rows = {"chemohost": {**scored(ours.values[:k], ref, kept, a.n, t_ch), "failed": int((ours.status != 0).sum())}}
    peers = [("rr-bdf", "libRoadRunner CVODE BDF (default)", True, _rr_worker_init, ref, None),
             ("rr-adams", "libRoadRunner CVODE Adams", False, _rr_worker_init, ref, None),
             ("rr-bdf-atol", f"libRoadRunner CVODE BDF, absolute_tolerance {PEER_ATOL:g}", True, _rr_worker_init, ref,
              PEER_ATOL)]
    if {"copasi", "copasi-atol"} & a.peers:  # COPASI reports on its own uniform grid: the reference at those times
        ref_days = ch.simulate(cm, P[:k], regs, DAYS, CLINICAL, options=tight).values
        peers += [("copasi", "COPASI LSODA", None, _copasi_worker_init, ref_days, None),
                  ("copasi-atol", f"COPASI LSODA, absolute tolerance {PEER_ATOL:g}", None, _copasi_worker_init,
                   ref_days, PEER_ATOL)]
    for key, label, stiff, init_fn, reference, atol in peers:
        if key not in a.peers:
            continue
        for procs in (1, 2):
            res, secs = peer(sbml, species, names, P[:k], Y0, stiff, procs, init_fn, atol)
            rows[f"{label}, {procs} process{'es' if procs > 1 else ''}"] = scored(res, reference, kept, k, secs)
    print()
    print(f"| run | patients | patients/s | chemohost / this | failed patients: all / marrow kept >= {MARROW_FLOOR:g} | "
          f"max rel. error vs reference, ANC / NLR / tumour (patients compared): marrow kept >= {MARROW_FLOOR:g} | "
          f"marrow below {MARROW_FLOOR:g} |")
    print("|---|---|---|---|---|---|---|")
    base = rows["chemohost"]["pps"]

    def fmt(agree):
        err, m = agree
        return " / ".join(f"{err[o]:.1e}" for o in CLINICAL) + f" ({m})" if err else "- (0)"

    for name, r in rows.items():
        ratio = "-" if name == "chemohost" else f"{base / r['pps']:.1f}x"
        print(f"| {name} | {r['n']:,} | {r['pps']:,.1f} | {ratio} | {r['failed']} / {r['failed_kept']} | "
              f"{fmt(r['agreement'])} | {fmt(r['agreement_deep'])} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
