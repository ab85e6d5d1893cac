"""Calibration problem files: which measurements, which model quantities they observe, which
parameters to estimate.  Strict YAML schema (pydantic), every error a :class:`ProblemError`
(a :class:`~chemohost.errors.ScenarioError`, so the command line exits 2) naming the file, the field,
what was given and what is allowed.  Example (``problems/pancreatic_gemcitabine_human.yaml``)::

    problem: pancreatic_gemcitabine_human
    model: host_response
    species: human
    parameters: {BSA: 1.8 m2}           # fixed typical-value overrides (scenario syntax)
    measurements:                        # tidy tables: a chemohost.data table or a CSV file
      - {table: pdac_gem_blood_counts}
      - {file: my_counts.csv, observables: [ANC], conditions: [gem_1000]}   # optional row filters
    conditions: {file: conditions.yaml}  # optional; default: chemohost.data.load_conditions()
    observables:                         # measurement observable -> model quantity + noise model
      ANC: {formula: ANC, noise: lognormal, sigma: 0.3}
      dFdCTP: {formula: dfdctp, noise: normal, sigma: {spread: se}}          # per-row sigma
      neut: {formula: neut, noise: normal, sigma: {estimate: true, lower: 0.01, upper: 5}}
    estimate:
      bm_slope_gem: {scale: log10, lower: 0.01, upper: 10,
                     prior: {type: logNormal, parameters: [-1.07, 0.5]}}

Meanings
* ``formula``: a species/output name (its unit is the model's) or an expression over model names
  (then ``unit:`` is required).  Defaults to the observable's own name.
* ``noise``: ``normal`` | ``laplace`` (additive, sigma in the model quantity's unit: a number, or a
  quantity such as ``"0.2 1e9/L"`` converted with pint) or ``lognormal`` | ``loglaplace`` (on the
  natural-log scale, sigma dimensionless).  ``sigma``: fixed; ``{estimate: true, lower, upper,
  [nominal, scale, prior]}``; or ``{spread: sd|se}`` = each row's own spread (``sd``: the rows' sd,
  or se*sqrt(n); ``se``: the rows' se, or sd/sqrt(n)), converted to the model unit; on the log
  scale the log-normal sd sqrt(ln(1 + (s/value)^2)).
* ``estimate``: ``scale`` lin | log | log10 (default log10); ``lower``/``upper``/``nominal`` in the
  parameter's unit (numbers: its internal unit, see ``chemohost params``; or quantities with a
  unit), defaulting to the parameter table's plausible bounds and the typical value.  ``prior``:
  a PEtab v1 ``objectivePriorType`` and its two ``objectivePriorParameters`` (PEtab meaning: e.g.
  logNormal = mean and sd of ln(x); parameterScaleNormal on the parameter scale).
* Measurement rows: time (converted to days) is since the condition's time 0 (its first regimen
  starts at its ``start``); values are converted from their ``unit`` to the model quantity's unit;
  ``censoring: left|right`` rows cannot be written to PEtab v1 and are kept aside (see
  :mod:`chemohost.calibration.petab_export`).  Rows of observables not mapped here are an error
  (an AUC or a percent change is not a model quantity), unless a source's ``observables:`` filter
  leaves them out.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import sympy as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..api import parameter_vector
from ..errors import ChemohostError, ScenarioError
from ..model.core import Model
from ..model.expr import parse
from ..model.params import parameter_set
from ..model.registry import get_model
from ..protocol.dosing import Regimen
from ..scenario import RegimenSpec, _format_validation, build_regimens, load_yaml_mapping, perturbations_field
from ..spec_types import Quantity  # one quantity type for every input file
from ..units import conversion_factor, normalise_unit, parse_quantity, ureg

MEASUREMENT_COLUMNS = ("observable", "species", "condition", "time", "time_unit", "value", "unit", "spread",
                       "spread_type", "n", "censoring", "lloq", "statistic", "source", "location", "extraction",
                       "notes")
REQUIRED_COLUMNS = ("observable", "species", "condition", "time", "time_unit", "value", "unit")
NOISE = {"normal": ("lin", "normal"), "lognormal": ("log", "normal"),
         "laplace": ("lin", "laplace"), "loglaplace": ("log", "laplace")}
PRIOR_TYPES = ("uniform", "normal", "laplace", "logNormal", "logLaplace", "parameterScaleUniform",
               "parameterScaleNormal", "parameterScaleLaplace")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ProblemError(ScenarioError):
    """A calibration problem file (or a table or conditions file it names) is invalid."""


# -- schema -----------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriorSpec(_Strict):
    type: Literal[PRIOR_TYPES]  # type: ignore[valid-type]
    parameters: list[float] = Field(description="the two PEtab objectivePriorParameters, e.g. [mean, sd]")

    @field_validator("parameters")
    @classmethod
    def _two(cls, v):
        if len(v) != 2 or not all(math.isfinite(x) for x in v):
            raise ValueError("give exactly two finite numbers, e.g. [0.0, 1.0]")
        return v


class EstimateSpec(_Strict):
    scale: Literal["lin", "log", "log10"] = "log10"
    lower: Quantity | None = None
    upper: Quantity | None = None
    nominal: Quantity | None = None
    prior: PriorSpec | None = None


class SigmaEstimateSpec(EstimateSpec):
    estimate: Literal[True]
    lower: Quantity = Field(description="lower bound of the estimated sigma")
    upper: Quantity = Field(description="upper bound of the estimated sigma")


class SigmaSpreadSpec(_Strict):
    spread: Literal["sd", "se"]


class ObservableSpec(_Strict):
    formula: str | None = Field(None, description="model species/output name or expression (default: the key)")
    unit: str | None = Field(None, description="unit of an expression formula")
    noise: Literal["normal", "lognormal", "laplace", "loglaplace"]
    sigma: float | str | SigmaEstimateSpec | SigmaSpreadSpec


class MeasurementSource(_Strict):
    table: str | None = Field(None, description="name of a chemohost.data measurement table")
    file: str | None = Field(None, description="tidy measurement CSV, relative to the problem file")
    observables: list[str] | None = Field(None, description="keep only rows of these observables")
    conditions: list[str] | None = Field(None, description="keep only rows of these conditions")


class ConditionsSource(_Strict):
    file: str


class ProblemSpec(_Strict):
    problem: str
    description: str = ""
    model: str
    species: Literal["human", "mouse"] = "human"
    parameters: dict[str, Quantity] = Field(default_factory=dict, max_length=1_000)
    perturbations: list[str] = Field(default_factory=list, max_length=100)
    measurements: list[MeasurementSource] = Field(max_length=100,
                                                  description="tables of measurements, e.g. [{table: NAME}]")
    conditions: ConditionsSource | None = None
    observables: dict[str, ObservableSpec] = Field(max_length=1_000,
                                                   description="measurement observable -> model quantity")
    estimate: dict[str, EstimateSpec] = Field(default_factory=dict, max_length=200)

    @field_validator("problem")
    @classmethod
    def _ident(cls, v):
        if not _ID.match(v):
            raise ValueError("use letters, digits and '_' (starting with a letter), e.g. pancreatic_gemcitabine_human")
        return v

    @field_validator("measurements")
    @classmethod
    def _nonempty(cls, v):
        if not v:
            raise ValueError("give at least one measurement source, e.g. [{table: NAME}] or [{file: data.csv}]")
        return v


# -- resolved problem ---------------------------------------------------------------------------------
@dataclass
class Observable:
    name: str  # as in the measurement tables
    petab_id: str
    formula: str  # PEtab observableFormula (model ids)
    unit: str  # unit of the model quantity; measurements are converted to it
    transformation: str  # lin | log
    distribution: str  # normal | laplace
    sigma_kind: str  # fixed | estimate | row
    sigma: float = float("nan")  # fixed sigma (model unit, or log scale)
    sigma_parameter: "Estimate | None" = None
    spread: str | None = None  # sd | se for per-row sigma


@dataclass
class Estimate:
    name: str
    scale: str
    lower: float
    upper: float
    nominal: float
    prior: tuple[str, list[float]] | None
    unit: str = ""


@dataclass
class Condition:
    id: str
    petab_id: str
    indicator: str  # model parameter: 1 in this condition, 0 elsewhere
    species: str
    description: str
    regimens: list[Regimen]
    rules: list[str]  # dose-modification rules named by its regimens (not exportable)


@dataclass
class Row:
    observable: str
    condition: str
    time: float  # days
    value: float  # model unit (nan for censored rows without a value)
    where: str
    raw: dict
    factor: float  # measurement unit -> model unit
    censoring: str = "none"
    lloq: float = float("nan")  # model unit
    sigma: float = float("nan")  # per-row sigma (model unit or log scale)


@dataclass
class Problem:
    spec: ProblemSpec
    source: str
    sha256: str
    model: Model
    names: list[str]
    values: dict[str, float]  # typical values (internal units), with the problem's overrides
    observables: dict[str, Observable]
    estimates: dict[str, Estimate]
    conditions: dict[str, Condition]  # only those the measurements use, in first-use order
    rows: list[Row]
    censored: list[Row]
    tables: list[dict]
    skipped: int = 0  # rows left out by the sources' observables/conditions filters
    notes: list[str] = field(default_factory=list)


def _err(msg: str, file: str, fld: str | None = None) -> ProblemError:
    return ProblemError(msg, file=file, field=fld)


def _hint(name: str, allowed) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _short(items, n: int = 15) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def measurement_factor(unit: str, model_unit: str) -> float:
    """pint factor from a table's unit to the model's; a count ('cells/uL', '/mm3') is a number."""
    def clean(u: str) -> str:
        u = u.strip()
        return "1" + u if u.startswith("/") else u
    try:
        return conversion_factor(clean(unit), clean(model_unit))
    except ChemohostError:
        counted = [re.sub(r"\bcells?\b", "1", clean(u)) for u in (unit, model_unit)]
        if counted != [clean(unit), clean(model_unit)]:
            return conversion_factor(*counted)
        raise


# -- loading ------------------------------------------------------------------------------------------
def load_problem(path: str | Path) -> Problem:
    """Read, check and resolve a problem YAML (tables and conditions included)."""
    data, path = load_yaml_mapping(path, "calibration problem", "problem, model, measurements, observables")
    src = str(path)
    try:
        spec = ProblemSpec.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(str(_format_validation(exc, src, ProblemSpec))) from None
    return resolve(spec, src, hashlib.sha256(path.read_bytes()).hexdigest(), path.parent)


def resolve(spec: ProblemSpec, src: str, sha256: str, base: Path) -> Problem:
    try:
        model = get_model(spec.model)
    except ChemohostError as exc:
        raise _err(str(exc), src, "model") from None
    try:
        names, typical, _ = parameter_vector(model, spec.species, spec.parameters)
    except ChemohostError as exc:
        raise _err(str(exc), src) from None
    values = dict(zip(names, (float(v) for v in typical)))
    values.update(perturbations_field(spec.perturbations, model.parameters, src))
    ps = parameter_set(model, spec.species)
    used_ids = set(model.species) | set(model.parameters) | set(model.outputs)

    estimates = {}
    for pname, es in spec.estimate.items():
        fld = f"estimate.{pname}"
        if pname not in model.parameters:
            raise _err(f"'{pname}' is not a parameter of model '{model.name}'{_hint(pname, model.parameters)}; "
                       f"see `chemohost params --model {model.name}` for the allowed names", src, fld)
        pv = ps[pname]
        estimates[pname] = _estimate(pname, es, pv.unit, values[pname], pv.lower, pv.upper, src, fld)

    observables = {}
    sym = {n: sp.Symbol(n, real=True) for n in used_ids}
    for oname, os_ in spec.observables.items():
        observables[oname] = _observable(oname, os_, model, sym, used_ids, src)
        sp_ = observables[oname].sigma_parameter
        if sp_ is not None:
            estimates[sp_.name] = sp_

    conditions_all, cond_file = _conditions(spec, base, src)
    rows, censored, tables, skipped, used_conditions = [], [], [], 0, []
    for i, ms in enumerate(spec.measurements):
        fld = f"measurements[{i}]"
        records, info = _read_source(ms, base, src, fld)
        tables.append(info)
        for where, rec in records:
            if ms.observables is not None and rec["observable"] not in ms.observables:
                skipped += 1
                continue
            if ms.conditions is not None and rec["condition"] not in ms.conditions:
                skipped += 1
                continue
            row = _row(rec, where, spec, observables, conditions_all, cond_file, src, fld, i)
            if row.condition not in used_conditions:
                used_conditions.append(row.condition)
            (rows if row.censoring == "none" else censored).append(row)
    if not rows:
        raise _err("no uncensored measurement rows to fit (after the observables/conditions filters); "
                   "check the tables and filters", src, "measurements")

    conditions, notes = {}, []
    taken = set(used_ids)
    for cid in used_conditions:
        raw = conditions_all[cid]
        cfld = f"condition '{cid}'"
        if raw.get("species", spec.species) != spec.species:
            raise _err(f"{cond_file}: {cfld} is for species '{raw.get('species')}', but the problem's species is "
                       f"'{spec.species}'; select other rows with measurements[].conditions", src, "conditions")
        regs, rules = _regimens(raw.get("regimens"), model, cond_file, cid, src)
        pid = _unique(_sanitize(cid), taken)
        ind = _unique(f"in_{pid}", taken)
        conditions[cid] = Condition(cid, pid, ind, raw.get("species", spec.species),
                                    str(raw.get("description", "") or ""), regs, rules)
        if rules:
            notes.append(f"condition '{cid}': dose-modification rule(s) {', '.join(sorted(set(rules)))} are not "
                         "exported (PEtab gets the doses as scheduled)")
    for o in observables.values():
        if o.petab_id in taken:
            raise _err(f"observable id '{o.petab_id}' clashes with a model or condition id", src,
                       f"observables.{o.name}")
        taken.add(o.petab_id)
    return Problem(spec, src, sha256, model, names, values, observables, estimates, conditions, rows, censored,
                   tables, skipped, notes)


def _sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", str(name))
    return s if re.match(r"^[A-Za-z_]", s) else f"c_{s}"


def _unique(name: str, taken: set) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def _value(q, unit: str, src: str, fld: str) -> float:
    try:
        v, u = parse_quantity(q, unit)
        return v * conversion_factor(u, unit)
    except ChemohostError as exc:
        raise _err(f"{exc} (got {q!r}; allowed: a number in {unit} or a quantity with a unit)", src, fld) from None


def _estimate(name, es: EstimateSpec, unit, nominal, t_lower, t_upper, src, fld) -> Estimate:
    lower = _value(es.lower, unit, src, f"{fld}.lower") if es.lower is not None else float(t_lower)
    upper = _value(es.upper, unit, src, f"{fld}.upper") if es.upper is not None else float(t_upper)
    if es.nominal is not None:
        nominal = _value(es.nominal, unit, src, f"{fld}.nominal")
    elif nominal is None:
        nominal = math.sqrt(lower * upper) if lower > 0 and upper > 0 else 0.5 * (lower + upper)
    which = "" if es.lower is not None and es.upper is not None else " (bounds not given in the problem come " \
                                                                      "from the parameter table)"
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower >= upper:
        raise _err(f"lower bound {lower:g} must be below upper bound {upper:g} {unit}{which}", src, f"{fld}.lower")
    if es.scale != "lin" and lower <= 0:
        raise _err(f"scale {es.scale} needs a lower bound > 0, got {lower:g} {unit}{which}; give a positive "
                   f"'lower' or use scale lin", src, f"{fld}.lower")
    if not lower <= nominal <= upper:
        raise _err(f"nominal value {nominal:g} {unit} lies outside [{lower:g}, {upper:g}]{which}; widen the bounds "
                   "or give 'nominal'", src, f"{fld}.nominal")
    prior = None
    if es.prior is not None:
        a, b = es.prior.parameters
        if es.prior.type.endswith("niform") and not a < b:
            raise _err(f"a uniform prior needs parameters [lower, upper] with lower < upper, got {[a, b]}", src,
                       f"{fld}.prior.parameters")
        if not es.prior.type.endswith("niform") and not b > 0:
            raise _err(f"the second parameter of a {es.prior.type} prior (its scale) must be > 0, got {b}", src,
                       f"{fld}.prior.parameters")
        prior = (es.prior.type, [a, b])
    return Estimate(name, es.scale, lower, upper, float(nominal), prior, unit)


_PETAB_FUNC = {"exp": "exp", "log": "ln", "sqrt": "sqrt", "Abs": "abs", "Max": "max", "Min": "min"}


class _PetabPrinter(sp.printing.str.StrPrinter):
    def _print_Pow(self, expr, rational=False):
        b, e = expr.as_base_exp()
        return f"(({self._print(b)}) ^ ({self._print(e)}))"

    def _print_Function(self, expr):
        name = _PETAB_FUNC.get(type(expr).__name__, type(expr).__name__)
        return f"{name}({', '.join(self._print(a) for a in expr.args)})"

    _print_exp = _print_Function
    _print_log = _print_Function
    _print_Abs = _print_Function
    _print_Max = _print_Function
    _print_Min = _print_Function

    def _print_Float(self, expr):
        return repr(float(expr))


def _observable(name, os_: ObservableSpec, model, sym, ids, src) -> Observable:
    fld = f"observables.{name}"
    formula = (os_.formula or name).strip()
    quantities = {**{s.name: s.unit for s in model.species.values()},
                  **{o.name: o.unit for o in model.outputs.values()}}
    if formula in quantities:
        unit = quantities[formula]
        if os_.unit is not None:
            try:
                ok = abs(conversion_factor(os_.unit, unit) - 1.0) < 1e-12
            except ChemohostError:
                ok = False
            if not ok:
                raise _err(f"unit '{os_.unit}' is not the unit of model quantity '{formula}' ({unit}); drop 'unit' "
                           "(measurements are converted to the model's unit)", src, f"{fld}.unit")
        petab_formula = formula
    else:
        if formula in ids or not formula:
            raise _err(f"'{formula}' is a model parameter, not an observable quantity; allowed: a species or "
                       f"output name, or an expression over them", src, f"{fld}.formula")
        try:
            expr = parse(formula, sym, f"{fld}.formula")
        except ChemohostError as exc:
            hint = "" if not re.match(r"^\w+$", formula) else _hint(formula, quantities)
            raise _err(f"{exc}{hint}; allowed: a species or output of model '{model.name}' (see `chemohost outputs "
                       f"--model {model.name}`) or an expression over them", src, f"{fld}.formula") from None
        if os_.unit is None:
            raise _err(f"formula '{formula}' is an expression: give its 'unit' (the unit measurements are "
                       "converted to)", src, f"{fld}.unit")
        try:
            ureg().parse_expression(normalise_unit(os_.unit))
        except Exception as exc:  # pint raises several types
            raise _err(f"unknown unit '{os_.unit}' ({exc}); e.g. 1e9/L, umol/L, mg/L", src, f"{fld}.unit") from None
        unit, petab_formula = os_.unit, _PetabPrinter().doprint(expr)
    transformation, distribution = NOISE[os_.noise]
    pid = f"obs_{_sanitize(name)}"
    obs = Observable(name, pid, petab_formula, unit, transformation, distribution, "fixed")
    s = os_.sigma
    if isinstance(s, SigmaSpreadSpec):
        obs.sigma_kind, obs.spread = "row", s.spread
    elif isinstance(s, SigmaEstimateSpec):
        sunit = unit if transformation == "lin" else "dimensionless"
        obs.sigma_kind = "estimate"
        obs.sigma_parameter = _estimate(f"sigma_{_sanitize(name)}", s, sunit, None, None, None, src, f"{fld}.sigma")
    else:
        if transformation == "lin":
            obs.sigma = _value(s, unit, src, f"{fld}.sigma")
        else:
            if isinstance(s, str):
                try:
                    v, u = parse_quantity(s, "dimensionless")
                    obs.sigma = v * conversion_factor(u, "dimensionless")
                except ChemohostError as exc:
                    raise _err(f"{exc}; with noise {os_.noise} sigma is on the log scale (a plain number, e.g. 0.3)",
                               src, f"{fld}.sigma") from None
            else:
                obs.sigma = float(s)
        if not (math.isfinite(obs.sigma) and obs.sigma > 0):
            raise _err(f"sigma must be a finite number > 0, got {s!r}", src, f"{fld}.sigma")
    return obs


# -- measurement tables and conditions ------------------------------------------------------------------
def _read_source(ms: MeasurementSource, base: Path, src: str, fld: str):
    if (ms.table is None) == (ms.file is None):
        raise _err("give exactly one of 'table' (a chemohost.data table name) or 'file' (a CSV path)", src, fld)
    if ms.file is not None:
        path = Path(ms.file)
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise _err(f"measurement file not found: {path} (given {ms.file!r}, relative to the problem file)", src,
                       f"{fld}.file")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _err(f"{path}: not UTF-8 text ({exc})", src, f"{fld}.file") from None
        lines = [(k, ln) for k, ln in enumerate(text.splitlines(), start=1)
                 if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise _err(f"{path}: empty table; the header is {','.join(MEASUREMENT_COLUMNS)}", src, f"{fld}.file")
        reader = csv.reader([ln for _, ln in lines])
        header = [h.strip() for h in next(reader)]
        _check_header(header, str(path), src, f"{fld}.file")
        records = []
        for (lineno, _), cells in zip(lines[1:], reader):
            if len(cells) != len(header):
                raise _err(f"{path} line {lineno}: {len(cells)} cells, the header has {len(header)}", src,
                           f"{fld}.file")
            records.append((f"{path} line {lineno}", _clean(dict(zip(header, cells)))))
        return records, {"file": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "rows": len(records)}
    try:
        from .. import data as _data
        load_table = _data.load_table
    except (ImportError, AttributeError):
        raise _err(f"measurement table '{ms.table}' needs chemohost.data.load_table, which this installation does "
                   "not have; give the CSV instead: {file: path.csv}", src, f"{fld}.table") from None
    try:
        frame = load_table(ms.table)
    except ChemohostError as exc:
        raise _err(str(exc), src, f"{fld}.table") from None
    records = _records(frame)
    if records:
        _check_header(list(records[0]), f"table '{ms.table}'", src, f"{fld}.table")
    buf = io.StringIO()
    w = csv.writer(buf)
    for r in records:
        w.writerow([r.get(c, "") for c in MEASUREMENT_COLUMNS])
    return ([(f"table '{ms.table}' row {k}", r) for k, r in enumerate(records, start=1)],
            {"table": ms.table, "sha256": hashlib.sha256(buf.getvalue().encode()).hexdigest(), "rows": len(records)})


def _records(frame) -> list[dict]:
    if hasattr(frame, "to_dict"):
        recs = frame.to_dict("records")
    else:
        recs = [_as_mapping(r) for r in frame]
    return [_clean(r) for r in recs]


def _clean(rec: Mapping) -> dict:
    out = {}
    for k, v in rec.items():
        try:
            missing = v is None or bool(pd.isna(v))
        except (TypeError, ValueError):
            missing = False
        if missing:
            v = ""
        out[str(k)] = str(v).strip() if not isinstance(v, (int, float)) or isinstance(v, bool) else v
    for c in MEASUREMENT_COLUMNS:
        out.setdefault(c, "")
    return out


def _check_header(header, what, src, fld):
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise _err(f"{what}: missing column(s) {missing}; the columns are {','.join(MEASUREMENT_COLUMNS)}", src, fld)
    unknown = [c for c in header if c not in MEASUREMENT_COLUMNS]
    if unknown:
        raise _err(f"{what}: unknown column(s) {unknown}; allowed: {','.join(MEASUREMENT_COLUMNS)}", src, fld)


def _as_mapping(obj) -> dict:
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dict(vars(obj))


def _conditions(spec: ProblemSpec, base: Path, src: str) -> tuple[dict[str, dict], str]:
    if spec.conditions is not None:
        path = Path(spec.conditions.file)
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise _err(f"conditions file not found: {path} (given {spec.conditions.file!r}, relative to the problem "
                       "file)", src, "conditions.file")
        try:
            data, _ = load_yaml_mapping(path, "conditions", "condition id -> {species, description, regimens}")
        except ChemohostError as exc:
            raise _err(str(exc), src, "conditions.file") from None
        where = str(path)
    else:
        try:
            from .. import data as _data
            data = _data.load_conditions()
        except (ImportError, AttributeError):
            raise _err("no conditions: give 'conditions: {file: conditions.yaml}' (this installation has no "
                       "chemohost.data.load_conditions)", src, "conditions") from None
        except ChemohostError as exc:
            raise _err(str(exc), src, "conditions") from None
        where = "chemohost.data conditions"
        if not isinstance(data, Mapping):
            data = {getattr(c, "id"): c for c in data}
    out = {}
    for cid, entry in dict(data).items():
        try:
            m = _as_mapping(entry)
        except TypeError:
            raise _err(f"{where}: condition '{cid}' must be a mapping with species, description, regimens", src,
                       "conditions") from None
        out[str(cid)] = m
    return out, where


def _regimens(raw, model, cond_file, cid, src) -> tuple[list[Regimen], list[str]]:
    if raw is None:
        raise _err(f"{cond_file}: condition '{cid}' has no 'regimens' (use [] for an untreated condition)", src,
                   "conditions")
    if raw and all(isinstance(r, Regimen) for r in raw):
        regs = list(raw)
    else:
        specs = []
        for k, r in enumerate(raw):
            try:
                specs.append(r if isinstance(r, RegimenSpec) else RegimenSpec.model_validate(_as_mapping(r)))
            except ValidationError as exc:
                raise ProblemError(str(_format_validation(exc, f"{cond_file}: condition '{cid}' regimens[{k}]",
                                                          RegimenSpec))) from None
        try:
            regs = build_regimens(specs, model.drugs, cond_file, f"{cid}.regimens")
        except ChemohostError as exc:
            raise ProblemError(str(exc)) from None
    return regs, [r.rule for r in regs if r.rule]


def _num(rec, col, where, src, fld, required=True) -> float:
    v = rec.get(col, "")
    if v == "" or v is None:
        if required:
            raise _err(f"{where}: column '{col}' is empty; it must be a number", src, fld)
        return float("nan")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise _err(f"{where}: column '{col}' must be a number, got {v!r}", src, fld) from None
    if not math.isfinite(x):
        raise _err(f"{where}: column '{col}' must be finite, got {v!r}", src, fld)
    return x


def _row(rec, where, spec, observables, conditions, cond_file, src, fld, i) -> Row:
    obs_name = str(rec["observable"])
    if obs_name not in observables:
        raise _err(f"{where}: observable '{obs_name}' is not mapped to a model quantity{_hint(obs_name, observables)};"
                   f" mapped in 'observables': {_short(observables) or '(none)'}. Map it (observables.{obs_name}: "
                   f"{{formula: <species or output>, noise, sigma}}) or leave its rows out with measurements[{i}]."
                   "observables; an AUC, a percent change or another derived quantity is not a model quantity and "
                   "cannot be exported yet", src, fld)
    obs = observables[obs_name]
    if str(rec["species"]) != spec.species:
        raise _err(f"{where}: species '{rec['species']}', but the problem is for '{spec.species}'; leave such rows "
                   f"out with measurements[{i}].conditions", src, fld)
    cond = str(rec["condition"])
    if cond not in conditions:
        raise _err(f"{where}: condition '{cond}' is not defined in {cond_file}{_hint(cond, conditions)}; allowed: "
                   f"{_short(conditions) or '(none)'}", src, fld)
    if rec.get("time", "") == "":
        raise _err(f"{where}: no time: a time-independent summary (a half-life, a median OS, an incidence) is not "
                   f"a model quantity at a time and cannot be a PEtab measurement; leave its rows out with "
                   f"measurements[{i}].observables", src, fld)
    if str(rec.get("statistic", "")) in ("range_low", "range_high"):
        raise _err(f"{where}: statistic '{rec['statistic']}' is one end of a range, not a central value; leave such "
                   f"rows out with measurements[{i}].observables or .conditions", src, fld)
    t = _num(rec, "time", where, src, fld)
    tu = str(rec["time_unit"]) or "day"
    try:
        t *= conversion_factor(tu, "day")
    except ChemohostError:
        raise _err(f"{where}: column 'time_unit': '{tu}' is not a time unit; allowed: day, h, min", src, fld) from None
    if t < 0:
        raise _err(f"{where}: time {rec['time']} {tu} is negative; times count from the condition's time 0", src, fld)
    unit = str(rec["unit"])
    try:
        factor = measurement_factor(unit, obs.unit)
    except ChemohostError as exc:
        raise _err(f"{where}: column 'unit': '{unit}' does not convert to the unit of observable '{obs_name}' "
                   f"(model quantity {obs.formula} in {obs.unit}): {exc}", src, fld) from None
    censoring = str(rec.get("censoring") or "none").lower()
    if censoring not in ("none", "left", "right"):
        raise _err(f"{where}: column 'censoring' is {rec.get('censoring')!r}; allowed: none, left, right", src, fld)
    row = Row(obs_name, cond, t, float("nan"), where, dict(rec), factor, censoring)
    if censoring != "none":
        v = _num(rec, "value", where, src, fld, required=False)
        row.value = v * factor
        lloq = _num(rec, "lloq", where, src, fld, required=False)
        if censoring == "left" and math.isnan(lloq):
            lloq = v
        if censoring == "left" and math.isnan(lloq):
            raise _err(f"{where}: a left-censored row needs its detection limit in 'lloq' (or 'value')", src, fld)
        row.lloq = lloq * factor
        return row
    v = _num(rec, "value", where, src, fld)
    row.value = v * factor
    if obs.transformation == "log" and not row.value > 0:
        raise _err(f"{where}: value {v} {unit} is not > 0, but observable '{obs_name}' has log-scale noise "
                   f"({obs.transformation}); mark it censoring: left with its lloq, or use noise normal", src, fld)
    if obs.sigma_kind == "row":
        row.sigma = _row_sigma(rec, obs, row, where, src, fld)
    return row


def _row_sigma(rec, obs: Observable, row: Row, where, src, fld) -> float:
    st = str(rec.get("spread_type") or "").lower()
    s = _num(rec, "spread", where, src, fld, required=False)
    if st not in ("sd", "se") or math.isnan(s):
        raise _err(f"{where}: observable '{obs.name}' takes sigma from each row's spread ({obs.spread}), but this "
                   f"row has spread {rec.get('spread')!r} of type {rec.get('spread_type')!r}; allowed types: sd, se",
                   src, fld)
    n = _num(rec, "n", where, src, fld, required=False)
    if st != obs.spread:
        if math.isnan(n) or n < 1:
            raise _err(f"{where}: converting the row's {st} to the {obs.spread} sigma needs 'n' >= 1", src, fld)
        s = s * math.sqrt(n) if obs.spread == "sd" else s / math.sqrt(n)
    s *= row.factor
    if obs.transformation == "log":
        s = math.sqrt(math.log1p((s / row.value) ** 2))
    if not (math.isfinite(s) and s > 0):
        raise _err(f"{where}: the row's spread gives sigma {s!r}; it must be > 0", src, fld)
    return float(s)

