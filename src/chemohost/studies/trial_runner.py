"""Running a trial: virtual patients through the engine, arm by arm, chunk by chunk.

The paired (counterfactual) design: every arm runs on the *same* virtual patients with the same
per-patient random streams (OS noise, scan days, scan errors, new-lesion noise), in chunks (bounded
memory; full time courses kept only for a sample).  The same seed gives identical
patients.parquet whatever the chunk size or arm order.  :func:`simulate_arm_chunk` is the one
place where patients become endpoint rows; the randomised replicate design uses it too.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import __version__
from ..engine.codegen import compile_model
from ..engine.simulate import STATUS, SimulationResult, SolverOptions, simulate, snapshot_bytes
from ..errors import ChemohostError, ScenarioError
from .streams import os_exponentials
from .trial_spec import OUTPUTS, Trial


@dataclass
class TrialResult:
    trial: Trial
    patients: pd.DataFrame
    summary: dict
    samples: dict
    timings: dict
    paired_deltas: dict = field(default_factory=dict)  # arm -> (n_pairs,) OS difference vs control, months

    def manifest(self) -> dict:
        return trial_manifest(self.trial, self.summary["seed"],
                              int(len(self.patients) / max(len(self.trial.arms), 1)), self.timings)


def trial_manifest(trial: Trial, seed: int, patients_per_arm: int, timings: dict) -> dict:
    from importlib import metadata

    versions = {}
    for pkg in ("numpy", "numba", "scipy", "pandas", "lifelines", "pyarrow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    cm = compile_model(trial.model, trial.spec.solver.closed_form)
    return {"chemohost_version": __version__, "trial": trial.spec.model_dump(mode="json"),
            "trial_file": trial.source, "trial_sha256": trial.sha256,
            "model": trial.model.name, "model_code_hash": cm.source_hash,
            "indication": trial.indication.to_dict() if trial.indication else None,
            "seed": seed, "patients_per_arm": patients_per_arm,
            "timings_s": timings, "python": sys.version.split()[0], "packages": versions}


@dataclass
class TrialSetup:
    """What every chunk of every arm shares: compiled model, solver options, grid, OS link."""

    trial: Trial
    cm: object
    opts: SolverOptions
    times: np.ndarray
    osp: object
    seed: int


def setup_trial(trial: Trial, seed: int, progress: bool = False) -> TrialSetup:
    from .survival import OSLinkParams

    spec = trial.spec
    if progress:
        print(f"compiling model {trial.model.name} (cached after the first run) ...", file=sys.stderr, flush=True)
    cm = compile_model(trial.model, spec.solver.closed_form)
    opts = SolverOptions.from_fields(spec.solver)
    if opts.device == "gpu":
        from ..engine.gpu import check_gpu

        check_gpu()
    fu = trial.follow_up_days
    times = np.unique(np.r_[np.arange(0.0, fu, 1.0), fu])
    ind = trial.indication
    return TrialSetup(trial, cm, opts, times, ind.os_link if ind else OSLinkParams(), seed)


def sample_trial_patients(trial: Trial, n: int, seed: int):
    """``(names, P, covariates, acceptance)`` for patients 0..n-1 of ``trial`` (the indication layer's
    typical values and IIV, the file's parameters, population and perturbations)."""
    from ..population.virtual import sample_population

    spec = trial.spec
    pop = spec.population.model_dump(exclude_none=True)
    targets = pop.pop("targets", None)
    factor = int(pop.pop("candidates_per_patient", 5))
    acceptance = None
    ind = trial.indication
    params = {**(ind.parameters if ind else {}), **spec.parameters}
    cv_over = dict(ind.cvs) if ind else {}
    try:
        if targets:
            from ..population.virtual import TargetDistribution, select_virtual_population

            names, P, cov = sample_population(trial.model, spec.species, pop, n * factor, seed,
                                              parameters=params, cv_overrides=cv_over)
            tds = {col: TargetDistribution.from_dict(d) for col, d in targets.items()}
            idx, acceptance = select_virtual_population(cov, tds, n, seed)
            P, cov = P[idx], cov.iloc[idx].reset_index(drop=True)
        else:
            names, P, cov = sample_population(trial.model, spec.species, pop, n, seed, parameters=params,
                                              cv_overrides=cv_over)
    except ChemohostError as exc:
        raise ScenarioError(str(exc), file=trial.source, field="population") from None
    for k, v in trial.perturbation_overrides.items():
        P[:, names.index(k)] = v
    return names, P, cov, acceptance


#: most memory the first pass's restartable snapshots may take per engine call (larger chunks run in blocks; the
#: second pass copies the rows it restarts, so the peak is up to twice this)
SNAPSHOT_BUDGET_BYTES = 128 * 2**20


def _snapshot_days(regs, scan_days) -> np.ndarray:
    """(N, S) the scan days at which the first pass saves restartable states: those up to 28 days after the
    arm's last planned dose (a progression scan later than that can have doses still due only after long
    delays; such patients are re-simulated from day 0), NaN elsewhere; bounds the snapshots' memory."""
    from ..protocol.dosing import dose_table

    table = dose_table(list(regs))
    last = float(np.max(table.time)) if table.n else -np.inf
    sd = np.asarray(scan_days, dtype=float)
    sd = np.where(sd <= last + 28.0, sd, np.nan)
    keep = np.isfinite(sd).any(axis=0)
    return sd[:, keep]


def simulate_patients(cm, P, regs, times, opts, trial: Trial, seed: int, ids, scan_days):
    """Simulate patients ``ids`` (rows of ``P``) under ``regs`` and read their endpoints as a trial would:
    scans on ``scan_days`` with measurement error, and -- if the protocol stops treatment at progression
    -- a second pass for the patients who progressed while doses were still due, re-simulated with no
    dose from the progression scan on (their course up to that scan is unchanged, so the progression
    itself is too).  Returns ``(result, endpoints frame, number re-simulated)``."""
    from .endpoints import patient_endpoints
    from .scans import take_scans

    stop_at_pd = trial.spec.stop_treatment_at_progression
    # the scan days up to the end of dosing are step boundaries whether or not treatment stops at
    # progression, so the course up to a progression is the same bit for bit in both protocols
    snap_days = _snapshot_days(regs, scan_days)
    n = P.shape[0]
    if stop_at_pd and n > 1 and opts.device == "cpu":  # (a GPU launch takes all patients at once)
        per = snapshot_bytes(cm, regs, snap_days.shape[1])
        block = max(1, SNAPSHOT_BUDGET_BYTES // max(per, 1))
        if block < n:  # bound the snapshots' memory: blocks of patients (patients are independent)
            parts = [simulate_patients(cm, P[s:s + block], regs, times, opts, trial, seed, np.asarray(ids)[s:s + block],
                                       scan_days[s:s + block]) for s in range(0, n, block)]
            res = parts[0][0]
            for name in SimulationResult.PATIENT_ARRAYS:
                setattr(res, name, np.concatenate([getattr(p[0], name) for p in parts]))
            return res, pd.concat([p[1] for p in parts], ignore_index=True), sum(p[2] for p in parts)

    def endpoints(r):
        sc = take_scans(trial.scan_model, times, r.output("tumour_total"), r.output("met_burden"), scan_days, seed, ids)
        return patient_endpoints(r, assess_every_days=trial.assess_days, lab_every_days=trial.lab_days, scans=sc)

    res = simulate(cm, P, regs, times, OUTPUTS, options=opts, snapshot_days=snap_days, keep_snapshots=stop_at_pd)
    ep = endpoints(res)
    k_re = 0
    if stop_at_pd and res.dose_times is not None and res.dose_times.size:
        pdd = ep["pd_day"].to_numpy(float)
        with np.errstate(invalid="ignore"):
            due_after = (res.dose_times >= pdd[:, None] - 1e-9) & np.isin(res.dose_status, (1, 2))
        redo = np.isfinite(pdd) & due_after.any(axis=1) & (res.status == 0)
        k_re = int(redo.sum())
        if k_re:
            # the second pass restarts each patient from the engine's snapshot at its progression scan (its
            # course up to there is the first pass's); from day 0 where no snapshot was taken at that day
            rows = np.flatnonzero(redo)
            slot = res.snapshots.slot(pdd[rows], rows) if res.snapshots is not None else np.full(rows.size, -1)
            for part, resume in ((slot >= 0, True), (slot < 0, False)):
                if not part.any():
                    continue
                r = rows[part]
                r2 = simulate(cm, P[r], regs, times, OUTPUTS, options=opts, stop_days=pdd[r],
                              resume_from=(res, r, slot[part]) if resume else None,
                              snapshot_days=None if resume else snap_days[r], keep_snapshots=False)
                for name in SimulationResult.PATIENT_ARRAYS:
                    getattr(res, name)[r] = getattr(r2, name)
            ep = endpoints(res)
    res.snapshots = None  # (large; not needed once the second pass is done)
    ep["patient"] = np.asarray(ids)
    return res, ep, k_re


def simulate_arm_chunk(st: TrialSetup, P, regs, ids, scan_days, e_os):
    """Endpoint rows (one per patient ``ids``) of one arm: scans/RECIST/PFS, linked OS, PFS with death,
    interval-censored PFS bounds.  Returns ``(result, endpoints frame, number re-simulated)``."""
    from .survival import linked_os, pfs_interval_bounds, progression_or_death

    trial = st.trial
    res, ep, k_re = simulate_patients(st.cm, P, regs, st.times, st.opts, trial, st.seed, ids, scan_days)
    os_m, os_e = linked_os(st.osp, st.times, ep["tsr_w8"].to_numpy(), ep["sld0_mm"].to_numpy(),
                           res.output("NLR"), e_os, follow_up_days=trial.follow_up_days)
    ep["os_months"], ep["os_event"] = os_m, os_e
    pfs_m, pfs_e = progression_or_death(ep["pfs_months"], ep["pfs_event"], os_m, os_e)
    ep["pfs_months"], ep["pfs_event"] = pfs_m, pfs_e
    ep["pfs_ic_lower_months"], ep["pfs_ic_upper_months"] = pfs_interval_bounds(
        pfs_m, pfs_e, os_m, os_e, ep["pd_previous_scan_day"])
    y = res.output("tumour_total")
    with np.errstate(invalid="ignore", divide="ignore"):
        ep["best_tumour_change_pct"] = 100 * (np.cbrt(np.fmin.reduce(y, axis=1) / y[:, 0]) - 1)
    from .endpoint_registry import MARKER_DAYS, MARKER_OUTPUTS

    idx = np.searchsorted(st.times, np.asarray(MARKER_DAYS, dtype=float))
    idx = np.minimum(idx, st.times.size - 1)
    for o in MARKER_OUTPUTS:
        v = res.output(o)
        for d, j in zip(MARKER_DAYS, idx):
            ep[f"mk_{o}_d{d}"] = v[:, j] if st.times[j] == d else np.nan
    return res, ep, k_re


def simulate_twin_guided_chunk(st: TrialSetup, base, P, names, regs, ids, scan_days, e_os, policy):
    """A twin-guided arm's chunk: the twin decides for each patient (:func:`twin_guided.decide`), then each
    action's patients run with the arm's regimens plus what the action adds; rows back in patient order."""
    from .twin_guided import GroupedOutputs, added_regimens, decide, end_of_course

    ids = np.asarray(ids)
    dec = decide(st, base, P, names, regs, ids, policy)
    acts = dec["twin_action"].to_numpy()
    out = GroupedOutputs(len(ids), st.times.size, OUTPUTS)
    parts, k_re = [], 0
    for action in dict.fromkeys(acts):
        m = acts == action
        regs_a = list(regs) + added_regimens(action, policy.decision_day, end_of_course(regs))
        res, ep, k = simulate_arm_chunk(st, P[m], regs_a, ids[m], scan_days[m], e_os[m])
        for o in OUTPUTS:
            out.values[o][m] = res.output(o)
        parts.append(ep)
        k_re += k
    ep = pd.concat(parts, ignore_index=True).set_index("patient").loc[ids].reset_index()
    ep = ep[[c for c in ep.columns if c != "patient"] + ["patient"]].merge(dec, on="patient", how="left")
    return out, ep, k_re


def status_labels(codes) -> pd.Categorical:
    return pd.Categorical(pd.Series(codes).map(lambda c: STATUS.get(int(c), f"code_{int(c)}")))


def run_trial(trial: Trial, patients: int | None = None, seed: int | None = None, chunk_size: int | None = None,
              progress: bool = False, checkpoint=None, executor=None) -> TrialResult:
    """Run every arm of ``trial`` on the same virtual patients; ``progress`` shows a bar on stderr;
    ``executor``: where the chunks run (:mod:`chemohost.studies.cluster`; default in this process).

    ``checkpoint``: a callable ``(fingerprint) -> studies.checkpoint.Checkpoint`` that records every
    finished chunk (and reads back those of an interrupted run when resuming)."""
    from .scans import scan_schedule
    from .trial_stats import summarise_paired

    spec = trial.spec
    n = spec.patients if patients is None else patients
    seed = spec.seed if seed is None else seed
    chunk = chunk_size or spec.chunk_size
    if n < 1:
        raise ScenarioError("number of patients per arm must be >= 1", file=trial.source, field="patients")
    t0 = time.perf_counter()
    st = setup_trial(trial, seed, progress)
    t1 = time.perf_counter()
    names, P, cov, acceptance = sample_trial_patients(trial, n, seed)
    times = st.times
    rows, samples = [], {}
    keep = min(spec.keep_timecourses, n)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * len(trial.arms), unit="patient", desc=spec.name, file=sys.stderr,
                   mininterval=0.5, dynamic_ncols=True)
        # finer chunks for a smooth bar; results do not depend on the chunk size (tested)
        chunk = min(chunk, max(64, -(-n // 10)))
    e_os = os_exponentials(seed, n)  # the same draws in every arm (paired design)
    sched = scan_schedule(trial.scan_model, trial.follow_up_days, seed, np.arange(n))  # same scan days in every arm
    from ..engine.simulate import engine_id
    from .checkpoint import Checkpoint

    ck = checkpoint({"design": "paired", "trial_sha256": trial.sha256, "trial": spec.model_dump(mode="json"),
                     "seed": seed, "patients": n, "chunk": chunk, "model_code_hash": st.cm.source_hash,
                     "engine": engine_id(st.cm, st.opts), "chemohost_version": __version__}) \
        if checkpoint else Checkpoint(None, {})
    from .cluster import ChunkTask, InProcess

    ex = executor or InProcess()
    tasks, got = [], {}
    # a block of patients in every arm, then the next block: an in-process run decomposes each block's PK once
    # (engine.simulate._linear_decomposition keeps recent ones); results do not depend on the order
    for s in range(0, n, chunk):
        for a in range(len(trial.arms)):
            e = min(n, s + chunk)
            key = f"arm{a}-{s}"
            done = ck.load(key)
            if done is None:
                tasks.append(ChunkTask(key, a, P[s:e], np.arange(s, e), sched[s:e], e_os[s:e],
                                       max(0, min(keep, e) - s)))
            else:
                got[key] = done
                if bar is not None:
                    bar.update(e - s)
    for task, (ep, arrays) in ex.run(trial, st, names, tasks):
        got[task.key] = (ck.save(task.key, ep, arrays), arrays)
        if bar is not None:
            bar.set_postfix_str(list(trial.arms)[task.arm], refresh=False)
            bar.update(len(task.ids))
    n_resim = 0
    for a, arm in enumerate(trial.arms):
        kept = {o: np.full((keep, times.size), np.nan) for o in OUTPUTS}
        parts = []
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            m = max(0, min(keep, e) - s)
            ep, arrays = got[f"arm{a}-{s}"]
            n_resim += int(arrays["k_re"][0])
            if m:
                for o in OUTPUTS:
                    kept[o][s:s + m] = arrays[f"kept_{o}"]
            parts.append(ep)
        df = pd.concat(parts, ignore_index=True)
        df.insert(1, "arm", arm)
        rows.append(df)
        samples[arm] = (times, kept)
    if bar is not None:
        bar.close()
    t2 = time.perf_counter()
    pdf = pd.concat(rows, ignore_index=True)
    covs = cov.drop(columns=[c for c in ("patient",) if c in cov.columns])
    covs.insert(0, "patient", np.arange(n))
    pdf = pdf.merge(covs, on="patient", how="left")
    pdf["arm"] = pd.Categorical(pdf["arm"], categories=list(trial.arms))
    pdf = pdf.sort_values(["arm", "patient"], kind="stable").reset_index(drop=True)
    pdf["status"] = status_labels(pdf["status"])
    summary, deltas = summarise_paired(pdf, trial, seed)
    summary["population"] = {"n_per_arm": n, "selection_acceptance_rate": acceptance}
    summary["patient_arms_resimulated_after_progression"] = n_resim
    if trial.twin_guided:
        from dataclasses import asdict

        tg = {}
        for arm, pol in trial.twin_guided.items():
            d = pdf[pdf["arm"] == arm]
            tg[arm] = {"policy": asdict(pol), "actions": {str(k): int(v) for k, v in
                                                          d["twin_action"].value_counts().items()},
                       "p_il1_driven_mean": float(d["twin_p_il1_driven"].mean())}
        summary["twin_guided"] = tg
    if ck.resumed:
        summary["resumed_chunks"] = ck.resumed
    pdf = pdf.rename(columns={"bor": "best_response", "max_neutropenia_grade": "neutropenia_grade_max",
                              "nlr_d28": "nlr_day28"})
    return TrialResult(trial, pdf, summary, samples,
                       {"compile_or_load": t1 - t0, "simulate_and_endpoints": t2 - t1,
                        "statistics": time.perf_counter() - t2},
                       paired_deltas=deltas)
