"""Posterior-predictive trials (`chemohost trial FILE --posterior FIT_DIR --draws K`): each draw is the
plain paired trial with the draw's values as typical values (same patients, same streams), draws are
compared on common random numbers, the effects carry credible intervals and a variance attribution,
and bad input exits 2 writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chemohost.calibration.fit import load_posterior
from chemohost.cli import main
from chemohost.studies.posterior_trial import attribution, run_posterior_trial
from chemohost.studies.trial import Trial, run_trial

import test_trial as tt

PARAMS = ["il1r1_ec50", "gcsf_il1_emax"]


def _posterior(folder: Path, values: dict[str, list[float]], model="host_response", species="human") -> Path:
    """A minimal fit folder: manifest.json + posterior.parquet (as `chemohost fit` writes them)."""
    from chemohost.outputs import write_atomically

    n = len(next(iter(values.values())))

    def write(tmp):
        pd.DataFrame({"draw": np.arange(n), "step": 0, "walker": np.arange(n), "log_posterior": 0.0, **values,
                      "sigma_NLR": 0.3}).to_parquet(tmp / "posterior.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps({
            "model": model, "species": species, "model_parameters": list(values), "problem_file": "synthetic",
            "parameters": {p: {"scale": "log10"} for p in values}}))

    write_atomically(folder, write)
    return folder


def _trial(**changes) -> Trial:
    d = json.loads(json.dumps(tt.BASE))
    d.update({"patients": 10, "follow_up": "3 month"})
    d.update(changes)
    return Trial.from_dict(d, "mini.yaml")


DRAWS = {"il1r1_ec50": [2.0, 40.0, 8.0], "gcsf_il1_emax": [30.0, 1.0, 5.0]}


def test_each_draw_is_the_plain_trial_at_the_draws_values(tmp_path):
    post = load_posterior(_posterior(tmp_path / "fit", DRAWS))
    res = run_posterior_trial(_trial(), post, draws=3, chunk_size=7)
    assert sorted(res.draws["draw"]) == [0, 1, 2]
    cols = ["patient", "arm", "os_months", "os_event", "pfs_months", "neutropenia_grade_max", "nlr_day28",
            "best_tumour_change_pct"]
    for d in range(3):
        vals = {p: DRAWS[p][d] for p in PARAMS}
        plain = run_trial(_trial(parameters=vals)).patients[cols].reset_index(drop=True)
        mine = res.patients[res.patients["draw"] == d][cols].sort_values(["arm", "patient"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, plain, check_categorical=False, rtol=1e-12)
    # the draws differ (the couplings matter) but the patients are the same virtual patients
    nlr = res.patients[res.patients["arm"] == "gem"].pivot(index="patient", columns="draw", values="nlr_day28")
    assert not np.allclose(nlr[0], nlr[1])
    pd_ = res.per_draw
    assert set(pd_.columns) >= {"draw", "arm", *PARAMS, "orr", "neutropenia_g3plus", "median_os_months",
                                "rmst_diff_12", "hr", "mean_os_gain"}


def test_identical_draws_give_identical_effects(tmp_path):
    post = load_posterior(_posterior(tmp_path / "fit", {"il1r1_ec50": [10.0] * 4, "gcsf_il1_emax": [5.0] * 4}))
    res = run_posterior_trial(_trial(), post, draws=4)
    eff = res.per_draw[res.per_draw["arm"] != "gem"]
    for m in ("mean_os_gain", "hr", "nlr_day28_median"):
        v = eff[m].to_numpy(float)
        assert np.all(v == v[0]), m
    e = res.summary["effects"]["gem + anti-IL-1a"]["mean_os_gain"]
    assert e["sd"] == 0 and e["q025"] == e["q975"]
    # follow-up 3 months: RMST at 12/24 months is past it and not estimated
    assert np.isnan(eff["rmst_diff_12"]).all()


def test_attribution_finds_the_parameter_that_drives_the_effect():
    rng = np.random.default_rng(0)
    a, b, c = rng.uniform(0, 1.6, 60), rng.uniform(-1, 1, 60), rng.uniform(0, 1, 60)
    y = np.exp(-2 * a) + 0.02 * rng.standard_normal(60)
    att = attribution(y, {"a": a, "b": b, "c": c}, seed=1)
    assert att["ranked"][0] == "a"
    assert att["parameters"]["a"]["share"] > 0.9
    assert att["parameters"]["b"]["share"] < 0.15 and att["parameters"]["c"]["share"] < 0.15
    lo, hi = att["parameters"]["a"]["share_ci"]
    assert lo <= att["parameters"]["a"]["share"] <= hi


def test_cli_writes_the_posterior_trial(tmp_path, capsys):
    fit = _posterior(tmp_path / "fit", {"il1r1_ec50": [1.5, 3.0, 6.0, 12.0, 24.0, 45.0],
                                        "gcsf_il1_emax": [40.0, 20.0, 10.0, 5.0, 2.0, 1.0]})
    spec = json.loads(json.dumps(tt.BASE))
    spec.update({"patients": 8, "follow_up": "12 month"})
    tf = tmp_path / "trial.yaml"
    tf.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "ppt"
    assert main(["trial", str(tf), "--posterior", str(fit), "--draws", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "over 5 posterior draws" in text and "95% CrI" in text
    for f in ("patients.parquet", "draws.parquet", "summary.json", "report.html", "manifest.json"):
        assert (out / f).is_file(), f
    s = json.loads((out / "summary.json").read_text())
    e = s["effects"]["gem + anti-IL-1a"]
    assert e["rmst_diff_12"]["q025"] <= e["rmst_diff_12"]["median"] <= e["rmst_diff_12"]["q975"]
    assert 0 <= e["rmst_diff_12"]["mc_share_of_between_draw_variance"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["posterior"]["draws"] == 5 and len(man["posterior"]["draw_ids"]) == 5
    assert len(pd.read_parquet(out / "patients.parquet")) == 5 * 8 * 2
    html = (out / "report.html").read_text()
    assert "credible" in html and "data:image/png;base64," in html


@pytest.mark.parametrize("args, fragment", [
    (["--draws", "3"], "--draws needs --posterior"),
    (["--posterior", "FIT"], "--posterior needs --draws"),
    (["--posterior", "FIT", "--draws", "50"], "only 3 posterior draws"),
    (["--posterior", "NOFIT", "--draws", "2"], "manifest.json not found"),
    (["--posterior", "FIT", "--draws", "2", "--design", "randomized", "--replicates", "2", "--per-arm", "5"],
     "drop --design randomized"),
])
def test_bad_posterior_arguments_exit_2(tmp_path, capsys, args, fragment):
    fit = _posterior(tmp_path / "fit", {"il1r1_ec50": [2.0, 4.0, 8.0]})
    spec = json.loads(json.dumps(tt.BASE))
    tf = tmp_path / "trial.yaml"
    tf.write_text(yaml.safe_dump(spec, sort_keys=False))
    args = [str(fit) if a == "FIT" else str(tmp_path / "nofit") if a == "NOFIT" else a for a in args]
    assert main(["trial", str(tf), "--out", str(tmp_path / "o"), *args]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_posterior_of_another_model_or_a_fixed_parameter_is_refused(tmp_path):
    from chemohost.errors import ChemohostError

    other = load_posterior(_posterior(tmp_path / "a", {"il1r1_ec50": [2.0, 4.0]}, species="mouse"))
    with pytest.raises(ChemohostError, match="is for model 'host_response' \\(mouse\\)"):
        run_posterior_trial(_trial(), other, draws=2)
    post = load_posterior(_posterior(tmp_path / "b", {"il1r1_ec50": [2.0, 4.0]}))
    with pytest.raises(ChemohostError, match="the trial fixes il1r1_ec50"):
        run_posterior_trial(_trial(parameters={"il1r1_ec50": "20 pg/mL"}), post, draws=2)
