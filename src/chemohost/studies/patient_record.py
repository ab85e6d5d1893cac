"""One patient's record for the digital twin: covariates, the dosing given, the visits measured.

A YAML file (validated by the spec layer; every error at once, exit 2)::

    patient: P001
    model: host_response
    species: human
    indication: pancreatic_advanced
    covariates: {BSA: 1.85 m2, WT: 72 kg}            # known covariates (parameter names)
    regimens:                                         # the planned course from day 0 = first dose
      - {drug: gemcitabine, dose: 1000 mg/m2, infusion: 30 min, days: [1, 8, 15], cycle_length: 28 day, cycles: 6}
    given: doses.csv                                  # optional: the doses actually given before 'now'
                                                      #   (event-table CSV of one patient, id 0)
    now: 28 day                                       # decision time (default: the last visit)
    visits:                                           # inline, or {file: visits.csv}
      - {day: 0, ANC: 4.1 1e9/L, lymphocytes: 1.6 1e9/L, IL1a: <3.9 pg/mL, SLD: 45 mm}
      - {day: 8, ANC: 2.2 1e9/L, NLR: 3.1}

Observables (the keys of a visit; units converted with pint, ``<X unit`` = below the assay's lower
limit of detection X, a left-censored value): ``ANC``, ``lymphocytes``, ``NLR``, ``IL1a``, ``IL1b``,
``IL6``, ``G_CSF``, ``LDH`` (released by lytic tumour death, U), ``SLD`` (sum of target-lesion
diameters, mm) or ``tumour_volume`` (cm3), and ``new_lesions`` (yes/no on a scan).  A visits CSV has columns ``day, observable, value, unit``
(value ``<3.9`` for censored).  Visits must lie within 0 .. now; counts must be >= 0.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from ..errors import ChemohostError, ScenarioError
from ..scenario import RegimenSpec, _Strict, build_regimens, load_yaml_mapping
from ..spec_types import Collector, Quantity, format_validation, short
from ..units import conversion_factor, parse_quantity

#: observable -> (model quantity, its unit, noise, sigma, source of sigma)
OBSERVABLES: dict[str, tuple[str, str, str, float, str]] = {
    "ANC": ("ANC", "1e9/L", "log", 0.15, "assumed: within-subject biological + analytical CV ~15% of blood neutrophils"),
    "lymphocytes": ("lymph", "1e9/L", "log", 0.15, "assumed: as ANC"),
    "NLR": ("NLR", "dimensionless", "log", 0.2, "assumed: ratio of two counts with ~15% CV each"),
    "IL1a": ("il1a_pgml", "pg/mL", "log", 0.3, "assumed: cytokine immunoassay CV ~30%"),
    "IL1b": ("il1b", "pg/mL", "log", 0.3, "assumed: cytokine immunoassay CV ~30%"),
    "IL6": ("il6", "pg/mL", "log", 0.3, "assumed: cytokine immunoassay CV ~30%"),
    "G_CSF": ("gcsf", "pg/mL", "log", 0.3, "assumed: cytokine immunoassay CV ~30%"),
    "LDH": ("ldh_cum", "U", "log", 0.25, "assumed: relative readout of LDH released by lytic death"),
    "SLD": ("SLD", "mm", "log", 0.08, "Oxnard 2011 (repeat CT: 84% of changes within +/-10%; the scan model's SD)"),
    "tumour_volume": ("tumour_total", "cm**3", "log", 0.24, "3 x the SLD error (volume ~ diameter^3)"),
    "new_lesions": ("met_burden", "binary", "detection", 0.5, "the trials' scan model: a new lesion is seen when the "
                    "metastatic burden exceeds ~0.52 cm3 x exp(0.5 z) (studies/scans.py)"),
}


#: serum IL-1alpha below this is reported censored in simulated records (pg/mL): the Mayo Clinic Laboratories
#: FIN1A serum IL-1alpha EIA reports healthy serum as "< 3.9 pg/mL" (data/measurements/serum_il1a.csv) --
#: a laboratory reference bound used as the reporting limit, not the assay's stated detection limit
IL1A_REPORTED_BELOW = 3.9


class VisitsFile(_Strict):
    file: str


class PatientSpec(_Strict):
    patient: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=10_000)
    model: str = "host_response"
    species: Literal["human", "mouse"] = "human"
    indication: str | None = None
    covariates: dict[str, Quantity] = Field(default_factory=dict, max_length=50)
    regimens: list[RegimenSpec] = Field(min_length=1, max_length=50)
    given: str | None = Field(None, description="event-table CSV of the doses actually given (one patient, id 0)")
    now: Quantity | None = None
    visits: list[dict[str, Quantity]] | VisitsFile = Field(description="inline visits or {file: visits.csv}")

    @field_validator("visits")
    @classmethod
    def _nonempty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("give at least one visit")
        return v


@dataclass
class Observation:
    day: float
    observable: str  # key of OBSERVABLES
    value: float  # in the observable's model unit (nan when censored)
    lloq: float = float("nan")  # left-censoring limit (model unit)
    where: str = ""

    @property
    def censored(self) -> bool:
        return not math.isnan(self.lloq)


@dataclass
class PatientRecord:
    spec: PatientSpec
    source: str
    sha256: str
    model: object
    regimens: list  # planned course (Regimen)
    given: object | None  # PatientDoses of the doses given (or None: as planned)
    now: float
    observations: list[Observation]
    notes: list[str] = field(default_factory=list)

    @property
    def visit_days(self) -> list[float]:
        return sorted({o.day for o in self.observations})


def _obs_value(key: str, raw, where: str, col: Collector, fld: str):
    unit_model = OBSERVABLES[key][1]
    if unit_model == "binary":
        v = {"yes": 1.0, "no": 0.0, "true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}.get(str(raw).strip().lower())
        if v is None:
            col.add(fld, f"{key} is yes or no (a new lesion seen on the scan), got {short(raw)}")
            return None
        return v, float("nan")
    text = str(raw).strip()
    censored = text.startswith("<")
    if censored:
        text = text[1:].strip()
    try:
        v, u = parse_quantity(text, unit_model if key in ("NLR",) else None)
        f = conversion_factor(u, unit_model) if u else 1.0
    except ChemohostError as exc:
        col.add(fld, f"{short(raw)} for {key}: {exc}; give a value with its unit, e.g. '2.5 {unit_model}'")
        return None
    val = v * f
    if not math.isfinite(val) or val < 0:
        col.add(fld, f"{key} must be a finite value >= 0, got {short(raw)}")
        return None
    return (float("nan"), val) if censored else (val, float("nan"))


def load_patient(path: str | Path) -> PatientRecord:
    from ..model.registry import get_model

    data, path = load_yaml_mapping(path, "patient record", "patient, regimens, visits")
    src = str(path)
    try:
        spec = PatientSpec.model_validate(data)
    except ValidationError as exc:
        raise format_validation(exc, src, PatientSpec) from None
    col = Collector(src)
    try:
        model = get_model(spec.model)
    except ChemohostError as exc:
        raise ScenarioError(str(exc), file=src, field="model") from None
    regs = []
    with col.check("regimens"):
        regs = build_regimens(spec.regimens, model.drugs, src, "regimens")
    if spec.covariates:
        from ..api import parameter_vector

        with col.check("covariates"):
            parameter_vector(model, spec.species, spec.covariates, where="covariates")
    if spec.indication is not None:
        from .indications import load_indication

        with col.check("indication"):
            load_indication(spec.indication, model.parameters)
    given = None
    if spec.given is not None:
        from ..protocol.event_table import read_event_table

        p = Path(spec.given)
        p = p if p.is_absolute() else path.parent / p
        with col.check("given"):
            given = read_event_table(p, sorted(model.drugs))
            if given.n_patients != 1:
                raise ScenarioError(f"{p}: give the doses of one patient (id 0), got {given.n_patients}")
    obs: list[Observation] = []
    rows = []
    if isinstance(spec.visits, VisitsFile):
        p = Path(spec.visits.file)
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            col.add("visits.file", f"not found: {p}")
        else:
            with open(p, newline="", encoding="utf-8-sig") as fh:
                for k, r in enumerate(csv.DictReader(fh), start=2):
                    missing = [c for c in ("day", "observable", "value") if c not in r]
                    if missing:
                        col.add("visits.file", f"{p} line {k}: missing column(s) {missing}; columns: day, observable, "
                                               "value, unit")
                        break
                    val = r["value"] if not r.get("unit") else f"{r['value']} {r['unit']}"
                    rows.append((f"{p} line {k}", r["day"], r["observable"], val))
    else:
        for i, v in enumerate(spec.visits):
            day = v.get("day")
            for key, val in v.items():
                if key != "day":
                    rows.append((f"visits[{i}].{key}", day, key, val))
            if day is None:
                col.add(f"visits[{i}].day", "each visit needs 'day' (days since the first dose)")
    for where, day, key, val in rows:
        if key not in OBSERVABLES:
            import difflib

            close = difflib.get_close_matches(str(key), OBSERVABLES, n=1)
            col.add(where, f"unknown observable {short(key)}" + (f" (did you mean '{close[0]}'?)" if close else "")
                    + f"; allowed: {', '.join(OBSERVABLES)}")
            continue
        try:
            dv, du = parse_quantity(day if not isinstance(day, str) or not day.strip().lstrip("-").replace(".", "", 1)
                                    .isdigit() else float(day), "day")
            d = dv * conversion_factor(du, "day")
        except (ChemohostError, TypeError, ValueError):
            col.add(where, f"day {short(day)} is not a number of days")
            continue
        if not (math.isfinite(d) and d >= 0):
            col.add(where, f"day {d:g} is before the first dose (day 0)")
            continue
        got = _obs_value(key, val, where, col, where)
        if got is not None:
            obs.append(Observation(d, key, got[0], got[1], where))
    now = max((o.day for o in obs), default=0.0)
    if spec.now is not None:
        with col.check("now"):
            from ..scenario import quantity_field

            now = quantity_field(spec.now, "day", src, "now")
    late = [o for o in obs if o.day > now + 1e-9]
    if late:
        col.add("now", f"{len(late)} measurement(s) after 'now' ({now:g} days), e.g. {late[0].where} on day "
                       f"{late[0].day:g}")
    col.raise_if_any()
    obs.sort(key=lambda o: (o.day, o.observable))
    return PatientRecord(spec, src, hashlib.sha256(path.read_bytes()).hexdigest(), model, regs, given, now, obs)
