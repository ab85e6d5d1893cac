"""Gemcitabine PK reproduces Jiang 2008 (human) and PMC7606647 (mouse) typical behaviour."""

import numpy as np
import pytest

import chemohost as ch
from conftest import terminal_half_life, typical

GEM_30MIN = ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1,), 28, 1)


def test_end_of_infusion_concentration_jiang(tight):
    # parameters.md 1.1: 1000 mg/m2 x 1.8 m2 over 30 min -> ~20 mg/L (~76 uM) at the end of infusion
    model, names, p = typical("gemcitabine_pk")
    r = ch.simulate(model, p[None], [GEM_30MIN], [0.5 / 24], ["C_gem", "C_gem_uM"], options=tight)
    c, cu = r.values[0, 0]
    assert c == pytest.approx(20.0, rel=0.03)
    assert cu == pytest.approx(76.0, rel=0.03)


def test_terminal_half_lives_jiang(tight):
    model, names, p = typical("gemcitabine_pk")
    t = np.linspace(2 / 24, 4 / 24, 20)  # 1.5-3.5 h after the end of infusion: beta phase
    r = ch.simulate(model, p[None], [GEM_30MIN], t, ["C_gem"], options=tight)
    assert terminal_half_life(t, r.output("C_gem")[0]) * 24 * 60 == pytest.approx(19.6, rel=0.03)
    # dFdU terminal half-life ~53 h at CrCL 83 mL/min (parameters.md 1.1, derived from Jiang's equations)
    t = np.linspace(6, 12, 20)
    r = ch.simulate(model, p[None], [GEM_30MIN], t, ["C_dfdu"], options=tight)
    assert terminal_half_life(t, r.output("C_dfdu")[0]) * 24 == pytest.approx(53.4, rel=0.03)


def test_dfdctp_exposure_matches_pbmc_auc(tight):
    # calibration target: PBMC dFdCTP AUC0-24h 2640 uM*h (PMID 29451684)
    model, names, p = typical("gemcitabine_pk")
    t = np.linspace(0, 1, 2401)
    r = ch.simulate(model, p[None], [GEM_30MIN], t, ["dfdctp"], options=tight)
    auc = np.trapezoid(r.output("dfdctp")[0], t * 24)
    assert auc == pytest.approx(2640, rel=0.05)


def test_linear_in_dose_and_bsa(tight):
    model, names, p = typical("gemcitabine_pk")
    t = np.linspace(0.01, 2, 30)
    one = ch.simulate(model, p[None], [GEM_30MIN], t, ["C_gem", "C_dfdu"], options=tight).values
    double = ch.Regimen("gemcitabine", 2000, "bsa", "iv", 0.5 / 24, (1,), 28, 1)
    two = ch.simulate(model, p[None], [double], t, ["C_gem", "C_dfdu"], options=tight).values
    np.testing.assert_allclose(two, 2 * one, rtol=1e-7, atol=1e-12)
    # mg/m2 dosing scales with BSA: a 2.0 m2 patient gets 2000 mg
    p = p.copy()
    p[names.index("dfdu_v1_bsa_exp")] = 0.0  # isolate the dose scaling from the PK covariate
    p2 = p.copy()
    p2[names.index("BSA")] = 2.0
    r = ch.simulate(model, np.stack([p, p2]), [GEM_30MIN], [0.5 / 24], ["gem_c", "gem_p", "dfdu_c"], options=tight)
    assert r.values[1].sum() / r.values[0].sum() == pytest.approx(2.0 / 1.8, rel=1e-3)


def test_mouse_iv_bolus_pmc7606647(tight):
    # 20 mg/kg i.v. in a 25 g mouse: C0 67.2 uM, terminal t1/2 42.5 min, dFdU Cmax 15.5 uM
    model, names, p = typical("gemcitabine_pk", "mouse")
    bolus = ch.Regimen("gemcitabine", 20, "weight", "iv", None, (1,), 28, 1)
    r = ch.simulate(model, p[None], [bolus], [0.0], ["C_gem_uM"], options=tight)
    assert r.values[0, 0, 0] == pytest.approx(67.2, rel=0.01)
    t = np.linspace(5 / 24, 8 / 24, 20)  # the beta phase carries little mass: fit late
    r = ch.simulate(model, p[None], [bolus], t, ["C_gem"], options=tight)
    assert terminal_half_life(t, r.output("C_gem")[0]) * 24 * 60 == pytest.approx(42.5, rel=0.03)
    t = np.linspace(0, 0.25, 600)
    r = ch.simulate(model, p[None], [bolus], t, ["C_dfdu_uM"], options=tight)
    assert r.output("C_dfdu_uM")[0].max() == pytest.approx(15.5, rel=0.02)


def test_mouse_ip_route_absorbs_with_bioavailability(tight):
    # i.p. 120 mg/kg (the paper's dose): depot absorption; with F = 1 the AUC equals the i.v. AUC
    model, names, p = typical("gemcitabine_pk", "mouse")
    t = np.linspace(0, 1, 4001)
    ip = ch.simulate(model, p[None], [ch.Regimen("gemcitabine", 120, "weight", "ip", None, (1,), 7, 1)], t,
                     ["C_gem"], options=tight).output("C_gem")[0]
    iv = ch.simulate(model, p[None], [ch.Regimen("gemcitabine", 120, "weight", "iv", None, (1,), 7, 1)], t,
                     ["C_gem"], options=tight).output("C_gem")[0]
    assert ip[0] < 1e-9 * iv[0] and iv[0] > 0
    assert np.trapezoid(ip, t) == pytest.approx(np.trapezoid(iv, t), rel=1e-3)
    assert 0.0 < t[ip.argmax()] * 24 < 1.0  # absorption peak within the first hour
    pF = p.copy()
    pF[names.index("F_gem_ip")] = 0.5
    half = ch.simulate(model, pF[None], [ch.Regimen("gemcitabine", 120, "weight", "ip", None, (1,), 7, 1)], t,
                       ["C_gem"], options=tight).output("C_gem")[0]
    assert np.trapezoid(half, t) == pytest.approx(0.5 * np.trapezoid(ip, t), rel=1e-6)
