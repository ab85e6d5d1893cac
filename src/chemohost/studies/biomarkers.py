"""Biomarkers of harm and benefit: ``chemohost biomarkers TRIAL_DIR --out DIR``.

From a paired trial run (every patient in every arm, the same random streams), each virtual patient
has a counterfactual: the same patient in another arm.  Two labels per patient:

* **benefit** from adding the blocker: the individual paired OS effect of ``--benefit-arm`` vs the
  control, min(OS_arm, L) - min(OS_control, L), exceeds ``--threshold`` (default 1 month; L = the
  follow-up; both arms share the patient's OS draw, so the difference is the effect, not noise);
* **harm** by the host response: the control outcome is worse than the patient's own counterfactual
  without it (``--harm-arm``, the strongest blockade arm; default the benefit arm) by more than the
  threshold.

Candidate markers are what a clinician could measure in the control arm before deciding to add the
blocker: baseline covariates and the blood measurements the trial records at days 0, 1, 2, 3, 8, 15
(NLR, ANC, serum IL-1alpha, IL-1beta, G-CSF, LDH released) with their change from baseline, and the
tumour's caspase-1 / GSDMD / GSDME expression.  With scikit-learn: an L2-penalised logistic regression
(standardised, log-transformed positive markers; penalty chosen by inner cross-validation) and a
random forest, each evaluated by 5-fold cross-validated (out-of-fold) ROC AUC with a bootstrap 95% CI
and calibration (reliability curve, Brier score, calibration slope and intercept); and each single
marker's AUC with CI and its Youden cut-point.

**Enrichment design**: the best *baseline* marker (measurable before randomisation) at its cut-point
selects patients; randomised replicate trials (``chemohost trial --design randomized`` machinery:
different patients per arm) give the patients per arm for 80% power (log-rank) for all-comers and for
marker-positive patients only, and how many must be screened.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ScenarioError
from .trial_spec import DAYS_PER_MONTH

COVARIATES = ("age", "female", "bsa_m2", "weight_kg", "crcl_ml_min", "anc0", "lymph0", "nlr0", "tumour_cm3",
              "casp1_expr", "gsdmd_expr", "gsdme_expr")


@dataclass
class BiomarkerResult:
    tables: dict
    summary: dict
    timings: dict
    notes: list = field(default_factory=list)
    kind: str = "biomarkers"


def load_trial_dir(folder) -> tuple[pd.DataFrame, dict]:
    from ..outputs import verify_output

    folder = Path(folder)
    try:
        verify_output(folder, need=("patients.parquet", "manifest.json"))
    except ScenarioError as exc:
        raise ScenarioError(f"TRIAL_DIR {folder}: {str(exc).removeprefix(str(folder) + ': ')}") from None
    df = pd.read_parquet(folder / "patients.parquet")
    man = json.loads((folder / "manifest.json").read_text())
    if "replicate" in df.columns:
        raise ScenarioError(f"TRIAL_DIR {folder} is a randomized run; biomarkers need the paired design (every "
                            "patient in every arm): run `chemohost trial FILE --out DIR` (or with --posterior)")
    if "draw" in df.columns:  # posterior-predictive trial: each (draw, patient) is one virtual patient
        n = int(df["patient"].max()) + 1
        codes = {d: i for i, d in enumerate(sorted(df["draw"].unique()))}
        df = df.assign(patient=df["draw"].map(codes).to_numpy() * n + df["patient"].to_numpy())
    missing = [c for c in ("mk_NLR_d8", "os_months") if c not in df.columns]
    if missing:
        raise ScenarioError(f"TRIAL_DIR {folder}: patients.parquet lacks {', '.join(missing)} (written by an older "
                            "chemohost?); run the trial again")
    return df, man


def features(ctrl: pd.DataFrame) -> pd.DataFrame:
    """Candidate markers of the control-arm rows: covariates, the recorded blood values and their
    change from baseline (ratio to day 0)."""
    X = pd.DataFrame(index=ctrl.index)
    for c in COVARIATES:
        if c in ctrl:
            X[c] = ctrl[c].astype(float)
    mk = [c for c in ctrl.columns if c.startswith("mk_")]
    for c in mk:
        X[c] = ctrl[c].astype(float)
    for c in mk:
        if c.endswith("_d0"):
            continue
        base = c.rsplit("_d", 1)[0] + "_d0"
        if base in ctrl:
            with np.errstate(divide="ignore", invalid="ignore"):
                X[c.replace("mk_", "rel_")] = ctrl[c].astype(float) / ctrl[base].astype(float)
    X = X.replace([np.inf, -np.inf], np.nan)
    keep = [c for c in X.columns if X[c].notna().all() and X[c].std() > 0]
    return X[keep]


def baseline_features(cols) -> list[str]:
    return [c for c in cols if c in COVARIATES or c.endswith("_d0")]


def _auc_ci(y, s, rng, B=500):
    from sklearn.metrics import roc_auc_score

    n = y.size
    est = roc_auc_score(y, s)
    bs = []
    for _ in range(B):
        i = rng.integers(0, n, n)
        if y[i].min() == y[i].max():
            continue
        bs.append(roc_auc_score(y[i], s[i]))
    return float(est), float(np.quantile(bs, 0.025)), float(np.quantile(bs, 0.975))


def _calibration(y, p) -> dict:
    from sklearn.calibration import calibration_curve
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss

    pc = np.clip(p, 1e-6, 1 - 1e-6)
    logit = np.log(pc / (1 - pc))[:, None]
    lr = LogisticRegression(C=1e6).fit(logit, y)
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
    return {"brier": float(brier_score_loss(y, p)), "slope": float(lr.coef_[0, 0]),
            "intercept": float(lr.intercept_[0]), "curve_predicted": mean.tolist(), "curve_observed": frac.tolist()}


def _models(seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    def signed_log(X):
        X = np.asarray(X, dtype=float)
        return np.sign(X) * np.log1p(np.abs(X))

    return {
        "penalised_logistic": make_pipeline(FunctionTransformer(signed_log), StandardScaler(),
                                            LogisticRegressionCV(Cs=10, cv=3, scoring="roc_auc", max_iter=2000)),
        "random_forest": RandomForestClassifier(n_estimators=300, min_samples_leaf=10, random_state=seed, n_jobs=2),
    }


def evaluate(X: pd.DataFrame, y: np.ndarray, seed: int) -> tuple[list[dict], pd.DataFrame]:
    """Out-of-fold (5-fold) predictions of both models; AUC with bootstrap CI, calibration."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    import warnings

    rng = np.random.default_rng(seed)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    rows, preds = [], {}
    for name, model in _models(seed).items():
        p = np.zeros(y.size)
        for tr, te in folds.split(X, y):
            with warnings.catch_warnings():  # scikit-learn's announcements of future defaults
                warnings.simplefilter("ignore", FutureWarning)
                m = clone(model).fit(X.iloc[tr], y[tr])
            p[te] = m.predict_proba(X.iloc[te])[:, 1]
        auc, lo, hi = _auc_ci(y, p, rng)
        rows.append({"model": name, "auc": auc, "auc_ci": [lo, hi], "calibration": _calibration(y, p)})
        preds[name] = p
    return rows, pd.DataFrame(preds)


def single_markers(X: pd.DataFrame, y: np.ndarray, seed: int, top: int = 15) -> pd.DataFrame:
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(seed + 1)
    rows = []
    for c in X.columns:
        x = X[c].to_numpy(float)
        a = roc_auc_score(y, x)
        sign = 1.0 if a >= 0.5 else -1.0
        rows.append({"marker": c, "auc": max(a, 1 - a), "direction": "higher" if sign > 0 else "lower",
                     "baseline": c in COVARIATES or c.endswith("_d0")})
    df = pd.DataFrame(rows).sort_values("auc", ascending=False).reset_index(drop=True)
    out = []
    for _, r in df.head(top).iterrows():
        x = X[r["marker"]].to_numpy(float) * (1 if r["direction"] == "higher" else -1)
        est, lo, hi = _auc_ci(y, x, rng, B=300)
        fpr, tpr, thr = roc_curve(y, x)
        k = int(np.argmax(tpr - fpr))
        cut = float(thr[k]) * (1 if r["direction"] == "higher" else -1)
        out.append({**r.to_dict(), "auc": est, "auc_ci_low": lo, "auc_ci_high": hi, "cut_point": cut,
                    "sensitivity": float(tpr[k]), "specificity": float(1 - fpr[k]),
                    "positive_fraction": float(np.mean(x >= thr[k]))})
    return pd.DataFrame(out)


def run_biomarkers(trial_dir, benefit_arm: str | None = None, harm_arm: str | None = None,
                   threshold_months: float = 1.0, seed: int = 0, replicates: int = 100, per_arm: int = 200,
                   progress: bool = False) -> BiomarkerResult:
    t0 = time.perf_counter()
    df, man = load_trial_dir(trial_dir)
    spec = man["trial"]
    control = spec["control"]
    arms = [a for a in spec["arms"] if a != control]
    if not arms:
        raise ScenarioError(f"TRIAL_DIR {trial_dir}: the trial has no arm besides the control '{control}'")
    benefit_arm = benefit_arm or arms[0]
    harm_arm = harm_arm or benefit_arm
    for a, opt in ((benefit_arm, "--benefit-arm"), (harm_arm, "--harm-arm")):
        if a not in arms:
            raise ScenarioError(f"{opt} '{a}' is not a non-control arm of the trial; arms: {', '.join(arms)}")
    if isinstance(threshold_months, str):
        ok_q = threshold_months[:1] == "q" and threshold_months[1:].replace(".", "", 1).isdigit() and \
            0 < float(threshold_months[1:]) < 100
        if not ok_q:
            raise ScenarioError(f"--threshold must be a duration (e.g. '1 month') or a percentile 'q50'..'q95', got "
                                f"{threshold_months!r}")
    elif not (math.isfinite(threshold_months) and threshold_months >= 0):
        raise ScenarioError(f"--threshold must be a duration >= 0, got {threshold_months}")
    L = max(float(pd.to_numeric(df["os_months"], errors="coerce").max()), 1e-9)
    by = {a: g.set_index("patient").sort_index() for a, g in df.groupby(df["arm"].astype(str))}
    ctrl = by[control]
    ok = ctrl["status"].astype(str) == "ok"
    for a in (benefit_arm, harm_arm):
        ok &= by[a]["status"].astype(str) == "ok"
    ctrl = ctrl[ok]
    X = features(ctrl)
    notes = [f"{int((~ok).sum())} patients with a failed simulation in a compared arm were left out"] if (~ok).any() \
        else []

    def effect(a):
        return np.minimum(by[a].loc[ok, "os_months"].to_numpy(float), L) - np.minimum(ctrl["os_months"].to_numpy(float), L)

    eff_b, eff_h = effect(benefit_arm), effect(harm_arm)
    if isinstance(threshold_months, str):  # 'qNN': the NN-th percentile of the individual effects
        q = float(threshold_months[1:]) / 100.0
        thr_b, thr_h = float(np.quantile(eff_b, q)), float(np.quantile(eff_h, q))
        notes.append(f"threshold {threshold_months}: benefit = individual effect > {thr_b:.3f} months, harm = > "
                     f"{thr_h:.3f} months (the {100 * q:g}th percentiles)")
    else:
        thr_b = thr_h = threshold_months
    labels = {"benefit": eff_b > thr_b, "harm": eff_h > thr_h}
    if harm_arm == benefit_arm:
        notes.append(f"harm is measured against the same arm as benefit ('{benefit_arm}'): give --harm-arm with the "
                     "strongest blockade arm to separate 'harmed by the host response' from 'helped by this blocker'")
    t1 = time.perf_counter()
    results, tables = {}, {}
    for lab, y in labels.items():
        y = y.astype(int)
        prev = float(y.mean())
        entry = {"prevalence": prev, "n": int(y.size), "positives": int(y.sum())}
        if y.sum() < 10 or (y.size - y.sum()) < 10:
            entry["note"] = (f"only {int(y.sum())} of {y.size} patients are '{lab}' (effect > "
                             f"{thr_b if lab == 'benefit' else thr_h:.3g} months): too few to fit models; lower "
                             "--threshold (or give a percentile, e.g. q75) or simulate more patients")
            results[lab] = entry
            continue
        models, preds = evaluate(X, y, seed)
        singles = single_markers(X, y, seed)
        entry["models"] = models
        entry["top_markers"] = singles.head(10).to_dict("records")
        tables[f"{lab}_markers"] = singles
        tables[f"{lab}_predictions"] = preds.assign(patient=ctrl.index.to_numpy(), label=y)
        results[lab] = entry
    t2 = time.perf_counter()
    enrichment = None
    if "benefit_markers" in tables:
        yb = labels["benefit"].astype(int)
        base_cols = baseline_features(X.columns)
        base = single_markers(X[base_cols], yb, seed, top=5) if base_cols else pd.DataFrame()
        tables["benefit_baseline_markers"] = base
        enrichment = enrich(man, base, benefit_arm, control, seed, replicates, per_arm, progress)
    summary = {"trial": spec.get("name"), "control": control, "benefit_arm": benefit_arm, "harm_arm": harm_arm,
               "threshold": threshold_months, "threshold_months": thr_b, "threshold_harm_months": thr_h, "follow_up_months": L, "features": list(X.columns),
               "labels": results, "enrichment": enrichment}
    tables["features"] = X.assign(patient=ctrl.index.to_numpy(), benefit=labels["benefit"].astype(int),
                                  harm=labels["harm"].astype(int))
    return BiomarkerResult(tables, summary, {"labels": t1 - t0, "models": t2 - t1,
                                             "enrichment": time.perf_counter() - t2}, notes)


def enrich(man: dict, markers: pd.DataFrame, arm: str, control: str, seed: int, R: int, N: int, progress: bool):
    """Patients per arm for 80% power with and without selecting marker-positive patients (best baseline
    marker at its Youden cut-point), from randomised replicate trials."""
    from .randomized import run_randomized
    from .replicates import n_for_power, nested_power
    from .trial_spec import Trial

    base = markers[markers["baseline"]] if len(markers) else markers
    if base.empty:
        return {"note": "no baseline marker separates benefit from no benefit"}
    m = base.iloc[0]
    spec = dict(man["trial"])
    spec["arms"] = {control: spec["arms"][control], arm: spec["arms"][arm]}
    trial = Trial.from_dict(spec, man.get("trial_file") or "<trial>")
    res = run_randomized(trial, R, N, seed=seed + 7, ns=[N], progress=progress)
    df = res.patients
    df = df[df["status"].astype(str) == "ok"]
    x = df[m["marker"]].to_numpy(float)
    pos = (x >= m["cut_point"]) if m["direction"] == "higher" else (x <= m["cut_point"])
    df = df.assign(pos=pos)

    def arrays(frame, n):
        out = {}
        for a in (control, arm):
            T = np.full((R, n), np.nan)
            E = np.zeros((R, n), dtype=bool)
            for r, g in frame[frame["arm"].astype(str) == a].groupby("replicate"):
                g = g.sort_values("patient").head(n)
                T[int(r), :len(g)] = g["os_months"].to_numpy(float)
                E[int(r), :len(g)] = g["os_event"].to_numpy(bool)
            out[a] = (T, E)
        return out

    def power_curve(frame, nmax):
        ns = sorted({int(v) for v in np.unique(np.linspace(max(10, nmax // 10), nmax, 10).astype(int))})
        a = arrays(frame, nmax)
        rows = nested_power(a[control][0], a[control][1], a[arm][0], a[arm][1], ns)
        return ns, [r["power"] for r in rows]

    ns_all, pw_all = power_curve(df, N)
    counts = df[df["pos"]].groupby(["replicate", df["arm"].astype(str)]).size()
    m_pos = int(counts.min()) if len(counts) else 0
    prev = float(df["pos"].mean())
    out = {"marker": m["marker"], "direction": m["direction"], "cut_point": float(m["cut_point"]),
           "marker_auc": float(m["auc"]), "positive_fraction": prev, "replicates": R, "per_arm_simulated": N,
           "all_comers": {"ns": ns_all, "power": pw_all, **n_for_power(ns_all, pw_all)}}
    if m_pos >= 10:
        ns_pos, pw_pos = power_curve(df[df["pos"]], m_pos)
        np_ = n_for_power(ns_pos, pw_pos)
        out["marker_positive"] = {"ns": ns_pos, "power": pw_pos, **np_}
        n80 = np_.get("n_interp_loglinear")
        if n80:
            out["marker_positive"]["screened_per_arm"] = float(n80 / max(prev, 1e-9))
    else:
        out["marker_positive"] = {"note": f"too few marker-positive patients per replicate arm ({m_pos})"}
    return out


def write_biomarkers(res: BiomarkerResult, folder: Path) -> None:
    from ..outputs import json_safe
    from ..report.study_report import render_biomarkers

    for name, df in res.tables.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps(json_safe(res.summary), indent=2, default=str))
    (folder / "report.html").write_text(render_biomarkers(res))
