"""Tests of the replicate-trial statistics layer (chemohost.studies.replicates)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from chemohost.studies.replicates import (
    cox_batch,
    km_median_batch,
    logrank_batch,
    n_for_power,
    nested_power,
    power_summary,
    schoenfeld_events,
    schoenfeld_n_per_arm,
)

lifelines = pytest.importorskip("lifelines")
from lifelines import CoxPHFitter, KaplanMeierFitter  # noqa: E402
from lifelines.statistics import logrank_test  # noqa: E402


def _trial(rng, R, n_c, n_t, hr=1.0, rate=1.0, censor_max=3.0, ties=False):
    """Exponential times, uniform(0, censor_max) censoring; optional rounding to make ties."""
    Tc = rng.exponential(1.0 / rate, (R, n_c))
    Tt = rng.exponential(1.0 / (rate * hr), (R, n_t))
    Cc = rng.uniform(0, censor_max, (R, n_c))
    Ct = rng.uniform(0, censor_max, (R, n_t))
    Ec, Et = Tc <= Cc, Tt <= Ct
    Tc, Tt = np.minimum(Tc, Cc), np.minimum(Tt, Ct)
    if ties:  # coarse grid -> many ties, including events tied with censorings
        Tc, Tt = np.ceil(Tc * 8) / 8, np.ceil(Tt * 8) / 8
    return Tc, Ec, Tt, Et


def _with_nans(rng, Tc, Tt):
    Tc, Tt = Tc.copy(), Tt.copy()
    Tc[rng.random(Tc.shape) < 0.08] = np.nan
    Tt[rng.random(Tt.shape) < 0.08] = np.nan
    return Tc, Tt


def _row_frame(Tc, Ec, Tt, Et):
    mc, mt = ~np.isnan(Tc), ~np.isnan(Tt)
    return pd.DataFrame({"T": np.r_[Tc[mc], Tt[mt]], "E": np.r_[Ec[mc], Et[mt]],
                         "x": np.r_[np.zeros(mc.sum()), np.ones(mt.sum())]})


# ------------------------------------------------------------------------------ lifelines

@pytest.mark.parametrize("ties", [False, True])
def test_logrank_matches_lifelines(ties):
    rng = np.random.default_rng(11)
    Tc, Ec, Tt, Et = _trial(rng, 8, 45, 38, hr=0.7, ties=ties)
    Tc, Tt = _with_nans(rng, Tc, Tt)
    if ties:
        assert len(np.unique(Tc[0][~np.isnan(Tc[0])])) < np.sum(~np.isnan(Tc[0]))
    lr = logrank_batch(Tc, Ec, Tt, Et)
    for r in range(Tc.shape[0]):
        mc, mt = ~np.isnan(Tc[r]), ~np.isnan(Tt[r])
        ref = logrank_test(Tt[r][mt], Tc[r][mc], Et[r][mt], Ec[r][mc])
        assert abs(ref.p_value - lr["p"][r]) < 1e-8
        assert abs(ref.test_statistic - lr["chi2"][r]) < 1e-8
    np.testing.assert_allclose(lr["z"] ** 2, lr["chi2"])
    np.testing.assert_allclose(lr["hr_logrank"], np.exp(lr["o_minus_e"] / lr["var"]))


@pytest.mark.parametrize("ties", [False, True])
def test_cox_efron_matches_lifelines(ties):
    rng = np.random.default_rng(12)
    Tc, Ec, Tt, Et = _trial(rng, 6, 50, 42, hr=0.6, ties=ties)
    Tc, Tt = _with_nans(rng, Tc, Tt)
    cx = cox_batch(Tc, Ec, Tt, Et)
    assert cx["converged"].all()
    for r in range(Tc.shape[0]):
        # lifelines' default stopping rule leaves |score| ~1e-5 (log-HR errors up to ~1e-4);
        # a tight precision makes it a 1e-6 reference
        f = CoxPHFitter().fit(_row_frame(Tc[r], Ec[r], Tt[r], Et[r]), "T", "E",
                              fit_options={"precision": 1e-12, "r_precision": 1e-15})
        assert abs(f.params_["x"] - cx["log_hr"][r]) < 1e-6
        assert abs(f.standard_errors_["x"] - cx["se"][r]) < 1e-6
        assert abs(f.summary.loc["x", "p"] - cx["p_wald"][r]) < 1e-5
    np.testing.assert_allclose(cx["hr_ci_low"], np.exp(cx["log_hr"] - 1.959964 * cx["se"]),
                               rtol=1e-6)


def test_cox_breslow_matches_direct_likelihood_and_differs_from_efron_with_ties():
    rng = np.random.default_rng(13)
    Tc, Ec, Tt, Et = _trial(rng, 3, 40, 40, hr=0.6, ties=True)
    br = cox_batch(Tc, Ec, Tt, Et, ties="breslow")
    ef = cox_batch(Tc, Ec, Tt, Et, ties="efron")
    for r in range(3):
        t = np.r_[Tc[r], Tt[r]]
        e = np.r_[Ec[r], Et[r]]
        x = np.r_[np.zeros(40), np.ones(40)]

        def negll(b):
            ll = 0.0
            for tk in np.unique(t[e]):
                dk = (t == tk) & e
                risk = t >= tk
                ll += b * x[dk].sum() - dk.sum() * np.log(np.exp(b * x[risk]).sum())
            return -ll

        ref = optimize.minimize_scalar(negll, bounds=(-5, 5), method="bounded",
                                       options={"xatol": 1e-10}).x
        assert abs(ref - br["log_hr"][r]) < 1e-6
    assert np.max(np.abs(br["log_hr"] - ef["log_hr"])) > 1e-3
    # without ties the two methods coincide
    Tc, Ec, Tt, Et = _trial(rng, 3, 40, 40, hr=0.6)
    np.testing.assert_allclose(cox_batch(Tc, Ec, Tt, Et, ties="breslow")["log_hr"],
                               cox_batch(Tc, Ec, Tt, Et)["log_hr"], atol=1e-10)


def test_km_median_matches_lifelines():
    rng = np.random.default_rng(14)
    T, E, T2, E2 = _trial(rng, 10, 30, 30, ties=True, censor_max=2.5)
    T = np.vstack([T, T2, np.arange(1.0, 11.0).repeat(3)[None, :]])   # exact S = 0.5 case
    E = np.vstack([E, E2, np.ones((1, 30), bool)])
    E[0] = False
    E[0, :3] = True                                                   # median never reached
    T[1, :4] = np.nan
    med = km_median_batch(T, E)
    for r in range(T.shape[0]):
        m = ~np.isnan(T[r])
        ref = KaplanMeierFitter().fit(T[r][m], E[r][m]).median_survival_time_
        assert med[r] == ref, (r, med[r], ref)
    assert med[0] == np.inf
    assert np.isnan(km_median_batch([[np.nan, np.nan]], [[True, False]])[0])
    # S(t) exactly 0.5 counts as reached (first t with S <= 0.5), with a tied event pair
    small = ([[1.0, 2.0, np.nan, np.nan], [1.0, 1.0, 2.0, 3.0]],
             [[True, True, True, False], [True, True, False, True]])
    assert km_median_batch(*small).tolist() == [1.0, 1.0]
    ref = KaplanMeierFitter().fit([1.0, 1.0, 2.0, 3.0], [1, 1, 0, 1])
    assert ref.median_survival_time_ == 1.0


# ------------------------------------------------------------------ operating characteristics

def test_type_one_error():
    rng = np.random.default_rng(2024)
    R = 400
    Tc, Ec, Tt, Et = _trial(rng, R, 60, 60, hr=1.0, censor_max=2.0)
    lr = logrank_batch(Tc, Ec, Tt, Et)
    ps = power_summary(lr["p"], lr["z"])
    assert ps["n_replicates"] == R and ps["n_nan"] == 0
    rate = ps["rejection_rate_any_direction"]
    assert ps["rejection_ci_low"] <= 0.05 <= ps["rejection_ci_high"]
    lo, hi = stats.binom.interval(0.95, R, 0.05)
    assert lo / R <= rate <= hi / R
    # one-sided "power" under the null is about half the two-sided rejection rate
    assert ps["power"] <= rate


def test_power_near_one_for_large_effect():
    rng = np.random.default_rng(7)
    Tc, Ec, Tt, Et = _trial(rng, 200, 150, 150, hr=0.4)
    lr = logrank_batch(Tc, Ec, Tt, Et)
    assert power_summary(lr["p"], lr["z"])["power"] > 0.97
    # the wrong favourable direction gives (almost) no power
    assert power_summary(lr["p"], lr["z"], favourable="positive")["power"] < 0.03
    cx = cox_batch(Tc, Ec, Tt, Et)
    assert abs(np.median(cx["hr"]) - 0.4) < 0.05


def test_logrank_power_matches_schoenfeld():
    hr, cmax = 0.7, 3.0
    # P(event) with exponential rate lam and Uniform(0, cmax) censoring
    pe = np.mean([1 - (1 - math.exp(-lam * cmax)) / (lam * cmax) for lam in (1.0, hr)])
    n = schoenfeld_n_per_arm(hr, pe, alpha=0.05, power=0.8)
    assert 180 <= n <= 210
    rng = np.random.default_rng(99)
    Tc, Ec, Tt, Et = _trial(rng, 500, n, n, hr=hr, censor_max=cmax)
    lr = logrank_batch(Tc, Ec, Tt, Et)
    events = Ec.sum(1) + Et.sum(1)
    assert abs(events.mean() - schoenfeld_events(hr)) < 10
    power = power_summary(lr["p"], lr["z"])["power"]
    assert abs(power - 0.8) < 0.07


def test_schoenfeld_formula():
    d = schoenfeld_events(0.7)
    expected = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) ** 2 / (0.25 * math.log(0.7) ** 2)
    assert d == pytest.approx(expected) and 246 < d < 248
    assert schoenfeld_events(0.7, allocation=2 / 3) == pytest.approx(d * 0.25 / (2 / 9))
    assert schoenfeld_n_per_arm(0.7, 0.5) == math.ceil(d / 0.5 / 2)


def test_power_summary_counts_and_clopper_pearson():
    p = np.array([0.01, 0.01, 0.2, np.nan, 0.04, 0.5, 0.001, 0.3, 0.9, 0.02])
    z = np.array([-3.0, 2.5, -1.0, np.nan, -2.1, 0.1, -3.5, 1.0, 0.0, 2.4])
    ps = power_summary(p, z)
    assert (ps["n_replicates"], ps["n_significant"], ps["n_nan"]) == (10, 3, 1)
    assert ps["n_significant_any_direction"] == 5
    assert ps["power"] == pytest.approx(0.3)
    # Clopper-Pearson 3/10: (0.0667, 0.6525)
    assert ps["power_ci_low"] == pytest.approx(0.06673951, abs=1e-6)
    assert ps["power_ci_high"] == pytest.approx(0.65245285, abs=1e-6)
    ps0 = power_summary(np.ones(10), np.zeros(10))
    assert ps0["power_ci_low"] == 0.0
    assert ps0["power_ci_high"] == pytest.approx(1 - 0.025 ** (1 / 10))


# ------------------------------------------------------------------------------ robustness

def test_nan_times_equal_absent_patients():
    rng = np.random.default_rng(5)
    Tc, Ec, Tt, Et = _trial(rng, 4, 30, 25, hr=0.7, ties=True)
    Tcn, Ttn = _with_nans(rng, Tc, Tt)
    lr = logrank_batch(Tcn, Ec, Ttn, Et)
    cx = cox_batch(Tcn, Ec, Ttn, Et)
    for r in range(4):
        mc, mt = ~np.isnan(Tcn[r]), ~np.isnan(Ttn[r])
        a = (Tc[r][mc], Ec[r][mc], Tt[r][mt], Et[r][mt])
        lr1, cx1 = logrank_batch(*a), cox_batch(*a)
        for k in ("o_minus_e", "var", "p"):
            assert lr1[k][0] == pytest.approx(lr[k][r], rel=1e-12, abs=1e-12)
        assert cx1["log_hr"][0] == pytest.approx(cx["log_hr"][r], abs=1e-10)
        assert km_median_batch(Tcn[r:r + 1], Ec[r:r + 1])[0] == km_median_batch(
            Tc[r][mc], Ec[r][mc])[0]
    # the NaN patients really changed something
    assert not np.allclose(lr["o_minus_e"], logrank_batch(Tc, Ec, Tt, Et)["o_minus_e"])


def test_degenerate_replicates_give_nan_without_warnings():
    rng = np.random.default_rng(6)
    Tc, Ec, Tt, Et = _trial(rng, 5, 20, 20, hr=0.7)
    Et[1] = False                      # no treatment events
    Ec[2] = False                      # no control events
    Ec[3] = False
    Et[3] = False                      # no events at all
    Tt[4] = np.nan                     # empty treatment arm
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        cx = cox_batch(Tc, Ec, Tt, Et)
        lr = logrank_batch(Tc, Ec, Tt, Et)
        med = km_median_batch(Tt, Et)
        res = nested_power(Tc, Ec, Tt, Et, [10, 20])
        power_summary(lr["p"], lr["z"])
    assert cx["converged"].tolist() == [True, False, False, False, False]
    for k in ("log_hr", "se", "hr", "hr_ci_low", "hr_ci_high", "p_wald"):
        assert np.isfinite(cx[k][0]) and np.isnan(cx[k][1:]).all(), k
    assert np.isfinite(lr["p"][:3]).all()                 # log-rank is fine with one-arm events
    assert lr["z"][1] < 0 < lr["z"][2]
    assert np.isnan(lr["p"][3:]).all()
    assert med[1] == np.inf and np.isnan(med[4])
    assert res[1]["n_cox_not_converged"] == 4 and res[1]["n_nan"] == 2


def test_bad_input_raises():
    from chemohost.errors import ChemohostError
    with pytest.raises(ChemohostError):
        logrank_batch([[1.0, -2.0]], [[True, True]], [[1.0]], [[True]])
    with pytest.raises(ChemohostError):
        cox_batch(np.ones((2, 3)), np.ones((2, 3), bool), np.ones((3, 3)), np.ones((3, 3), bool))


# ------------------------------------------------------------------------------ sample size

def test_n_for_power_interpolation_and_none():
    r = n_for_power([50, 100, 200], [0.5, 0.7, 0.9], target=0.8)
    assert r["n_min"] == 200 and r["bracket"] == (100.0, 200.0)
    assert r["n_interp_linear"] == pytest.approx(150.0)
    assert r["n_interp_loglinear"] == pytest.approx(100 * math.sqrt(2))
    assert r["monotone"]
    r = n_for_power([50, 100, 200], [0.5, 0.7, 0.75])
    assert r["n_min"] is None and r["n_interp_linear"] is None and r["n_interp_loglinear"] is None
    r = n_for_power([50, 100, 200, 400], [0.5, 0.85, 0.8, 0.95])
    assert not r["monotone"] and r["n_min"] == 100
    assert r["n_interp_linear"] == pytest.approx(50 + 50 * 0.3 / 0.35)
    r = n_for_power([50, 100], [0.9, 0.95])
    assert r["n_min"] == 50 and r["n_interp_linear"] == 50.0


def test_nested_power_uses_first_n_patients():
    rng = np.random.default_rng(8)
    Tc, Ec, Tt, Et = _trial(rng, 150, 120, 120, hr=0.6)
    ns = [30, 60, 120]
    res = nested_power(Tc, Ec, Tt, Et, ns)
    assert [row["n"] for row in res] == ns
    lr = logrank_batch(Tc[:, :60], Ec[:, :60], Tt[:, :60], Et[:, :60])
    assert res[1]["power"] == power_summary(lr["p"], lr["z"])["power"]
    cx = cox_batch(Tc[:, :60], Ec[:, :60], Tt[:, :60], Et[:, :60])
    assert res[1]["hr_median"] == pytest.approx(np.median(cx["hr"]))
    powers = [row["power"] for row in res]
    assert powers[0] < powers[1] < powers[2]
    assert res[0]["hr_q975"] - res[0]["hr_q025"] > res[2]["hr_q975"] - res[2]["hr_q025"]
    assert res[2]["hr_q025"] < 0.6 < res[2]["hr_q975"]
    # treatment lengthens median survival (true difference ln2 / 0.6 - ln2 = 0.46)
    assert 0.2 < res[2]["median_diff_median"] < 0.8
    assert res[0]["power_ci_low"] <= res[0]["power"] <= res[0]["power_ci_high"]
    nf = n_for_power(ns, powers)
    assert nf["n_min"] is None or nf["n_min"] in ns
