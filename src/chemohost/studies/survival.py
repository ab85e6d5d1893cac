"""Overall survival linked to tumour dynamics and NLR, and arm-level trial summaries.

Hazard (proportional hazards, Claret-type tumour-size link; Claret et al. 2009 J Clin Oncol
27:4103 and 2013 J Clin Oncol 31:2110 used the week-7/8 tumour-size ratio and baseline size as
OS predictors of a parametric survival model):

    h_i(t) = h0(t) * exp( b_tsr  * ln(TSR_i)                 TSR = SLD(week 8) / SLD(baseline)
                        + b_base * ln(SLD0_i / SLD_ref)
                        + b_nlr  * ln(NLR_i(t) / NLR_ref) )   NLR may vary with time (LOCF)
    h0(t)  = (k / s) * (t / s)^(k - 1)                        Weibull, t and s in months

TSR enters from time 0 (the simulated trajectory is known in advance; a trial would use it as a
landmark covariate).  OS is drawn independently of the RECIST PFS draw: the two are linked only
through the tumour trajectory.  ``progression_or_death`` combines them when PFS must include death.

Times: days on input (simulation grid), months (30.4375 d) on output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .endpoints import DAYS_PER_MONTH


def log_hr_per_log_unit_from_dichotomised(hr_high_vs_low: float, sd_log: float = 0.68,
                                          prevalence_high: float = 0.379) -> float:
    """Convert a high-vs-low hazard ratio of a dichotomised log-normal marker to a log-linear slope.

    If ln(NLR) ~ Normal(mu, sd_log) and "high" is the upper ``prevalence_high`` fraction, the mean
    ln(NLR) differs between the groups by sd_log * phi(z) / (p (1 - p)) with z the cut-off z-score
    and p = prevalence_high; the slope is ln(HR) divided by that difference.  Defaults: high-NLR
    prevalence 37.9% (Oh 2018, PMC6011084, pancreatic, 34 studies); sd_log 0.68 is an assumption
    (NLR interquartile range ~2-5 in advanced cancer: (ln 5 - ln 2) / 1.35).  Dichotomisation
    attenuates effects, so this is an approximation, not an estimate.
    """
    p = prevalence_high
    from scipy.stats import norm

    z = norm.ppf(1.0 - p)
    diff = sd_log * norm.pdf(z) / (p * (1.0 - p))
    return math.log(hr_high_vs_low) / diff


@dataclass(frozen=True)
class OSLinkParams:
    """Parameters of the tumour/NLR-linked OS hazard (units and sources in ``sources``)."""

    weibull_shape: float = 1.20  # dimensionless
    median_os_months: float = 5.65  # months, at reference covariates (TSR 1, SLD_ref, NLR_ref)
    b_tsr: float = 1.0  # per ln(TSR)
    b_base: float = 0.5  # per ln(SLD0 / SLD_ref)
    b_nlr: float = field(default_factory=lambda: log_hr_per_log_unit_from_dichotomised(1.81))
    sld_ref_mm: float = 40.0  # mm
    nlr_ref: float = 3.0  # dimensionless
    sources: dict = field(default_factory=lambda: {
        "weibull_shape": "calibrated: Burris 1997 (JCO 15:2403) gemcitabine arm, median OS 5.65 mo "
                         "and 12-mo OS 18% (two-point Weibull fit: k = ln(ln 0.18/ln 0.5)/ln(12/5.65))"
                         " -- placeholder until calibrated on the virtual arm",
        "median_os_months": "calibrated: median OS 5.65 mo, gemcitabine, advanced pancreatic cancer "
                            "(Burris 1997) -- placeholder; recalibrate the scale so the simulated "
                            "arm (with its covariate spread) reproduces it",
        "b_tsr": "assumption (Claret 2009/2013-type link: log-hazard linear in ln TSR at week 7-8; "
                 "coefficient not in parameters.md); HR 0.70 for a 30% shrinkage; calibrated: <TS-OS "
                 "link, e.g. responders +30 wk median OS, Eur J Pharm Sci 2018;115:296>",
        "b_base": "assumption (baseline tumour size is prognostic in Claret 2009/2013); HR 1.41 per "
                  "doubling of SLD0; calibrated: <target>",
        "b_nlr": "derived: pancreatic NLR meta-analysis OS HR 1.81 high vs low (Clin Chim Acta 2018;"
                 "479:181; parameters.md 9) via log_hr_per_log_unit_from_dichotomised -> ~0.54 per ln "
                 "unit, HR ~1.45 per doubling of NLR (urothelial HR 1.72, Oncotarget 2017;8:62681 -> "
                 "~0.49, HR ~1.41 per doubling)",
        "sld_ref_mm": "assumption: reference baseline SLD 40 mm (~34 cm3 sphere)",
        "nlr_ref": "assumption: reference NLR 3 (common high/low cut-off, parameters.md 9)",
    })

    @property
    def weibull_scale_months(self) -> float:
        return self.median_os_months / math.log(2.0) ** (1.0 / self.weibull_shape)

    @property
    def nlr_hr_per_doubling(self) -> float:
        return math.exp(self.b_nlr * math.log(2.0))

    def baseline_hazard_per_day(self, times_days) -> np.ndarray:
        """h0(t) in 1/day at ``times_days`` (days since randomisation)."""
        k, s = self.weibull_shape, self.weibull_scale_months
        tm = np.maximum(np.asarray(times_days, dtype=float), 0.0) / DAYS_PER_MONTH
        with np.errstate(divide="ignore"):
            return (k / s) * (tm / s) ** (k - 1.0) / DAYS_PER_MONTH


def os_hazard(params: OSLinkParams, times_days, tsr_w8, sld0_mm, nlr,
              nlr_times_days=None) -> np.ndarray:
    """(N, T) hazard per day on ``times_days`` (days since randomisation, may extend past the
    simulated horizon).  ``tsr_w8``, ``sld0_mm``: (N,).  ``nlr``: (N,) constant, or (N, Tn) on
    ``nlr_times_days`` (last value carried forward, first value before the first time).
    Non-finite covariates give a nan hazard.
    """
    t = np.asarray(times_days, dtype=float)
    tsr = np.asarray(tsr_w8, dtype=float)
    sld0 = np.asarray(sld0_mm, dtype=float)
    nlr = np.asarray(nlr, dtype=float)
    if nlr.ndim == 2:
        if nlr_times_days is None:
            raise ValueError("a time-varying nlr (N, Tn) needs nlr_times_days (Tn,)")
        tn = np.asarray(nlr_times_days, dtype=float)
        j = np.clip(np.searchsorted(tn, t, side="right") - 1, 0, len(tn) - 1)
        nlr = nlr[:, j]
    else:
        nlr = nlr[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = (params.b_tsr * np.log(tsr) + params.b_base * np.log(sld0 / params.sld_ref_mm))[:, None] \
            + params.b_nlr * np.log(nlr / params.nlr_ref)
    return params.baseline_hazard_per_day(t)[None, :] * np.exp(lp)


def simulate_os(rng: np.random.Generator | None, times_days, hazard_per_day, follow_up_days=None, *,
                exponentials=None):
    """Draw event times by inverse transform of the cumulative hazard, vectorised.

    ``times_days``: (T,) increasing grid starting at randomisation (t[0] is time 0 of OS).
    ``hazard_per_day``: (N, T) hazard on the grid (or (T,) shared); integrated by the trapezoid
    rule, so H is piecewise linear and its inverse is exact on that interpolant.  Past the grid the
    last hazard value is held constant.  ``follow_up_days``: administrative censoring time since
    t[0] (scalar or (N,)); default: end of the grid.  ``exponentials``: (N,) unit-exponential draws to
    use instead of drawing from ``rng`` (a trial pre-draws them per patient so any chunking of the
    patients gives the same times).
    Returns ``(os_months, os_event)``: (N,) float months and bool (False = censored).  Patients with
    a non-finite hazard get nan / False.
    """
    t = np.asarray(times_days, dtype=float)
    h = np.atleast_2d(np.asarray(hazard_per_day, dtype=float))
    n = h.shape[0]
    if h.shape[1] != t.size:
        raise ValueError(f"hazard has {h.shape[1]} columns, times_days has {t.size}")
    tt = t - t[0]
    fu = tt[-1] if follow_up_days is None else follow_up_days
    fu = np.broadcast_to(np.asarray(fu, dtype=float), (n,))
    bad = ~np.isfinite(h).all(axis=1)
    h = np.where(np.isfinite(h), np.maximum(h, 0.0), 0.0)
    dH = 0.5 * (h[:, 1:] + h[:, :-1]) * np.diff(tt)[None, :]
    H = np.concatenate([np.zeros((n, 1)), np.cumsum(dH, axis=1)], axis=1)  # (N, T)
    e = rng.standard_exponential(n) if exponentials is None else np.asarray(exponentials, dtype=float)
    if e.shape != (n,):
        raise ValueError(f"exponentials must have shape ({n},), got {e.shape}")
    k = (H < e[:, None]).sum(axis=1)  # first grid index with H >= e (T if beyond the grid)
    inside = k < t.size
    ki = np.clip(k, 1, t.size - 1)
    rows = np.arange(n)
    H0, H1 = H[rows, ki - 1], H[rows, ki]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(H1 > H0, (e - H0) / (H1 - H0), 0.0)
        t_in = tt[ki - 1] + frac * (tt[ki] - tt[ki - 1])
        h_last = h[:, -1]
        t_out = np.where(h_last > 0, tt[-1] + (e - H[:, -1]) / h_last, np.inf)
    t_ev = np.where(inside, t_in, t_out)
    event = t_ev <= fu
    time = np.where(event, t_ev, fu)
    time = np.where(bad, np.nan, time)
    event = event & ~bad
    return time / DAYS_PER_MONTH, event


def linked_os(params: OSLinkParams, times_days, tsr_w8, sld0_mm, nlr, exponentials, follow_up_days=None):
    """OS of a simulated arm: :func:`os_hazard` with time-varying ``nlr`` (N, T) on ``times_days``, then
    :func:`simulate_os` on the given per-patient ``exponentials``.  Returns ``(os_months, os_event)``."""
    hz = os_hazard(params, times_days, tsr_w8, sld0_mm, nlr, nlr_times_days=times_days)
    return simulate_os(None, times_days, hz, follow_up_days=follow_up_days, exponentials=exponentials)


def progression_or_death(pfs_months, pfs_event, os_months, os_event):
    """PFS including death: the earlier of progression and death; censored if neither observed."""
    p, d = np.asarray(pfs_months, float), np.asarray(os_months, float)
    pe, de = np.asarray(pfs_event, bool), np.asarray(os_event, bool)
    death_first = de & (d < p)
    time = np.where(death_first, d, np.where(pe, p, np.minimum(p, d)))
    return time, (pe & ~death_first) | death_first


# ------------------------------------------------------------------------------- arm summaries

def _f(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return x if math.isfinite(x) else float("nan")


def _km(times, events):
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    ok = np.isfinite(times)
    times, events = times[ok], events[ok]
    if times.size == 0:
        return None, [float("nan")] * 3
    kmf = KaplanMeierFitter().fit(times, events.astype(bool))
    ci = median_survival_times(kmf.confidence_interval_)
    return kmf, [_f(kmf.median_survival_time_), _f(ci.iloc[0, 0]), _f(ci.iloc[0, 1])]


def survival_at(times, events, at: float) -> float:
    """Kaplan-Meier survival probability at ``at`` (same unit as ``times``; lifelines); nan if no data."""
    kmf, _ = _km(np.asarray(times, dtype=float), np.asarray(events, dtype=bool))
    return float("nan") if kmf is None else _f(kmf.survival_function_at_times(at).iloc[0])


def pfs_interval_bounds(pfs_months, pfs_event, os_months, os_event, previous_scan_day):
    """Interval-censored PFS: ``(lower, upper)`` months per patient.  A progression seen at a scan
    happened between the previous scan and that scan; a death before any progression is exact
    (lower = upper); a censored patient is right-censored (upper = inf)."""
    t = np.asarray(pfs_months, float)
    ev = np.asarray(pfs_event, bool)
    death = ev & np.asarray(os_event, bool) & np.isclose(t, np.asarray(os_months, float))
    prev = np.asarray(previous_scan_day, float) / DAYS_PER_MONTH
    prog = ev & ~death & np.isfinite(prev)
    lower = np.where(prog, prev, t)
    upper = np.where(ev, t, np.inf)
    return lower, upper


def weibull_interval_median(lower, upper, n_draws: int = 2000, seed: int = 0) -> dict:
    """Median (95% CI) of a Weibull model fitted to interval-censored times (lifelines
    ``WeibullFitter.fit_interval_censoring``; CI from 2,000 draws of the asymptotic normal of the
    fitted parameters).  nan where the fit is impossible."""
    import warnings

    from lifelines import WeibullFitter

    lo, up = np.asarray(lower, float), np.asarray(upper, float)
    ok = np.isfinite(lo)
    lo, up = np.maximum(lo[ok], 1e-6), np.maximum(up[ok], 1e-6)
    nan = {"median": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": int(ok.sum())}
    if lo.size < 3 or not np.isfinite(up).any():
        return nan
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WeibullFitter().fit_interval_censoring(lo, up)
        lam, rho = float(w.lambda_), float(w.rho_)
        cov = np.asarray(w.variance_matrix_, float)
        draws = np.random.default_rng(seed).multivariate_normal([lam, rho], cov, n_draws)
        draws = draws[(draws > 0).all(axis=1)]
        med = draws[:, 0] * np.log(2.0) ** (1.0 / draws[:, 1])
    except Exception:  # lifelines convergence failure: report nan, never abort the trial
        return nan
    return {"median": _f(lam * np.log(2.0) ** (1.0 / rho)), "ci_low": _f(np.quantile(med, 0.025)),
            "ci_high": _f(np.quantile(med, 0.975)), "n": int(ok.sum())}


def arm_summary(df: pd.DataFrame) -> dict:
    """Summary of one arm (one row per patient) as plain floats (nan where undefined).

    Uses columns when present: ``bor`` ('CR','PR','SD','PD','NE'), ``pfs_months``/``pfs_event``,
    ``os_months``/``os_event``, ``max_neutropenia_grade``, ``dose_intensity``.  Rates are over all
    rows (intention to treat; 'NE' counts as non-responder).  Medians with 95% CI from
    Kaplan-Meier (lifelines, log-log CI); 12-month OS is nan if follow-up ends before 12 months.
    """
    n = len(df)
    out: dict[str, float] = {"n": float(n)}
    nan = float("nan")
    if "bor" in df and n:
        bor = df["bor"].astype(str)
        out["orr"] = _f(bor.isin(["CR", "PR"]).mean())
        out["dcr"] = _f(bor.isin(["CR", "PR", "SD"]).mean())
    else:
        out["orr"] = out["dcr"] = nan
    for ep in ("pfs", "os"):
        tcol, ecol = f"{ep}_months", f"{ep}_event"
        if tcol in df and ecol in df and n:
            kmf, (m, lo, hi) = _km(df[tcol].to_numpy(float), df[ecol].to_numpy(bool))
        else:
            kmf, (m, lo, hi) = None, (nan, nan, nan)
        out[f"median_{ep}_months"], out[f"median_{ep}_ci_low"], out[f"median_{ep}_ci_high"] = m, lo, hi
        if ep == "os":
            if kmf is not None and np.nanmax(df[tcol].to_numpy(float)) >= 12.0:
                out["os_12m"] = _f(kmf.survival_function_at_times(12.0).iloc[0])
            else:
                out["os_12m"] = nan
    if {"pfs_ic_lower_months", "pfs_ic_upper_months"} <= set(df.columns) and n:
        ic = weibull_interval_median(df["pfs_ic_lower_months"], df["pfs_ic_upper_months"])
        out["median_pfs_interval_months"], out["median_pfs_interval_ci_low"], out["median_pfs_interval_ci_high"] = \
            ic["median"], ic["ci_low"], ic["ci_high"]
    if "max_neutropenia_grade" in df and n:
        g = df["max_neutropenia_grade"].to_numpy(float)
        out["neutropenia_g3plus"] = _f(np.mean(g >= 3))
        out["neutropenia_g4"] = _f(np.mean(g >= 4))
    else:
        out["neutropenia_g3plus"] = out["neutropenia_g4"] = nan
    out["dose_intensity_mean"] = _f(df["dose_intensity"].mean()) if "dose_intensity" in df and n else nan
    return out


def compare_arms(df: pd.DataFrame, control: str, arm_col: str = "arm", endpoint: str = "os") -> dict:
    """Each arm vs ``control``: Cox HR (arm indicator, lifelines CoxPHFitter) with 95% CI and the
    log-rank p-value, for ``endpoint`` 'os' or 'pfs' (columns ``<endpoint>_months``/``_event``).
    Returns ``{arm: {"hr", "hr_ci_low", "hr_ci_high", "logrank_p", "n", "n_control"}}`` (floats).
    """
    from lifelines import CoxPHFitter
    from lifelines.statistics import logrank_test

    tcol, ecol = f"{endpoint}_months", f"{endpoint}_event"
    arms = [a for a in pd.unique(df[arm_col]) if a != control]
    if control not in set(df[arm_col]):
        raise ValueError(f"control arm '{control}' not in column '{arm_col}'")
    c = df[df[arm_col] == control]
    c = c[np.isfinite(c[tcol].to_numpy(float))]
    res = {}
    for a in arms:
        x = df[df[arm_col] == a]
        x = x[np.isfinite(x[tcol].to_numpy(float))]
        r = {"hr": float("nan"), "hr_ci_low": float("nan"), "hr_ci_high": float("nan"),
             "logrank_p": float("nan"), "n": float(len(x)), "n_control": float(len(c))}
        d = pd.DataFrame({"T": np.r_[c[tcol].to_numpy(float), x[tcol].to_numpy(float)],
                          "E": np.r_[c[ecol].to_numpy(bool), x[ecol].to_numpy(bool)].astype(int),
                          "treat": np.r_[np.zeros(len(c)), np.ones(len(x))]})
        if len(c) and len(x) and d["E"].sum() > 0:
            try:
                cph = CoxPHFitter().fit(d, duration_col="T", event_col="E")
                r["hr"] = _f(cph.hazard_ratios_["treat"])
                ci = np.exp(cph.confidence_intervals_.loc["treat"].to_numpy(float))
                r["hr_ci_low"], r["hr_ci_high"] = _f(ci[0]), _f(ci[1])
            except Exception:  # lifelines convergence failure (e.g. no events in one arm)
                pass
            lr = logrank_test(c[tcol], x[tcol], c[ecol].astype(bool), x[ecol].astype(bool))
            r["logrank_p"] = _f(lr.p_value)
        res[str(a)] = r
    return res


# ------------------------------------------------------------------------- paired (counterfactual) effects

def km_rmst(T: np.ndarray, E: np.ndarray, W: np.ndarray, taus) -> np.ndarray:
    """RMST up to each of ``taus`` of the Kaplan-Meier curves of one sample (T, E: (n,)) under (B, n) integer
    weights ``W`` -- copy counts: a bootstrap replicate, or ones for the sample itself: (len(taus), B).
    Product-limit estimator, ties as lifelines (events before censorings at the same time); a patient drawn w
    times is w tied rows, whose factors multiply to 1 - w / at-risk, so a replicate's curve is the resampled
    rows' with one sort instead of one per replicate.  Checked against lifelines'
    ``restricted_mean_survival_time`` and against explicitly resampled rows in the tests."""
    order = np.lexsort((~E, T))
    Ts, Es, Ws = T[order], E[order], W[:, order].astype(float)
    at_risk = np.cumsum(Ws[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(Es[None, :] & (Ws > 0), 1.0 - Ws / at_risk, 1.0)
    S_prev = np.concatenate([np.ones((W.shape[0], 1)), np.cumprod(f, axis=1)], axis=1)
    out = []
    for tau in taus:
        t_prev = np.r_[0.0, np.minimum(Ts, tau)]
        area = S_prev[:, :-1] @ np.diff(t_prev)
        out.append(area + S_prev[:, -1] * max(tau - min(Ts[-1], tau), 0.0))
    return np.array(out)


def paired_rmst(tc, ec, ta, ea, idx: np.ndarray | None, taus) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired samples (index i: the same patient in both) at each of ``taus``: ``(RMST of the control,
    RMST of the arm (len(taus),), bootstrap replicates of their difference (len(taus), B))``, replicate b drawing
    the patients ``idx[b]`` in both arms (None: no replicates).  Replicates run in blocks of ~2.5e5 values (bounded
    memory at large n)."""
    n = tc.size
    one = np.ones((1, n), dtype=np.int64)
    rc, ra = km_rmst(tc, ec, one, taus)[:, 0], km_rmst(ta, ea, one, taus)[:, 0]
    if idx is None or not len(idx):
        return rc, ra, np.zeros((len(taus), 0))
    step = max(1, 250_000 // n)
    parts = []
    for b in range(0, idx.shape[0], step):
        rows = idx[b:b + step]
        W = np.bincount((rows + n * np.arange(rows.shape[0])[:, None]).ravel(),
                        minlength=rows.shape[0] * n).reshape(rows.shape[0], n)
        parts.append(km_rmst(ta, ea, W, taus) - km_rmst(tc, ec, W, taus))
    return rc, ra, np.concatenate(parts, axis=1)


def paired_effects(t_ctrl, e_ctrl, t_arm, e_arm, *, taus=(12.0, 24.0), follow_up=None, n_boot=1000,
                   seed=0, threshold=1.0) -> dict:
    """Counterfactual comparison: index i is the same virtual patient under control and under the arm.

    * RMST(arm) - RMST(control) at each tau (months) from Kaplan-Meier, with a paired bootstrap 95%
      percentile CI (patients resampled with replacement, the same indices in both arms).  A tau past
      the follow-up is restricted at the follow-up (flag ``beyond_follow_up``).
    * HR from a Cox model on the stacked 2n rows with robust (sandwich) variance clustered on the
      patient (lifelines ``cluster_col``); identical arms give HR exactly 1 without a fit.
    * Individual effects: delta_i = min(T_arm, L) - min(T_ctrl, L), L = follow-up; censoring is
      administrative at L in both arms, so delta_i is exact.  Shares gaining / losing > ``threshold``.
    Pairs with a failed (NaN) patient in either arm are excluded (``n_excluded``).
    """
    tc, ec = np.asarray(t_ctrl, float), np.asarray(e_ctrl, bool)
    ta, ea = np.asarray(t_arm, float), np.asarray(e_arm, bool)
    ok = np.isfinite(tc) & np.isfinite(ta)
    tc, ec, ta, ea = tc[ok], ec[ok], ta[ok], ea[ok]
    n = int(ok.sum())
    out: dict = {"n_pairs": n, "n_excluded": int((~ok).sum())}
    if n == 0:
        out["deltas"] = np.empty(0)
        return out
    L = float(np.max(np.r_[tc, ta])) if follow_up is None else float(follow_up)
    identical = np.array_equal(tc, ta) and np.array_equal(ec, ea)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    t_effs = [min(float(tau), L) for tau in taus]
    rc, ra, boot = paired_rmst(tc, ec, ta, ea, None if identical else idx, t_effs)
    for j, tau in enumerate(taus):
        lo, hi = (0.0, 0.0) if identical else (float(x) for x in np.percentile(boot[j], [2.5, 97.5]))
        out[f"rmst_diff_{tau:g}"] = {"estimate": float(ra[j] - rc[j]), "ci_low": lo, "ci_high": hi,
                                     "rmst_ctrl": float(rc[j]), "rmst_arm": float(ra[j]), "tau": float(tau),
                                     "beyond_follow_up": bool(tau > L)}
    if identical:
        out["hr"] = {"estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0, "p": 1.0}
    else:
        from lifelines import CoxPHFitter

        df = pd.DataFrame({"T": np.r_[tc, ta], "E": np.r_[ec, ea].astype(int),
                           "treat": np.r_[np.zeros(n), np.ones(n)], "patient": np.r_[np.arange(n), np.arange(n)]})
        hr = {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p": float("nan")}
        if df["E"].sum() > 0:
            try:
                cph = CoxPHFitter().fit(df, duration_col="T", event_col="E", cluster_col="patient")
                ci = np.exp(cph.confidence_intervals_.loc["treat"].to_numpy(float))
                hr = {"estimate": _f(cph.hazard_ratios_["treat"]), "ci_low": _f(ci[0]), "ci_high": _f(ci[1]),
                      "p": _f(cph.summary.loc["treat", "p"])}
            except Exception:  # lifelines convergence failure
                pass
        out["hr"] = hr
    delta = np.minimum(ta, L) - np.minimum(tc, L)
    q = np.percentile(delta, [5, 25, 50, 75, 95])
    out["individual"] = {"frac_gain": float(np.mean(delta > threshold)), "frac_loss": float(np.mean(delta < -threshold)),
                         "frac_unchanged": float(np.mean(np.abs(delta) <= threshold)), "mean_delta": float(delta.mean()),
                         "quantiles": dict(zip(("p5", "p25", "p50", "p75", "p95"), (float(x) for x in q))),
                         "threshold_months": float(threshold), "horizon_months": L, "n_pairs": n}
    out["deltas"] = delta  # (n_pairs,) per-patient differences (callers drop it before writing JSON)
    return out
