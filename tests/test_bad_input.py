"""Bad scenarios fail with one clear message (file, field, what is allowed), exit code 2, and
nothing is written to --out.

Every bad scenario is derived from the shipped gemcitabine d1,8,15 q28 scenario, shrunk to one
patient, one cycle and a 28-day horizon; all of them must fail before any simulation runs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from chemohost.cli import main

ROOT = Path(__file__).resolve().parents[1]
BASE_FILE = ROOT / "scenarios" / "gemcitabine_d1_8_15_q28_human.yaml"


def base() -> dict:
    data = yaml.safe_load(BASE_FILE.read_text())
    data["horizon"] = "28 day"
    data["output_interval"] = "1 day"
    data["patients"] = {"n": 1, "variability": False}
    data["regimens"][0]["cycles"] = 1
    return data


# -- small mutators -------------------------------------------------------------------------------
def reg(**changes):
    def f(d):
        d["regimens"][0].update(changes)
    return f


def reg_drop(key):
    def f(d):
        del d["regimens"][0][key]
    return f


def rename(old, new, where=()):
    def f(d):
        t = d
        for k in where:
            t = t[k]
        t[new] = t.pop(old)
    return f


def top(**changes):
    def f(d):
        d.update(changes)
    return f


def top_drop(key):
    def f(d):
        del d[key]
    return f


def to_arms(**reg_changes):
    def f(d):
        r = d.pop("regimens")
        r[0].update(reg_changes)
        d["arms"] = {"control": r}
    return f


# (id, mutation, field path that must be named, hints that must appear)
CASES = [
    ("unknown_drug", reg(drug="gemcitabin"), "regimens[0].drug", ["gemcitabin'", "gemcitabine", "cisplatin"]),
    ("negative_dose", reg(dose="-1000 mg/m2"), "regimens[0].dose", [">= 0", "mg/m2"]),
    ("infinite_dose", reg(dose="1e400 mg/m2"), "regimens[0].dose", [">= 0"]),
    ("missing_dose", reg_drop("dose"), "regimens[0].dose", ["required", "mg/m2"]),
    ("dose_without_unit", reg(dose=1000), "regimens[0].dose", ["unit", "mg"]),
    ("day_beyond_cycle", reg(days=[1, 8, 29]), "regimens[0].days", ["29", "28-day cycle", "1..28"]),
    ("days_not_increasing", reg(days=[1, 15, 8]), "regimens[0].days", ["increasing"]),
    ("repeated_day", reg(days=[1, 8, 8]), "regimens[0].days", ["increasing"]),
    ("day_zero", reg(days=[0, 8]), "regimens[0].days[0]", [">= 1", "day 1 = cycle start"]),
    ("fractional_day", reg(days=[1, 8.5]), "regimens[0].days[1]", ["integer"]),
    ("zero_cycles", reg(cycles=0), "regimens[0].cycles", [">= 1"]),
    ("zero_cycle_length", reg(cycle_length="0 day"), "regimens[0].cycle_length", ["> 0"]),
    ("negative_start", reg(start="-1 day"), "regimens[0].start", [">= 0"]),
    ("infusion_longer_than_gap", reg(infusion="8 day"), "regimens[0].infusion", ["overlaps", "7 days"]),
    ("infusion_non_iv_route", reg(route="sc"), "regimens[0].infusion", ["'iv'", "'sc'"]),
    ("unknown_route", reg(route="im"), "regimens[0].route", ["'iv'", "'oral'"]),
    ("unknown_dose_rule", reg(dose_modification="label_anc"), "regimens[0].dose_modification",
     ["gemcitabine_label_anc"]),
    ("dose_per_litre", reg(dose="1000 mg/L"), "regimens[0].dose", ["mg/m2", "mg/kg"]),
    ("dose_not_mass", reg(dose="1000 L/m2"), "regimens[0].dose", ["not a mass", "mg"]),
    ("infusion_in_mg", reg(infusion="30 mg"), "regimens[0].infusion", ["does not convert", "day"]),
    ("horizon_in_kg", top(horizon="5 kg"), "horizon", ["does not convert", "day"]),
    ("negative_horizon", top(horizon="-5 day"), "horizon", ["> 0"]),
    ("infinite_horizon", top(horizon="1e400 day"), "horizon", ["finite"]),
    ("output_interval_zero", top(output_interval="0 day"), "output_interval", [">= 1 min", "MIN_OUTPUT_INTERVAL"]),
    ("unknown_unit_infusion", reg(infusion="30 minutez"), "regimens[0].infusion", ["minutez", "min"]),
    ("unknown_unit_dose", reg(dose="1000 zorg/m2"), "regimens[0].dose", ["zorg", "mg"]),
    ("unknown_unit_horizon", top(horizon="28 dayz"), "horizon", ["dayz", "unknown unit"]),
    ("typo_top_level", rename("regimens", "regimen"), "regimen", ["did you mean 'regimens'", "allowed here"]),
    ("typo_in_regimen", rename("cycle_length", "cycle_lenght", ("regimens", 0)), "regimens[0].cycle_lenght",
     ["did you mean 'cycle_length'", "allowed here"]),
    ("typo_in_patients", rename("variability", "variabilty", ("patients",)), "patients.variabilty",
     ["did you mean 'variability'", "allowed here"]),
    ("typo_in_solver", top(solver={"rtoll": 1e-6}), "solver.rtoll", ["did you mean 'rtol'"]),
    ("missing_regimens", top_drop("regimens"), "regimens", ["arms"]),
    ("missing_name", top_drop("name"), "name", ["required"]),
    ("both_regimens_and_arms", top(arms={"a": [{"drug": "gemcitabine", "dose": "1000 mg/m2"}]}), "arms",
     ["not both"]),
    ("unknown_drug_in_arm", to_arms(drug="docetaxol"), "arms.control[0].drug", ["gemcitabine", "cisplatin"]),
    ("unknown_model", top(model="chemo_cor"), "model", ["chemo_cor'", "chemo_core", "gemcitabine_pk"]),
    ("unknown_species", top(species="rat"), "species", ["'human'", "'mouse'"]),
    ("unknown_parameter", top(parameters={"CL_gemm": "2 L/min"}), "parameters.CL_gemm",
     ["did you mean 'CL_gem'", "chemohost params"]),
    ("parameter_bad_unit", top(parameters={"CL_gem": "2 kg"}), "parameters.CL_gem", ["does not convert", "L/day"]),
    ("unknown_covariate", top(patients={"n": 1, "covariates": {"BSAA": "1.8 m2"}}), "patients.covariates.BSAA",
     ["did you mean 'BSA'"]),
    ("unknown_output", top(outputs=["C_gem", "ANK"]), "outputs[1]", ["did you mean 'ANC'", "chemohost outputs"]),
    ("zero_patients", top(patients={"n": 0}), "patients.n", [">= 1"]),
    ("negative_patients", top(patients={"n": -3}), "patients.n", [">= 1"]),
]


def assert_clean_failure(rc, capsys, file: Path, field: str | None, hints, out: Path, tmp_path: Path):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert err.count("chemohost: error:") == 1, err
    assert file.name in err, err
    if field is not None:
        assert f"field '{field}'" in err, err
    for h in hints:
        assert h in err, f"hint {h!r} missing from: {err}"
    assert not out.exists(), "a failing run must not create --out"
    # no temporary folders left next to --out either
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")]


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("mutate, field, hints", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_scenario(tmp_path, capsys, mutate, field, hints):
    data = base()
    mutate(data)
    file = write_yaml(tmp_path / "bad_scenario.yaml", data)
    out = tmp_path / "out"
    rc = main(["simulate", str(file), "--out", str(out)])
    assert_clean_failure(rc, capsys, file, field, hints, out, tmp_path)


def test_base_scenario_is_valid():
    """The unmodified base must pass, so the failures above are due to the mutations."""
    from chemohost.scenario import parse_spec
    from chemohost.api import Scenario

    Scenario(parse_spec(base(), "base.yaml"), "base.yaml")


def test_invalid_yaml(tmp_path, capsys):
    file = tmp_path / "broken.yaml"
    file.write_text("name: x\nregimens: [\n  - drug: : :\n")
    out = tmp_path / "out"
    rc = main(["simulate", str(file), "--out", str(out)])
    assert_clean_failure(rc, capsys, file, None, ["not valid YAML", "line 3"], out, tmp_path)


@pytest.mark.parametrize("text", ["- just\n- a list\n", "42\n", ""], ids=["list", "scalar", "empty"])
def test_yaml_not_a_mapping(tmp_path, capsys, text):
    file = tmp_path / "notmap.yaml"
    file.write_text(text)
    out = tmp_path / "out"
    rc = main(["simulate", str(file), "--out", str(out)])
    assert_clean_failure(rc, capsys, file, None, ["mapping", "regimens"], out, tmp_path)


def test_missing_file(tmp_path, capsys):
    file = tmp_path / "no_such_scenario.yaml"
    out = tmp_path / "out"
    rc = main(["simulate", str(file), "--out", str(out)])
    assert_clean_failure(rc, capsys, file, None, ["not found"], out, tmp_path)


def test_directory_instead_of_file(tmp_path, capsys):
    folder = tmp_path / "a_folder.yaml"
    folder.mkdir()
    out = tmp_path / "out"
    rc = main(["simulate", str(folder), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and folder.name in err and "not a file" in err
    assert not out.exists()


def test_not_utf8(tmp_path, capsys):
    file = tmp_path / "binary.yaml"
    file.write_bytes(b"\xff\xfe\x00\x01 not text")
    out = tmp_path / "out"
    rc = main(["simulate", str(file), "--out", str(out)])
    assert_clean_failure(rc, capsys, file, None, ["UTF-8"], out, tmp_path)


def test_zero_patients_on_command_line(tmp_path, capsys):
    file = write_yaml(tmp_path / "ok.yaml", base())
    out = tmp_path / "out"
    rc = main(["simulate", str(file), "--out", str(out), "--patients", "0"])
    assert_clean_failure(rc, capsys, file, None, ["--patients", ">= 1"], out, tmp_path)


def test_existing_out_folder_is_left_untouched(tmp_path, capsys):
    data = base()
    data["regimens"][0]["dose"] = "-5 mg/m2"
    file = write_yaml(tmp_path / "bad.yaml", data)
    out = tmp_path / "results"
    out.mkdir()
    note = out / "my_notes.txt"
    note.write_text("keep me\n")
    before = note.stat().st_mtime_ns
    rc = main(["simulate", str(file), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "regimens[0].dose" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["my_notes.txt"]
    assert note.read_text() == "keep me\n"
    assert note.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "results"]


def test_out_is_a_file_fails_after_simulation_without_writing(tmp_path, capsys):
    """A failure at write time (after a valid simulation) must not leave partial output."""
    file = write_yaml(tmp_path / "ok.yaml", base())
    out = tmp_path / "out.txt"
    out.write_text("user data\n")
    rc = main(["simulate", str(file), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "out.txt" in err and "not a folder" in err
    assert out.read_text() == "user data\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.yaml", "out.txt"]


def test_messages_do_not_leak_internal_prefixes(tmp_path, capsys):
    data = base()
    data["patients"] = {"n": 0}
    file = write_yaml(tmp_path / "zero.yaml", data)
    main(["simulate", str(file), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "Value error," not in err
    assert "validation error" not in err.lower()


def test_bad_report_workers_variable_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    file = tmp_path / "trial.yaml"
    file.write_text((Path(__file__).resolve().parents[1] / "scenarios" / "trial_pancreatic_il1_blockade.yaml")
                    .read_text())
    out = tmp_path / "out"
    monkeypatch.setenv("CHEMOHOST_REPORT_WORKERS", "many")
    rc = main(["trial", str(file), "--out", str(out), "--patients", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "CHEMOHOST_REPORT_WORKERS" in err and "'many'" in err and "Traceback" not in err
    assert not out.exists()
