"""Studies (issue 11): the Study interface, SALib indices against a function with known indices
(Ishigami), `chemohost sensitivity` end to end (reproducible by seed, results folder, report), and
bad study files (every error at once, exit 2, nothing written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chemohost.cli import main
from chemohost.errors import ScenarioError
from chemohost.outputs import verify_output

import test_trial as tt

pytest.importorskip("SALib")

ROOT = Path(__file__).resolve().parents[1]


def _base(tmp_path: Path) -> Path:
    d = json.loads(json.dumps(tt.BASE))
    d.update(follow_up="2 month", patients=2)
    for regs in d["arms"].values():
        for r in regs:
            r["cycles"] = 1
    f = tmp_path / "base.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    return f


def _study(tmp_path: Path, **changes) -> Path:
    s = {"study": "sensitivity", "name": "mini", "base": "base.yaml", "method": "sobol", "samples": 8, "seed": 3,
         "parameters": {"il1r1_ec50": {}, "gcsf_il1_emax": {"lower": 0.5, "upper": 50}, "CL_gem": {"range": "iiv"}},
         "readouts": [{"name": "blockade_ratio", "output": "tumour_total", "arm": "gem + anti-IL-1a",
                       "relative_to": "gem", "time": "56 day", "log": True},
                      {"name": "rmst_gain", "endpoint": "rmst", "tau": "2 month", "arm": "gem + anti-IL-1a",
                       "relative_to": "gem"},
                      {"name": "anc_nadir", "output": "ANC", "arm": "gem", "statistic": "min",
                       "window": ["0 day", "28 day"]}]}
    s.update(changes)
    _base(tmp_path)
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(s, sort_keys=False))
    return f


# -- SALib on a function with known indices ----------------------------------------------------------
ISHIGAMI_S1 = [0.3139, 0.4424, 0.0]  # a = 7, b = 0.1 (Ishigami & Homma 1990; Saltelli 2008 Table 4.4)
ISHIGAMI_ST = [0.5576, 0.4424, 0.2437]


def _ishigami(X):
    return np.sin(X[:, 0]) + 7 * np.sin(X[:, 1]) ** 2 + 0.1 * X[:, 2] ** 4 * np.sin(X[:, 0])


def test_sobol_indices_of_ishigami_match_the_analytical_values():
    from SALib.sample import sobol

    from chemohost.studies.sensitivity import salib_indices

    p = {"num_vars": 3, "names": ["x1", "x2", "x3"], "bounds": [[-math.pi, math.pi]] * 3}
    X = sobol.sample(p, 4096, calc_second_order=False, seed=1)
    rows, conv = salib_indices("sobol", p, X, _ishigami(X), seed=1)
    for j, r in enumerate(rows):
        assert abs(r["S1"] - ISHIGAMI_S1[j]) < max(2 * r["S1_conf"], 0.03), r
        assert abs(r["ST"] - ISHIGAMI_ST[j]) < max(2 * r["ST_conf"], 0.03), r
    assert sorted({c["N"] for c in conv}) == [512, 1024, 2048, 4096]


def test_morris_and_fast_rank_ishigami_parameters():
    from SALib.sample import fast_sampler, morris

    from chemohost.studies.sensitivity import salib_indices

    p = {"num_vars": 3, "names": ["x1", "x2", "x3"], "bounds": [[-math.pi, math.pi]] * 3}
    X = morris.sample(p, 200, num_levels=4, seed=2)
    rows, _ = salib_indices("morris", p, X, _ishigami(X), seed=2)
    mu = {r["parameter"]: r["mu_star"] for r in rows}
    assert mu["x3"] < mu["x2"] and mu["x3"] < mu["x1"] and max(r["mu_star_norm"] for r in rows) == 1
    X = fast_sampler.sample(p, 1000, seed=2)
    rows, _ = salib_indices("fast", p, X, _ishigami(X), seed=2)
    for j, r in enumerate(rows):
        assert abs(r["S1"] - ISHIGAMI_S1[j]) < 0.05 and abs(r["ST"] - ISHIGAMI_ST[j]) < 0.1, r


# -- the study end to end -------------------------------------------------------------------------------------
def test_sensitivity_study_runs_and_is_reproducible(tmp_path, capsys):
    f = _study(tmp_path)
    assert main(["sensitivity", str(f), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "blockade_ratio:" in out and "rmst_gain:" in out
    doc = verify_output(tmp_path / "a")
    assert {"runs.parquet", "indices.parquet", "convergence.parquet", "summary.json", "report.html",
            "manifest.json"} <= set(doc["files"])
    runs = pd.read_parquet(tmp_path / "a" / "runs.parquet")
    assert len(runs) == 8 * (3 + 2) and (runs["status"] == 0).all()
    lo, hi = 10 ** np.log10(1.2), 10 ** np.log10(50)
    assert runs["il1r1_ec50"].between(lo * 0.999, hi * 1.001).all()
    assert np.isfinite(runs[["blockade_ratio", "rmst_gain", "anc_nadir"]].to_numpy()).all()
    idx = pd.read_parquet(tmp_path / "a" / "indices.parquet")
    assert set(idx["parameter"]) == {"il1r1_ec50", "gcsf_il1_emax", "CL_gem"} and set(idx["readout"]) == \
        {"blockade_ratio", "rmst_gain", "anc_nadir"}
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["ranges"]["CL_gem"]["scale"] == "log" and s["ranges"]["CL_gem"]["from"] == "iiv"
    # the same seed gives the same runs; another seed other runs
    assert main(["sensitivity", str(f), "--out", str(tmp_path / "b")]) == 0
    pd.testing.assert_frame_equal(runs, pd.read_parquet(tmp_path / "b" / "runs.parquet"))
    f2 = _study(tmp_path, seed=4)
    assert main(["sensitivity", str(f2), "--out", str(tmp_path / "c")]) == 0
    assert not np.allclose(runs["il1r1_ec50"], pd.read_parquet(tmp_path / "c" / "runs.parquet")["il1r1_ec50"])


def test_expected_rmst_matches_the_mean_of_drawn_os():
    """The rmst readout is the expectation over the OS noise a trial draws (no Monte Carlo)."""
    from chemohost.engine.simulate import simulate
    from chemohost.studies.study import BaseSetup, expected_rmst
    from chemohost.studies.survival import simulate_os, os_hazard
    from chemohost.studies.endpoints import sum_of_diameters, assessment_indices
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        b = BaseSetup.load(_base(Path(d)), Path(d), "x")
    t = b.grid()
    res = simulate(b.trial.model, b.typical[None], b.trial.arms["gem"], t, ["tumour_total", "NLR"])
    r = expected_rmst(res, b, t[-1])[0]
    osp = b.trial.indication.os_link if b.trial.indication else None
    from chemohost.studies.survival import OSLinkParams

    osp = osp or OSLinkParams()
    sld = sum_of_diameters(res.output("tumour_total"))
    i8 = assessment_indices(t, [56.0])[0]
    hz = os_hazard(osp, t, sld[:, i8] / sld[:, 0], sld[:, 0], res.output("NLR"), nlr_times_days=t)
    n = 200_000
    m, _ = simulate_os(np.random.default_rng(0), t, np.repeat(hz, n, axis=0), follow_up_days=t[-1])
    assert r == pytest.approx(m.mean(), rel=3e-3)


@pytest.mark.parametrize("changes, fragments", [
    ({"parameters": {"il1r1_ec5": {}}, "samples": 6},
     ["parameters.il1r1_ec5", "did you mean 'il1r1_ec50'", "field 'samples'", "power of 2"]),
    ({"readouts": [{"name": "x", "output": "ANK", "arm": "gemm", "time": "900 day"}]},
     ["readouts[0].output", "did you mean 'ANC'", "readouts[0].arm", "readouts[0].time", "follow-up"]),
    ({"readouts": [{"name": "x", "output": "ANC", "arm": "gem"}]}, ["needs 'time'"]),
    ({"method": "sobolx"}, ["field 'method'"]),
    ({"study": "optimize"}, ["'optimize' study"]),
    ({"base": "missing.yaml"}, ["base", "not found"]),
    ({"parameters": {"CL_gem": {"range": "posterior"}}}, None),
])
def test_bad_study_files_exit_2_with_every_error(tmp_path, capsys, changes, fragments):
    f = _study(tmp_path, **changes)
    rc = main(["sensitivity", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "study.yaml" in err, err
    for frag in fragments or ["--posterior"]:
        assert frag in err, (frag, err)
    assert not (tmp_path / "o").exists()


# -- optimize ---------------------------------------------------------------------------------------------------
def _opt(tmp_path: Path, **changes) -> Path:
    _base(tmp_path)
    s = {"study": "optimize", "name": "mini_opt", "base": "base.yaml", "control": "gem", "seed": 2,
         "blocker": {"drug": "bermekimab", "route": "iv", "infusion": "60 min", "dose": {"choices": ["3.75 mg/kg",
                                                                                                   "7.5 mg/kg"]},
                     "interval": "14 day", "offset": {"low": "-7 day", "high": "7 day", "step": "7 day"},
                     "duration": {"low": "2 week", "high": "6 week", "step": "2 week"}},
         "objective": "rmst_gain", "tau": "2 month", "trials": 5, "patients": 6,
         "constraints": [{"metric": "grade4_neutropenia", "max": 0.2, "over_control": True}]}
    s.update(changes)
    f = tmp_path / "opt.yaml"
    f.write_text(yaml.safe_dump(s, sort_keys=False))
    return f


def test_optimize_is_paired_reproducible_and_compares_with_shipped_arms(tmp_path, capsys):
    f = _opt(tmp_path)
    assert main(["optimize", str(f), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "best (" in out and "best minus 'gem + anti-IL-1a'" in out
    c = pd.read_parquet(tmp_path / "a" / "candidates.parquet")
    assert len(c) == 5 and set(c["offset"]) <= {-7.0, 0.0, 7.0} and set(c["dose"]) <= {"3.75 mg/kg", "7.5 mg/kg"}
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["best"]["rmst_gain"] == c.loc[c["feasible"], "rmst_gain"].max()
    cmp = s["best_vs_shipped"][0]
    assert cmp["ci_low"] <= cmp["best_minus_this_rmst_gain"] <= cmp["ci_high"]
    assert main(["optimize", str(f), "--out", str(tmp_path / "b")]) == 0
    pd.testing.assert_frame_equal(c, pd.read_parquet(tmp_path / "b" / "candidates.parquet"))


def test_optimize_candidate_equals_the_same_arm_in_a_trial(tmp_path):
    """Common random numbers: a candidate's per-patient outcome is exactly the trial arm with that regimen."""
    from chemohost.studies.optimize import OptimizeStudy

    st = OptimizeStudy.load(_opt(tmp_path))
    st._setup()
    c = {"dose": "7.5 mg/kg", "interval": 14.0, "offset": 0.0, "duration": 28.0, "schedule": "gem"}
    regs = st.candidate_regimens(c)
    assert [r.drug for r in regs] == ["gemcitabine", "bermekimab"] and regs[1].cycles == 2 and regs[1].start == 0
    shifted = st.candidate_regimens({**c, "offset": -7.0})
    assert shifted[0].start == 7.0 and shifted[1].start == 0.0  # blocker first: chemotherapy moves a week later
    a = st.per_patient(regs)
    b = st.per_patient(regs)
    pd.testing.assert_frame_equal(a, b)


def test_bad_optimize_files(tmp_path, capsys):
    f = _opt(tmp_path, control="gemx", blocker={"drug": "bermekimabb", "dose": "1 mg/kg", "interval": "0 day",
                                                "duration": "2 week"})
    rc = main(["optimize", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "field 'control'" in err and "blocker.drug" in err and "blocker.interval" in err, err
    assert not (tmp_path / "o").exists()


def test_optimize_over_a_posterior_population(tmp_path, capsys):
    """With --posterior each virtual patient carries its own draw: the same candidate gives other metrics,
    and the draws are recorded."""
    import test_posterior_trial as tpt

    f = _opt(tmp_path, trials=2)
    fit = tpt._posterior(tmp_path / "fit", {"il1r1_ec50": [1.5, 3.0, 40.0], "gcsf_il1_emax": [40.0, 20.0, 1.0]})
    assert main(["optimize", str(f), "--out", str(tmp_path / "a")]) == 0
    assert main(["optimize", str(f), "--out", str(tmp_path / "b"), "--posterior", str(fit)]) == 0
    a = pd.read_parquet(tmp_path / "a" / "candidates.parquet")
    b = pd.read_parquet(tmp_path / "b" / "candidates.parquet")
    assert a[["offset", "duration", "dose"]].equals(b[["offset", "duration", "dose"]])  # same seeded candidates
    assert not np.allclose(a["rmst_gain"], b["rmst_gain"])
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["posterior"]["parameters"] == ["il1r1_ec50", "gcsf_il1_emax"]
