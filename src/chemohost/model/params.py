"""Parameter values with provenance, read from data tables (``model/data/parameters.csv``).

Each row: ``name, species, value, unit, lower, upper, cv_percent, source``.

* ``species`` is ``human``, ``mouse`` or ``all``; a species-specific row wins over ``all``.
* ``value``/``lower``/``upper`` are in ``unit`` and converted to the internal unit the declaring
  module gives (pint).  ``lower``/``upper`` are plausible bounds; ``cv_percent`` the
  inter-individual coefficient of variation where known (empty = no IIV).
* ``source`` is a citation or ``calibrated: <target>`` and is never empty.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ChemohostError, ParameterError
from ..units import conversion_factor
from .core import Model

SPECIES = ("human", "mouse")
_COLUMNS = ["name", "species", "value", "unit", "lower", "upper", "cv_percent", "source"]


@dataclass(frozen=True)
class ParameterValue:
    name: str
    species: str
    value: float  # internal unit
    unit: str  # internal unit
    lower: float
    upper: float
    cv: float | None  # fraction, e.g. 0.31
    source: str
    table_value: str  # as written in the table, with its unit, for documentation
    description: str = ""


def default_tables() -> list[Path]:
    """All parameter tables shipped with the package (``model/data/*.csv``), in name order."""
    return sorted(Path(str(resources.files("chemohost.model") / "data")).glob("*.csv"))


def read_table(path: str | Path | list | None = None) -> list[dict[str, str]]:
    """Rows of one table, of several, or (default) of every shipped table."""
    paths = default_tables() if path is None else ([Path(p) for p in path] if isinstance(path, list) else [Path(path)])
    rows: list[dict[str, str]] = []
    for p in paths:
        with open(p, newline="") as fh:
            lines = list(strip_comments(fh))
        these = list(csv.DictReader(lines))
        if these and set(_COLUMNS) - set(these[0]):
            raise ParameterError(f"{p}: missing columns {sorted(set(_COLUMNS) - set(these[0]))}")
        for i, r in enumerate(these, start=2):
            r["_where"] = f"{p.name} row {i - 1}"
        rows += these
    seen = {}
    for r in rows:
        key = (r["name"], r["species"])
        if key in seen:
            raise ParameterError(f"{r['_where']}: parameter '{r['name']}' ({r['species']}) is also given at {seen[key]}")
        seen[key] = r["_where"]
    return rows


def strip_comments(fh):
    for line in fh:
        if line.strip() and not line.lstrip().startswith("#"):
            yield line


def _num(text: str, where: str, field: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ParameterError(f"{where}: column '{field}' must be a number, got {text!r}") from None


def parameter_set(model: Model, species: str, table: str | Path | None = None) -> dict[str, ParameterValue]:
    """All parameters of ``model`` for ``species`` in internal units, with provenance."""
    if species not in SPECIES:
        raise ParameterError(f"unknown species '{species}'; allowed: {', '.join(SPECIES)}")
    rows = read_table(table)
    chosen: dict[str, dict[str, str]] = {}
    for r in rows:
        if r["name"] in model.parameters and r["species"] in (species, "all"):
            if r["name"] not in chosen or r["species"] == species:
                chosen[r["name"]] = r
    missing = sorted(set(model.parameters) - set(chosen))
    if missing:
        raise ParameterError(
            f"model '{model.name}' needs values for {missing} ({species}) in the parameter table; "
            "add rows with value, unit, bounds and source"
        )
    out = {}
    for name, spec in model.parameters.items():
        r = chosen[name]
        where = r["_where"]
        if not r["source"].strip():
            raise ParameterError(f"{where}: parameter '{name}' has no source; cite one or write 'calibrated: <target>'")
        try:
            f = conversion_factor(r["unit"], spec.unit)
        except ChemohostError as exc:
            raise ParameterError(f"{where}: parameter '{name}': {exc}") from None
        value = _num(r["value"], where, "value") * f
        lower = _num(r["lower"], where, "lower") * f if r["lower"].strip() else value
        upper = _num(r["upper"], where, "upper") * f if r["upper"].strip() else value
        if not (lower <= value <= upper):
            raise ParameterError(f"{where}: value of '{name}' lies outside its bounds [{r['lower']}, {r['upper']}]")
        cv = _num(r["cv_percent"], where, "cv_percent") / 100.0 if r["cv_percent"].strip() else None
        out[name] = ParameterValue(
            name=name, species=species, value=value, unit=spec.unit, lower=lower, upper=upper, cv=cv,
            source=r["source"].strip(), table_value=f"{r['value']} {r['unit']}", description=spec.description,
        )
    return out


def lognormal_sd(cv: float) -> float:
    """SD of log(X) for a log-normal X with coefficient of variation ``cv``."""
    return math.sqrt(math.log1p(cv * cv))


def parameter_table_markdown(model: Model, species: str) -> str:
    """The model's parameters as a markdown table (rendered into the docs)."""
    ps = parameter_set(model, species)
    lines = [
        f"| parameter | module | value (table) | internal | bounds (internal) | IIV CV | meaning | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in ps.items():
        cv = f"{100 * p.cv:.0f}%" if p.cv else ""
        lines.append(
            f"| `{name}` | {model.owner.get(name, '')} | {p.table_value} | {p.value:.4g} {p.unit} | "
            f"{p.lower:.3g}–{p.upper:.3g} | {cv} | {p.description} | {p.source} |"
        )
    return "\n".join(lines)
