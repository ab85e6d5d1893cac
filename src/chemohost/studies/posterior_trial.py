"""Posterior-predictive trials: ``chemohost trial FILE --posterior FIT_DIR --draws K``.

The trial runs once per posterior draw of a ``chemohost fit`` (K draws chosen without replacement,
seeded), with each draw's values as the population's typical values: a patient's parameter is
``draw / typical x`` that patient's own value (the same inter-individual deviation, covariates and
random streams in every draw, so draws differ only by the uncertain parameters: common random
numbers across draws as across arms).  All K x N virtual patients of an arm go through the engine
in chunks of the same batch call (no loop over draws in the simulation).

What is reported, per arm against the control, for each draw: the paired RMST difference at 12 and
24 months (Kaplan-Meier on the same patients), the Cox HR, the mean individual OS difference; and per
arm: ORR, grade >= 3 neutropenia, median OS, median NLR at day 28.  Across draws:

* the **posterior-predictive credible interval** (2.5-97.5% of the per-draw values) and P(benefit);
* how much of the spread is Monte-Carlo noise of N virtual patients rather than parameter
  uncertainty: the mean within-draw bootstrap variance (patients resampled, the same indices in
  both arms) over the between-draw variance;
* **which uncertain parameters drive it**: for each, the first-order share of the between-draw
  variance, estimated as the R^2 of a quadratic regression of the per-draw effect on that
  parameter (on its fit scale), with a bootstrap 95% interval over draws, and Spearman's rho.
  (SALib's given-data estimators -- delta/Borgonovo -- were tried: at K ~ 50 draws they merge bins
  and warn of bias, so the regression share is reported; it is exact for an additive effect.)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ScenarioError
from ..outputs import json_safe
from .trial_spec import DAYS_PER_MONTH, Trial

EFFECTS = ("rmst_diff_12", "rmst_diff_24", "hr", "mean_os_gain")
ARM_METRICS = ("orr", "neutropenia_g3plus", "median_os_months", "nlr_day28_median", "best_tumour_change_median")


@dataclass
class PosteriorTrialResult:
    trial: Trial
    fit_folder: str
    fit_manifest: dict
    parameters: list[str]
    scales: dict
    draws: pd.DataFrame  # K rows: draw (index in the fit's posterior.parquet) + parameter values
    patients: pd.DataFrame  # K x N x arms rows: draw, patient, arm, endpoints
    per_draw: pd.DataFrame  # K x arms rows: draw, arm, parameter values, arm metrics, effects vs control
    summary: dict
    timings: dict
    notes: list[str] = field(default_factory=list)


def _check(trial: Trial, posterior) -> None:
    if posterior.model != trial.model.name or posterior.species != trial.spec.species:
        raise ScenarioError(f"the fit in {posterior.folder} is for model '{posterior.model}' ({posterior.species}); the "
                            f"trial uses '{trial.model.name}' ({trial.spec.species})", file=trial.source,
                            field="model")
    fixed = sorted(set(posterior.parameters) & (set(trial.spec.parameters) | set(trial.perturbation_overrides)))
    if fixed:
        raise ScenarioError(f"the trial fixes {', '.join(fixed)}, which the posterior of {posterior.folder} samples; "
                            "remove them from 'parameters'/'perturbations' to run over the posterior",
                            file=trial.source, field="parameters")
    if not posterior.parameters:
        raise ScenarioError(f"the fit in {posterior.folder} estimated no model parameter (only noise parameters); "
                            "nothing to propagate", file=trial.source, field="posterior")


def _typical(trial: Trial, names: list[str]) -> np.ndarray:
    from ..api import parameter_vector

    ind = trial.indication
    params = {**(ind.parameters if ind else {}), **trial.spec.parameters}
    _, typical, _ = parameter_vector(trial.model, trial.spec.species, params)
    return typical


def run_posterior_trial(trial: Trial, posterior, draws: int, patients: int | None = None, seed: int | None = None,
                        chunk_size: int | None = None, progress: bool = False, n_boot: int = 200,
                        checkpoint=None, executor=None) -> PosteriorTrialResult:
    from .scans import scan_schedule
    from .streams import os_exponentials
    from .trial_runner import sample_trial_patients, setup_trial, status_labels

    _check(trial, posterior)
    trial.require_fixed_arms("posterior-predictive trials")
    spec = trial.spec
    n = spec.patients if patients is None else int(patients)
    seed = spec.seed if seed is None else int(seed)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ScenarioError(f"--draws must be a whole number >= 2, got {draws!r}", file=trial.source, field="draws")
    if n < 1:
        raise ScenarioError("number of patients per arm must be >= 1", file=trial.source, field="patients")
    chunk = chunk_size or spec.chunk_size
    sel = posterior.select(draws, seed)
    t0 = time.perf_counter()
    st = setup_trial(trial, seed, progress)
    t1 = time.perf_counter()
    names, P0, cov, _ = sample_trial_patients(trial, n, seed)
    typical = _typical(trial, names)
    cols = [names.index(p) for p in posterior.parameters]
    V = sel[posterior.parameters].to_numpy(float)  # (K, q) draws
    K = V.shape[0]
    e_os = os_exponentials(seed, n)
    sched = scan_schedule(trial.scan_model, trial.follow_up_days, seed, np.arange(n))
    total = K * n
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total * len(trial.arms), unit="patient", desc=f"{spec.name} x {K} draws", file=sys.stderr,
                   mininterval=0.5, dynamic_ncols=True)
    from .. import __version__
    from ..engine.simulate import engine_id
    from .checkpoint import Checkpoint

    ck = checkpoint({"design": "posterior", "trial_sha256": trial.sha256, "trial": spec.model_dump(mode="json"),
                     "seed": seed, "patients": n, "chunk": chunk, "draws": sel["draw"].tolist(),
                     "posterior": posterior.manifest.get("problem_sha256"), "model_code_hash": st.cm.source_hash,
                     "engine": engine_id(st.cm, st.opts), "chemohost_version": __version__}) \
        if checkpoint else Checkpoint(None, {})
    from .cluster import ChunkTask, InProcess

    ex = executor or InProcess()
    tasks, got, draw_of = [], {}, {}
    draw_ids = sel["draw"].to_numpy()
    for a, arm in enumerate(trial.arms):
        for s in range(0, total, chunk):
            e = min(total, s + chunk)
            g = np.arange(s, e)
            k, i = g // n, g % n
            key = f"arm{a}-{s}"
            done = ck.load(key)
            if done is None:
                P = P0[i].copy()
                for c, j in enumerate(cols):
                    P[:, j] = V[k, c] if typical[j] == 0 else P0[i, j] * (V[k, c] / typical[j])
                tasks.append(ChunkTask(key, a, P, i, sched[i], e_os[i]))
                draw_of[key] = draw_ids[k]
            else:
                got[key] = done[0]
                if bar is not None:
                    bar.update(e - s)
    for task, (ep, _) in ex.run(trial, st, names, tasks):
        ep.insert(0, "draw", draw_of[task.key])
        got[task.key] = ck.save(task.key, ep)
        if bar is not None:
            bar.set_postfix_str(list(trial.arms)[task.arm], refresh=False)
            bar.update(len(task.ids))
    rows = []
    for a, arm in enumerate(trial.arms):
        df = pd.concat([got[f"arm{a}-{s}"] for s in range(0, total, chunk)], ignore_index=True)
        df.insert(2, "arm", arm)
        rows.append(df)
    if bar is not None:
        bar.close()
    t2 = time.perf_counter()
    pdf = pd.concat(rows, ignore_index=True)
    pdf["arm"] = pd.Categorical(pdf["arm"], categories=list(trial.arms))
    pdf["status"] = status_labels(pdf["status"])
    pdf = pdf.rename(columns={"bor": "best_response", "max_neutropenia_grade": "neutropenia_grade_max",
                              "nlr_d28": "nlr_day28"})
    scales = {p: (posterior.manifest.get("parameters", {}).get(p, {}) or {}).get("scale", "log10")
              for p in posterior.parameters}
    per_draw = per_draw_statistics(pdf, trial, sel, posterior.parameters, n_boot, seed)
    summary = summarise(per_draw, trial, posterior.parameters, scales, seed)
    summary.update({"draws": K, "patients_per_arm": n, "seed": seed, "fit_folder": str(posterior.folder),
                    "fit_problem": posterior.manifest.get("problem_file"),
                    "fit_problem_sha256": posterior.manifest.get("problem_sha256")})
    n_failed = int((pdf["status"].astype(str) != "ok").sum())
    notes = []
    if n_failed:
        notes.append(f"{n_failed} of {len(pdf)} patient simulations failed; they are excluded pairwise")
    summary["n_failed"] = n_failed
    if ck.resumed:
        summary["resumed_chunks"] = ck.resumed
    return PosteriorTrialResult(trial, str(posterior.folder), posterior.manifest, posterior.parameters, scales, sel,
                                pdf, per_draw, summary,
                                {"compile_or_load": t1 - t0, "simulate_and_endpoints": t2 - t1,
                                 "statistics": time.perf_counter() - t2}, notes)


def per_draw_statistics(pdf: pd.DataFrame, trial: Trial, sel: pd.DataFrame, params: list[str], n_boot: int,
                        seed: int) -> pd.DataFrame:
    """One row per (draw, arm): the arm's metrics and, for non-control arms, paired effects vs control."""
    from .replicates import cox_batch, km_median_batch
    from .survival import paired_rmst

    control = trial.spec.control
    fu = trial.follow_up_days / DAYS_PER_MONTH
    rng = np.random.default_rng(seed + 7)
    out = []
    for d, g in pdf.groupby("draw", sort=True):
        pv = sel.loc[sel["draw"] == d, params].iloc[0].to_dict()
        arms = {a: x.set_index("patient").sort_index() for a, x in g.groupby("arm", observed=True)}
        ctrl = arms[control]
        n = len(ctrl)
        idx = rng.integers(0, n, size=(n_boot, n))
        for arm in trial.arms:
            a = arms[arm]
            ok = a["status"].astype(str) == "ok"
            row = {"draw": int(d), "arm": arm, **pv, "n_analysed": int(ok.sum())}
            aa = a[ok]
            row["orr"] = float(aa["best_response"].astype(str).isin(["CR", "PR"]).mean()) if len(aa) else np.nan
            row["neutropenia_g3plus"] = float((aa["neutropenia_grade_max"] >= 3).mean()) if len(aa) else np.nan
            row["median_os_months"] = float(km_median_batch(aa["os_months"].to_numpy(float)[None],
                                                            aa["os_event"].to_numpy(bool)[None])[0]) if len(aa) else np.nan
            row["nlr_day28_median"] = float(aa["nlr_day28"].median()) if "nlr_day28" in aa else np.nan
            row["best_tumour_change_median"] = float(aa["best_tumour_change_pct"].median()) \
                if "best_tumour_change_pct" in aa else np.nan
            if arm != control:
                both = ok & (ctrl["status"].astype(str) == "ok")
                tc, ec = ctrl["os_months"].to_numpy(float), ctrl["os_event"].to_numpy(bool)
                ta, ea = a["os_months"].to_numpy(float), a["os_event"].to_numpy(bool)
                m = both.to_numpy()
                for tau in (12.0, 24.0):
                    if tau > fu + 1e-9:  # past the follow-up: not estimable (the paired trial restricts it)
                        row[f"rmst_diff_{tau:g}"] = row[f"rmst_diff_{tau:g}_mc_se"] = np.nan
                        continue
                    if m.all():
                        rc, ra, boot = paired_rmst(tc, ec, ta, ea, idx, [tau])
                    else:  # failed patients: drop pairs (bootstrap on the analysable pairs)
                        j = rng.integers(0, m.sum(), size=(n_boot, int(m.sum())))
                        rc, ra, boot = paired_rmst(tc[m], ec[m], ta[m], ea[m], j, [tau])
                    row[f"rmst_diff_{tau:g}"] = float(ra[0] - rc[0])
                    row[f"rmst_diff_{tau:g}_mc_se"] = float(np.std(boot[0], ddof=1))
                cx = cox_batch(tc[m][None], ec[m][None], ta[m][None], ea[m][None])
                row["hr"] = float(cx["hr"][0])
                delta = np.minimum(ta[m], fu) - np.minimum(tc[m], fu)
                row["mean_os_gain"] = float(delta.mean())
                row["mean_os_gain_mc_se"] = float(delta.std(ddof=1) / np.sqrt(max(delta.size, 1)))
                row["frac_gain_gt_1mo"] = float(np.mean(delta > 1.0))
                row["tumour_change_vs_control_median"] = float(
                    (a.loc[m, "best_tumour_change_pct"] - ctrl.loc[m, "best_tumour_change_pct"]).median()) \
                    if "best_tumour_change_pct" in a else np.nan
            out.append(row)
    return pd.DataFrame(out)


def _q(v: np.ndarray) -> dict:
    v = v[np.isfinite(v)]
    if not v.size:
        return {"median": None, "q025": None, "q975": None, "mean": None, "sd": None}
    return {"median": float(np.median(v)), "q025": float(np.quantile(v, 0.025)), "q975": float(np.quantile(v, 0.975)),
            "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def _x(values: np.ndarray, scale: str) -> np.ndarray:
    return {"lin": values, "log": np.log(values), "log10": np.log10(values)}.get(scale, np.log10(values))


def attribution(y: np.ndarray, X: dict[str, np.ndarray], seed: int, n_boot: int = 500) -> dict:
    """First-order variance share of ``y`` per parameter: R^2 of a quadratic fit (bootstrap 95% CI),
    Spearman rho, and the joint R^2 of all parameters (quadratic, no interactions)."""
    from scipy.stats import spearmanr

    ok = np.isfinite(y)
    y = y[ok]
    K = y.size
    res = {"n_draws": int(K), "parameters": {}}
    if K < 10 or np.std(y) == 0:
        res["note"] = "fewer than 10 finite draws or no spread: not attributed"
        return res
    rng = np.random.default_rng(seed)
    boots = rng.integers(0, K, size=(n_boot, K))

    def r2(x, yy):
        A = np.column_stack([np.ones_like(x), x, x ** 2])
        coef, *_ = np.linalg.lstsq(A, yy, rcond=None)
        ss = np.sum((yy - yy.mean()) ** 2)
        return float(1 - np.sum((yy - A @ coef) ** 2) / ss) if ss > 0 else np.nan

    for name, x in X.items():
        x = x[ok]
        est = r2(x, y)
        bs = np.array([r2(x[b], y[b]) for b in boots])
        rho = spearmanr(x, y).statistic if np.std(x) > 0 else np.nan
        res["parameters"][name] = {"share": est, "share_ci": [float(np.nanquantile(bs, 0.025)),
                                                              float(np.nanquantile(bs, 0.975))],
                                   "spearman_rho": float(rho)}
    A = np.column_stack([np.ones(K)] + [c for x in X.values() for c in (x[ok], x[ok] ** 2)])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    res["joint_r2"] = float(1 - np.sum((y - A @ coef) ** 2) / np.sum((y - y.mean()) ** 2))
    ranked = sorted(res["parameters"], key=lambda p: -(res["parameters"][p]["share"] or 0))
    res["ranked"] = ranked
    return res


def summarise(per_draw: pd.DataFrame, trial: Trial, params: list[str], scales: dict, seed: int) -> dict:
    control = trial.spec.control
    out = {"control": control, "design": "paired, posterior-predictive", "arms": {}, "effects": {}}
    for arm in trial.arms:
        g = per_draw[per_draw["arm"] == arm]
        out["arms"][arm] = {m: _q(g[m].to_numpy(float)) for m in ARM_METRICS}
        if arm == control:
            continue
        eff = {}
        for m in EFFECTS:
            v = g[m].to_numpy(float)
            e = _q(v)
            if m.startswith("rmst") or m == "mean_os_gain":
                e["p_benefit"] = float(np.mean(v[np.isfinite(v)] > 0)) if np.isfinite(v).any() else None
                se = g.get(f"{m}_mc_se")
                if se is not None and np.isfinite(se.to_numpy(float)).any():
                    mc_var = float(np.nanmean(se.to_numpy(float) ** 2))
                    tot = float(np.nanvar(v, ddof=1)) if np.isfinite(v).sum() > 1 else np.nan
                    e["mc_variance"] = mc_var
                    e["between_draw_variance"] = tot
                    e["mc_share_of_between_draw_variance"] = (mc_var / tot) if tot and tot > 0 else None
            if m == "hr":
                e["p_benefit"] = float(np.mean(v[np.isfinite(v)] < 1)) if np.isfinite(v).any() else None
            eff[m] = e
        X = {p: _x(g[p].to_numpy(float), scales.get(p, "log10")) for p in params}
        y = g["rmst_diff_12"].to_numpy(float)
        endpoint = "rmst_diff_12"
        if not np.isfinite(y).any():  # follow-up shorter than 12 months
            y, endpoint = g["mean_os_gain"].to_numpy(float), "mean_os_gain"
        eff["attribution_rmst_diff_12"] = {**attribution(y, X, seed), "endpoint": endpoint}
        out["effects"][arm] = eff
    return out


def write_posterior_trial(res: PosteriorTrialResult, out: str | Path) -> dict[str, Path]:
    """patients.parquet, draws.parquet, summary.json, report.html, manifest.json -- atomically."""
    from ..outputs import write_atomically
    from ..report.posterior_report import render_posterior_report
    from .trial_runner import trial_manifest

    def write(tmp: Path) -> None:
        res.patients.to_parquet(tmp / "patients.parquet", index=False)
        res.per_draw.to_parquet(tmp / "draws.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(json_safe(res.summary), indent=2))
        man = trial_manifest(res.trial, res.summary["seed"], res.summary["patients_per_arm"], res.timings)
        man["posterior"] = {"fit_folder": res.fit_folder, "draws": res.summary["draws"],
                            "draw_ids": res.draws["draw"].tolist(), "parameters": res.parameters,
                            "fit_manifest": res.fit_manifest}
        man = json_safe(man)
        (tmp / "manifest.json").write_text(json.dumps(man, indent=2, default=str))
        (tmp / "report.html").write_text(render_posterior_report(res, man))

    return write_atomically(out, write)
