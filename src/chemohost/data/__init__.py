"""Tidy measurement tables with provenance (package data), read strictly.

Layout (all inside this package)::

    measurements/<name>.csv   one data set per file, columns exactly COLUMNS (in that order)
    conditions.yaml           condition id -> species, description, regimens (scenario syntax), ...
    index.yaml                table name -> title, species, description, not_found

Every row is checked and nothing is coerced: a value that does not read exactly as allowed raises
:class:`chemohost.errors.ParameterError` (a table row is invalid) naming the file, the line, the
column, the value given and what is allowed.  Lines are counted as in the file: the header is
line 1, the first data row line 2.

Row schema (see README.md in this folder for the long form):

* ``observable``   identifier ``[A-Za-z][A-Za-z0-9_]*``; a chemohost model output/species name
  where one exists (``ANC``, ``NLR``, ``C_gem_uM``, ``gcsf``, ``il1a_pgml``...), otherwise a clear
  derived name (``dfdctp_auc_0_24h``, ``grade34_neutropenia``, ``os_median``...).
* ``species``      human | mouse | rat (rat: only for data with no human/mouse counterpart, e.g.
  IL-1 clearance; chemohost has no rat parameter set).
* ``condition``    an id defined in conditions.yaml, of the same species as the row.
* ``time``, ``time_unit``  time since the first dose, a plain number >= 0 with unit day | h | min;
  both empty for a time-independent summary (half-life, median OS, incidence over a course...).
* ``value``, ``unit``      a plain decimal number (``12``, ``0.5``, ``1e-3``; no thousands
  separators, no decimal comma, no ``nan``/``inf``) and a pint unit (``1e9/L``, ``pg/mL``,
  ``umol/L``, ``uM*h``, ``pmol/(1e6 cells)``, ``percent``, ``dimensionless``, ``month``...).
* ``spread``, ``spread_type``  spread_type one of sd | se | iqr_low | iqr_high | range_low |
  range_high | ci95_low | ci95_high | none; spread is a number >= 0 when spread_type is not
  ``none`` and empty when it is.  Intervals the source gives as two numbers are written in
  ``notes`` with spread_type ``none``.
* ``n``            a whole number >= 1 of subjects (patients, animals), or empty when unknown.
* ``censoring``    none | left | right.  **Left censoring** (e.g. serum IL-1α below the assay's
  detection limit): ``value`` is empty and ``lloq`` holds the detection limit (or the reported
  "less than" bound, see notes) in ``unit``; the row states that the summary named by
  ``statistic`` lies below ``lloq``.  **Right censoring** (above the upper limit): ``value`` holds
  the bound, ``lloq`` is empty.  ``none``: ``value`` required, ``lloq`` empty.
* ``statistic``    mean | median | geometric_mean | individual | proportion | range_low |
  range_high.  ``range_low``/``range_high`` are the two ends of a range that the source reports
  without a central value (two rows, same observable/condition/time); ``proportion`` values are in
  ``percent`` (or ``dimensionless`` fractions).
* ``source``       full citation (non-empty); ``location`` figure/table/page (non-empty);
  ``extraction`` table | text | digitised | computed (computed: derived here from reported
  numbers, explained in ``notes``); ``notes`` free text (may be empty).

This module may import only ``chemohost.errors`` and ``chemohost.units`` from the project.
Validating a condition's regimens against a model is left to the caller (the test does it with
``chemohost.scenario``); here only their shape is checked.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from ..errors import ParameterError, UnitError
from ..units import normalise_unit, ureg

__all__ = ["COLUMNS", "DATA_DIR", "list_tables", "load_table", "load_conditions", "table_info",
           "parse_unit"]

DATA_DIR = Path(__file__).resolve().parent
MEASUREMENTS_DIR = DATA_DIR / "measurements"
CONDITIONS_FILE = DATA_DIR / "conditions.yaml"
INDEX_FILE = DATA_DIR / "index.yaml"

COLUMNS = ("observable", "species", "condition", "time", "time_unit", "value", "unit", "spread",
           "spread_type", "n", "censoring", "lloq", "statistic", "source", "location", "extraction",
           "notes")

SPECIES = ("human", "mouse", "rat")
TIME_UNITS = ("day", "h", "min")
SPREAD_TYPES = ("sd", "se", "iqr_low", "iqr_high", "range_low", "range_high", "ci95_low",
                "ci95_high", "none")
CENSORING = ("none", "left", "right")
STATISTICS = ("mean", "median", "geometric_mean", "individual", "proportion", "range_low",
              "range_high")
EXTRACTION = ("table", "text", "digitised", "computed")
CONDITION_KEYS = {"species", "description", "regimens", "population", "notes"}
INDEX_KEYS = {"title", "species", "description", "not_found"}

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
_INT = re.compile(r"^\d+$")
_UNIT_TEXT = re.compile(r"^[A-Za-z0-9_*/()^.+\- ]+$")


def _fail(file, line, column, value, allowed: str) -> None:
    where = f"{file}: line {line}" if line is not None else str(file)
    col = f", column '{column}'" if column else ""
    raise ParameterError(f"{where}{col}: got {value!r}; allowed: {allowed}")


def parse_unit(text: str):
    """The pint quantity of a unit string (``'1e9/L'`` -> 1e9 / liter), strictly.

    Refuses commas, semicolons and other characters that are not part of a unit (pint would read
    ``'1,000'`` as the number 1000), and strings without a letter.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnitError(f"unit {text!r} is empty")
    if not _UNIT_TEXT.match(text) or not re.search(r"[A-Za-z]", text):
        raise UnitError(f"unit {text!r} holds characters that are not part of a unit")
    try:
        q = ureg().parse_expression(normalise_unit(text))
    except Exception as exc:  # pint raises several types
        raise UnitError(f"unknown unit {text!r} ({exc})") from None
    if not hasattr(q, "units"):
        raise UnitError(f"unit {text!r} is a bare number, not a unit")
    return q


def _number(file, line, column, text: str, *, minimum: float | None = None) -> float:
    if not _NUMBER.match(text):
        _fail(file, line, column, text,
              "a plain decimal number such as 12, 0.5 or 1e-3 (no thousands separators, no decimal "
              "comma, no units, no nan/inf)")
    x = float(text)
    if not math.isfinite(x):
        _fail(file, line, column, text, "a finite number")
    if minimum is not None and x < minimum:
        _fail(file, line, column, text, f"a number >= {minimum:g}")
    return x


def _choice(file, line, column, text: str, allowed: tuple[str, ...]) -> str:
    if text not in allowed:
        _fail(file, line, column, text, " | ".join(allowed))
    return text


def _read_yaml(path: Path, what: str) -> dict:
    from ..errors import ScenarioError
    from ..yamlio import load_file

    try:
        data = load_file(path, what)  # duplicate keys, alias bombs, deep nesting refused
    except ScenarioError as exc:
        raise ParameterError(str(exc)) from None
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping of {what} entries at the top level, "
                             f"got {type(data).__name__}")
    return data


def load_conditions(path: str | Path | None = None) -> dict:
    """conditions.yaml as ``{id: {species, description, regimens, [population], [notes]}}``.

    Checks the shape only (ids are identifiers, species allowed, description non-empty, regimens a
    list of mappings each naming a drug and a dose); the regimens follow the syntax of a scenario's
    ``regimens:`` entries and are parsed against a model by the caller.
    """
    path = Path(path) if path is not None else CONDITIONS_FILE
    data = _read_yaml(path, "condition")
    for cid, spec in data.items():
        if not isinstance(cid, str) or not _NAME.match(cid):
            raise ParameterError(f"{path}: condition id {cid!r} is not an identifier "
                                 "([A-Za-z][A-Za-z0-9_]*)")
        if not isinstance(spec, dict):
            raise ParameterError(f"{path}: condition '{cid}': expected a mapping, got "
                                 f"{type(spec).__name__}")
        extra = set(spec) - CONDITION_KEYS
        if extra:
            raise ParameterError(f"{path}: condition '{cid}': unknown key(s) {sorted(extra)}; "
                                 f"allowed: {sorted(CONDITION_KEYS)}")
        for key in ("species", "description", "regimens"):
            if key not in spec:
                raise ParameterError(f"{path}: condition '{cid}': missing '{key}'")
        if spec["species"] not in SPECIES:
            raise ParameterError(f"{path}: condition '{cid}', field 'species': got "
                                 f"{spec['species']!r}; allowed: {' | '.join(SPECIES)}")
        if not isinstance(spec["description"], str) or not spec["description"].strip():
            raise ParameterError(f"{path}: condition '{cid}', field 'description': must be "
                                 "non-empty text")
        regs = spec["regimens"]
        if not isinstance(regs, list):
            raise ParameterError(f"{path}: condition '{cid}', field 'regimens': expected a list "
                                 f"(empty for untreated), got {type(regs).__name__}")
        for i, r in enumerate(regs):
            if not isinstance(r, dict) or "drug" not in r or "dose" not in r:
                raise ParameterError(f"{path}: condition '{cid}', field 'regimens[{i}]': expected "
                                     "a regimen mapping with at least 'drug' and 'dose'")
        for key in ("population", "notes"):
            if key in spec and not isinstance(spec[key], str):
                raise ParameterError(f"{path}: condition '{cid}', field '{key}': must be text")
    return data


def _load_index(path: Path | None = None) -> dict:
    path = Path(path) if path is not None else INDEX_FILE
    data = _read_yaml(path, "table index")
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise ParameterError(f"{path}: table '{name}': expected a mapping")
        missing = INDEX_KEYS - set(spec)
        extra = set(spec) - INDEX_KEYS
        if missing or extra:
            raise ParameterError(f"{path}: table '{name}': keys must be exactly "
                                 f"{sorted(INDEX_KEYS)} (missing {sorted(missing)}, unknown "
                                 f"{sorted(extra)})")
        if not isinstance(spec["not_found"], list):
            raise ParameterError(f"{path}: table '{name}', field 'not_found': expected a list")
    return data


def list_tables() -> list[str]:
    """Names of the shipped tables (the CSV files under measurements/), sorted."""
    return sorted(p.stem for p in MEASUREMENTS_DIR.glob("*.csv"))


def table_info(name: str) -> dict:
    """index.yaml entry of a table: title, species, description, not_found."""
    index = _load_index()
    if name not in index:
        raise ParameterError(f"{INDEX_FILE}: no entry for table '{name}'; tables with an entry: "
                             f"{', '.join(sorted(index))}")
    return dict(index[name])


def load_table(name: str, path: str | Path | None = None,
               conditions: dict | None = None) -> pd.DataFrame:
    """Read and validate measurements/<name>.csv (or the CSV at ``path``).

    Returns a DataFrame with the COLUMNS; ``time``, ``value``, ``spread``, ``lloq`` are floats
    (NaN where empty), ``n`` is a nullable integer, all other columns are text.  Raises
    ParameterError naming file, line, column, the value given and what is allowed.
    """
    file = Path(path) if path is not None else MEASUREMENTS_DIR / f"{name}.csv"
    if path is None and name not in list_tables():
        raise ParameterError(f"unknown measurement table '{name}'; available: "
                             f"{', '.join(list_tables())}")
    if conditions is None:
        conditions = load_conditions()
    try:
        raw = pd.read_csv(file, dtype=str, keep_default_na=False, na_filter=False,
                          encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError(f"{file}: file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ParameterError(f"{file}: not a readable CSV table ({exc})") from None
    header = tuple(raw.columns)
    if header != COLUMNS:
        raise ParameterError(f"{file}: line 1: header must be exactly {','.join(COLUMNS)}; got "
                             f"{','.join(header)}")
    if raw.empty:
        raise ParameterError(f"{file}: the table has no data rows")

    rows = []
    for k, rec in enumerate(raw.to_dict("records")):
        line = k + 2
        rows.append(_check_row(file, line, rec, conditions))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["n"] = df["n"].astype("Int64")
    return df


def _check_row(file, line, rec: dict, conditions: dict) -> dict:
    out: dict = {}
    for col in COLUMNS:
        v = rec[col]
        if v != v.strip():
            _fail(file, line, col, v, "text without leading or trailing spaces")
    # identifiers and choices
    obs = rec["observable"]
    if not _NAME.match(obs):
        _fail(file, line, "observable", obs, "an identifier [A-Za-z][A-Za-z0-9_]*, e.g. ANC, NLR, "
                                             "dfdctp_auc_0_24h")
    out["observable"] = obs
    species = _choice(file, line, "species", rec["species"], SPECIES)
    out["species"] = species
    cond = rec["condition"]
    if cond not in conditions:
        _fail(file, line, "condition", cond, "a condition id defined in conditions.yaml ("
              + ", ".join(sorted(conditions)) + ")")
    if conditions[cond]["species"] != species:
        _fail(file, line, "condition", cond, f"a condition of species '{species}' (condition "
              f"'{cond}' is {conditions[cond]['species']})")
    out["condition"] = cond
    # time
    t, tu = rec["time"], rec["time_unit"]
    if t == "" and tu == "":
        out["time"], out["time_unit"] = math.nan, ""
    elif t == "":
        _fail(file, line, "time", t, "a number >= 0 when time_unit is given (or leave both empty "
                                     "for a time-independent summary)")
    else:
        out["time"] = _number(file, line, "time", t, minimum=0.0)
        out["time_unit"] = _choice(file, line, "time_unit", tu, TIME_UNITS)
    # unit
    unit = rec["unit"]
    try:
        parse_unit(unit)
    except UnitError as exc:
        _fail(file, line, "unit", unit, f"a pint unit such as 1e9/L, pg/mL, umol/L, uM*h, "
                                        f"pmol/(1e6 cells), percent, dimensionless ({exc})")
    out["unit"] = unit
    # censoring / value / lloq
    cens = _choice(file, line, "censoring", rec["censoring"], CENSORING)
    out["censoring"] = cens
    val, lloq = rec["value"], rec["lloq"]
    if cens == "left":
        if val != "":
            _fail(file, line, "value", val, "empty for a left-censored row (the bound goes in "
                                            "'lloq')")
        if lloq == "":
            _fail(file, line, "lloq", lloq, "the detection limit (a number > 0, in 'unit') for a "
                                            "left-censored row")
        out["value"] = math.nan
        out["lloq"] = _number(file, line, "lloq", lloq, minimum=0.0)
    else:
        if val == "":
            _fail(file, line, "value", val, "a number (empty only when censoring is 'left')")
        out["value"] = _number(file, line, "value", val)
        if lloq != "":
            _fail(file, line, "lloq", lloq, "empty unless censoring is 'left'")
        out["lloq"] = math.nan
    # spread
    st = _choice(file, line, "spread_type", rec["spread_type"], SPREAD_TYPES)
    out["spread_type"] = st
    sp = rec["spread"]
    if st == "none":
        if sp != "":
            _fail(file, line, "spread", sp, "empty when spread_type is 'none'")
        out["spread"] = math.nan
    else:
        if sp == "":
            _fail(file, line, "spread", sp, f"a number >= 0 for spread_type '{st}'")
        out["spread"] = _number(file, line, "spread", sp, minimum=0.0)
    # n
    n = rec["n"]
    if n == "":
        out["n"] = pd.NA
    else:
        if not _INT.match(n) or int(n) < 1:
            _fail(file, line, "n", n, "a whole number >= 1 (no separators), or empty if unknown")
        out["n"] = int(n)
    out["statistic"] = _choice(file, line, "statistic", rec["statistic"], STATISTICS)
    for col in ("source", "location"):
        if rec[col] == "":
            _fail(file, line, col, rec[col], "non-empty text (" + (
                "full citation: authors, year, journal, volume:pages, PMID/PMC/doi"
                if col == "source" else "figure, table or page") + ")")
        out[col] = rec[col]
    out["extraction"] = _choice(file, line, "extraction", rec["extraction"], EXTRACTION)
    if out["extraction"] == "computed" and rec["notes"] == "":
        _fail(file, line, "notes", "", "an explanation of how a 'computed' value was derived")
    out["notes"] = rec["notes"]
    return out
