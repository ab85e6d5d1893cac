"""Randomised replicate in-silico trials: what a trial statistician needs to plan the trial.

``chemohost trial FILE --design randomized --replicates R --per-arm N`` runs R independent
randomised trials.  Unlike the paired design, each arm of each replicate gets *different* virtual
patients, as a real trial allocates them: patient ``r*A*N + a*N + j`` (replicate r, arm a in the
sorted order of arm names, A arms) is simulated only in arm a.  Every replicate is analysed against
the control with the log-rank test and a Cox model (``replicates.py``, vectorised over replicates),
for OS (primary) and PFS.  Reported per experimental arm:

* power: share of replicates with two-sided log-rank p < alpha and benefit (fewer events), with an
  exact (Clopper-Pearson) 95% CI; and the two-sided rejection rate (type-I error under a null arm);
* distribution of the Cox HR and of the difference in KM median OS over replicates;
* power at growing N per arm on the *same* replicates (nested: the first n patients of each arm),
  the N per arm reaching the target power, and Schoenfeld's (1981) N for the pooled HR and event
  share as a cross-check.

Patients are simulated through the same chunk function as the paired design
(:func:`trial_runner.simulate_arm_chunk`), in batches; no Python loop over patients or replicates.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ScenarioError
from .streams import os_exponentials
from .trial_runner import sample_trial_patients, setup_trial, status_labels, trial_manifest
from .trial_spec import OUTPUTS, Trial

#: simulated patient-arms above which a randomised run is refused (memory and time; ~1 GB of parameters)
MAX_PATIENT_ARMS = 500_000
ENDPOINTS = ("os", "pfs")


@dataclass
class RandomizedResult:
    trial: Trial
    patients: pd.DataFrame  # one row per simulated patient (replicate, arm, patient)
    replicates: pd.DataFrame  # one row per replicate x experimental arm x endpoint
    summary: dict
    samples: dict
    timings: dict
    paired_deltas: dict = field(default_factory=dict)  # none in this design (the report's paired figure is off)

    def manifest(self) -> dict:
        m = trial_manifest(self.trial, self.summary["seed"], self.summary["randomized"]["per_arm"], self.timings)
        m["design"] = {"design": "randomized", "replicates": self.summary["randomized"]["replicates"],
                       "per_arm": self.summary["randomized"]["per_arm"]}
        return m


def default_ns(per_arm: int) -> list[int]:
    """A grid of per-arm sizes for the power curve (nested subsets of the replicates)."""
    grid = sorted({max(5, int(round(per_arm * f))) for f in (0.2, 0.35, 0.5, 0.65, 0.8, 1.0)} | {per_arm})
    return [n for n in grid if n <= per_arm]


def run_randomized(trial: Trial, replicates: int, per_arm: int, seed: int | None = None, ns=None,
                   alpha: float = 0.05, target_power: float = 0.8, chunk_size: int | None = None,
                   progress: bool = False, checkpoint=None, executor=None) -> RandomizedResult:
    from .replicates import (cox_batch, km_median_batch, logrank_batch, n_for_power, nested_power, power_summary,
                             schoenfeld_n_per_arm)
    from .scans import scan_schedule
    from .survival import arm_summary, compare_arms

    spec, f = trial.spec, trial.source
    trial.require_fixed_arms("the randomised replicate design")
    if isinstance(replicates, bool) or not isinstance(replicates, (int, np.integer)) or replicates < 1:
        raise ScenarioError(f"--replicates must be a whole number >= 1, got {replicates!r}", file=f, field="replicates")
    if isinstance(per_arm, bool) or not isinstance(per_arm, (int, np.integer)) or per_arm < 2:
        raise ScenarioError(f"--per-arm must be a whole number >= 2, got {per_arm!r}", file=f, field="per_arm")
    if len(trial.arms) < 2:
        raise ScenarioError("a randomised design needs a control and at least one other arm", file=f, field="arms")
    if spec.population.targets:
        raise ScenarioError("population targets (virtual-population selection) are not supported with "
                            "--design randomized; drop population.targets or use the paired design",
                            file=f, field="population.targets")
    A, R, N = len(trial.arms), int(replicates), int(per_arm)
    total = R * A * N
    if total > MAX_PATIENT_ARMS:
        raise ScenarioError(f"{R} replicates x {A} arms x {N} per arm = {total:,} patient simulations exceeds the "
                            f"limit of {MAX_PATIENT_ARMS:,}; use fewer replicates or patients", file=f,
                            field="replicates")
    ns = default_ns(N) if ns is None else sorted({int(x) for x in ns})
    if not ns or ns[0] < 2 or ns[-1] > N:
        raise ScenarioError(f"--ns must be whole numbers between 2 and --per-arm ({N}), got {ns}", file=f, field="ns")
    seed = spec.seed if seed is None else seed
    chunk = chunk_size or spec.chunk_size
    t0 = time.perf_counter()
    st = setup_trial(trial, seed, progress)
    t1 = time.perf_counter()
    names, P, cov, _ = sample_trial_patients(trial, total, seed)
    e_os = os_exponentials(seed, total)
    sched = scan_schedule(trial.scan_model, trial.follow_up_days, seed, np.arange(total))
    order = {a: i for i, a in enumerate(sorted(trial.arms))}  # allocation does not depend on the YAML order
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="patient", desc=f"{spec.name} ({R} replicates)", file=sys.stderr,
                   mininterval=0.5, dynamic_ncols=True)
    rows, samples = [], {}
    keep = min(spec.keep_timecourses, N)
    from .. import __version__
    from ..engine.simulate import engine_id
    from .checkpoint import Checkpoint

    ck = checkpoint({"design": "randomized", "trial_sha256": trial.sha256, "trial": spec.model_dump(mode="json"),
                     "seed": seed, "replicates": R, "per_arm": N, "chunk": chunk, "model_code_hash": st.cm.source_hash,
                     "engine": engine_id(st.cm, st.opts), "chemohost_version": __version__}) \
        if checkpoint else Checkpoint(None, {})
    from .cluster import ChunkTask, InProcess

    ex = executor or InProcess()
    arm_ids = {arm: (np.arange(R)[:, None] * A * N + order[arm] * N + np.arange(N)[None, :]).ravel()
               for arm in trial.arms}
    tasks, got = [], {}
    for a, arm in enumerate(trial.arms):
        ids = arm_ids[arm]
        for s in range(0, ids.size, chunk):
            sel = ids[s:s + chunk]
            done = ck.load(f"arm{a}-{s}")
            if done is None:
                tasks.append(ChunkTask(f"arm{a}-{s}", a, P[sel], sel, sched[sel], e_os[sel],
                                       min(keep, sel.size) if s == 0 else 0))
            else:
                got[f"arm{a}-{s}"] = done
                if bar is not None:
                    bar.update(sel.size)
    for task, (ep, arrays) in ex.run(trial, st, names, tasks):
        arrays = {k: v for k, v in arrays.items() if k.startswith("kept_")}
        got[task.key] = (ck.save(task.key, ep, arrays), arrays)
        if bar is not None:
            bar.set_postfix_str(list(trial.arms)[task.arm], refresh=False)
            bar.update(len(task.ids))
    for a, arm in enumerate(trial.arms):
        ids = arm_ids[arm]
        parts = []
        kept = None
        for s in range(0, ids.size, chunk):
            ep, arrays = got[f"arm{a}-{s}"]
            if s == 0:  # time courses of replicate 0's first patients, for the report
                m = min(keep, ids[s:s + chunk].size)
                kept = {o: np.asarray(arrays.get(f"kept_{o}", np.empty((0, st.times.size))))[:m].copy()
                        for o in OUTPUTS}
            parts.append(ep)
        df = pd.concat(parts, ignore_index=True)
        df.insert(0, "replicate", np.repeat(np.arange(R), N))
        df.insert(1, "arm", arm)
        rows.append(df)
        samples[arm] = (st.times, kept)
    if bar is not None:
        bar.close()
    t2 = time.perf_counter()
    pdf = pd.concat(rows, ignore_index=True)
    cov = cov.drop(columns=[c for c in ("patient",) if c in cov.columns])
    cov.insert(0, "patient", np.arange(total))
    pdf = pdf.merge(cov, on="patient", how="left")
    pdf["arm"] = pd.Categorical(pdf["arm"], categories=list(trial.arms))
    pdf = pdf.sort_values(["replicate", "arm", "patient"], kind="stable").reset_index(drop=True)
    pdf["status"] = status_labels(pdf["status"])
    ok = (pdf["status"].astype(str) == "ok").to_numpy()

    def matrix(arm: str, col: str, dtype=float):
        g = pdf[pdf["arm"] == arm]
        v = g[col].to_numpy(dtype)
        if dtype is float:
            v = np.where(ok[g.index], v, np.nan)  # failed patients are absent from the analysis
        return v.reshape(R, N)

    control = spec.control
    rep_rows, rnd_arms = [], {}
    for arm in trial.arms:
        if arm == control:
            continue
        entry = {}
        for ep in ENDPOINTS:
            Tc, Ec = matrix(control, f"{ep}_months"), matrix(control, f"{ep}_event", bool)
            Tt, Et = matrix(arm, f"{ep}_months"), matrix(arm, f"{ep}_event", bool)
            Tc, Tt = np.where(Tc > 0, Tc, np.nan), np.where(Tt > 0, Tt, np.nan)
            lr, cx = logrank_batch(Tc, Ec, Tt, Et), cox_batch(Tc, Ec, Tt, Et)
            mc, mt = km_median_batch(Tc, Ec), km_median_batch(Tt, Et)
            rep_rows.append(pd.DataFrame({
                "replicate": np.arange(R), "arm": arm, "endpoint": ep, "hr": cx["hr"], "hr_ci_low": cx["hr_ci_low"],
                "hr_ci_high": cx["hr_ci_high"], "cox_converged": cx["converged"], "logrank_z": lr["z"],
                "logrank_p": lr["p"], "median_control_months": mc, "median_arm_months": mt,
                "events_control": np.nansum(np.where(np.isfinite(Tc), Ec, False), axis=1),
                "events_arm": np.nansum(np.where(np.isfinite(Tt), Et, False), axis=1),
                "n_control": np.isfinite(Tc).sum(axis=1), "n_arm": np.isfinite(Tt).sum(axis=1)}))
            ps = power_summary(lr["p"], lr["z"], alpha=alpha)
            curve = nested_power(Tc, Ec, Tt, Et, ns, alpha=alpha)
            nt = n_for_power([c["n"] for c in curve], [c["power"] for c in curve], target=target_power)
            conv = cx["converged"]
            log_hr = float(np.mean(cx["log_hr"][conv])) if conv.any() else float("nan")
            p_event = float(np.nanmean(np.r_[np.where(np.isfinite(Tc), Ec, np.nan).ravel(),
                                             np.where(np.isfinite(Tt), Et, np.nan).ravel()]))
            hr_pooled = float(np.exp(log_hr))
            # power is for the favourable direction (HR < 1): no Schoenfeld N for a pooled HR >= 1
            schoen = (schoenfeld_n_per_arm(hr_pooled, p_event, alpha=alpha, power=target_power)
                      if np.isfinite(hr_pooled) and hr_pooled < 1.0 and p_event > 0 else None)
            hr_ok = cx["hr"][conv]
            both = np.isfinite(mt) & np.isfinite(mc)
            md = mt[both] - mc[both]
            q = (2.5, 25, 50, 75, 97.5)
            entry[ep] = {
                "power": ps["power"], "power_ci": [ps["power_ci_low"], ps["power_ci_high"]],
                "rejection_rate_two_sided": ps["rejection_rate_any_direction"],
                "rejection_ci": [ps["rejection_ci_low"], ps["rejection_ci_high"]],
                "n_replicates": ps["n_replicates"], "n_significant": ps["n_significant"], "n_nan": ps["n_nan"],
                "hr_quantiles": {f"p{k:g}": float(v) for k, v in zip(q, np.quantile(hr_ok, [x / 100 for x in q]))}
                if hr_ok.size else {},
                "median_diff_quantiles": {f"p{k:g}": float(v) for k, v in zip(q, np.quantile(md, [x / 100 for x in q]))}
                if md.size else {},
                "n_median_not_reached": int(R - md.size),
                "power_curve": [{"n_per_arm": c["n"], "power": c["power"], "ci_low": c["power_ci_low"],
                                 "ci_high": c["power_ci_high"], "hr_median": c.get("hr_median")} for c in curve],
                "n_for_target": nt["n_interp_loglinear"], "n_for_target_grid": nt["n_min"],
                "power_curve_monotone": nt["monotone"],
                "pooled_hr": hr_pooled, "event_fraction": p_event, "schoenfeld_n": schoen,
            }
        # the report reads the primary endpoint (OS) at the top level of the arm's entry
        rnd_arms[arm] = {**entry["os"], "pfs": entry["pfs"]}
    pooled = pdf.assign(arm=pdf["arm"].astype(str))
    summary = {"design": "randomized", "control": control, "seed": seed, "arms": {},
               "randomized": {"replicates": R, "per_arm": N, "alpha": alpha, "target_power": target_power,
                              "ns": ns, "primary_endpoint": "os", "allocation": "patient r*A*N + a*N + j in arm a "
                              "(a: sorted arm names), independent patients in every arm and replicate",
                              "arms": rnd_arms},
               "population": {"n_per_arm": N, "replicates": R, "patients_simulated": total}}
    comp = {ep: compare_arms(pooled[ok], control, endpoint=ep) for ep in ENDPOINTS}
    for arm in trial.arms:
        g = pdf[(pdf["arm"] == arm).to_numpy() & ok]
        s_ = arm_summary(g)
        s_["n_run"] = int((pdf["arm"] == arm).sum())
        s_["n_failed"] = s_["n_run"] - int(len(g))
        s_["n_analysed"] = int(len(g))
        s_["os_events"] = int(g["os_event"].sum())
        s_["pfs_events"] = int(g["pfs_event"].sum())
        for ep, hk, pk in (("os", "hr_os_vs_control", "logrank_p"), ("pfs", "hr_pfs_vs_control", "logrank_p_pfs")):
            c = comp[ep].get(arm)
            s_[hk] = [c["hr"], c["hr_ci_low"], c["hr_ci_high"]] if c else [1.0, float("nan"), float("nan")]
            s_[pk] = c["logrank_p"] if c else float("nan")
        s_["n"] = int(s_["n"])
        s_["pooled_over_replicates"] = True
        summary["arms"][arm] = s_
    pdf = pdf.rename(columns={"bor": "best_response", "max_neutropenia_grade": "neutropenia_grade_max",
                              "nlr_d28": "nlr_day28"})
    return RandomizedResult(trial, pdf, pd.concat(rep_rows, ignore_index=True), summary, samples,
                            {"compile_or_load": t1 - t0, "simulate_and_endpoints": t2 - t1,
                             "statistics": time.perf_counter() - t2})


def write_randomized(result: RandomizedResult, out) -> dict:
    """patients.parquet, replicates.parquet, summary.json, report.html, manifest.json -- atomically."""
    import json

    from ..outputs import json_safe, write_atomically
    from ..report.trial_report import render_report
    from .trial_writer import _report_extras

    def write(tmp) -> None:
        result.patients.to_parquet(tmp / "patients.parquet", index=False)
        result.replicates.to_parquet(tmp / "replicates.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(json_safe(result.summary), indent=2))
        manifest = json_safe(result.manifest())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        rep0 = result.patients[result.patients["replicate"] == 0]  # one replicate trial for the patient-level plots
        extras = _report_extras(result)
        extras["methods"]["endpoints"] = [
            f"Randomised replicate design: {result.summary['randomized']['replicates']} independent trials of "
            f"{result.summary['randomized']['per_arm']} different patients per arm; each analysed with the log-rank "
            "test and a Cox model (Efron ties). Power: share of replicates with two-sided p < "
            f"{result.summary['randomized']['alpha']:g} favouring the experimental arm (Clopper-Pearson 95% CI). "
            "Kaplan-Meier curves and the waterfall show replicate 0; the summary table pools all replicates.",
            *extras["methods"]["endpoints"]]
        ctx = {"name": result.trial.spec.name, "description": result.trial.spec.description, "design": "randomized",
               "control": result.summary["control"], "seed": result.summary["seed"], "arms": list(result.trial.arms),
               "version": manifest.get("chemohost_version"), "patients": rep0, "summary": result.summary,
               "samples": result.samples, "manifest": manifest, **extras, "paired_deltas": {}}
        (tmp / "report.html").write_text(render_report(ctx))

    return write_atomically(out, write)
