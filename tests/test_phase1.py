"""`chemohost phase1`: BOIN boundaries and decision table as published, 3+3 behaviour against its
closed form, operating characteristics in design-only mode, model mode end to end, bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chemohost.cli import main
from chemohost.studies.phase1 import boin_boundaries, boin_select, boin_table, simulate_3p3, simulate_boin

import test_studies as ts

ROOT = Path(__file__).resolve().parents[1]


def test_boin_boundaries_and_table_match_the_published_values():
    # Liu & Yuan 2015 (J R Stat Soc C 64:507) Table 1 (three decimals): target 0.3 -> lambda_e 0.236,
    # lambda_d 0.358 (0.3585; often quoted as 0.359); target 0.25 -> 0.197, 0.298; target 0.2 -> 0.157, 0.238
    for phi, le, ld in ((0.3, 0.236, 0.358), (0.25, 0.197, 0.298), (0.2, 0.157, 0.238)):
        a, b = boin_boundaries(phi)
        assert abs(a - le) < 1e-3 and abs(b - ld) < 1e-3, (phi, a, b)
    # the BOIN decision table for target 0.3 (BOIN R package get.boundary, n = 1..12)
    t = boin_table(0.3, 12).set_index("n")
    assert t["escalate_if_le"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert t["deescalate_if_ge"].tolist() == [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5]
    assert t["eliminate_if_ge"].tolist()[2:] == [3, 3, 4, 4, 5, 5, 5, 6, 6, 7]


def test_boin_mtd_selection_uses_the_isotonic_estimate():
    n, y = np.array([3, 6, 9, 3, 0]), np.array([0, 1, 4, 2, 0])
    # raw (y+0.05)/(n+0.1): 0.016, 0.18, 0.45, 0.66 -> the dose closest to 0.3 after PAVA is index 1 (0.18)
    assert boin_select(n, y, 0.3, eliminated_from=5) == 1
    assert boin_select(n, y, 0.3, eliminated_from=0) == -1


@pytest.mark.parametrize("p", [0.1, 0.25, 0.4])
def test_3p3_escalation_matches_its_closed_form(p):
    """With one dose level the 3+3 selects it exactly when escalation is allowed:
    P = (1-p)^3 + 3 p (1-p)^2 (1-p)^3 (0/3, or 1/3 then 0/3)."""
    rng = np.random.default_rng(5)
    draw = lambda d, k, r: int((r.random(k) < p).sum())  # noqa: E731
    T = 20000
    sel = sum(simulate_3p3(draw, 1, 3, 30, rng)[2] == 0 for _ in range(T))
    exact = (1 - p) ** 3 + 3 * p * (1 - p) ** 5
    assert abs(sel / T - exact) < 4 * math.sqrt(exact * (1 - exact) / T)


def test_design_only_operating_characteristics(tmp_path, capsys):
    """BOIN selects the true MTD far more often than 3+3 (Liu & Yuan 2015; Zhou 2018 Clin Cancer Res),
    treats patients near it, and never exceeds the sample size."""
    f = ROOT / "scenarios" / "study_phase1_design_only.yaml"
    d = yaml.safe_load(f.read_text())
    d["trials"] = 2000
    g = tmp_path / "p.yaml"
    g.write_text(yaml.safe_dump(d))
    assert main(["phase1", str(g), "--out", str(tmp_path / "o")]) == 0
    oc = pd.read_parquet(tmp_path / "o" / "operating_characteristics.parquet").set_index("design")
    assert oc.loc["boin", "p_correct"] > 0.55 and oc.loc["boin", "p_correct"] > oc.loc["3+3", "p_correct"] + 0.2
    sel = oc[[f"select_{i}" for i in range(5)] + ["select_none"]].sum(axis=1)
    assert np.allclose(sel, 1.0)
    assert oc.loc["boin", "patients_mean"] <= 30 and oc.loc["3+3", "patients_mean"] <= 30
    tri = pd.read_parquet(tmp_path / "o" / "trials.parquet")
    assert tri["patients"].max() <= 30
    # reproducible by seed
    assert main(["phase1", str(g), "--out", str(tmp_path / "o2")]) == 0
    pd.testing.assert_frame_equal(oc.reset_index(),
                                  pd.read_parquet(tmp_path / "o2" / "operating_characteristics.parquet"))


def test_design_only_with_workers_starts_no_cluster(tmp_path, capsys, monkeypatch):
    """A design-only study simulates nobody: --workers is ignored (said on stderr), no LocalCluster is started."""
    import distributed

    def refuse(*a, **k):
        raise AssertionError("a LocalCluster was started for a design-only study")

    monkeypatch.setattr(distributed, "LocalCluster", refuse)
    f = ROOT / "scenarios" / "study_phase1_design_only.yaml"
    assert main(["phase1", str(f), "--out", str(tmp_path / "o"), "--workers", "2"]) == 0
    assert "design-only study simulates no patients" in capsys.readouterr().err
    assert (tmp_path / "o" / "operating_characteristics.parquet").exists()


def test_model_mode_runs_on_virtual_patients(tmp_path, capsys):
    ts._base(tmp_path)
    s = {"study": "phase1", "name": "mini_p1", "base": "base.yaml", "arm": "gem",
         "blocker": {"drug": "bermekimab", "route": "iv", "infusion": "60 min", "days": [1, 15]},
         "doses": ["1 mg/kg", "7.5 mg/kg"], "dlt": {"window": "28 day", "blocker_dlt_rate": [0.0, 0.5],
                                                    "blocker_dlt_source": "assumed for the test"},
         "trials": 50, "pool": 20, "seed": 4}
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(s))
    assert main(["phase1", str(f), "--out", str(tmp_path / "o")]) == 0
    doses = pd.read_parquet(tmp_path / "o" / "doses.parquet")
    assert doses["pool"].tolist() == [20, 20]
    assert doses.loc[1, "true_dlt"] >= doses.loc[0, "true_dlt"]
    summ = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summ["mode"] == "model" and "ANC < 0.5e9/L" in summ["dlt_definition"]


def test_bad_phase1_files(tmp_path, capsys):
    s = {"study": "phase1", "name": "bad", "doses": ["a", "b"], "true_dlt": [0.1], "target": 0.9}
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(s))
    assert main(["phase1", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "field 'target'" in err and "p.yaml" in err
    s.update(target=0.3)
    f.write_text(yaml.safe_dump(s))
    assert main(["phase1", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "one probability per dose" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
