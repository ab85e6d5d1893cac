"""Issue 8 item 2: randomised replicate trials (different patients per arm), power and N."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from chemohost.cli import main
from chemohost.errors import ScenarioError
from chemohost.studies.randomized import run_randomized
from chemohost.studies.trial import Trial

from test_trial import BASE


def _trial(arms, **changes):
    d = json.loads(json.dumps(BASE))
    d["arms"] = arms
    d.update(changes)
    return Trial.from_dict(d, "mini.yaml")


GEM = BASE["arms"]["gem"][0]


@pytest.fixture(scope="module")
def null_run():
    # an experimental arm identical to the control: the null hypothesis is true
    t = _trial({"gem": [GEM], "same": [dict(GEM)]}, follow_up="4 month")
    return run_randomized(t, 240, 16, seed=11)


def test_null_arm_type_one_error_within_binomial_interval(null_run):
    rnd = null_run.summary["randomized"]
    lo, hi = stats.binom.interval(0.95, 240, 0.05)
    for ep in ("os", "pfs"):
        a = rnd["arms"]["same"] if ep == "os" else rnd["arms"]["same"]["pfs"]
        assert a["n_replicates"] == 240
        assert lo / 240 <= a["rejection_rate_two_sided"] <= hi / 240, ep
        assert a["rejection_ci"][0] <= 0.05 <= a["rejection_ci"][1]
    # different patients in each arm: a paired design would give HR exactly 1 in every replicate
    hr = null_run.replicates.query("endpoint == 'os'")["hr"]
    assert hr.std() > 0.1 and 0.85 < hr.median() < 1.15


def test_arms_get_different_patients_and_replicates_are_independent(null_run):
    df = null_run.patients
    assert df["patient"].is_unique and len(df) == 240 * 2 * 16
    a = df[(df["replicate"] == 0) & (df["arm"] == "gem")]["patient"]
    b = df[(df["replicate"] == 0) & (df["arm"] == "same")]["patient"]
    assert not set(a) & set(b)
    r = null_run.replicates
    assert set(r["replicate"]) == set(range(240)) and (r["n_control"] == 16).all()


def test_large_effect_gives_power_near_one_and_n_search():
    # untreated control vs gemcitabine in the pancreatic layer: PFS HR ~ 0.4 (paired run: 2.6 untreated vs gem)
    arms = {"untreated": [dict(GEM, dose="1 mg/m2")], "gem": [GEM]}
    t = _trial(arms, control="untreated", indication="pancreatic_advanced", follow_up="6 month")
    res = run_randomized(t, 60, 40, seed=3, ns=[5, 10, 20, 40])
    pfs = res.summary["randomized"]["arms"]["gem"]["pfs"]
    assert pfs["power"] >= 0.9 and pfs["power_ci"][0] > 0.8  # 57/60 replicates measured
    curve = [c["power"] for c in pfs["power_curve"]]
    assert curve[0] < curve[-1] and [c["n_per_arm"] for c in pfs["power_curve"]] == [5, 10, 20, 40]
    assert pfs["n_for_target"] is not None and 5 <= pfs["n_for_target"] <= 40
    assert pfs["hr_quantiles"]["p50"] < 0.7
    # Schoenfeld's N for the pooled HR and event share lands near the simulated N for 80% power
    # (measured: 22 simulated vs 21 Schoenfeld)
    assert pfs["schoenfeld_n"] is not None
    assert abs(pfs["schoenfeld_n"] - pfs["n_for_target"]) < 0.5 * pfs["n_for_target"]


def test_randomized_cli_writes_outputs_and_rejects_bad_sizes(tmp_path, capsys):
    f = tmp_path / "t.yaml"
    d = json.loads(json.dumps(BASE))
    d["follow_up"] = "3 month"
    f.write_text(json.dumps(d))
    out = tmp_path / "out"
    assert main(["trial", str(f), "--design", "randomized", "--replicates", "4", "--per-arm", "6",
                 "--ns", "3,6", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"patients.parquet", "replicates.parquet", "summary.json",
                                               "report.html", "manifest.json", "COMPLETE.json"}
    s = json.loads((out / "summary.json").read_text())
    assert s["design"] == "randomized" and s["randomized"]["ns"] == [3, 6]
    assert len(pd.read_parquet(out / "replicates.parquet")) == 4 * 2  # 4 replicates x (OS, PFS)
    assert "power" in capsys.readouterr().out
    for args, msg in ((["--replicates", "4"], "needs --replicates R and --per-arm N"),
                      (["--replicates", "0", "--per-arm", "5"], "replicates"),
                      (["--replicates", "2", "--per-arm", "5", "--ns", "3,x"], "--ns"),
                      (["--replicates", "2", "--per-arm", "5", "--ns", "9"], "--ns"),
                      (["--replicates", "100000", "--per-arm", "100"], "exceeds the limit")):
        assert main(["trial", str(f), "--design", "randomized", *args, "--out", str(tmp_path / "x")]) == 2
        assert msg in capsys.readouterr().err
    assert main(["trial", str(f), "--replicates", "3", "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_population_targets_are_refused_with_the_field():
    t = _trial(BASE["arms"], population={"targets": {"age": {"normal": {"mean": 60, "sd": 5}}}})
    with pytest.raises(ScenarioError, match="population.targets"):
        run_randomized(t, 2, 4)
