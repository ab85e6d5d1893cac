import json
import math

import numpy as np
import pandas as pd
import pytest

from chemohost.studies.endpoints import (ctcae_neutropenia_grade, dose_intensity, new_lesion_flags,
                                         recist, sum_of_diameters, worst_neutropenia_grade)
from chemohost.studies.survival import (OSLinkParams, arm_summary, compare_arms, os_hazard,
                                        progression_or_death, simulate_os)

T8 = np.arange(0, 8 * 56 + 1, 56.0)  # baseline + assessments every 8 weeks


def _recist(rows, new=None, times=T8, **kw):
    sld = np.array(rows, dtype=float)
    return recist(times, sld, new, **kw)


def test_sum_of_diameters_sphere():
    assert sum_of_diameters(4.18879) == pytest.approx(20.0, rel=1e-4)  # 4/3 pi (1 cm)^3
    assert sum_of_diameters(4.19) == pytest.approx(20.0, abs=0.01)
    assert sum_of_diameters(np.array([[0.0, -1e-12]])).tolist() == [[0.0, 0.0]]


def test_recist_partial_response_confirmed():
    r = _recist([[50, 30, 30, 30, 30, 30, 30, 30, 30]])  # -40%
    assert r.bor[0] == "PR" and not r.pfs_event[0]
    assert math.isnan(r.pd_day[0])
    assert r.pfs_months[0] == pytest.approx(448 / 30.4375)  # censored at last assessment


def test_recist_progression_from_nadir():
    # nadir 30 mm, then 37.5 (+25%, +7.5 mm) -> PD at day 168, after a confirmed PR
    r = _recist([[50, 30, 30, 37.5, 40, 40, 40, 40, 40]])
    assert r.bor[0] == "PR" and r.pfs_event[0]
    assert r.pd_day[0] == 168.0 and r.pfs_months[0] == pytest.approx(168 / 30.4375)
    # stable then +25% from nadir -> SD best response, PD time
    r = _recist([[50, 48, 48, 60, 60, 60, 60, 60, 60]])
    assert r.bor[0] == "SD" and r.pd_day[0] == 168.0
    # +20% but < 5 mm absolute: not PD
    r = _recist([[20, 20, 24, 24, 24, 24, 24, 24, 24]])
    assert r.bor[0] == "SD" and not r.pfs_event[0]
    # growth at first assessment -> PD
    assert _recist([[50, 65, 70, 70, 70, 70, 70, 70, 70]]).bor[0] == "PD"


def test_recist_new_lesion_is_progression():
    met = np.zeros((1, T8.size))
    met[0, 2:] = 0.8
    new = new_lesion_flags(met)
    assert new[0].tolist() == [False, False] + [True] * 7
    r = _recist([[50] * 9], new=new)
    assert r.pfs_event[0] and r.pd_day[0] == 112.0 and r.bor[0] == "SD"
    r = _recist([[50] * 9], new=new_lesion_flags(np.full((1, 9), 0.6)))  # detectable at baseline
    assert not r.pfs_event[0]
    met2 = np.zeros((1, 9))
    met2[0, 1:] = 1.0
    assert _recist([[50] * 9], new=new_lesion_flags(met2)).bor[0] == "PD"


def test_recist_unconfirmed_response_is_sd():
    # PR at day 56 then back to SD: unconfirmed -> SD
    assert _recist([[50, 30, 45, 45, 45, 45, 45, 45, 45]]).bor[0] == "SD"
    # PR at the last assessment only: nothing to confirm it
    assert _recist([[50] * 8 + [30]]).bor[0] == "SD"
    # PR then PD: unconfirmed
    r = _recist([[50, 30, 40, 40, 40, 40, 40, 40, 40]])
    assert r.bor[0] == "SD" and r.pd_day[0] == 112.0
    # confirmation interval: 3-week gap is too short, 4 weeks is enough
    t = np.array([0.0, 56, 77, 140])
    assert _recist([[50, 30, 30, 50]], times=t).bor[0] == "SD"
    t = np.array([0.0, 56, 84, 140])
    assert _recist([[50, 30, 30, 50]], times=t).bor[0] == "PR"


def test_recist_complete_response_and_vectorised():
    rows = [[50, 8, 5, 5, 5, 5, 5, 5, 5],      # CR confirmed
            [50, 9, 11, 11, 11, 11, 11, 11, 11],  # CR then PR (+2 mm: not PD) -> PR
            [50, 30, 30, 30, 30, 30, 30, 30, 30],
            [50, 65, 70, 70, 70, 70, 70, 70, 70],
            [np.nan] * 9]
    r = _recist(rows)
    assert r.bor.tolist() == ["CR", "PR", "PR", "PD", "NE"]
    assert r.pfs_event.tolist() == [False, False, False, True, False]


def test_ctcae_neutropenia_boundaries():
    anc = np.array([2.5, 2.0, 1.99, 1.5, 1.49, 1.0, 0.99, 0.5, 0.49, 0.0, np.nan])
    assert ctcae_neutropenia_grade(anc).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, -1]
    assert worst_neutropenia_grade(np.array([[3.0, 1.2, 2.0], [0.4, 3, 3]])).tolist() == [2, 4]


def test_dose_intensity():
    f = np.array([[1, 1, 0.75, 0], [1, 1, 1, 1.0]])
    assert dose_intensity(f).tolist() == [0.6875, 1.0]
    assert dose_intensity(f, np.array([True, True, False, False])).tolist() == [1.0, 1.0]
    assert math.isnan(dose_intensity(f, np.zeros(4, bool))[0])


def test_os_simulation_reproduces_exponential_median():
    rng = np.random.default_rng(1)
    median_days = 172.0
    lam = math.log(2) / median_days
    t = np.arange(0, 731.0)
    m, e = simulate_os(rng, t, np.full((20000, t.size), lam))
    assert np.median(m[e] if e.all() else m) > 0
    emp = np.quantile(np.where(e, m, np.inf), 0.5) * 30.4375
    assert emp == pytest.approx(median_days, rel=0.05)
    assert 0.05 < 1 - e.mean() < 0.08  # exp(-lam 730) = 0.053 censored at follow-up
    # beyond the grid: last hazard held up to the follow-up time
    m2, e2 = simulate_os(rng, np.arange(0, 31.0), np.full(31, lam)[None, :].repeat(20000, 0),
                         follow_up_days=3000)
    assert np.median(m2) * 30.4375 == pytest.approx(median_days, rel=0.05)


def test_os_hazard_links_covariates():
    p = OSLinkParams()
    t = np.arange(0, 200.0)
    h = os_hazard(p, t, np.array([1.0, 0.5]), np.array([p.sld_ref_mm] * 2), np.array([3.0, 6.0]))
    ratio = h[1, 10] / h[0, 10]
    assert ratio == pytest.approx(0.5 ** p.b_tsr * p.nlr_hr_per_doubling)
    assert 1.3 < p.nlr_hr_per_doubling < 1.6
    nlr = np.array([[3.0, 6.0]])
    h2 = os_hazard(p, t, [1.0], [p.sld_ref_mm], nlr, nlr_times_days=[0, 28])
    assert h2[0, 40] / h2[0, 20] == pytest.approx(p.nlr_hr_per_doubling * (40 / 20) ** (p.weibull_shape - 1))
    # at reference covariates the median equals the parameter
    rng = np.random.default_rng(3)
    tt = np.arange(0, 3000.0)
    hh = os_hazard(p, tt, np.ones(20000), np.full(20000, p.sld_ref_mm), np.full(20000, p.nlr_ref))
    m, e = simulate_os(rng, tt, hh)
    assert np.median(m) == pytest.approx(p.median_os_months, rel=0.05)


def _two_arms(hr, n=2000, seed=5):
    rng = np.random.default_rng(seed)
    t = np.arange(0, 731.0)
    lam = math.log(2) / 172.0
    m0, e0 = simulate_os(rng, t, np.full((n, t.size), lam))
    m1, e1 = simulate_os(rng, t, np.full((n, t.size), hr * lam))
    return pd.DataFrame({"arm": ["control"] * n + ["test"] * n, "os_months": np.r_[m0, m1],
                         "os_event": np.r_[e0, e1]})


def test_cox_hazard_ratio_and_logrank():
    same = compare_arms(_two_arms(1.0), "control")["test"]
    assert same["hr"] == pytest.approx(1.0, abs=0.15)
    assert same["hr_ci_low"] < 1.0 < same["hr_ci_high"]
    double = compare_arms(_two_arms(2.0), "control")["test"]
    assert double["hr"] == pytest.approx(2.0, rel=0.15)
    assert double["logrank_p"] < 1e-6
    json.dumps(double)


def test_arm_summary():
    rng = np.random.default_rng(2)
    n = 400
    df = _two_arms(1.0, n=n).iloc[:n].copy()
    df["bor"] = rng.choice(["CR", "PR", "SD", "PD"], size=n, p=[0.05, 0.15, 0.4, 0.4])
    df["pfs_months"] = rng.exponential(3.0, n)
    df["pfs_event"] = True
    df["max_neutropenia_grade"] = rng.choice([0, 1, 2, 3, 4], size=n)
    s = arm_summary(df)
    assert set(s) >= {"n", "orr", "dcr", "median_pfs_months", "median_pfs_ci_low", "median_pfs_ci_high",
                      "median_os_months", "median_os_ci_low", "median_os_ci_high", "os_12m",
                      "neutropenia_g3plus", "neutropenia_g4"}
    assert s["n"] == n
    assert s["orr"] == pytest.approx(np.isin(df["bor"], ["CR", "PR"]).mean())
    assert s["median_os_ci_low"] < s["median_os_months"] < s["median_os_ci_high"]
    assert s["median_os_months"] == pytest.approx(172 / 30.4375, rel=0.2)
    assert s["os_12m"] == pytest.approx(0.5 ** (365.25 / 172), abs=0.06)
    assert math.isnan(arm_summary(df.drop(columns=["max_neutropenia_grade"]))["neutropenia_g4"])
    json.dumps(s)


def test_progression_or_death():
    t, e = progression_or_death([3.0, 5.0, 5.0], [True, False, False], [4.0, 2.0, 6.0], [True, True, False])
    assert t.tolist() == [3.0, 2.0, 5.0] and e.tolist() == [True, True, False]


def test_patient_endpoints_grades_neutropenia_on_lab_days():
    """A 1-day nadir between weekly counts is seen on the daily grid but not by weekly labs."""
    from types import SimpleNamespace

    from chemohost.studies.endpoints import patient_endpoints

    t = np.arange(0.0, 29.0)
    anc = np.full((2, t.size), 3.0)
    anc[0, 10] = 0.4  # grade 4 on day 10 only (no lab that day)
    anc[1, 14] = 0.8  # grade 3 on day 14 (a lab day)
    res = SimpleNamespace(times=t, n_patients=2, status=np.zeros(2, int), outputs=["ANC"],
                          output=lambda name: anc, dose_factors=np.ones((2, 1)))
    daily = patient_endpoints(res, assess_every_days=28)
    weekly = patient_endpoints(res, assess_every_days=28, lab_every_days=7)
    assert daily["max_neutropenia_grade"].tolist() == [4, 3]
    assert weekly["max_neutropenia_grade"].tolist() == [0, 3]
