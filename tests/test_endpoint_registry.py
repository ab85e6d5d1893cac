"""The endpoint registry is the trial's contract: it says which model outputs are recorded and
checked at load time, and the files a trial writes hold exactly the declared columns, summary keys
and report blocks (plus the population's covariates)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from chemohost.cli import main
from chemohost.errors import ScenarioError
from chemohost.studies.endpoint_registry import ENDPOINTS, declared, needed_outputs
from chemohost.studies.trial import OUTPUTS, Trial, sample_trial_patients

BASE = {
    "name": "reg", "model": "host_response", "species": "human", "seed": 3, "patients": 10,
    "follow_up": "4 month", "control": "gem", "assessment_interval": "8 week",
    "arms": {
        "gem": [{"drug": "gemcitabine", "dose": "1000 mg/m2", "infusion": "30 min", "days": [1, 8, 15],
                 "cycle_length": "28 day", "cycles": 2, "dose_modification": "gemcitabine_label_anc_delay"}],
        "gem + anti-IL-1a": [{"drug": "gemcitabine", "dose": "1000 mg/m2", "infusion": "30 min", "days": [1, 8, 15],
                              "cycle_length": "28 day", "cycles": 2, "dose_modification": "gemcitabine_label_anc_delay"},
                             {"drug": "bermekimab", "dose": "7.5 mg/kg", "infusion": "60 min", "days": [1, 15],
                              "cycle_length": "28 day", "cycles": 2}],
    },
}


def test_registry_is_consistent():
    names = [e.name for e in ENDPOINTS]
    assert len(names) == len(set(names))
    assert OUTPUTS == needed_outputs()
    cols = [c for e in ENDPOINTS for c in e.columns]
    assert len(cols) == len(set(cols)), "a column is produced by exactly one endpoint"
    keys = [k for e in ENDPOINTS for k in e.summary]
    assert len(keys) == len(set(keys)), "a summary key is filled by exactly one endpoint"


def test_trial_files_hold_exactly_the_declared_endpoints(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "out"
    assert main(["trial", str(path), "--out", str(out)]) == 0
    pdf = pd.read_parquet(out / "patients.parquet")
    _, _, cov, _ = sample_trial_patients(Trial.from_dict(BASE, "t.yaml"), 3, 3)
    covariates = set(cov.columns) - {"patient"}
    assert set(pdf.columns) - covariates == set(declared("columns"))
    summary = json.loads((out / "summary.json").read_text())
    treated = set(summary["arms"]["gem + anti-IL-1a"])
    assert treated == set(declared("summary")), treated ^ set(declared("summary"))
    assert set(summary["arms"]["gem"]) <= set(declared("summary"))
    html = (out / "report.html").read_text()
    for block in declared("report"):
        assert f'id="{block}"' in html, block


def test_model_without_the_endpoint_outputs_fails_at_load_before_compiling(monkeypatch):
    import chemohost.engine.codegen as codegen

    def no_compile(*a, **k):
        raise AssertionError("compiled before the check")

    monkeypatch.setattr(codegen, "compile_model", no_compile)
    d = json.loads(json.dumps(BASE))
    d["model"] = "chemo_core"
    d["arms"]["gem + anti-IL-1a"] = d["arms"]["gem"]
    with pytest.raises(ScenarioError) as err:
        Trial.from_dict(d, "t.yaml")
    msg = str(err.value)
    assert "t.yaml" in msg and "field 'model'" in msg and "cannot supply the trial's endpoints" in msg
    for name in ("progression_free_survival needs", "overall_survival needs", "NLR"):
        assert name in msg, msg
