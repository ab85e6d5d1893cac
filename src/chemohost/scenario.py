"""Scenario files: YAML that names a model, species, regimens, patients, horizon and outputs.

Parsing is strict: unknown fields, missing doses, impossible schedules and units that do not
convert are reported as :class:`~chemohost.errors.ScenarioError` naming the file and the field,
with what is allowed.  Example::

    name: gem_1000_d1_8_15_q28
    model: chemo_core
    species: human
    horizon: 168 day
    output_interval: 1 day
    outputs: [C_gem, dfdctp, ANC, tumour_size]
    regimens:
      - drug: gemcitabine
        dose: 1000 mg/m2
        route: iv
        infusion: 30 min
        days: [1, 8, 15]
        cycle_length: 28 day
        cycles: 6
        dose_modification: gemcitabine_label_anc
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, model_validator

from .errors import ChemohostError, ScenarioError, UnitError
from .protocol.dosing import ROUTES, Regimen, parse_dose
from .protocol.rules import RULES
from .spec_types import (MAX_HORIZON_DAYS, short, MIN_OUTPUT_INTERVAL_DAYS, Patients, Quantity, Seed, SolverFields, count,
                         duration, format_validation)
from .units import to_internal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegimenSpec(_Strict):
    drug: str = Field(max_length=100)
    dose: Quantity = Field(description="amount per administration: '1000 mg/m2', '120 mg/kg' or '50 mg'")
    route: Literal["iv", "ip", "sc", "oral"] = "iv"
    infusion: Quantity | None = Field(None, description="zero-order infusion duration, e.g. '30 min'")
    days: list[count(1, 3_660, "1-based: day 1 = cycle start; cycles up to 10 years")] = Field(
        default_factory=lambda: [1], max_length=1_000, description="1-based treatment days in each cycle")
    cycle_length: Quantity = "21 day"
    cycles: count(1, 10_000) = 1
    start: Quantity = "0 day"
    dose_modification: str | None = None
    times_of_day: list[Quantity] | None = Field(
        None, max_length=1_000, description="dose times within each treatment day, 0 h to 24 h, e.g. [0 h, 8 h, 16 h]")
    every: Quantity | None = Field(None, description="interval between the 'doses' of a treatment day, e.g. 8 h")
    doses: StrictInt | None = Field(None, description="number of doses per treatment day, 'every' apart")
    ii: Quantity | None = Field(None, description="NONMEM interdose interval of the 'addl' doses, e.g. 8 h")
    addl: StrictInt | None = Field(None, description="NONMEM additional doses after each treatment day's dose")


class PatientsSpec(_Strict):
    n: Patients = 1
    variability: StrictBool = False
    covariates: dict[str, Quantity] = Field(default_factory=dict, max_length=100)


#: integrator settings (rtol in [1e-12, 0.1], atol in (0, 1], max_steps 100..1e8)
SolverSpec = SolverFields


class ScenarioSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    model: str
    species: Literal["human", "mouse"] = "human"
    horizon: duration("horizon", 0.0, MAX_HORIZON_DAYS, limit="MAX_HORIZON_DAYS = 100 years")
    output_interval: duration("output_interval", MIN_OUTPUT_INTERVAL_DAYS, MAX_HORIZON_DAYS, lo_inclusive=True,
                              limit="MIN_OUTPUT_INTERVAL = 1 min") = "1 day"
    outputs: list[str] | None = Field(None, max_length=1_000)
    seed: Seed = 0
    patients: PatientsSpec = Field(default_factory=PatientsSpec)
    parameters: dict[str, Quantity] = Field(default_factory=dict, max_length=1_000)
    perturbations: list[str] = Field(default_factory=list, max_length=100,
                                     description="knockouts / tumour-free host, e.g. [gsdmd_ko, tumour_free]")
    regimens: list[RegimenSpec] | None = Field(None, max_length=1_000)
    arms: dict[str, list[RegimenSpec]] | None = Field(None, max_length=100)
    event_table: str | None = Field(
        None, description="CSV of per-patient doses (patient,time,drug,amount,route[,duration|rate]), "
                          "relative to the scenario file; replaces 'regimens' (one arm named after the scenario)")
    solver: SolverSpec = Field(default_factory=SolverSpec)

    @model_validator(mode="before")
    @classmethod
    def _patients_shorthand(cls, data):
        """``patients: 5`` means ``patients: {n: 5}`` (the trial file's form)."""
        if isinstance(data, dict) and isinstance(data.get("patients"), int) and not isinstance(data["patients"], bool):
            data = {**data, "patients": {"n": data["patients"]}}
        return data


def _format_validation(exc: ValidationError, file: str, root: type[BaseModel] | None = None) -> ScenarioError:
    """Every schema error of a file, one line each (see :func:`chemohost.spec_types.format_validation`)."""
    return format_validation(exc, file, root or ScenarioSpec)


def load_yaml_mapping(path: str | Path, what: str, required: str) -> tuple[dict, Path]:
    """Read a UTF-8 YAML file that must hold a mapping (duplicate keys, alias bombs, absurd nesting
    and oversized files refused by :mod:`chemohost.yamlio`); every failure is a ScenarioError."""
    from .yamlio import load_file

    data = load_file(path, what)
    path = Path(path)
    if not isinstance(data, dict):
        raise ScenarioError(f"a {what} must be a YAML mapping with {required}", file=str(path))
    return data, path


def read_spec(path: str | Path) -> ScenarioSpec:
    data, path = load_yaml_mapping(path, "scenario", "name, model, horizon, regimens")
    return parse_spec(data, str(path))


def quantity_field(value, unit: str, file: str, field: str) -> float:
    """A user quantity ('28 day', '12 month') in ``unit``; errors name the file and field."""
    try:
        return to_internal(value, unit, unit)
    except ChemohostError as exc:
        raise ScenarioError(str(exc), file=file, field=field) from None


def perturbations_field(names: list[str], model_parameters, file: str) -> dict[str, float]:
    """Parameter overrides of a scenario's ``perturbations`` list; errors name the entry."""
    from .model.perturbations import perturbation_overrides

    out: dict[str, float] = {}
    for i, pert in enumerate(names):
        try:
            out.update(perturbation_overrides([pert], model_parameters))
        except ChemohostError as exc:
            raise ScenarioError(str(exc), file=file, field=f"perturbations[{i}]") from None
    return out


def parse_spec(data: dict, file: str = "<scenario>") -> ScenarioSpec:
    try:
        spec = ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        raise _format_validation(exc, file) from None
    if spec.regimens is not None and spec.arms is not None:
        raise ScenarioError("give either 'regimens' (one arm) or 'arms' (several), not both", file=file, field="arms")
    if spec.event_table is not None and (spec.regimens is not None or spec.arms is not None):
        other = "regimens" if spec.regimens is not None else "arms"
        raise ScenarioError(f"give either 'event_table' (per-patient doses from a CSV file) or '{other}', not both",
                            file=file, field="event_table")
    return spec


def build_regimens(specs: list[RegimenSpec], drugs: dict, file: str, prefix: str) -> list[Regimen]:
    out = []
    for i, r in enumerate(specs):
        where = f"{prefix}[{i}]"
        if r.drug not in drugs:
            raise ScenarioError(f"unknown drug {short(r.drug)}; this model has: {', '.join(sorted(drugs))}",
                                file=file, field=f"{where}.drug")
        if r.route not in drugs[r.drug].routes:
            raise ScenarioError(f"drug '{r.drug}' cannot be given by route '{r.route}' in this model; allowed: "
                                f"{', '.join(sorted(drugs[r.drug].routes))}", file=file, field=f"{where}.route")
        if r.dose_modification is not None and r.dose_modification not in RULES:
            raise ScenarioError(f"unknown dose-modification rule {short(r.dose_modification)}; allowed: "
                                f"{', '.join(sorted(RULES))}", file=file, field=f"{where}.dose_modification")
        field = f"{where}.dose"
        try:
            value, basis = parse_dose(r.dose)
            field = f"{where}.infusion"
            infusion = to_internal(r.infusion, "day") if r.infusion is not None else None
            field = f"{where}.cycle_length"
            cycle = to_internal(r.cycle_length, "day", "day")
            field = f"{where}.start"
            start = to_internal(r.start, "day", "day")
            tod = None
            if r.times_of_day is not None:
                tod = []
                for k, q in enumerate(r.times_of_day):
                    field = f"{where}.times_of_day[{k}]"
                    tod.append(_time_field(q))
                tod = tuple(tod)
            field = f"{where}.every"
            every = _time_field(r.every) if r.every is not None else None
            field = f"{where}.ii"
            ii = _time_field(r.ii) if r.ii is not None else None
            _check_schedule(r, value, infusion, cycle, start, file, where)
            field = where
            out.append(Regimen(drug=r.drug, dose=value, basis=basis, route=r.route, infusion=infusion,
                               days=tuple(r.days), cycle_length=cycle, cycles=r.cycles, start=start,
                               rule=r.dose_modification, label=r.drug, times_of_day=tod, every=every,
                               doses=r.doses, ii=ii, addl=r.addl))
        except ScenarioError:
            raise
        except ChemohostError as exc:
            sub = getattr(exc, "field", None) if field == where else None
            raise ScenarioError(str(exc), file=file, field=f"{where}.{sub}" if sub else field) from None
    return out


def _time_field(q) -> float:
    """A sub-daily time ('8 h', '30 min', '0.5 day') in days; a unit is required (no bare numbers)."""
    if isinstance(q, bool) or not isinstance(q, str):
        raise UnitError(f"value {q!r} has no unit; write a time with its unit, e.g. '8 h'")
    return to_internal(q, "day")


def _check_schedule(r: RegimenSpec, dose: float, infusion: float | None, cycle: float, start: float,
                    file: str, where: str) -> None:
    """Schedule checks that name the offending field (Regimen re-checks the same as a last guard)."""
    def bad(name: str, msg: str):
        raise ScenarioError(msg, file=file, field=f"{where}.{name}")

    if not math.isfinite(dose) or dose < 0:
        bad("dose", f"dose must be a finite amount >= 0, got {r.dose!r}; e.g. '1000 mg/m2', '120 mg/kg' or '50 mg'")
    if infusion is not None:
        if r.route != "iv":
            bad("infusion", f"an infusion duration needs route 'iv', not '{r.route}'; drop 'infusion' or use route iv")
        if not (math.isfinite(infusion) and infusion > 0):
            bad("infusion", f"infusion duration must be > 0, got {r.infusion!r}; e.g. '30 min'")
    if r.cycles < 1:
        bad("cycles", f"cycles must be a whole number >= 1, got {r.cycles}")
    if not (math.isfinite(cycle) and cycle > 0):
        bad("cycle_length", f"cycle length must be > 0, got {r.cycle_length!r}; e.g. '21 day'")
    if not (math.isfinite(start) and start >= 0):
        bad("start", f"start offset must be >= 0, got {r.start!r}; e.g. '1 h'")
    days = list(r.days)
    if not days:
        bad("days", "give at least one treatment day, e.g. [1, 8, 15]")
    if any(d < 1 for d in days):
        bad("days", f"treatment days are whole numbers >= 1 (day 1 = cycle start), got {days}")
    if days != sorted(set(days)):
        bad("days", f"treatment days must be strictly increasing, got {days}")
    if days[-1] - 1 >= cycle:
        bad("days", f"day {days[-1]} does not fit in a {cycle:g}-day cycle (allowed: 1..{math.ceil(cycle):d}); "
                    "lengthen 'cycle_length' or drop the day")
    if infusion is not None:
        times = sorted(start + c * cycle + d - 1 for c in range(r.cycles) for d in days)
        gaps = [b - a for a, b in zip(times, times[1:])]
        if gaps and infusion > min(gaps) + 1e-12:
            bad("infusion", f"a {infusion * 24:g}-h infusion overlaps the next dose ({min(gaps):g} days later); "
                            "shorten the infusion or space the doses")


__all__ = ["ScenarioSpec", "RegimenSpec", "PatientsSpec", "SolverSpec", "read_spec", "parse_spec",
           "build_regimens", "ROUTES"]
