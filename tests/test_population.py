import numpy as np
import pytest
from scipy import stats

import chemohost as ch
from chemohost.api import parameter_vector
from chemohost.errors import ChemohostError
from chemohost.population import (COVARIATE_PARAMETERS, PopulationSpec, TargetDistribution, cockcroft_gault,
                                  plausible, sample_population, select_virtual_population)
from chemohost.population.virtual import N_COVARIATE_COLUMNS

N = 20_000


@pytest.fixture(scope="module")
def model():
    return ch.get_model("host_response")


@pytest.fixture(scope="module")
def pop(model):
    return sample_population(model, "human", PopulationSpec(), N, seed=11)


def test_same_seed_identical_and_prefix_stable(model, pop):
    names, P, cov = pop
    names2, P2, cov2 = sample_population(model, "human", PopulationSpec(), N, seed=11)
    assert names == names2
    np.testing.assert_array_equal(P, P2)
    assert cov.equals(cov2)
    # patient i does not depend on how many are drawn (chunking-independent)
    _, P3, cov3 = sample_population(model, "human", None, 500, seed=11)
    np.testing.assert_array_equal(P3, P[:500])
    np.testing.assert_array_equal(cov3["nlr0"].to_numpy(), cov["nlr0"].to_numpy()[:500])
    _, P4, _ = sample_population(model, "human", None, 500, seed=12)
    assert not np.array_equal(P4, P[:500])


def test_covariate_marginals_match_spec(pop):
    _, _, cov = pop
    spec = PopulationSpec()
    for col in ("sex", "age", "weight_kg", "bsa_m2", "crcl_ml_min", "anc0", "lymph0", "nlr0", "tumour_cm3",
                "casp1_expr", "gsdmd_expr", "gsdme_expr"):
        assert col in cov.columns
    assert abs(cov["female"].mean() - spec.frac_female) < 0.015
    assert cov["age"].between(spec.age_min, spec.age_max).all()
    assert abs(cov["age"].mean() - spec.age_mean) < 0.5  # symmetric truncation keeps the mean
    f, m = cov[cov.female], cov[~cov.female]
    assert abs(m["weight_kg"].mean() - 80) < 1.5 and abs(f["weight_kg"].mean() - 67) < 1.5
    assert abs(m["weight_kg"].std() / m["weight_kg"].mean() - 0.18) < 0.02
    assert abs(m["bsa_m2"].mean() - 1.95) < 0.05 and abs(f["bsa_m2"].mean() - 1.72) < 0.05
    assert np.corrcoef(cov["weight_kg"], cov["bsa_m2"])[0, 1] > 0.8
    assert 75 < cov["crcl_ml_min"].mean() < 95 and cov["crcl_ml_min"].max() <= spec.crcl_cap_ml_min
    assert abs(cov["anc0"].median() - spec.anc_median) < 0.1
    assert abs(cov["lymph0"].median() - spec.lymph_median) < 0.05
    assert np.corrcoef(np.log(cov["anc0"]), np.log(cov["lymph0"]))[0, 1] == pytest.approx(spec.rho_anc_lymph,
                                                                                            abs=0.03)
    assert abs(np.median(cov["tumour_cm3"]) - 20) < 1.0
    assert abs(cov["casp1_expr"].mean() - 4 / 6) < 0.01 and abs(cov["gsdme_expr"].mean() - 0.5) < 0.01
    assert cov[["casp1_expr", "gsdmd_expr", "gsdme_expr"]].apply(lambda c: c.between(0, 1).all()).all()


def test_nlr_realistic_for_cancer_patients(pop):
    nlr = pop[2]["nlr0"]
    assert 2.6 < nlr.median() < 3.4
    above = {c: (nlr > c).mean() for c in (3, 4, 5)}
    assert 0.40 < above[3] < 0.60
    assert 0.12 < above[5] < 0.30
    # Oh 2018: 37.9% high NLR at study cut-offs 2-5
    assert abs(np.mean(list(above.values())) - 0.379) < 0.07
    # healthy mean 1.65 (Forget 2017) is in the lower part
    assert (nlr < 1.65).mean() < 0.25


def test_cockcroft_gault_hand_case():
    # 60-year-old, 70 kg, SCr 1.0 mg/dL: male (80*70)/72 = 77.78; female x0.85 = 66.11
    assert cockcroft_gault(60, 70, 1.0, False) == pytest.approx(5600 / 72)
    assert cockcroft_gault(60, 70, 1.0, True) == pytest.approx(5600 / 72 * 0.85)


def test_crcl_column_uses_cockcroft_gault(pop):
    cov = pop[2]
    cg = cockcroft_gault(cov["age"], cov["weight_kg"], cov["scr_mg_dl"], cov["female"])
    np.testing.assert_allclose(cov["crcl_ml_min"], np.minimum(cg, PopulationSpec().crcl_cap_ml_min))


def test_covariates_mapped_and_no_iiv_on_covariates(model, pop):
    names, P, cov = pop
    typical = parameter_vector(model, "human")[1]
    for par, col in COVARIATE_PARAMETERS.items():
        j = names.index(par)
        expected = cov[col].to_numpy() * (typical[j] if par.startswith("ko_") else 1.0)
        np.testing.assert_array_equal(P[:, j], expected)
    # bm_anc0 has a table CV (34%) but is a covariate: exactly the drawn ANC, no extra IIV
    assert parameter_vector(model, "human")[2][names.index("bm_anc0")] > 0
    # parameters with a CV get IIV, those without stay at the typical value
    _, typ, cvs = parameter_vector(model, "human")
    j = names.index("CL_gem")
    assert np.std(np.log(P[:, j])) == pytest.approx(np.sqrt(np.log1p(cvs[j] ** 2)), rel=0.03)
    k = names.index("MW_gem")
    assert np.all(P[:, k] == typ[k])
    _, P0, _ = sample_population(model, "human", None, 50, seed=1, variability=False)
    non_cov = [i for i, n_ in enumerate(names) if n_ not in COVARIATE_PARAMETERS]
    np.testing.assert_array_equal(P0[:, non_cov], np.repeat(typ[None, non_cov], 50, axis=0))


def test_knockout_and_fixed(model):
    names, P, cov = sample_population(model, "human", None, 200, seed=2, parameters={"ko_casp1": 0},
                                      fixed={"WT": "70 kg", "CL_gem": 3000.0})
    assert np.all(P[:, names.index("ko_casp1")] == 0)
    assert np.all(P[:, names.index("WT")] == 70)
    assert np.all(P[:, names.index("CL_gem")] == 3000.0)
    assert np.all(P[:, names.index("BSA")] == cov["bsa_m2"].to_numpy())


def test_spec_overrides():
    spec = PopulationSpec.from_dict({"frac_female": 0.6, "anc_median": 6})
    assert spec.frac_female == 0.6 and spec.anc_median == 6.0 and spec.age_mean == 65
    with pytest.raises(ChemohostError, match="anc_medain.*did you mean 'anc_median'"):
        PopulationSpec.from_dict({"anc_medain": 6})
    with pytest.raises(ChemohostError, match="frac_female"):
        PopulationSpec.from_dict({"frac_female": 1.5})
    with pytest.raises(ChemohostError, match="species"):
        sample_population(ch.get_model("host_response"), "mouse", None, 10, 0)


def test_selection_matches_target_nlr(pop):
    cov = pop[2]
    target = TargetDistribution.lognormal(median=2.5, sd_log=0.45)
    idx, rate = select_virtual_population(cov, {"nlr0": target}, n=2000, seed=5)
    assert 0 < rate <= 1
    assert len(idx) == 2000 and len(np.unique(idx)) == 2000
    sel = cov["nlr0"].to_numpy()[idx]
    assert stats.kstest(sel, target.cdf).statistic < 0.04
    # unselected candidates are clearly off target
    assert stats.kstest(cov["nlr0"].to_numpy(), target.cdf).statistic > 0.1
    # deterministic
    idx2, rate2 = select_virtual_population(cov, {"nlr0": target}, n=2000, seed=5)
    np.testing.assert_array_equal(idx, idx2)
    assert rate == rate2


def test_selection_two_targets_and_mask(pop):
    cov = pop[2]
    targets = {"nlr0": TargetDistribution.lognormal(3.5, 0.5), "age": TargetDistribution.normal(68, 7)}
    mask = plausible(cov, {"anc0": (1.5, None), "crcl_ml_min": (30, None)})
    assert mask.mean() > 0.95
    idx, rate = select_virtual_population(cov, targets, n=None, seed=1, mask=mask)
    assert 0 < rate <= 1 and mask[idx].all()
    assert stats.kstest(cov["nlr0"].to_numpy()[idx], targets["nlr0"].cdf).statistic < 0.04
    assert stats.kstest(cov["age"].to_numpy()[idx], targets["age"].cdf).statistic < 0.04


def test_impossible_target_names_the_target(pop):
    cov = pop[2]
    with pytest.raises(ChemohostError, match=r"target 'nlr0'.*candidates' range"):
        select_virtual_population(cov, {"nlr0": TargetDistribution.lognormal(500, 0.2)}, n=100, seed=0)
    with pytest.raises(ChemohostError, match=r"target 'nlr'.*did you mean 'nlr0'"):
        select_virtual_population(cov, {"nlr": TargetDistribution.lognormal(3, 0.5)}, n=100, seed=0)
    with pytest.raises(ChemohostError, match="sample about"):
        select_virtual_population(cov, {"nlr0": TargetDistribution.lognormal(3, 0.3)}, n=N, seed=0)


def test_plausible_bounds(pop):
    cov = pop[2]
    m = plausible(cov, {"age": (50, 70), "weight_kg": (None, 90)})
    assert np.array_equal(m, (cov.age.between(50, 70) & (cov.weight_kg <= 90)).to_numpy())
    with pytest.raises(ChemohostError, match="'ag'"):
        plausible(cov, {"ag": (0, 1)})


def test_iiv_columns_reserved():
    assert N_COVARIATE_COLUMNS >= 11
