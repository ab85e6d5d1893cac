"""Package-data measurement tables (chemohost.data): they load, reference valid conditions whose
regimens parse, carry units compatible with the model outputs they name, and bad rows are refused
with file, line and column in the message."""

from __future__ import annotations

import csv

import pytest

from chemohost.data import (COLUMNS, load_conditions, load_table, list_tables, parse_unit,
                            table_info)
from chemohost.errors import ChemohostError, ParameterError
from chemohost.model.registry import get_model
from chemohost.scenario import RegimenSpec, build_regimens
from chemohost.units import conversion_factor

TABLES = list_tables()


@pytest.fixture(scope="module")
def host_response():
    return get_model("host_response")


@pytest.fixture(scope="module")
def model_units(host_response):
    units = {name: s.unit for name, s in host_response.species.items()}
    units.update({name: o.unit for name, o in host_response.outputs.items()})
    return units


def test_tables_present():
    assert {"gem_dfdctp_dose_rate", "pdac_gem_blood_counts", "gcsf_after_chemo", "serum_il1a",
            "il1a_clearance", "mouse_gem_pk"} <= set(TABLES)


@pytest.mark.parametrize("name", TABLES)
def test_table_loads_and_has_index_entry(name):
    df = load_table(name)
    assert tuple(df.columns) == COLUMNS
    assert len(df) >= 1
    info = table_info(name)
    assert info["title"] and info["description"]
    assert isinstance(info["not_found"], list)
    assert set(df["species"]) <= {info["species"]} | ({"human", "mouse", "rat"} if info["species"] == "mixed" else set())
    assert (df["source"].str.len() > 20).all()


def test_index_covers_exactly_the_tables():
    import yaml
    from chemohost.data import INDEX_FILE
    with open(INDEX_FILE) as fh:
        assert set(yaml.safe_load(fh)) == set(TABLES)


def test_every_condition_regimen_parses(host_response):
    conds = load_conditions()
    for cid, spec in conds.items():
        regs = [RegimenSpec.model_validate(r) for r in spec["regimens"]]
        built = build_regimens(regs, host_response.drugs, "conditions.yaml", f"{cid}.regimens")
        assert len(built) == len(regs)


def test_referenced_conditions_exist():
    conds = load_conditions()
    used = set()
    for name in TABLES:
        df = load_table(name, conditions=conds)
        used |= set(df["condition"])
        for cid, sp in zip(df["condition"], df["species"]):
            assert conds[cid]["species"] == sp
    assert used <= set(conds)


@pytest.mark.parametrize("name", TABLES)
def test_units_parse_and_match_model(name, model_units):
    df = load_table(name)
    for obs, unit in zip(df["observable"], df["unit"]):
        parse_unit(unit)
        if obs in model_units:
            conversion_factor(unit, model_units[obs])  # raises UnitError if incompatible


def test_left_censored_rows_have_lloq_and_no_value():
    for name in TABLES:
        df = load_table(name)
        left = df[df["censoring"] == "left"]
        assert left["value"].isna().all()
        assert (left["lloq"] > 0).all()


def test_no_per_cell_amount_named_as_model_dfdctp(model_units):
    for name in TABLES:
        df = load_table(name)
        for obs, unit in zip(df["observable"], df["unit"]):
            if "cells" in unit:
                assert obs not in model_units


# ------------------------------------------------------------------ bad rows

GOOD = {
    "observable": "ANC", "species": "human", "condition": "healthy_untreated", "time": "0",
    "time_unit": "day", "value": "4.5", "unit": "1e9/L", "spread": "", "spread_type": "none",
    "n": "10", "censoring": "none", "lloq": "", "statistic": "mean",
    "source": "Example A et al. Journal 2000;1:1-2", "location": "Table 1", "extraction": "table",
    "notes": "",
}


def _write(tmp_path, **changes):
    row = dict(GOOD, **changes)
    p = tmp_path / "bad.csv"
    with open(p, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerow(GOOD)
        w.writerow(row)
    return p


def test_good_file_loads(tmp_path):
    p = _write(tmp_path)
    df = load_table("bad", path=p)
    assert len(df) == 2 and df["value"].iloc[1] == 4.5 and df["n"].iloc[1] == 10


@pytest.mark.parametrize("column,value,expect", [
    ("value", "1,000", "plain decimal number"),
    ("value", "1 000", "plain decimal number"),
    ("value", "abc", "plain decimal number"),
    ("value", "nan", "plain decimal number"),
    ("censoring", "below", "none | left | right"),
    ("source", "", "full citation"),
    ("condition", "nowhere", "condition id"),
    ("unit", "blorbs/L", "pint unit"),
    ("unit", "1,000", "pint unit"),
    ("n", "3.5", "whole number"),
    ("spread", "0.3", "empty when spread_type is 'none'"),
    ("time_unit", "week", "day | h | min"),
    ("statistic", "average", "mean | median"),
    ("species", "rabbit", "human | mouse | rat"),
])
def test_bad_row_rejected_with_location(tmp_path, column, value, expect):
    p = _write(tmp_path, **{column: value})
    with pytest.raises(ParameterError) as exc:
        load_table("bad", path=p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "line 3" in msg
    assert f"column '{column}'" in msg
    assert repr(value) in msg
    assert expect in msg
    assert isinstance(exc.value, ChemohostError)


def test_left_censored_rules(tmp_path):
    ok = _write(tmp_path, censoring="left", value="", lloq="3.9", unit="pg/mL",
                observable="il1a_pgml", statistic="median")
    df = load_table("bad", path=ok)
    assert df["lloq"].iloc[1] == 3.9
    bad = _write(tmp_path, censoring="left", value="2", lloq="3.9")
    with pytest.raises(ParameterError, match=r"line 3, column 'value'"):
        load_table("bad", path=bad)
    bad = _write(tmp_path, censoring="left", value="", lloq="")
    with pytest.raises(ParameterError, match=r"line 3, column 'lloq'"):
        load_table("bad", path=bad)


def test_species_must_match_condition(tmp_path):
    p = _write(tmp_path, species="mouse")
    with pytest.raises(ParameterError, match=r"column 'condition'.*species 'mouse'"):
        load_table("bad", path=p)


def test_computed_needs_notes(tmp_path):
    p = _write(tmp_path, extraction="computed", notes="")
    with pytest.raises(ParameterError, match=r"column 'notes'"):
        load_table("bad", path=p)


def test_bad_header(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("observable,species\nANC,human\n")
    with pytest.raises(ParameterError, match="line 1: header"):
        load_table("h", path=p)


def test_unknown_table():
    with pytest.raises(ParameterError, match="unknown measurement table"):
        load_table("no_such_table")
