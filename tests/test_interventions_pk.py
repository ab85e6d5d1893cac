"""Intervention PK modules (model/mechanisms/interventions.py) reproduce their sources.

Each test composes a small model (covariates + one intervention) and checks a published PK
behaviour; the comment on each assertion names the source.  Values marked "assumed" in
model/data/interventions.csv are only checked for sanity (positive, finite, dose-linear).
"""

import csv
from pathlib import Path

import numpy as np
import pytest

import chemohost
from chemohost.api import parameter_vector
from chemohost.engine.codegen import compile_model
from chemohost.model.core import compose
from chemohost.model.mechanisms import covariates, interventions
from chemohost.model.params import parameter_set
from conftest import terminal_half_life

SPECIES = ("human", "mouse")
OUTPUT = {
    "belnacasan": "C_vrt_uM",
    "bermekimab": "C_bermekimab_nM",
    "anakinra": "C_anakinra_nM",
    "celecoxib": "C_celecoxib_uM",
    "tocilizumab": "C_tocilizumab_nM",
    "cxcr2_antagonist": "C_cxcr2i_uM",
    "anti_pd1": "C_antipd1_nM",
    "filgrastim": "C_filgrastim_ngmL",
}
ROUTES = {
    "belnacasan": {"oral", "ip"},
    "bermekimab": {"iv", "ip"},
    "anakinra": {"sc", "ip", "iv"},
    "celecoxib": {"oral", "ip"},
    "tocilizumab": {"iv"},
    "cxcr2_antagonist": {"oral"},
    "anti_pd1": {"iv", "ip"},
    "filgrastim": {"sc", "iv"},
}
TAGS = ("bel_", "ber_", "ana_", "cel_", "toc_", "azd_", "apd_", "fil_")
TABLE = Path(chemohost.__file__).parent / "model" / "data" / "interventions.csv"

_models = {}


def small(module):
    """covariates + one intervention, composed once per module."""
    if module.name not in _models:
        _models[module.name] = compose("t", "t", [covariates.MODULE, module])
    return _models[module.name]


def params(module, species="human", **overrides):
    model = small(module)
    names, p, _ = parameter_vector(model, species, overrides)
    return model, names, p


def sim(module, regimen, times, output, species="human", p=None, tight=None, **overrides):
    model, names, p0 = params(module, species, **overrides)
    p = p0 if p is None else p
    r = chemohost.simulate(model, p[None], [regimen], times, [output], options=tight)
    assert r.status[0] == 0
    return r.output(output)[0]


def reg(drug, dose, basis, route, infusion=None):
    return chemohost.Regimen(drug, dose, basis, route, infusion, (1,), 28, 1)


# --- declarations ---------------------------------------------------------------------------------


def test_drugs_routes_outputs_as_specified():
    assert len(interventions.ALL) == 8
    for m in interventions.ALL:
        (drug,) = m.drugs
        assert set(drug.routes) == ROUTES[drug.name]
        assert OUTPUT[drug.name] in {o.name for o in m.outputs}
        assert drug.molecular_weight > 0
        for name in [p.name for p in m.parameters] + [s.name for s in m.species]:
            assert name.startswith(TAGS), name
    # all modules compose together with the covariates (no name clashes)
    model = compose("all", "all", [covariates.MODULE, *interventions.ALL])
    assert set(model.drugs) == set(OUTPUT)


def test_linear_modules_are_solved_in_closed_form():
    # every module except tocilizumab is linear; tocilizumab keeps Frey 2010's Michaelis-Menten term
    for m in interventions.ALL:
        cm = compile_model(small(m))
        if m is interventions.TOCILIZUMAB:
            assert set(cm.ode_species) == {"toc_c", "toc_p"}
        else:
            assert cm.ode_species == [], m.name
            assert len(cm.lin_species) == len(m.species)


def test_parameters_load_for_both_species_with_sources_and_bounds():
    with open(TABLE, newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if line.strip() and not line.startswith("#")))
    table_names = {(r["name"], r["species"]) for r in rows}
    for m in interventions.ALL:
        model = small(m)
        own = [p.name for p in m.parameters]
        for species in SPECIES:
            ps = parameter_set(model, species)  # raises on missing rows, empty sources, values outside bounds
            for name in own:
                p = ps[name]
                assert (name, species) in table_names
                assert p.source and p.source.strip()
                assert p.lower <= p.value <= p.upper
                assert np.isfinite(p.value)
    for r in rows:  # every row of the table belongs to an intervention module
        assert r["name"].startswith(TAGS)
        assert r["unit"].strip() and r["source"].strip()


@pytest.mark.parametrize("species", SPECIES)
def test_every_drug_and_route_resolves_to_positive_finite_concentrations(species):
    # mouse-sized doses per kg; human doses flat (doses are only for the check, not sourced)
    t = np.linspace(0, 2, 193)
    for m in interventions.ALL:
        (drug,) = m.drugs
        for route in drug.routes:
            dose, basis = (10.0, "weight") if species == "mouse" else (100.0, "flat")
            infusion = 1 / 24 if route == "iv" else None
            c = sim(m, reg(drug.name, dose, basis, route, infusion), t, OUTPUT[drug.name], species)
            assert np.all(np.isfinite(c)) and np.all(c >= -1e-12), (drug.name, route)
            assert c.max() > 0, (drug.name, route, species)


@pytest.mark.parametrize("module", [m for m in interventions.ALL if m is not interventions.TOCILIZUMAB],
                         ids=lambda m: m.name)
def test_linear_modules_are_dose_linear(module, tight):
    (drug,) = module.drugs
    route = sorted(drug.routes)[0]
    t = np.linspace(0.01, 3, 60)
    for species in SPECIES:
        one = sim(module, reg(drug.name, 1.0, "weight", route), t, OUTPUT[drug.name], species, tight=tight)
        two = sim(module, reg(drug.name, 2.0, "weight", route), t, OUTPUT[drug.name], species, tight=tight)
        np.testing.assert_allclose(two, 2 * one, rtol=1e-6, atol=1e-15)


# --- anakinra --------------------------------------------------------------------------------------


def test_anakinra_sc_terminal_half_life_and_peak(tight):
    t = np.linspace(0, 1, 2401)
    c = sim(interventions.ANAKINRA, reg("anakinra", 100, "flat", "sc"), t, "C_anakinra_nM", tight=tight)
    late = (t > 10 / 24) & (t < 1)
    # terminal t1/2 after 100 mg s.c.: 3.63 h (lean) to 7.62 h (obese) (PMC6662383); label 4-6 h
    assert 3.6 <= terminal_half_life(t[late], c[late]) * 24 <= 7.62
    # tmax 2-6 h after s.c. (Pharmacol Res 2004 doi:10.1016/j.phrs.2004.02.002; label 3-7 h)
    assert 2.0 <= t[c.argmax()] * 24 <= 6.0
    # 1 mg/kg s.c. in RA (Chinese, ~60 kg): Cmax 687 +- 197 ng/mL (Pharmacol Res 2004)
    model, names, p = params(interventions.ANAKINRA)
    p[names.index("WT")] = 60.0
    c = sim(interventions.ANAKINRA, reg("anakinra", 1, "weight", "sc"), t, "C_anakinra_nM", p=p, tight=tight)
    cmax_ngml = c.max() * interventions.MW_ANAKINRA / 1e6 * 1000
    assert 687 - 197 <= cmax_ngml <= 687 + 197


def test_anakinra_bioavailability_and_renal_impairment(tight):
    t = np.linspace(0, 3, 7201)
    sc = sim(interventions.ANAKINRA, reg("anakinra", 100, "flat", "sc"), t, "C_anakinra_nM", tight=tight)
    iv = sim(interventions.ANAKINRA, reg("anakinra", 100, "flat", "iv", 0.5 / 24), t, "C_anakinra_nM", tight=tight)
    # absolute s.c. bioavailability 80-92% (PMC6662383); 137/170 from Yang 2003
    assert 0.80 <= np.trapezoid(sc, t) / np.trapezoid(iv, t) <= 0.92
    # ESRD: CL/F 42.7 vs 170 mL/min in healthy subjects, i.e. exposure x ~4 (Yang 2003 Clin Pharmacol Ther 74:85)
    model, names, p = params(interventions.ANAKINRA)
    healthy, esrd = p.copy(), p.copy()
    healthy[names.index("CRCL")] = 100.0
    esrd[names.index("CRCL")] = 5.0
    a_h = np.trapezoid(sim(interventions.ANAKINRA, reg("anakinra", 100, "flat", "sc"), t, "C_anakinra_nM",
                           p=healthy, tight=tight), t)
    a_e = np.trapezoid(sim(interventions.ANAKINRA, reg("anakinra", 100, "flat", "sc"), t, "C_anakinra_nM",
                           p=esrd, tight=tight), t)
    assert 3.0 <= a_e / a_h <= 4.5


# --- bermekimab -----------------------------------------------------------------------------------


def test_bermekimab_peak_and_half_life(tight):
    t = np.linspace(0, 21, 2017)
    c = sim(interventions.BERMEKIMAB, reg("bermekimab", 3.75, "weight", "iv", 1 / 24), t, "C_bermekimab_nM",
            tight=tight)
    # average peak ~80 ug/mL after 3.75 mg/kg i.v. (AACR-NCI-EORTC 2011 abstract A211)
    assert c.max() * interventions.MW_BERMEKIMAB / 1e6 == pytest.approx(80.0, rel=0.03)
    # half-life "about 3 days" at that dose (same abstract; V3 confidence)
    late = t > 2
    assert terminal_half_life(t[late], c[late]) == pytest.approx(3.0, rel=0.03)


def test_bermekimab_mouse_ip_is_absorbed_with_bioavailability(tight):
    t = np.linspace(0, 30, 3001)
    ip = sim(interventions.BERMEKIMAB, reg("bermekimab", 10, "weight", "ip"), t, "C_bermekimab_nM", "mouse",
             tight=tight)
    iv = sim(interventions.BERMEKIMAB, reg("bermekimab", 10, "weight", "iv"), t, "C_bermekimab_nM", "mouse",
             tight=tight)
    assert ip[0] == 0 and iv[0] > 0
    model, names, p = params(interventions.BERMEKIMAB, "mouse")
    # AUC ratio = F_ip (assumed 0.9; Al Shoyaib 2019 review: high i.p. bioavailability of IgG)
    assert np.trapezoid(ip, t) / np.trapezoid(iv, t) == pytest.approx(p[names.index("ber_F_ip")], rel=2e-3)
    # generic human IgG1 in mice: terminal t1/2 of days, not hours (assumption: allometric Frey 2010 values)
    late = t > 10
    assert 2.0 <= terminal_half_life(t[late], iv[late]) <= 15.0


# --- tocilizumab ----------------------------------------------------------------------------------


def test_tocilizumab_linear_terminal_half_life(tight):
    # linear part of Frey 2010: derived terminal t1/2 ~21 d (parameters.md 6.4); Vmax = 0 isolates it
    t = np.linspace(0, 140, 1401)
    c = sim(interventions.TOCILIZUMAB, reg("tocilizumab", 8, "weight", "iv", 1 / 24), t, "C_tocilizumab_nM",
            tight=tight, toc_Vmax=0.0)
    late = t > 60
    assert terminal_half_life(t[late], c[late]) == pytest.approx(21.0, rel=0.05)


def test_tocilizumab_michaelis_menten_elimination(tight):
    t = np.linspace(0, 140, 2801)
    auc = {}
    for d in (4, 8):
        c = sim(interventions.TOCILIZUMAB, reg("tocilizumab", d, "weight", "iv", 1 / 24), t, "C_tocilizumab_nM",
                tight=tight)
        auc[d] = np.trapezoid(c, t)
        # end-of-infusion concentration ~ dose / V1 (Frey 2010 V1 3.5 L; 70 kg)
        assert c.max() * interventions.MW_TOCILIZUMAB / 1e6 == pytest.approx(d * 70 / 3.5, rel=0.02)
    # parallel saturable elimination (Frey 2010): exposure rises more than dose-proportionally 4 -> 8 mg/kg
    assert auc[8] / auc[4] > 2.1
    # ... and concentrations fall faster than the linear 21-d half-life once below Km (2.7 ug/mL); the
    # Actemra label's concentration-dependent effective t1/2 is up to 11-13 d (from memory)
    late = t > 60
    assert terminal_half_life(t[late], c[late]) < 18.0


# --- anti-PD-1 ------------------------------------------------------------------------------------


def test_nivolumab_terminal_half_life(tight):
    # nivolumab terminal t1/2 ~21 d derived from Bajaj 2017 (parameters.md 6.5); label ~25 d (from memory)
    t = np.linspace(0, 140, 1401)
    c = sim(interventions.ANTI_PD1, reg("anti_pd1", 240, "flat", "iv", 0.5 / 24), t, "C_antipd1_nM", tight=tight)
    late = t > 60
    assert 20.0 <= terminal_half_life(t[late], c[late]) <= 25.5
    # 240 mg over 30 min: end-of-infusion concentration ~ dose / V1 (Bajaj 2017 V1 3.63 L x (70/80)^0.597)
    v1 = 3.63 * (70 / 80) ** 0.597
    assert c.max() * interventions.MW_NIVOLUMAB / 1e6 == pytest.approx(240 / v1, rel=0.03)


def test_anti_pd1_mouse_ip_half_life(tight):
    # anti-PD-1 plasma t1/2 22.3 h in tumour-bearing mice (Pharmaceutics 2020;12:595)
    t = np.linspace(0, 8, 1601)
    c = sim(interventions.ANTI_PD1, reg("anti_pd1", 10, "weight", "ip"), t, "C_antipd1_nM", "mouse", tight=tight)
    late = t > 3
    assert terminal_half_life(t[late], c[late]) * 24 == pytest.approx(22.3, rel=0.02)
    assert 0 < t[c.argmax()] * 24 < 24  # i.p. peak within the first day (assumed ka)


# --- celecoxib ------------------------------------------------------------------------------------


def test_celecoxib_single_dose_label_table(tight):
    t = np.linspace(0, 10, 24001)
    c = sim(interventions.CELECOXIB, reg("celecoxib", 200, "flat", "oral"), t, "C_celecoxib_uM", tight=tight)
    ngml = c * interventions.MW_CELECOXIB  # uM x g/mol = ug/L = ng/mL
    # Celebrex label Table 1 (200 mg fasted): Cmax 705 ng/mL, tmax 2.8 h, CL/F 27.7 L/h
    assert ngml.max() == pytest.approx(705, rel=0.03)
    assert t[c.argmax()] * 24 == pytest.approx(2.8, abs=0.3)
    assert np.trapezoid(ngml, t * 24) == pytest.approx(200 / 27.7 * 1000, rel=0.02)


def test_celecoxib_steady_state_within_five_days(tight):
    # label: with 200-400 mg/day, steady state is reached on or before day 5
    bid = chemohost.Regimen("celecoxib", 200, "flat", "oral", None, (1,), 0.5, 40)
    t = np.array([4.5, 19.5])  # troughs after day 5 and day 20
    c = sim(interventions.CELECOXIB, bid, t, "C_celecoxib_uM", tight=tight)
    assert c[0] / c[1] > 0.9


def test_celecoxib_mouse_oral_and_ip(tight):
    t = np.linspace(0, 1, 1441)
    for route in ("oral", "ip"):
        c = sim(interventions.CELECOXIB, reg("celecoxib", 25, "weight", route), t, "C_celecoxib_uM", "mouse",
                tight=tight)
        assert c[0] == 0 and np.isfinite(c).all() and c.max() > 0
        assert t[c.argmax()] * 24 < 3  # absorbed within hours (assumed ka)


# --- CXCR2 antagonist (AZD5069) ---------------------------------------------------------------------


def test_azd5069_phase1_profile(tight):
    t = np.linspace(0, 5, 12001)
    c = sim(interventions.CXCR2_ANTAGONIST, reg("cxcr2_antagonist", 45, "flat", "oral"), t, "C_cxcr2i_uM",
            tight=tight)
    # Cullberg 2018 Drugs R D 18:149: tmax ~2 h, initial t1/2 4 h, terminal t1/2 11 h
    assert t[c.argmax()] * 24 == pytest.approx(2.0, abs=0.4)
    early = (t > 4 / 24) & (t < 12 / 24)
    assert 3.5 <= terminal_half_life(t[early], c[early]) * 24 <= 5.5
    late = t > 2.5
    assert terminal_half_life(t[late], c[late]) * 24 == pytest.approx(11.0, rel=0.05)
    # twice daily: steady state within 2-3 days, little accumulation (~1.1-fold; Cullberg 2018).  With an
    # initial t1/2 of 4 h alone the ratio would be 1.14; the 11-h terminal phase raises it to ~1.27 here.
    bid = chemohost.Regimen("cxcr2_antagonist", 45, "flat", "oral", None, (1,), 0.5, 10)
    tt = np.linspace(0, 5, 10001)
    cb = sim(interventions.CXCR2_ANTAGONIST, bid, tt, "C_cxcr2i_uM", tight=tight)
    first = np.trapezoid(cb[tt <= 0.5], tt[tt <= 0.5])
    ss = np.trapezoid(cb[(tt >= 3.0) & (tt <= 3.5)], tt[(tt >= 3.0) & (tt <= 3.5)])
    assert 1.1 <= ss / first <= 1.3


def test_azd5069_mouse_rat_surrogate(tight):
    # rat PK used for mouse (DMD AZD5069/AZD4721 table): oral t1/2 2.5 h (absorption-limited), F 31%
    t = np.linspace(0, 1, 2881)
    c = sim(interventions.CXCR2_ANTAGONIST, reg("cxcr2_antagonist", 100, "weight", "oral"), t, "C_cxcr2i_uM",
            "mouse", tight=tight)
    late = t > 12 / 24
    assert terminal_half_life(t[late], c[late]) * 24 == pytest.approx(2.5, rel=0.02)
    model, names, p = params(interventions.CXCR2_ANTAGONIST, "mouse")
    cl_l_per_day = p[names.index("azd_CL")]
    auc_expected = 0.31 * 100 * 0.025 / cl_l_per_day / interventions.MW_AZD5069 * 1000  # uM*day
    assert np.trapezoid(c, t) == pytest.approx(auc_expected, rel=0.02)


# --- filgrastim -----------------------------------------------------------------------------------


def test_filgrastim_iv_half_life_and_sc_peak(tight):
    t = np.linspace(0, 2, 4801)
    iv = sim(interventions.FILGRASTIM, reg("filgrastim", 5e-3, "weight", "iv", 0.5 / 24), t, "C_filgrastim_ngmL",
             tight=tight)
    late = (t > 0.2) & (t < 1.0)
    # serum elimination t1/2 ~3.5 h, first order (filgrastim EU SmPC 5.2)
    assert terminal_half_life(t[late], iv[late]) * 24 == pytest.approx(3.5, rel=0.02)
    sc = sim(interventions.FILGRASTIM, reg("filgrastim", 3.45e-3, "weight", "sc"), t, "C_filgrastim_ngmL",
             tight=tight)
    # 3.45 ug/kg s.c.: Cmax 4 ng/mL reached within 2-8 h (Neupogen US label 12.3)
    assert sc.max() == pytest.approx(4.0, rel=0.03)
    assert 2.0 <= t[sc.argmax()] * 24 <= 8.0


# --- belnacasan -----------------------------------------------------------------------------------


def test_belnacasan_molar_bookkeeping_and_mouse_ip(tight):
    # all belnacasan PK values are assumptions (parameters.md 6.3); check the prodrug bookkeeping:
    # AUC of VRT-043198 (uM*day) = F * dose (umol of VX-765) / CL
    t = np.linspace(0, 3, 7201)
    for species, regimen in (("human", reg("belnacasan", 900, "flat", "oral")),
                             ("mouse", reg("belnacasan", 50, "weight", "ip"))):
        model, names, p = params(interventions.BELNACASAN, species)
        c = sim(interventions.BELNACASAN, regimen, t, "C_vrt_uM", species, tight=tight)
        wt = p[names.index("WT")]
        dose_mg = 900 if species == "human" else 50 * wt
        route = regimen.route
        cl = p[names.index("bel_CL")] * (wt / p[names.index("bel_wt_ref")]) ** p[names.index("bel_wt_exp_cl")]
        expected = p[names.index(f"bel_F_{route}")] * dose_mg / interventions.MW_VX765 * 1000 / cl
        assert np.trapezoid(c, t) == pytest.approx(expected, rel=2e-3)
        assert c.max() > 0.5  # above the ~sub-uM range where caspase-1 inhibition is expected (assumption)
