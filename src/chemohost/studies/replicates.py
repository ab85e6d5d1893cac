"""Statistics for randomised *replicate* in-silico trials, vectorised over replicates.

A replicate study runs R independent two-arm trials.  Replicate r has a control arm
(``Tc[r], Ec[r]``, n_c patients) and a treatment arm (``Tt[r], Et[r]``, n_t patients); the
patients may differ between arms and replicates.  Every function here works on whole
(R, n) arrays at once: rows are sorted with ``np.argsort(axis=1)`` and all risk-set sums are
reverse cumulative sums along the sorted rows, so there is no Python loop over replicates or
patients (the only loops are over Newton iterations).

Conventions
-----------
* Times are float64 and > 0; events are booleans (True = event, False = right-censored).
* A NaN time means "not analysable": that patient is treated as absent from its replicate
  (not at risk, no event).  Rows may therefore hold different numbers of patients.
* Ties follow the standard counting-process convention: all events at one time are counted
  together, and the risk set at time t is everyone with time >= t, including those censored
  at t (censoring at t is taken to happen just after the events at t).

Sources (cited in words): Mantel (1966) and Peto & Peto (1972) for the log-rank test and its
hypergeometric variance; the Peto / log-rank one-step hazard-ratio estimate
exp((O - E) / V) (Yusuf, Peto et al. 1985, Prog Cardiovasc Dis 27:335); Cox (1972) with
Efron's (1977, JASA 72:557) tie correction; Kaplan & Meier (1958); Clopper & Pearson (1934,
Biometrika 26:404) for exact binomial confidence intervals; Schoenfeld (1981, Biometrika
68:316) for the required number of events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import ChemohostError

__all__ = [
    "logrank_batch",
    "cox_batch",
    "km_median_batch",
    "power_summary",
    "schoenfeld_events",
    "schoenfeld_n_per_arm",
    "n_for_power",
    "nested_power",
]

_Z975 = stats.norm.ppf(0.975)


# --------------------------------------------------------------------------------------------
# sorted-row machinery
# --------------------------------------------------------------------------------------------

def _as_2d(name: str, a, dtype=float) -> np.ndarray:
    arr = np.asarray(a, dtype=dtype)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ChemohostError(f"{name} must be a 1-D or 2-D (replicates, patients) array; "
                             f"got shape {arr.shape}.")
    return arr


def _check_times(name: str, T: np.ndarray) -> None:
    ok = np.isnan(T) | (np.isfinite(T) & (T > 0))
    if not ok.all():
        raise ChemohostError(f"{name} holds times that are not > 0 and finite (NaN is allowed "
                             "and means 'not analysable'); fix the simulated times.")


@dataclass
class _Sorted:
    """Rows sorted by time, with tie-group bookkeeping (all arrays (R, n))."""

    t: np.ndarray       # sorted times (NaN last)
    w: np.ndarray       # 1.0 for an analysable patient, 0.0 for a NaN time
    e: np.ndarray       # 1.0 for an observed event of an analysable patient
    g: np.ndarray       # 1.0 for treatment arm, 0.0 for control (zeros for km)
    first: np.ndarray   # index of the first member of each position's tie group
    last: np.ndarray    # index of the last member of each position's tie group
    end: np.ndarray     # True at the last position of a tie group

    def at_risk(self, x: np.ndarray) -> np.ndarray:
        """sum of x over the risk set {j: t_j >= t_i}, per position (tie-aware)."""
        rev = np.cumsum(x[:, ::-1], axis=1)[:, ::-1]
        return np.take_along_axis(rev, self.first, axis=1)

    def group_sum(self, x: np.ndarray) -> np.ndarray:
        """sum of x over the tie group of each position."""
        cs = np.cumsum(x, axis=1)
        return (np.take_along_axis(cs, self.last, axis=1)
                - np.take_along_axis(cs - x, self.first, axis=1))

    def rank_in_group(self, x: np.ndarray) -> np.ndarray:
        """sum of x over the earlier members of each position's tie group (exclusive)."""
        excl = np.cumsum(x, axis=1) - x
        return excl - np.take_along_axis(excl, self.first, axis=1)


def _sort_rows(T: np.ndarray, E: np.ndarray, G: np.ndarray) -> _Sorted:
    order = np.argsort(T, axis=1, kind="stable")
    t = np.take_along_axis(T, order, axis=1)
    valid = ~np.isnan(t)
    w = valid.astype(float)
    e = (np.take_along_axis(E, order, axis=1) & valid).astype(float)
    g = np.take_along_axis(G, order, axis=1) * w
    R, n = t.shape
    idx = np.broadcast_to(np.arange(n), (R, n))
    start = np.ones((R, n), dtype=bool)
    start[:, 1:] = t[:, 1:] != t[:, :-1]          # NaN != NaN: each NaN is its own group
    end = np.ones((R, n), dtype=bool)
    end[:, :-1] = start[:, 1:]
    first = np.maximum.accumulate(np.where(start, idx, 0), axis=1)
    last = np.minimum.accumulate(np.where(end, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    return _Sorted(t=t, w=w, e=e, g=g, first=first, last=np.ascontiguousarray(last), end=end)


def _prepare_two_arm(Tc, Ec, Tt, Et) -> _Sorted:
    Tc, Tt = _as_2d("Tc", Tc), _as_2d("Tt", Tt)
    Ec, Et = _as_2d("Ec", Ec, bool), _as_2d("Et", Et, bool)
    if Ec.shape != Tc.shape or Et.shape != Tt.shape:
        raise ChemohostError(f"event arrays must match their time arrays: Tc {Tc.shape} vs Ec "
                             f"{Ec.shape}, Tt {Tt.shape} vs Et {Et.shape}.")
    if Tc.shape[0] != Tt.shape[0]:
        raise ChemohostError(f"control and treatment must have the same number of replicates "
                             f"(rows): {Tc.shape[0]} vs {Tt.shape[0]}.")
    _check_times("Tc", Tc)
    _check_times("Tt", Tt)
    T = np.concatenate([Tc, Tt], axis=1)
    E = np.concatenate([Ec, Et], axis=1)
    G = np.concatenate([np.zeros(Tc.shape), np.ones(Tt.shape)], axis=1)
    return _sort_rows(T, E, G)


# --------------------------------------------------------------------------------------------
# log-rank
# --------------------------------------------------------------------------------------------

def logrank_batch(Tc, Ec, Tt, Et) -> dict:
    """Two-sample log-rank test per replicate (row), vectorised.

    At each distinct event time t_k with n_k at risk (n1_k of them treated), d_k events
    (d1_k treated):

        O - E = sum_k ( d1_k - d_k n1_k / n_k )
        V     = sum_k d_k (n1_k / n_k)(1 - n1_k / n_k)(n_k - d_k) / (n_k - 1)   (hypergeometric)
        z = (O - E) / sqrt(V),   chi2 = z^2 (1 df),   p = P(chi2_1 > chi2) (two-sided)
        hr_logrank = exp((O - E) / V)          Peto / log-rank one-step hazard-ratio estimate

    O - E refers to the treatment arm, so z < 0 (HR < 1) means fewer events than expected on
    treatment (benefit).  Ties: all d_k events at t_k are counted together and the risk set
    includes patients censored at t_k.  NaN times are ignored.  Rows without information
    (V = 0, e.g. no events) give NaN statistics.

    Returns a dict of (R,) arrays: ``o_minus_e``, ``var``, ``z``, ``chi2``, ``p``,
    ``hr_logrank``.
    """
    s = _prepare_two_arm(Tc, Ec, Tt, Et)
    n = s.at_risk(s.w)
    n1 = s.at_risk(s.g)
    d = s.group_sum(s.e)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(n > 0, n1 / np.where(n > 0, n, 1.0), 0.0)
        o_minus_e = np.sum(s.e * (s.g - frac), axis=1)
        # per event: share of the group's variance term; summed over the d_k tied events the
        # group contributes d_k * frac(1-frac)(n-d)/(n-1)
        shrink = np.where(n > 1, (n - d) / np.where(n > 1, n - 1, 1.0), 0.0)
        var = np.sum(s.e * frac * (1.0 - frac) * shrink, axis=1)
        ok = var > 0
        safe_var = np.where(ok, var, 1.0)
        z = np.where(ok, o_minus_e / np.sqrt(safe_var), np.nan)
        hr = np.where(ok, np.exp(o_minus_e / safe_var), np.nan)
    chi2 = z * z
    p = np.where(ok, stats.chi2.sf(np.where(ok, chi2, 0.0), 1), np.nan)
    return {"o_minus_e": o_minus_e, "var": var, "z": z, "chi2": chi2, "p": p,
            "hr_logrank": hr}


# --------------------------------------------------------------------------------------------
# Cox
# --------------------------------------------------------------------------------------------

def _cox_terms(s: _Sorted, beta: np.ndarray, efron: bool):
    """Partial log-likelihood, score and information for one binary covariate at beta (R,).

    Efron: at a time with d tied events (set D) and risk set R, the l-th (l = 0..d-1) tied
    event uses S0_l = S0 - (l/d) D0 and S1_l = S1 - (l/d) D1, with S0 = sum_R exp(b x),
    S1 = sum_R x exp(b x), D0, D1 the same sums over D.  For binary x, S2 = S1.
        loglik = sum_D b x - sum_l log S0_l
        score  = sum_D x   - sum_l S1_l / S0_l
        info   = sum_l [ S1_l / S0_l - (S1_l / S0_l)^2 ]
    Breslow is the same with l = 0 for every tied event.
    """
    r = np.exp(beta[:, None] * s.g) * s.w
    rx = r * s.g
    s0 = s.at_risk(r)
    s1 = s.at_risk(rx)
    if efron:
        d = s.group_sum(s.e)
        frac = s.rank_in_group(s.e) / np.where(d > 0, d, 1.0)
        s0 = s0 - frac * s.group_sum(s.e * r)
        s1 = s1 - frac * s.group_sum(s.e * rx)
    ev = s.e > 0
    s0 = np.where(ev, s0, 1.0)
    m = np.where(ev, s1 / s0, 0.0)
    xe = np.sum(s.e * s.g, axis=1)
    loglik = beta * xe - np.sum(s.e * np.log(s0), axis=1)
    score = xe - np.sum(s.e * m, axis=1)
    info = np.sum(s.e * (m - m * m), axis=1)
    return loglik, score, info


def cox_batch(Tc, Ec, Tt, Et, max_iter: int = 30, tol: float = 1e-9,
              ties: str = "efron") -> dict:
    """Cox proportional-hazards model with one binary covariate (treatment = 1) per replicate.

    Newton-Raphson on the partial likelihood, vectorised across replicates, starting at
    beta = 0 with step halving whenever the log-likelihood would decrease (it is concave, so
    this only guards against overshoot).  Converged when |step| < ``tol``.  Ties: ``"efron"``
    (default; Efron 1977, as lifelines' CoxPHFitter) or ``"breslow"``; see ``_cox_terms`` for
    the formulas.  NaN times are ignored.

        se = 1 / sqrt(information at beta_hat);  95% Wald CI exp(beta_hat -/+ 1.96 se);
        p_wald = 2 P(Z > |beta_hat / se|)

    Replicates where the estimate is infinite or undefined (no events in one arm, monotone
    likelihood, |beta| > 30, no convergence within ``max_iter``) get NaN estimates and
    ``converged`` False; nothing is raised and no warning is emitted.

    Returns a dict of (R,) arrays: ``log_hr``, ``se``, ``hr``, ``hr_ci_low``, ``hr_ci_high``,
    ``p_wald``, ``converged`` (bool).
    """
    if ties not in ("efron", "breslow"):
        raise ChemohostError(f"ties must be 'efron' or 'breslow', not {ties!r}.")
    efron = ties == "efron"
    s = _prepare_two_arm(Tc, Ec, Tt, Et)
    R = s.t.shape[0]
    ev_t = np.sum(s.e * s.g, axis=1)
    ev_c = np.sum(s.e, axis=1) - ev_t
    estimable = (ev_t > 0) & (ev_c > 0)
    beta = np.zeros(R)
    done = ~estimable
    converged = np.zeros(R, dtype=bool)
    with np.errstate(all="ignore"):
        ll, score, info = _cox_terms(s, beta, efron)
        for _ in range(max_iter):
            active = ~done
            if not active.any():
                break
            good_info = info > 0
            step = np.where(active & good_info, score / np.where(good_info, info, 1.0), 0.0)
            done |= active & ~good_info
            for _h in range(30):
                new = beta + step
                ll_new, score_new, info_new = _cox_terms(s, new, efron)
                worse = ~(ll_new >= ll - 1e-12 * np.abs(ll)) & (step != 0)
                if not worse.any():
                    break
                step = np.where(worse, step / 2.0, step)
            beta, ll, score, info = new, ll_new, score_new, info_new
            newly = ~done & (np.abs(step) < tol)
            converged |= newly
            done |= newly
            diverged = ~done & (np.abs(beta) > 30)
            done |= diverged
        converged &= estimable & (info > 0) & np.isfinite(beta)
        log_hr = np.where(converged, beta, np.nan)
        se = np.where(converged, 1.0 / np.sqrt(np.where(converged, info, 1.0)), np.nan)
        hr = np.exp(log_hr)
        lo = np.exp(log_hr - _Z975 * se)
        hi = np.exp(log_hr + _Z975 * se)
        zw = log_hr / se
    p = np.full(R, np.nan)
    p[converged] = 2.0 * stats.norm.sf(np.abs(zw[converged]))
    return {"log_hr": log_hr, "se": se, "hr": hr, "hr_ci_low": lo, "hr_ci_high": hi,
            "p_wald": p, "converged": converged}


# --------------------------------------------------------------------------------------------
# Kaplan-Meier median
# --------------------------------------------------------------------------------------------

def km_median_batch(T, E) -> np.ndarray:
    """Kaplan-Meier median survival per row.

    S(t) = prod_{t_k <= t} (1 - d_k / n_k), computed as exp(cumsum(log(n_k - d_k) - log n_k))
    exactly as lifelines does; the median is the first time with S(t) <= 0.5 (lifelines'
    ``median_survival_time_``).  Returns ``np.inf`` where S never reaches 0.5 and NaN for rows
    with no analysable patient.  NaN times are ignored; ties as in the log-rank test.
    """
    T = _as_2d("T", T)
    E = _as_2d("E", E, bool)
    if E.shape != T.shape:
        raise ChemohostError(f"E must match T: {E.shape} vs {T.shape}.")
    _check_times("T", T)
    s = _sort_rows(T, E, np.zeros(T.shape))
    n = s.at_risk(s.w)
    d = s.group_sum(s.e)
    use = s.end & (s.w > 0) & (d > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inc = np.where(use, np.log(np.where(use, n - d, 1.0)) - np.log(np.where(use, n, 1.0)),
                       0.0)
        surv = np.exp(np.cumsum(inc, axis=1))
    hit = use & (surv <= 0.5)
    any_hit = hit.any(axis=1)
    pos = np.argmax(hit, axis=1)
    med = np.where(any_hit, s.t[np.arange(T.shape[0]), pos], np.inf)
    return np.where(s.w.any(axis=1), med, np.nan)


# --------------------------------------------------------------------------------------------
# power and sample size
# --------------------------------------------------------------------------------------------

def _clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial CI (Clopper & Pearson 1934): Beta(a/2; k, n-k+1), Beta(1-a/2; k+1, n-k)."""
    if n == 0:
        return (math.nan, math.nan)
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return (lo, hi)


def power_summary(p, z, alpha: float = 0.05, favourable: str = "negative") -> dict:
    """Empirical power over replicates with exact Clopper-Pearson 95% intervals.

    power = #{p < alpha and effect favourable} / R, where favourable means z < 0
    (``favourable="negative"``: fewer events on treatment, the log-rank convention) or z > 0
    (``"positive"``).  ``rejection_rate_any_direction`` = #{p < alpha} / R (the type-I error
    under the null).  NaN p values count as not significant but stay in the denominator;
    ``n_nan`` reports how many there were.
    """
    if favourable not in ("negative", "positive"):
        raise ChemohostError(f"favourable must be 'negative' or 'positive', not {favourable!r}.")
    p = np.asarray(p, dtype=float).ravel()
    z = np.asarray(z, dtype=float).ravel()
    if p.shape != z.shape:
        raise ChemohostError(f"p and z must have the same length: {p.size} vs {z.size}.")
    n = int(p.size)
    with np.errstate(invalid="ignore"):
        sig = np.where(np.isnan(p), False, p < alpha)
        good = (z < 0) if favourable == "negative" else (z > 0)
    k = int(np.sum(sig & good))
    k_any = int(np.sum(sig))
    ci = _clopper_pearson(k, n)
    ci_any = _clopper_pearson(k_any, n)
    return {
        "power": k / n if n else math.nan,
        "power_ci_low": ci[0], "power_ci_high": ci[1],
        "rejection_rate_any_direction": k_any / n if n else math.nan,
        "rejection_ci_low": ci_any[0], "rejection_ci_high": ci_any[1],
        "n_replicates": n, "n_significant": k, "n_significant_any_direction": k_any,
        "n_nan": int(np.sum(np.isnan(p))), "alpha": alpha,
    }


def schoenfeld_events(hr: float, alpha: float = 0.05, power: float = 0.8,
                      allocation: float = 0.5) -> float:
    """Required number of events for a two-sided log-rank test (Schoenfeld 1981 Biometrika 68:316).

        D = (z_{1-alpha/2} + z_{power})^2 / (a (1 - a) ln(HR)^2)

    with a the share of patients allocated to treatment.  Not rounded.
    """
    if not (hr > 0 and hr != 1):
        raise ChemohostError(f"hr must be > 0 and != 1 for a sample-size calculation, got {hr}.")
    if not (0 < allocation < 1 and 0 < alpha < 1 and 0 < power < 1):
        raise ChemohostError("alpha, power and allocation must lie strictly between 0 and 1.")
    za = stats.norm.ppf(1 - alpha / 2)
    zb = stats.norm.ppf(power)
    return float((za + zb) ** 2 / (allocation * (1 - allocation) * math.log(hr) ** 2))


def schoenfeld_n_per_arm(hr: float, event_probability: float, alpha: float = 0.05,
                         power: float = 0.8) -> int:
    """Patients per arm for 1:1 allocation: ceil(D / event_probability / 2).

    D from :func:`schoenfeld_events` with allocation 0.5; ``event_probability`` is the expected
    share of patients (both arms pooled) whose event is observed by the analysis.
    """
    if not 0 < event_probability <= 1:
        raise ChemohostError(f"event_probability must be in (0, 1], got {event_probability}.")
    d = schoenfeld_events(hr, alpha=alpha, power=power, allocation=0.5)
    return int(math.ceil(d / event_probability / 2.0 - 1e-9))


def n_for_power(ns, powers, target: float = 0.8) -> dict:
    """Smallest per-arm size reaching ``target`` power, from a grid of estimated powers.

    ``ns`` must be strictly increasing; ``powers`` are the estimates at those sizes (NaN = not
    reached).  Returns
      ``n_min``: the smallest grid n with power >= target (None if never reached);
      ``n_interp_linear`` / ``n_interp_loglinear``: n where the straight line through the
      bracketing points (n_lo, p_lo) < target <= (n_hi, p_hi) crosses target, with power linear
      in n or in ln(n) respectively (equal to ns[0] if already reached there; None if never);
      ``monotone``: False when an estimate decreases along the grid (Monte-Carlo noise or a
      non-nested design: treat the interpolation with caution); ``bracket``: (n_lo, n_hi).
    """
    ns = np.asarray(ns, dtype=float).ravel()
    pw = np.asarray(powers, dtype=float).ravel()
    if ns.size != pw.size or ns.size == 0:
        raise ChemohostError(f"ns and powers must be non-empty and of equal length "
                             f"({ns.size} vs {pw.size}).")
    if np.any(np.diff(ns) <= 0) or np.any(ns <= 0):
        raise ChemohostError("ns must be positive and strictly increasing.")
    finite = pw[~np.isnan(pw)]
    monotone = bool(np.all(np.diff(finite) >= 0))
    reached = np.where(np.isnan(pw), False, pw >= target)
    out = {"target": target, "monotone": monotone, "n_min": None, "n_interp_linear": None,
           "n_interp_loglinear": None, "bracket": None}
    if not reached.any():
        return out
    i = int(np.argmax(reached))
    out["n_min"] = int(ns[i]) if float(ns[i]).is_integer() else float(ns[i])
    if i == 0:
        out["n_interp_linear"] = out["n_interp_loglinear"] = float(ns[0])
        out["bracket"] = (float(ns[0]), float(ns[0]))
        return out
    j = i - 1
    while j >= 0 and np.isnan(pw[j]):
        j -= 1
    if j < 0:
        out["n_interp_linear"] = out["n_interp_loglinear"] = float(ns[i])
        out["bracket"] = (float(ns[i]), float(ns[i]))
        return out
    n0, n1, p0, p1 = ns[j], ns[i], pw[j], pw[i]
    f = (target - p0) / (p1 - p0)
    out["n_interp_linear"] = float(n0 + f * (n1 - n0))
    out["n_interp_loglinear"] = float(math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0))))
    out["bracket"] = (float(n0), float(n1))
    return out


def nested_power(Tc, Ec, Tt, Et, ns, alpha: float = 0.05) -> list[dict]:
    """Power and effect-size spread for growing per-arm sizes on the same replicates.

    For each n in ``ns`` the first n patients of each arm in every replicate are analysed
    (nested design: larger n extends, never redraws, the smaller trials, so power curves are
    smooth and comparisons between n are paired).  Per n:
      log-rank power with Clopper-Pearson CI (keys of :func:`power_summary`, favourable z < 0);
      ``cox_power`` (Wald p < alpha and HR < 1) and ``n_cox_not_converged``;
      ``hr_median``, ``hr_q025``, ``hr_q975`` of the converged per-replicate Cox HRs;
      ``median_diff_median``, ``median_diff_q025``, ``median_diff_q975`` of the treatment
      minus control KM medians over replicates where both medians are finite, and
      ``n_median_not_reached`` (replicates where either arm's median is not reached or
      undefined).  Quantiles are NaN when no replicate qualifies.
    """
    Tc, Tt = _as_2d("Tc", Tc), _as_2d("Tt", Tt)
    Ec, Et = _as_2d("Ec", Ec, bool), _as_2d("Et", Et, bool)
    out = []
    for n in ns:
        n = int(n)
        if n < 1 or n > Tc.shape[1] or n > Tt.shape[1]:
            raise ChemohostError(f"n={n} must be between 1 and the arm sizes "
                                 f"({Tc.shape[1]}, {Tt.shape[1]}).")
        tc, ec, tt, et = Tc[:, :n], Ec[:, :n], Tt[:, :n], Et[:, :n]
        lr = logrank_batch(tc, ec, tt, et)
        cx = cox_batch(tc, ec, tt, et)
        row = {"n": n}
        row.update(power_summary(lr["p"], lr["z"], alpha=alpha))
        conv = cx["converged"]
        cox_sig = conv & (np.where(conv, cx["p_wald"], 1.0) < alpha) & (
            np.where(conv, cx["log_hr"], 0.0) < 0)
        row["cox_power"] = float(np.mean(cox_sig))
        row["n_cox_not_converged"] = int(np.sum(~conv))
        hrs = cx["hr"][conv]
        q = np.quantile(hrs, [0.5, 0.025, 0.975]) if hrs.size else np.full(3, np.nan)
        row["hr_median"], row["hr_q025"], row["hr_q975"] = (float(v) for v in q)
        with np.errstate(invalid="ignore"):
            diff = km_median_batch(tt, et) - km_median_batch(tc, ec)
        fin = np.isfinite(diff)
        dq = np.quantile(diff[fin], [0.5, 0.025, 0.975]) if fin.any() else np.full(3, np.nan)
        row["median_diff_median"], row["median_diff_q025"], row["median_diff_q975"] = (
            float(v) for v in dq)
        row["n_median_not_reached"] = int(np.sum(~fin))
        out.append(row)
    return out
