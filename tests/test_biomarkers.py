"""`chemohost biomarkers TRIAL_DIR`: labels from paired counterfactuals, cross-validated models with
AUC CIs and calibration, single markers with cut-points, the enrichment design, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chemohost.cli import main
from chemohost.studies.biomarkers import features

import test_trial as tt

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def trial_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bm")
    spec = json.loads(json.dumps(tt.BASE))
    spec.update(patients=150, follow_up="6 month", indication="pancreatic_advanced",
                parameters={"il1r1_ec50": "3 pg/mL", "gcsf_il1_emax": 20})
    f = d / "t.yaml"
    f.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["trial", str(f), "--out", str(d / "trial")]) == 0
    return d / "trial"


def test_the_trial_records_candidate_markers(trial_dir):
    p = pd.read_parquet(trial_dir / "patients.parquet")
    for c in ("mk_NLR_d0", "mk_il1a_pgml_d3", "mk_gcsf_d8", "mk_ldh_cum_d15", "mk_ANC_d15"):
        assert c in p.columns and p[c].notna().all(), c
    g = p[p["arm"].astype(str) == "gem"]
    assert (g["mk_ldh_cum_d0"] == 0).all() and (g["mk_ldh_cum_d15"] > 0).all()  # LDH released by lytic death
    X = features(g.set_index("patient"))
    assert "rel_NLR_d8" in X.columns and "casp1_expr" in X.columns and X.notna().all().all()


def test_biomarkers_end_to_end(trial_dir, tmp_path, capsys):
    out = tmp_path / "bm"
    assert main(["biomarkers", str(trial_dir), "--out", str(out), "--threshold", "q70", "--replicates", "8",
                 "--per-arm", "40", "--seed", "1"]) == 0
    s = json.loads((out / "summary.json").read_text())
    b = s["labels"]["benefit"]
    assert b["positives"] == pytest.approx(0.3 * b["n"], abs=2)
    for m in b["models"]:
        assert 0 <= m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1] <= 1
        assert 0 <= m["calibration"]["brier"] <= 0.25 + 0.1
    t = b["top_markers"][0]
    assert 0.5 <= t["auc"] <= 1 and 0 <= t["sensitivity"] <= 1 and t["direction"] in ("higher", "lower")
    e = s["enrichment"]
    assert e["marker"] in s["features"] and 0 < e["positive_fraction"] < 1
    assert len(e["all_comers"]["ns"]) == len(e["all_comers"]["power"])
    preds = pd.read_parquet(out / "benefit_predictions.parquet")
    assert set(preds.columns) == {"penalised_logistic", "random_forest", "patient", "label"}
    # reproducible by seed
    assert main(["biomarkers", str(trial_dir), "--out", str(tmp_path / "bm2"), "--threshold", "q70",
                 "--replicates", "8", "--per-arm", "40", "--seed", "1"]) == 0
    pd.testing.assert_frame_equal(preds, pd.read_parquet(tmp_path / "bm2" / "benefit_predictions.parquet"))


def test_bad_biomarker_inputs(trial_dir, tmp_path, capsys):
    assert main(["biomarkers", str(trial_dir), "--out", str(tmp_path / "o"), "--threshold", "q150"]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert main(["biomarkers", str(trial_dir), "--out", str(tmp_path / "o"), "--benefit-arm", "nope"]) == 2
    assert "--benefit-arm 'nope'" in capsys.readouterr().err
    assert main(["biomarkers", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no completion marker" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_biomarkers_on_a_posterior_predictive_trial(tmp_path, capsys):
    """A posterior-predictive trial folder: every (draw, patient) is a virtual patient, so the markers are
    judged across the parameter uncertainty."""
    import test_posterior_trial as tpt

    fit = tpt._posterior(tmp_path / "fit", {"il1r1_ec50": [2.0, 5.0, 30.0], "gcsf_il1_emax": [30.0, 10.0, 2.0]})
    spec = json.loads(json.dumps(tt.BASE))
    spec.update(patients=40, follow_up="6 month")
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(spec))
    assert main(["trial", str(f), "--posterior", str(fit), "--draws", "3", "--out", str(tmp_path / "ppt")]) == 0
    assert main(["biomarkers", str(tmp_path / "ppt"), "--out", str(tmp_path / "bm"), "--threshold", "q70",
                 "--replicates", "4", "--per-arm", "20"]) == 0
    s = json.loads((tmp_path / "bm" / "summary.json").read_text())
    assert s["labels"]["benefit"]["n"] == 120
