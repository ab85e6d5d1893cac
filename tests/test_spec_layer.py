"""The one input layer (issue 10): a YAML loader that refuses duplicate keys, alias bombs and absurd
nesting; shared typed fields with named limits; model-aware physiology and schedule guards; every
error of a file reported at once, one line each (file, field, what was given, what is allowed);
`chemohost check` and `chemohost schema`.  Each case here was a traceback, a hang or a silently
accepted input in the issue's fuzzing run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from chemohost.cli import main
from chemohost.errors import ScenarioError
from chemohost.yamlio import loads

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "gemcitabine_d1_8_15_q28_human.yaml"
TRIAL = ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml"


def _run(capsys, argv) -> tuple[int, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.err + cap.out


def _small_scenario() -> dict:
    d = yaml.safe_load(SCENARIO.read_text())
    d.update(horizon="28 day", patients={"n": 1})
    d["regimens"][0]["cycles"] = 1
    return d


def _small_trial() -> dict:
    d = yaml.safe_load(TRIAL.read_text())
    d.update(patients=2, follow_up="2 month")
    for regs in d["arms"].values():
        for r in regs:
            r["cycles"] = 1
    return d


# -- the loader ----------------------------------------------------------------------------------------
def test_duplicate_keys_are_all_reported_with_lines():
    text = TRIAL.read_text() + "seed: 7\npatients: 5\n"
    with pytest.raises(ScenarioError) as e:
        loads(text, "t.yaml")
    msg = str(e.value)
    assert "2 duplicate key(s)" in msg and "duplicate key 'seed'" in msg and "duplicate key 'patients'" in msg
    assert "first at line" in msg


def test_duplicate_arm_is_refused(tmp_path, capsys):
    lines = TRIAL.read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("  gemcitabine:"))
    dup = lines[:i + 2] + ["  gemcitabine:", "    - {drug: gemcitabine, dose: 1 mg/m2, days: [1]}"] + lines[i + 2:]
    f = tmp_path / "dup.yaml"
    f.write_text("\n".join(dup) + "\n")
    rc, err = _run(capsys, ["trial", str(f), "--out", str(tmp_path / "o"), "--patients", "2"])
    assert rc == 2 and "duplicate key 'gemcitabine'" in err and "dup.yaml" in err
    assert not (tmp_path / "o").exists()


def test_alias_bomb_and_deep_nesting_fail_fast():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    t0 = time.perf_counter()
    with pytest.raises(ScenarioError, match="expands to more than"):
        loads(bomb, "bomb.yaml")
    with pytest.raises(ScenarioError, match="nesting deeper than 64"):
        loads("[" * 5000 + "]" * 5000, "deep.yaml")
    assert time.perf_counter() - t0 < 5


# -- typed fields with limits, every error at once -------------------------------------------------------
TRIAL_CASES = [
    ({"seed": -1}, "seed", ">= 0"),
    ({"seed": True}, "seed", "integer"),
    ({"keep_timecourses": -1}, "keep_timecourses", ">= 0"),
    ({"population": {"candidates_per_patient": "abc"}}, "population.candidates_per_patient", "integer"),
    ({"population": {"targets": 5}}, "population.targets", "dictionary"),
    ({"population": {"age_mean": "old"}}, "population.age_mean", "number"),
    ({"population": {"agemean": 60}}, "population.agemean", "did you mean 'age_mean'"),
    ({"follow_up": "300 year"}, "follow_up", "MAX_HORIZON_DAYS"),
    ({"lab_interval": "1 s"}, "lab_interval", "MIN_LAB_INTERVAL"),
    ({"patients": 10_000_000}, "patients", "MAX_PATIENTS"),
    ({"patients": True}, "patients", "integer"),
    ({"solver": {"rtol": 0}}, "solver.rtol", "[1e-12, 0.1]"),
]
SCENARIO_CASES = [
    ({"horizon": "1e7 day"}, "horizon", "MAX_HORIZON_DAYS"),
    ({"output_interval": "1 ms"}, "output_interval", "MIN_OUTPUT_INTERVAL"),
    ({"patients": {"n": 1, "covariates": {"BSA": "-1 m2"}}}, "patients.covariates.BSA", "cannot be negative"),
    ({"patients": {"n": 1, "covariates": {"BSA": "0 m2"}}}, "patients.covariates.BSA", "not possible"),
    ({"patients": {"n": 1, "covariates": {"BSA": "5 m2"}}}, "patients.covariates.BSA", "<= 4"),
    ({"patients": {"n": True}}, "patients.n", "integer"),
]


@pytest.mark.parametrize("verb, changes, field, fragment", [("trial", *c) for c in TRIAL_CASES]
                         + [("simulate", *c) for c in SCENARIO_CASES])
def test_fields_are_bounded_and_named(tmp_path, capsys, verb, changes, field, fragment):
    d = _small_trial() if verb == "trial" else _small_scenario()
    d.update(changes)
    f = tmp_path / "in.yaml"
    f.write_text(yaml.safe_dump(d))
    rc, err = _run(capsys, [verb, str(f), "--out", str(tmp_path / "o")])
    assert rc == 2, err
    assert "Traceback" not in err and "in.yaml" in err and f"field '{field}'" in err and fragment in err, err
    assert not (tmp_path / "o").exists()
    assert all(len(line) < 600 for line in err.splitlines())


def test_absurd_dose_and_late_start_are_refused(tmp_path, capsys):
    d = _small_scenario()
    d["regimens"][0]["dose"] = "1000 kg/m2"
    d["regimens"].append({"drug": "cisplatin", "dose": "70 mg/m2", "start": "5000 day", "infusion": "1 h"})
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    rc, err = _run(capsys, ["simulate", str(f), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "2 errors" in err
    assert "field 'regimens[0].dose'" in err and "highest published single dose" in err
    assert "field 'regimens[1].start'" in err and "untreated" in err


def test_dose_above_the_published_maximum_is_a_warning(tmp_path, capsys):
    d = _small_scenario()
    d["regimens"][0]["dose"] = "6000 mg/m2"  # above 5700 mg/m2 (phase I), below 10x
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    rc, err = _run(capsys, ["check", str(f)])
    assert rc == 0 and "warning" in err and "regimens[0].dose" in err


def test_every_error_of_a_file_is_reported_once_each(tmp_path, capsys):
    d = _small_scenario()
    d.update(seed=-1, horizon="0 day", outputs=["C_gem", "ANK", "nope"])
    d["regimens"][0]["dose"] = [1000]
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    rc, err = _run(capsys, ["simulate", str(f), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "3 errors" in err  # schema errors: seed, horizon, dose (outputs are checked after the schema)
    for fld in ("seed", "horizon", "regimens[0].dose"):
        assert f"field '{fld}'" in err
    assert err.count("regimens[0].dose") == 1  # union branches (str | float | int) merged into one line
    d.update(seed=1, horizon="28 day")
    d["regimens"][0]["dose"] = "1000 mg/m2"
    f.write_text(yaml.safe_dump(d))
    rc, err = _run(capsys, ["simulate", str(f), "--out", str(tmp_path / "o")])
    assert rc == 2 and "2 errors" in err and "outputs[1]" in err and "outputs[2]" in err


def test_horizon_is_an_alias_of_follow_up(tmp_path, capsys):
    d = _small_trial()
    d["horizon"] = d.pop("follow_up")
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(d))
    assert _run(capsys, ["check", str(f)])[0] == 0
    d["follow_up"] = "2 month"
    f.write_text(yaml.safe_dump(d))
    rc, err = _run(capsys, ["check", str(f)])
    assert rc == 2 and "not both" in err


# -- check and schema ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").rglob("*.yaml")) + sorted((ROOT / "problems").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_check_accepts_every_shipped_file(capsys, path):
    rc, out = _run(capsys, ["check", str(path)])
    assert rc == 0 and out.startswith("ok: "), out


@pytest.mark.parametrize("kind", ["scenario", "trial", "problem"])
def test_schema_is_json_schema(capsys, kind):
    rc, out = _run(capsys, ["schema", kind])
    assert rc == 0
    s = json.loads(out)
    assert s["type"] == "object" and "properties" in s and s["title"] == f"chemohost {kind} file"
    assert s.get("additionalProperties") is False


def test_scenario_and_trial_share_patients_forms(tmp_path, capsys):
    d = _small_scenario()
    d["patients"] = 2
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    rc, out = _run(capsys, ["check", str(f)])
    assert rc == 0 and "2 patient(s)" in out
    t = _small_trial()
    t["patients"] = {"n": 3}
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(t))
    rc, out = _run(capsys, ["check", str(f)])
    assert rc == 0 and "3 patients per arm" in out
    t["patients"] = {"n": 3, "variability": True}
    f.write_text(yaml.safe_dump(t))
    rc, err = _run(capsys, ["check", str(f)])
    assert rc == 2 and "population" in err
