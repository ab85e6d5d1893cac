"""Protocols (dose units, cycles, offsets) and the parameter table's provenance."""

import numpy as np
import pytest

import chemohost as ch
from chemohost.errors import ProtocolError, UnitError
from chemohost.model.params import SPECIES, parameter_set, parameter_table_markdown, read_table
from chemohost.model.registry import MODELS
from chemohost.protocol.dosing import parse_dose


@pytest.mark.parametrize("text,expected", [
    ("1000 mg/m2", (1000.0, "bsa")), ("1 g/m**2", (1000.0, "bsa")), ("120 mg/kg", (120.0, "weight")),
    ("500 ug/kg", (0.5, "weight")), ("50 mg", (50.0, "flat")), ("0.2 g", (200.0, "flat")),
])
def test_parse_dose(text, expected):
    value, basis = parse_dose(text)
    assert value == pytest.approx(expected[0]) and basis == expected[1]


@pytest.mark.parametrize("text", ["1000 mg/L", "5 L", "1000 mg/min", "abc"])
def test_parse_dose_rejects(text):
    with pytest.raises(UnitError):
        parse_dose(text)


def test_cycle_times_and_offsets():
    r = ch.Regimen("gemcitabine", 1000, "bsa", days=(1, 8, 15), cycle_length=28, cycles=2, start=3)
    np.testing.assert_allclose(r.nominal_times(), [3, 10, 17, 31, 38, 45])
    r = ch.Regimen("cisplatin", 70, "bsa", days=(1, 8), cycle_length=21, cycles=3)
    np.testing.assert_allclose(r.nominal_times(), [0, 7, 21, 28, 42, 49])
    t = ch.dose_table([r, ch.Regimen("gemcitabine", 1000, "bsa", days=(1,), cycle_length=21, cycles=1, start=0.5)])
    assert list(t.time) == sorted(t.time) and t.n == 7 and list(t.cycle) == [1, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("kw,fragment", [
    (dict(dose=-1), "dose must be"), (dict(days=(8, 1)), "strictly increasing"), (dict(days=(0,)), ">= 1"),
    (dict(days=(29,), cycle_length=28), "does not fit"), (dict(cycles=0), "cycles must be"),
    (dict(infusion=10.0, days=(1, 8)), "overlaps"), (dict(route="ip", infusion=0.02), "needs route 'iv'"),
    (dict(route="iv_push"), "route"), (dict(start=-1), "start offset"),
])
def test_impossible_regimens(kw, fragment):
    base = dict(drug="gemcitabine", dose=1000.0, basis="bsa", cycle_length=28.0)
    base.update(kw)
    with pytest.raises(ProtocolError, match=fragment):
        ch.Regimen(**base)


def test_every_model_parameter_has_sourced_bounded_values():
    for name in MODELS:
        model = ch.get_model(name)
        for species in SPECIES:
            if name == "friberg_docetaxel" and species == "mouse":
                continue  # docetaxel is a human-only contrast model
            ps = parameter_set(model, species)
            for p in ps.values():
                assert p.source and "TODO" not in p.source
                assert p.lower <= p.value <= p.upper
                assert np.isfinite(p.value)


def test_every_table_row_is_used_and_has_a_source():
    declared = set()
    for name in MODELS:
        declared |= set(ch.get_model(name).parameters)
    for row in read_table():
        assert row["name"] in declared, f"{row['_where']}: '{row['name']}' is not declared by any model"
        assert row["source"].strip(), row["_where"]


def test_parameter_table_renders():
    md = parameter_table_markdown(ch.get_model("chemo_core"), "human")
    assert "| `CL_gem` |" in md and "Jiang 2008" in md and "3888" in md
