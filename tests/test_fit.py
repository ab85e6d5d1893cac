"""`chemohost fit`: the engine objective equals PEtab's likelihood (pyPESTO + libRoadRunner on the
exported problem), censored rows enter as CDF terms, finite-difference gradients are stable, synthetic
data from known parameters are recovered inside the intervals, nominal 95% intervals cover the truth
at about the nominal rate, and the command writes a complete, atomic result folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import special

from chemohost.calibration import load_problem
from chemohost.calibration.fit import FitOptions, load_posterior, run_fit
from chemohost.calibration.objective import EngineObjective
from chemohost.cli import main

import test_petab_export as tp

pytest.importorskip("pypesto")
pytest.importorskip("emcee")

ROOT = Path(__file__).resolve().parents[1]
PK_TIMES_H = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
PK_CONDITIONS = {
    "gem_1000_single": {"species": "human", "description": "one 30-min infusion of 1000 mg/m2",
                        "regimens": [{"drug": "gemcitabine", "dose": "1000 mg/m2", "route": "iv",
                                      "infusion": "30 min", "days": [1], "cycle_length": "28 day", "cycles": 1}]},
}


def _pk_problem(folder: Path, values_mg_l, sigma=0.15, estimate=None) -> Path:
    """A PK-only problem (plasma gemcitabine after one infusion) whose rows are ``values_mg_l``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"C_gem,human,gem_1000_single,{t},h,{float(v)!r},mg/L,,none,,none,,mean,synthetic,,,"
            for t, v in zip(PK_TIMES_H, values_mg_l)]
    (folder / "meas.csv").write_text("\n".join([tp.HEADER, *rows]) + "\n")
    (folder / "conditions.yaml").write_text(yaml.safe_dump(PK_CONDITIONS))
    prob = {"problem": "synthetic_pk", "model": "host_response", "species": "human", "parameters": {"BSA": "1.8 m2"},
            "measurements": [{"file": "meas.csv"}], "conditions": {"file": "conditions.yaml"},
            "observables": {"C_gem": {"formula": "C_gem", "noise": "lognormal", "sigma": sigma}},
            "estimate": estimate or {"CL_gem": {"scale": "log10", "lower": "1 L/min", "upper": "8 L/min"},
                                     "V1_gem": {"scale": "log10", "lower": "5 L", "upper": "60 L"}}}
    path = folder / "problem.yaml"
    path.write_text(yaml.safe_dump(prob, sort_keys=False))
    return path


TRUTH = {"CL_gem": 3.5 * 1440.0, "V1_gem": 22.0}  # L/day, L (the table's typical: 2.7 L/min, 15 L)


@pytest.fixture(scope="module")
def pk_truth(tmp_path_factory):
    """Noise-free plasma gemcitabine at TRUTH, from the engine itself."""
    d = tmp_path_factory.mktemp("pk_truth")
    prob = load_problem(_pk_problem(d, [1.0] * len(PK_TIMES_H)))
    obj = EngineObjective(prob)
    x = np.array([[math.log10(TRUTH["CL_gem"]), math.log10(TRUTH["V1_gem"])]])
    h, status = obj.simulate_observables(x)["gem_1000_single"]
    assert status[0] == 0
    return h[0]


# -- the objective ------------------------------------------------------------------------------------
def test_objective_equals_petab_likelihood_of_the_export(tmp_path):
    """Uncensored rows: chemohost's engine objective == pyPESTO's PEtab objective (libRoadRunner) on the
    exported problem, at two parameter vectors (same likelihood, same priors)."""
    petab = pytest.importorskip("petab.v1")
    pypesto_petab = pytest.importorskip("pypesto.petab")
    roadrunner = pytest.importorskip("roadrunner")
    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)
    path = tp._write(tmp_path / "in", rows=tp.ROWS[:-1])  # the last row is censored (not in PEtab v1)
    assert main(["export", "petab", "--problem", str(path), "--out", str(tmp_path / "out")]) == 0
    pp = pypesto_petab.PetabImporter(petab.Problem.from_yaml(str(tmp_path / "out" / "problem.yaml")),
                                     simulator_type="roadrunner").create_problem()
    obj = EngineObjective(load_problem(path))
    assert pp.x_names == obj.x_names
    for x in (obj.x_nominal, obj.x_nominal + np.array([0.15, -0.1])):
        ours = float(obj(x[None])[0])
        theirs = float(pp.objective(x))
        assert ours == pytest.approx(theirs, rel=2e-4, abs=1e-3), (x, ours, theirs)


def test_left_censored_row_is_a_cdf_term(tmp_path):
    """The censored row adds -log Phi((ln lloq - ln h)/sigma) to the uncensored likelihood."""
    full = load_problem(tp._write(tmp_path / "a"))
    part = load_problem(tp._write(tmp_path / "b", rows=tp.ROWS[:-1]))
    assert len(full.censored) == 1 and not part.censored
    of, op = EngineObjective(full), EngineObjective(part)
    x = of.x_nominal[None]
    sim = of.simulate_observables(x)
    cond = full.censored[0].condition
    b = next(b for b in of.blocks if b.condition == cond)
    j = next(k for k, r in enumerate(b.rows) if r.censoring == "left")
    h = sim[cond][0][0, j]
    o = of.observables[b.obs_index[j]]
    assert o.transformation == "lin"  # the synthetic dfdctp observable: normal, additive
    expected = -special.log_ndtr((full.censored[0].lloq - h) / o.sigma)
    assert float(of.nllh(x)[0] - op.nllh(x)[0]) == pytest.approx(expected, rel=1e-9)


def test_outside_bounds_and_failed_simulations_are_infinite(tmp_path):
    obj = EngineObjective(load_problem(tp._write(tmp_path)))
    x = np.vstack([obj.x_nominal, obj.ub + 0.5])
    f = obj(x)
    assert np.isfinite(f[0]) and np.isinf(f[1])


def test_finite_difference_gradient_is_stable_across_steps(tmp_path):
    """Measured choice of the FD step: with the fit's solver tolerance (rtol 1e-8) central differences
    agree to 1e-5 relative from step 1e-3 to 1e-6 on the log10 scale."""
    obj = EngineObjective(load_problem(tp._write(tmp_path)))
    grads = []
    for h in (1e-3, 1e-4, 1e-5, 1e-6):
        obj.fd_step = h
        grads.append(obj.value_and_grad(obj.x_nominal)[1])
    grads = np.array(grads)
    assert np.allclose(grads, grads[1], rtol=1e-5, atol=1e-6)


# -- recovery and coverage ---------------------------------------------------------------------------
def test_synthetic_data_are_recovered_within_their_intervals(tmp_path, pk_truth):
    rng = np.random.default_rng(11)
    sigma = 0.15
    y = pk_truth * np.exp(sigma * rng.standard_normal(pk_truth.size))
    fit = run_fit(_pk_problem(tmp_path, y, sigma), FitOptions(starts=3, steps=300, walkers=16, seed=3))
    est = fit.estimates.set_index("parameter")
    for name, true in TRUTH.items():
        lo, hi = est.loc[name, "profile_ci_low"], est.loc[name, "profile_ci_high"]
        assert lo < true < hi, (name, lo, true, hi)
        assert est.loc[name, "posterior_q025"] < true < est.loc[name, "posterior_q975"]
        assert est.loc[name, "identifiable"] == "yes"
    assert fit.diagnostics["starts_reaching_best"] == 3


def test_profile_intervals_cover_the_truth_at_about_95_percent(tmp_path, pk_truth):
    """30 synthetic data sets from the same truth, each fitted (2 starts, profiles, no sampling): the
    95% profile interval of CL_gem covers the truth in >= 25 of 30 (P(X <= 24) = 0.016 for X ~
    binomial(30, 0.95); a coverage of 70% would pass with probability 0.03), and of V1_gem likewise.
    Seeded, so deterministic; a 200-repeat run is quoted in docs/calibration.md."""
    rng = np.random.default_rng(2026)
    sigma = 0.15
    hits = {k: 0 for k in TRUTH}
    R = 30
    for r in range(R):
        y = pk_truth * np.exp(sigma * rng.standard_normal(pk_truth.size))
        fit = run_fit(_pk_problem(tmp_path / f"r{r}", y, sigma),
                      FitOptions(starts=2, sample=False, seed=r, prediction_draws=1))
        est = fit.estimates.set_index("parameter")
        for name, true in TRUTH.items():
            hits[name] += int(est.loc[name, "profile_ci_low"] <= true <= est.loc[name, "profile_ci_high"])
    for name, k in hits.items():
        assert 25 <= k <= R, (name, k)


# -- the command ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_fit(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "out"
    code = main(["fit", str(ROOT / "problems" / "pancreatic_gemcitabine_human.yaml"), "--out", str(out),
                 "--starts", "2", "--steps", "60", "--walkers", "20"])
    assert code == 0
    return out


def test_shipped_problem_fits_and_says_what_is_not_identifiable(shipped_fit):
    out = shipped_fit
    for f in ("fit.json", "estimates.csv", "starts.parquet", "profiles.parquet", "posterior.parquet",
              "predictions.parquet", "report.html", "manifest.json"):
        assert (out / f).is_file(), f
    est = pd.read_csv(out / "estimates.csv").set_index("parameter")
    # plasma gemcitabine pins the clearance near Jiang 2008's 2.7 L/min (Japanese label: 85.6 L/h/m2)
    assert est.loc["CL_gem", "identifiable"] == "yes"
    assert 1.9 * 1440 < est.loc["CL_gem", "estimate"] < 3.2 * 1440
    # nothing in the tables bears on the IL-1alpha -> marrow couplings: their posterior is their prior
    for p in ("il1r1_ec50", "gcsf_il1_emax", "bm_pol_max"):
        assert est.loc[p, "identifiable"].startswith("no"), p
        assert est.loc[p, "posterior_95_width_over_bounds"] > 0.6, p
    post = load_posterior(out)
    assert post.parameters == ["CL_gem", "il1r1_ec50", "gcsf_il1_emax", "bm_pol_max"]  # sigma_NLR left out
    summary = json.loads((out / "fit.json").read_text())
    assert summary["diagnostics"]["sampling"]["draws"] == len(post.draws)
    assert set(summary["timings_s"]) >= {"optimise", "profile", "sample", "predict", "total"}


def test_fit_refuses_a_non_empty_out_and_bad_options(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    prob = str(ROOT / "problems" / "pancreatic_gemcitabine_human.yaml")
    assert main(["fit", prob, "--out", str(tmp_path / "full")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep"
    assert main(["fit", prob, "--out", str(tmp_path / "o"), "--steps", "3"]) == 2
    assert "--steps must be a whole number >= 20" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_load_posterior_errors(tmp_path):
    from chemohost.errors import ChemohostError

    from chemohost.outputs import write_atomically

    with pytest.raises(ChemohostError, match="manifest.json not found"):
        load_posterior(tmp_path)
    man = {"model": "host_response", "species": "human", "model_parameters": ["CL_gem"]}

    def folder(draws):
        def write(tmp):
            (tmp / "manifest.json").write_text(json.dumps(man))
            pd.DataFrame(draws).to_parquet(tmp / "posterior.parquet")
        write_atomically(tmp_path, write)

    folder({"draw": [0], "CL_gem": [np.nan]})
    with pytest.raises(ChemohostError, match="non-finite"):
        load_posterior(tmp_path)
    folder({"draw": [0, 1], "CL_gem": [3000.0, 3100.0]})
    with pytest.raises(ChemohostError, match="only 2 posterior draws"):
        load_posterior(tmp_path).select(5, 0)
    (tmp_path / "COMPLETE.json").unlink()  # an interrupted fit is not used
    with pytest.raises(ChemohostError, match="no completion marker"):
        load_posterior(tmp_path)
