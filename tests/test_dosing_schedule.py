"""Sub-daily regimens (times_of_day, every+doses, ii+addl) and per-patient event tables.

Fast: no model is compiled or simulated.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from chemohost.errors import ProtocolError, ScenarioError
from chemohost.protocol.dosing import MAX_ADMINISTRATIONS, ROUTES, Regimen, dose_table
from chemohost.protocol.event_table import EventTableError, PatientDoses, read_event_table
from chemohost.scenario import build_regimens, parse_spec

DRUGS = {"gemcitabine": SimpleNamespace(routes={"iv"}), "belnacasan": SimpleNamespace(routes={"oral", "iv"})}
FILE = "trial.yaml"
H = 1 / 24


def regimens(*entries, prefix="arms.anti_il1"):
    """build_regimens on specs validated exactly as a scenario file's arm would be."""
    spec = parse_spec({"name": "t", "model": "m", "horizon": "10 day", "arms": {"a": list(entries)}}, FILE)
    return build_regimens(spec.arms["a"], DRUGS, FILE, prefix)


GEM = {"drug": "gemcitabine", "dose": "1000 mg/m2", "infusion": "30 min", "days": [1, 8, 15],
       "cycle_length": "28 day", "cycles": 2}
BEL = {"drug": "belnacasan", "dose": "900 mg", "route": "oral", "cycle_length": "28 day", "cycles": 2}


# ---------------------------------------------------------------- equivalent spellings

def test_three_spellings_of_tid_give_the_same_times():
    daily = list(range(1, 29))
    a = regimens({**BEL, "days": daily, "times_of_day": ["0 h", "8 h", "16 h"]})[0]
    b = regimens({**BEL, "days": daily, "every": "8 h", "doses": 3})[0]
    c = regimens({**BEL, "days": [1], "ii": "8 h", "addl": 83})[0]
    ta, tb, tc = a.nominal_times(), b.nominal_times(), c.nominal_times()
    assert len(ta) == 2 * 28 * 3
    expected = np.concatenate([cyc * 28 + np.arange(84) / 3 for cyc in range(2)])
    np.testing.assert_allclose(ta, expected, atol=1e-12)
    np.testing.assert_allclose(tb, expected, atol=1e-12)
    np.testing.assert_allclose(tc, expected, atol=1e-12)
    for r in (a, b, c):
        t = dose_table([r])
        assert list(t.cycle) == [1] * 84 + [2] * 84


def test_times_of_day_8_16_24_h_and_start_offset():
    r = regimens({**BEL, "days": [1, 2], "cycles": 1, "start": "2 day", "times_of_day": ["8 h", "16 h", "24 h"]})[0]
    np.testing.assert_allclose(r.nominal_times(), 2 + np.array([1, 2, 3, 4, 5, 6]) / 3, atol=1e-12)
    assert r.times_of_day == (1 / 3, 2 / 3, 1.0)


def test_default_regimen_times_unchanged():
    r = Regimen("gemcitabine", 1000, "bsa", days=(1, 8, 15), cycle_length=28, cycles=2, start=3)
    np.testing.assert_allclose(r.nominal_times(), [3, 10, 17, 31, 38, 45])
    assert list(dose_table([r]).cycle) == [1, 1, 1, 2, 2, 2]
    same = Regimen("gemcitabine", 1000, "bsa", days=(1, 8, 15), cycle_length=28, cycles=2, start=3,
                   times_of_day=(0.0,))
    np.testing.assert_array_equal(same.nominal_times(), r.nominal_times())
    built = regimens(GEM)[0]
    np.testing.assert_allclose(built.nominal_times(), [0, 7, 14, 28, 35, 42])
    assert built.times_of_day is None and built.addl is None


def test_addl_chain_belongs_to_its_cycle_and_dose_table_sorts_across_regimens():
    gem = regimens(GEM)[0]
    bel = regimens({**BEL, "days": [1], "ii": "12 h", "addl": 3})[0]  # 4 doses at 0, .5, 1, 1.5 per cycle
    t = dose_table([gem, bel])
    assert t.n == 6 + 8
    assert list(t.time) == sorted(t.time)
    bel_rows = [k for k in range(t.n) if t.drug[k] == "belnacasan"]
    np.testing.assert_allclose(t.time[bel_rows], [0, .5, 1, 1.5, 28, 28.5, 29, 29.5])
    assert list(t.cycle[bel_rows]) == [1, 1, 1, 1, 2, 2, 2, 2]


def test_infusion_overlap_check_sees_sub_daily_doses():
    with pytest.raises(ProtocolError, match="overlaps the next dose"):
        Regimen("belnacasan", 900, "flat", "iv", infusion=10 * H, days=(1,), cycle_length=7,
                times_of_day=(0, 8 * H, 16 * H))
    Regimen("belnacasan", 900, "flat", "iv", infusion=8 * H, days=(1,), cycle_length=7,
            times_of_day=(0, 8 * H, 16 * H))  # exactly back to back is allowed


# ---------------------------------------------------------------- bad inputs, named in the file

@pytest.mark.parametrize("extra,field,fragment", [
    ({"days": [1, 2], "times_of_day": ["0 h", "12 h", "24 h"]}, "times_of_day", "next treatment day"),
    ({"times_of_day": ["0 h", "25 h"]}, "times_of_day[1]", "outside one day"),
    ({"times_of_day": ["0 h", "-1 h"]}, "times_of_day[1]", "outside one day"),
    ({"times_of_day": ["8 h", "8 h"]}, "times_of_day[1]", "strictly increasing"),
    ({"times_of_day": []}, "times_of_day", "at least one"),
    ({"times_of_day": ["0 h", "8 hours,5"]}, "times_of_day[1]", "comma"),
    ({"times_of_day": ["0 h", "8"]}, "times_of_day[1]", "no unit"),
    ({"times_of_day": ["0 h", 8]}, "times_of_day[1]", "no unit"),
    ({"times_of_day": ["0 h", "8 mg"]}, "times_of_day[1]", "does not convert"),
    ({"addl": 3}, "ii", "need 'ii'"),
    ({"ii": "8 h"}, "addl", "no effect"),
    ({"ii": "8 h", "addl": -1}, "addl", ">= 0"),
    ({"ii": "-8 h", "addl": 2}, "ii", "> 0"),
    ({"ii": "0 h", "addl": 2}, "ii", "> 0"),
    ({"every": "8 h"}, "doses", "missing"),
    ({"doses": 3}, "every", "missing"),
    ({"every": "8 h", "doses": 0}, "doses", ">= 1"),
    ({"every": "0 h", "doses": 3}, "every", "> 0"),
    ({"every": "8 h", "doses": 3, "times_of_day": ["0 h"]}, "every", "only one of"),
    ({"ii": "8 h", "addl": 2, "every": "8 h", "doses": 3}, "ii", "only one of"),
    ({"days": [1, 2], "every": "16 h", "doses": 3}, "doses", "next treatment day"),
    ({"days": [1, 8], "ii": "8 h", "addl": 21}, "addl", "next treatment day"),  # 7 days + 0 h = day 8 start
    ({"days": [1], "cycle_length": "1 day", "cycles": 10, "ii": "1 h", "addl": 24}, "addl", "next treatment day"),
    ({"days": [1], "cycles": 1, "ii": "1 min", "addl": MAX_ADMINISTRATIONS}, "addl", "at most 20000"),
    ({"days": [1], "cycles": 1, "ii": "1 min", "addl": 10**15}, "addl", "at most 20000"),  # no huge array made
    ({"days": list(range(1, 29)), "cycles": 300, "times_of_day": ["0 h", "8 h", "16 h"]}, "times_of_day",
     "at most 20000"),
])
def test_bad_sub_daily_schedules_name_file_and_field(extra, field, fragment):
    with pytest.raises(ScenarioError, match=fragment) as err:
        regimens({**BEL, **extra})
    assert err.value.file == FILE
    assert err.value.field == f"arms.anti_il1[0].{field}"
    assert FILE in str(err.value) and f"arms.anti_il1[0].{field}" in str(err.value)


def test_every_can_run_past_the_day_when_it_does_not_reach_the_next_treatment_day():
    r = regimens({**BEL, "days": [1, 8], "cycles": 1, "every": "12 h", "doses": 4})[0]
    np.testing.assert_allclose(r.nominal_times(), [0, .5, 1, 1.5, 7, 7.5, 8, 8.5])
    ok = regimens({**BEL, "days": [1, 8], "cycles": 1, "ii": "8 h", "addl": 20})[0]  # last dose 6 d 16 h
    assert len(ok.nominal_times()) == 42


@pytest.mark.parametrize("extra,field", [({"doses": "3", "every": "8 h"}, "doses"),
                                         ({"addl": 2.0, "ii": "8 h"}, "addl"),
                                         ({"doses": True, "every": "8 h"}, "doses"),
                                         ({"every_h": "8 h"}, "every_h")])
def test_spec_types_are_strict(extra, field):
    with pytest.raises(ScenarioError, match=field) as err:
        regimens({**BEL, **extra})
    assert FILE in str(err.value)


def test_regimen_direct_validation_messages_name_the_drug():
    with pytest.raises(ProtocolError, match="regimen 'belnacasan'.*strictly increasing"):
        Regimen("belnacasan", 900, "flat", "oral", times_of_day=(0.5, 0.25))
    with pytest.raises(ProtocolError, match="regimen 'belnacasan'.*whole number"):
        Regimen("belnacasan", 900, "flat", "oral", ii=0.25, addl=2.5)
    with pytest.raises(ProtocolError, match="regimen 'belnacasan'.*outside one day"):
        Regimen("belnacasan", 900, "flat", "oral", times_of_day=(float("nan"),))


def test_belnacasan_arm_is_three_times_daily():
    from pathlib import Path

    from chemohost.scenario import load_yaml_mapping

    path = Path(__file__).resolve().parents[1] / "scenarios" / "trial_pancreatic_il1_blockade.yaml"
    data, _ = load_yaml_mapping(path, "trial", "arms")
    arm = data["arms"]["gemcitabine + caspase-1 inhibitor"]
    spec = parse_spec({"name": "t", "model": "m", "horizon": "1 day", "arms": {"a": arm}}, "trial.yaml")
    drugs = {"gemcitabine": SimpleNamespace(routes={"iv"}), "belnacasan": SimpleNamespace(routes={"oral"})}
    gem, bel = build_regimens(spec.arms["a"], drugs, "trial.yaml", "arms.x")
    t = bel.nominal_times()
    assert bel.dose == 900 and bel.basis == "flat" and bel.route == "oral"
    assert len(t) == 6 * 28 * 3
    np.testing.assert_allclose(t[:4], [0, 1 / 3, 2 / 3, 1], atol=1e-12)
    np.testing.assert_allclose(t[-1], 167 + 2 / 3)
    np.testing.assert_allclose(np.diff(t), 1 / 3, atol=1e-9)
    assert gem.nominal_times()[-1] == 5 * 28 + 14  # gemcitabine untouched


# ---------------------------------------------------------------- event tables

GOOD = """patient,time,drug,amount,route,duration,rate
0,0 h,gemcitabine,1000 mg/m2,iv,30 min,
0,16 h,belnacasan,900 mg,oral,,
0,8 h,belnacasan,0.9 g,oral,,
2,1 day,gemcitabine,1000 mg/m2,iv,,2000 mg/m2/h
2,1 week,belnacasan,7.5 mg/kg,iv,1 h,

1,0 h,belnacasan,900 mg,oral,,
"""


def write(tmp_path, text, name="doses.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_good_event_table(tmp_path):
    pd = read_event_table(write(tmp_path, GOOD), ["gemcitabine", "belnacasan"])
    assert list(pd.patients) == [0, 1, 2]
    assert list(pd.n_doses) == [3, 1, 2]
    assert pd.time.shape == (3, 3) and pd.drugs == ["gemcitabine", "belnacasan"]
    np.testing.assert_allclose(pd.time[0], [0, 1 / 3, 2 / 3])  # sorted by time
    np.testing.assert_allclose(pd.amount[0], [1000, 900, 900])
    assert list(pd.basis[0]) == [1, 0, 0]
    np.testing.assert_allclose(pd.duration[0], [0.5 / 24, 0, 0])
    assert np.isnan(pd.time[1, 1:]).all() and (pd.drug_index[1, 1:] == -1).all()
    np.testing.assert_allclose(pd.time[2, :2], [1, 7])
    np.testing.assert_allclose(pd.duration[2, :2], [0.5 / 24, 1 / 24])  # 1000 mg/m2 at 2000 mg/m2/h = 30 min
    mg = pd.amounts_mg(bsa=[2.0, 1.5, 1.8], weight=[70, 60, 80])
    np.testing.assert_allclose(mg[0], [2000, 900, 900])
    np.testing.assert_allclose(mg[2, :2], [1800, 600])
    t2 = pd.dose_table(2)
    assert t2.drug == ["gemcitabine", "belnacasan"] and t2.route == ["iv", "iv"] and t2.n == 2
    assert list(t2.regimen) == [-1, -1] and t2.rule == [None, None]


def _row_error(tmp_path, line, drugs=("gemcitabine", "belnacasan"), header="patient,time,drug,amount,route,duration"):
    first = "0,0 h,gemcitabine,1000 mg/m2,iv,30 min" + "," * (header.count(",") - 5)
    p = write(tmp_path, header + "\n" + first + "\n" + line + "\n")
    with pytest.raises(EventTableError) as err:
        read_event_table(p, list(drugs))
    return err.value, str(p)


@pytest.mark.parametrize("line,column,value,allowed", [
    ("x,0 h,gemcitabine,1000 mg/m2,iv,", "patient", "'x'", "whole number"),
    ("-1,0 h,gemcitabine,1000 mg/m2,iv,", "patient", "'-1'", "whole number"),
    ("1.5,0 h,gemcitabine,1000 mg/m2,iv,", "patient", "'1.5'", "whole number"),
    ("0,8,belnacasan,900 mg,oral,", "time", "'8'", "with a unit"),
    ("0,-8 h,belnacasan,900 mg,oral,", "time", "'-8 h'", ">= 0"),
    ("0,8 hours;5,belnacasan,900 mg,oral,", "time", "'8 hours;5'", "with a unit"),
    ("0,8 mg,belnacasan,900 mg,oral,", "time", "'8 mg'", "time >= 0"),
    ("0,1e999 h,belnacasan,900 mg,oral,", "time", "'1e999 h'", "finite"),
    ("0,8 h,aspirin,900 mg,oral,", "drug", "'aspirin'", "gemcitabine, belnacasan"),
    ("0,8 h,belnacasan,-900 mg,oral,", "amount", "'-900 mg'", ">= 0"),
    ("0,8 h,belnacasan,900 mL,oral,", "amount", "'900 mL'", "mg/m2"),
    ('0,8 h,belnacasan,"1,000 mg",oral,', "amount", "'1,000 mg'", "mg, g, ug"),
    ("0,8 h,belnacasan,900 mg,po,", "route", "'po'", "iv, ip, sc, oral"),
    ("0,8 h,belnacasan,900 mg,oral,1 h", "duration", "'1 h'", "empty cell"),
    ("0,8 h,belnacasan,900 mg,iv,0 h", "duration", "'0 h'", "> 0"),
    ("0,8 h,belnacasan,900 mg,iv,30", "duration", "'30'", "with a unit"),
    ("0,10 min,gemcitabine,1000 mg/m2,iv,30 min", "time", "'10 min'", "must not overlap"),
])
def test_bad_event_rows_name_file_row_column_value(tmp_path, line, column, value, allowed):
    err, path = _row_error(tmp_path, line)
    msg = str(err)
    assert err.row == 3 and err.column == column and err.file == path
    assert path in msg and "row 3" in msg and f"column '{column}'" in msg and value in msg, msg
    assert allowed in msg, msg


@pytest.mark.parametrize("line,column,allowed", [
    ("0,8 h,belnacasan,900 mg,iv,,1 h", "rate", "mg/h"),  # not a rate
    ("0,8 h,belnacasan,900 mg,iv,,100 mg/m2/h", "rate", "'2000 mg/h'"),  # basis differs from the amount's
    ("0,8 h,belnacasan,900 mg,iv,1 h,100 mg/h", "rate", "not both"),
    ("0,8 h,belnacasan,900 mg,iv,,0 mg/h", "rate", "> 0"),
    ("0,8 h,belnacasan,900 mg,oral,,100 mg/h", "rate", "route 'iv'"),
])
def test_bad_rates(tmp_path, line, column, allowed):
    err, path = _row_error(tmp_path, line, header="patient,time,drug,amount,route,duration,rate")
    assert err.row == 3 and err.column == column and allowed in str(err) and path in str(err), str(err)


def test_event_table_file_level_errors(tmp_path):
    drugs = ["belnacasan"]
    with pytest.raises(EventTableError, match=r"row 1, column 'unit'.*unknown column 'unit'.*allowed: patient"):
        read_event_table(write(tmp_path, "patient,time,drug,amount,route,unit\n0,0 h,belnacasan,1,oral,mg\n"), drugs)
    with pytest.raises(EventTableError, match=r"row 1.*missing required column\(s\) route"):
        read_event_table(write(tmp_path, "patient,time,drug,amount\n0,0 h,belnacasan,1 mg\n"), drugs)
    with pytest.raises(EventTableError, match="column 'time'.*appears 2 times"):
        read_event_table(write(tmp_path, "patient,time,time,drug,amount,route\n"), drugs)
    with pytest.raises(EventTableError, match="no dose rows"):
        read_event_table(write(tmp_path, "patient,time,drug,amount,route\n\n"), drugs)
    with pytest.raises(EventTableError, match="empty file"):
        read_event_table(write(tmp_path, ""), drugs)
    with pytest.raises(EventTableError, match=r"row 4: 4 values but the header has 5"):
        read_event_table(write(tmp_path, "patient,time,drug,amount,route\n0,0 h,belnacasan,1 mg,oral\n\n"
                                         "0,1 h,belnacasan,1 mg\n"), drugs)
    with pytest.raises(EventTableError, match="not found"):
        read_event_table(tmp_path / "missing.csv", drugs)


def test_infusions_of_different_drugs_or_patients_may_overlap(tmp_path):
    text = ("patient,time,drug,amount,route,duration\n0,0 h,gemcitabine,1 mg,iv,2 h\n0,1 h,belnacasan,1 mg,iv,2 h\n"
            "1,1 h,gemcitabine,1 mg,iv,2 h\n0,2 h,gemcitabine,1 mg,iv,1 h\n")
    pd = read_event_table(write(tmp_path, text), ["gemcitabine", "belnacasan"])
    assert list(pd.n_doses) == [3, 1]


def test_from_regimens_reproduces_dose_table():
    regs = [regimens(GEM)[0], regimens({**BEL, "days": [1], "ii": "8 h", "addl": 83})[0],
            Regimen("gemcitabine", 70, "weight", "iv", 1 * H, (2,), 28, 2, start=0.5, rule=None)]
    ref = dose_table(regs)
    pd = PatientDoses.from_regimens(regs, 4)
    assert list(pd.patients) == [0, 1, 2, 3] and list(pd.n_doses) == [ref.n] * 4
    for i, t in enumerate(pd.to_dose_tables()):
        np.testing.assert_array_equal(t.time, ref.time)
        assert t.drug == ref.drug and t.route == ref.route and t.rule == ref.rule
        np.testing.assert_array_equal(t.duration, ref.duration)
        np.testing.assert_array_equal(t.cycle, ref.cycle)
        np.testing.assert_array_equal(t.regimen, ref.regimen)
    mg = pd.amounts_mg(bsa=np.full(4, 2.0), weight=np.full(4, 50.0))
    expect = [regs[k].amounts(np.array(2.0), np.array(50.0)) for k in ref.regimen]
    np.testing.assert_allclose(mg[1], expect)
    assert set(np.unique(pd.route)) <= set(range(len(ROUTES)))
    with pytest.raises(ProtocolError, match="n_patients"):
        PatientDoses.from_regimens(regs, 0)
