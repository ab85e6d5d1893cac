"""In-silico trials: outputs, chunk invariance, statistics, bad input."""

import json

import pandas as pd
import pytest

from chemohost.cli import main
from chemohost.studies.trial import Trial, run_trial

BASE = {
    "name": "mini", "model": "host_response", "species": "human", "seed": 5, "patients": 12,
    "follow_up": "3 month", "control": "gem", "assessment_interval": "8 week",
    "arms": {
        "gem": [{"drug": "gemcitabine", "dose": "1000 mg/m2", "infusion": "30 min", "days": [1, 8, 15],
                 "cycle_length": "28 day", "cycles": 3, "dose_modification": "gemcitabine_label_anc"}],
        "gem + anti-IL-1a": [{"drug": "gemcitabine", "dose": "1000 mg/m2", "infusion": "30 min", "days": [1, 8, 15],
                              "cycle_length": "28 day", "cycles": 3, "dose_modification": "gemcitabine_label_anc"},
                             {"drug": "bermekimab", "dose": "7.5 mg/kg", "infusion": "60 min", "days": [1, 15],
                              "cycle_length": "28 day", "cycles": 3}],
    },
}

COLUMNS = ["patient", "arm", "best_response", "pfs_months", "pfs_event", "os_months", "os_event",
           "neutropenia_grade_max", "nlr_baseline", "nlr_day28", "dose_intensity", "bsa_m2"]


def _trial(**changes):
    d = json.loads(json.dumps(BASE))
    d.update(changes)
    return Trial.from_dict(d, "mini.yaml")


def test_same_seed_same_patients_whatever_the_chunk_size():
    a = run_trial(_trial(), chunk_size=5).patients
    b = run_trial(_trial(), chunk_size=1000).patients
    pd.testing.assert_frame_equal(a, b)
    assert set(COLUMNS) <= set(a.columns) and len(a) == 24
    c = run_trial(_trial(), seed=6).patients
    assert not a["os_months"].equals(c["os_months"])


def test_cli_writes_all_outputs(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    import yaml
    path.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "out"
    assert main(["trial", str(path), "--out", str(out), "--patients", "10"]) == 0
    err = capsys.readouterr().err
    assert "20/20" in err and "patient" in err  # progress bar over all arms
    summary = json.loads((out / "summary.json").read_text())
    assert summary["control"] == "gem" and summary["seed"] == 5
    for arm in BASE["arms"]:
        s = summary["arms"][arm]
        assert {"n", "orr", "dcr", "median_pfs_months", "median_os_months", "os_12m", "neutropenia_g3plus",
                "neutropenia_g4", "hr_os_vs_control", "logrank_p"} <= set(s)
        assert len(s["hr_os_vs_control"]) == 3
    html = (out / "report.html").read_text()
    assert 'src="data:image/png;base64,' in html and "http" not in html.split('id="details-manifest"')[0]
    for section in ("table-summary", "fig-km-os", "fig-km-pfs", "fig-waterfall", "table-paired", "section-methods"):
        assert f'id="{section}"' in html
    df = pd.read_parquet(out / "patients.parquet")
    assert set(COLUMNS) <= set(df.columns)
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("changes,field,fragment", [
    ({"control": "placebo"}, "control", "not one of the arms"),
    ({"patients": 0}, "patients", ">= 1"),
    ({"follow_up": "2 week"}, "follow_up", "shorter than one treatment cycle"),
    ({"arms": {"gem": [{"drug": "gemcitabin", "dose": "1000 mg/m2"}]}}, "arms.gem[0].drug", "unknown drug"),
    ({"population": {"targets": {"nlr0": {"lognormal": {"median": 400, "sd_log": 0.1}}}}}, "population", "nlr0"),
    ({"population": {"female_fractoin": 0.5}}, "population", "female"),
    ({"indication": "pancreas"}, "indication", "available: bladder_advanced, pancreatic_advanced"),
    ({"lab_interval": "0 day"}, "lab_interval", ">= 1 h"),
])
def test_bad_trials_exit_2_and_write_nothing(tmp_path, capsys, changes, field, fragment):
    import yaml
    d = json.loads(json.dumps(BASE))
    d.update(changes)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    assert main(["trial", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and field in err and fragment in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("path", ["scenarios/trial_pancreatic_il1_blockade.yaml",
                                  "scenarios/trial_bladder_gc_il1_timing.yaml"])
def test_shipped_trials_load(path):
    t = Trial.load(path)
    assert t.spec.control in t.arms and len(t.arms) >= 3


def test_indication_layer_sets_typical_values_cvs_and_os_link():
    from chemohost.studies.indications import load_indication
    from chemohost.model.registry import get_model

    m = get_model("host_response")
    ind = load_indication("bladder_advanced", m.parameters)
    assert "tumour_k2_cis" in ind.parameters and ind.os_link.median_os_months > 5
    assert all(v.strip() for v in ind.sources.values())
    t = _trial(indication="bladder_advanced")
    assert t.indication.name == "bladder_advanced"
    # the indication's typical value reaches the simulated patients (IIV aside: compare medians)
    from chemohost.population.virtual import sample_population
    names, P, _ = sample_population(m, "human", {}, 400, 1, parameters=ind.parameters, cv_overrides=ind.cvs)
    names0, P0, _ = sample_population(m, "human", {}, 400, 1)
    j = names.index("tumour_k2_cis")
    import numpy as np
    from chemohost.api import parameter_vector
    typ = parameter_vector(m, "human", ind.parameters)[1][j]
    assert np.median(P[:, j]) == pytest.approx(typ, rel=0.15)
    assert np.std(np.log(P[:, j])) > 0.3 and np.ptp(P0[:, j]) == 0.0


def test_indication_table_errors_are_specific(tmp_path):
    from chemohost.model.registry import get_model
    from chemohost.studies.indications import IndicationError, load_indication

    m = get_model("host_response")
    bad = tmp_path / "ind.csv"
    head = "indication,name,value,unit,cv_percent,source\n"
    bad.write_text(head + "x,os.median_os,5,month,,src\n")
    with pytest.raises(IndicationError, match="unknown OS-link constant"):
        load_indication("x", m.parameters, bad)
    bad.write_text(head + "x,tumour_k2_gemm,1,1/day,,src\n")
    with pytest.raises(IndicationError, match="not a parameter"):
        load_indication("x", m.parameters, bad)
    bad.write_text(head + "x,tumour_k2_gem,1,1/day,,\n")
    with pytest.raises(IndicationError, match="no source"):
        load_indication("x", m.parameters, bad)
