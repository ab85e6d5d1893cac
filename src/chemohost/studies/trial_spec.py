"""The trial file: its schema (pydantic), checks at load time, and the resolved :class:`Trial`.

Everything a trial needs is checked here, before anything is compiled or simulated: names, units
(strict quantities), the arms' regimens, the indication layer, parameters, perturbations, the scan
protocol, and that the model has the outputs the endpoints need.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, create_model, model_validator

from ..errors import ChemohostError, ScenarioError
from ..model.registry import get_model
from ..scenario import (RegimenSpec, SolverSpec, _format_validation, _Strict, build_regimens, load_yaml_mapping,
                        perturbations_field, quantity_field)
from ..spec_types import (MAX_HORIZON_DAYS, MIN_LAB_INTERVAL_DAYS, Patients, Quantity, Seed, count, duration)
from .endpoint_registry import check_model, needed_outputs

#: model outputs the trial endpoints read (from the endpoint registry; checked at load time)
OUTPUTS = needed_outputs()

DAYS_PER_MONTH = 30.4375


def _target(v):
    from ..population.virtual import PopulationError, TargetDistribution

    try:
        TargetDistribution.from_dict(v)
    except PopulationError as exc:
        raise ValueError(f"{exc}; e.g. {{lognormal: {{median: 3.5, sd_log: 0.5}}}} or {{kind: normal, mean: 68, "
                         f"sd: 7}}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a target distribution ({exc}); e.g. {{lognormal: {{median: 3.5, sd_log: 0.5}}}}") \
            from None
    return v


def _population_model():
    """``population:`` of a trial, typed from :class:`~chemohost.population.virtual.PopulationSpec`:
    every distribution field a finite number, plus the selection settings."""
    from dataclasses import fields

    from ..population.virtual import PopulationSpec
    from ..spec_types import _finite

    spec_fields = {f.name: (_finite(what=f"population.{f.name}") | None, None) for f in fields(PopulationSpec)}
    return create_model(
        "PopulationFields", __base__=_Strict,
        candidates_per_patient=(count(1, 1000, "candidates sampled per selected patient") | None, None),
        targets=(dict[str, Annotated[dict, AfterValidator(_target)]] | None, None),
        **spec_fields)


PopulationFields = _population_model()


class TwinGuidedSpec(_Strict):
    """A twin-guided arm (issue 12): the patient twin runs on each virtual patient's simulated monitoring and
    its recommendation is applied from the decision day (:mod:`chemohost.studies.twin_guided`)."""

    decision_day: duration("decision_day", 0.0, MAX_HORIZON_DAYS) = Field(
        "28 day", description="when the twin decides (days after the first dose)")
    visit_days: list[Annotated[float, Field(ge=0, le=MAX_HORIZON_DAYS)]] = Field(
        [0.0, 8.0, 15.0, 22.0, 28.0], min_length=1, max_length=100,
        description="days of blood counts (ANC, lymphocytes) and G-CSF, up to the decision day")
    il1a_days: list[Annotated[float, Field(ge=0, le=MAX_HORIZON_DAYS)]] = Field(
        [0.0, 3.0], max_length=100, description="days of serum IL-1alpha (censored below 3.9 pg/mL)")
    actions: list[Literal["continue", "add_il1a_antibody", "add_caspase1_inhibitor"]] = Field(
        ["continue", "add_il1a_antibody"], min_length=2, max_length=3)
    particles: count(50, 5000) = 100
    moves: count(0, 20) = 2
    objective: Literal["p_progression_free_next_scan", "p_progression_free_6m"] = "p_progression_free_next_scan"
    constraint_max: Annotated[float, Field(gt=0, le=1)] = Field(
        0.10, description="recommended actions keep P(grade 4 neutropenia in the next cycle) below this")
    min_gain: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="an added drug is recommended only if it raises the objective by at least this much")


class TrialSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    model: str = "host_response"
    species: Literal["human", "mouse"] = "human"
    seed: Seed = 0
    patients: Patients = Field(200, description="virtual patients per arm")
    follow_up: duration("follow_up", 0.0, MAX_HORIZON_DAYS, limit="MAX_HORIZON_DAYS = 100 years") = \
        Field("12 month", description="simulated time after the first dose (also accepted as 'horizon', the "
                                      "scenario's name for it)")
    control: str
    arms: dict[str, list[RegimenSpec]] = Field(max_length=100)
    twin_guided: dict[str, TwinGuidedSpec] = Field(
        default_factory=dict, max_length=100,
        description="arms (by name) whose patients get the twin's recommendation at the decision day")
    population: PopulationFields = Field(default_factory=PopulationFields)
    indication: str | None = Field(None, description="disease layer from studies/data/indications.csv")
    parameters: dict[str, Quantity] = Field(default_factory=dict, max_length=1_000)
    perturbations: list[str] = Field(default_factory=list, max_length=100)
    assessment_interval: duration("assessment_interval", 1.0, MAX_HORIZON_DAYS, lo_inclusive=True) = "8 week"
    scan_window: duration("scan_window", 0.0, 365.0, lo_inclusive=True) = \
        Field("7 day", description="+/- visit window of each scan (uniform, whole days)")
    scan_measurement_error: bool = Field(True, description="measurement error of the sum of diameters (Oxnard 2011)")
    stop_treatment_at_progression: bool = Field(True, description="no dose after the scan that shows progression")
    lab_interval: duration("lab_interval", MIN_LAB_INTERVAL_DAYS, MAX_HORIZON_DAYS, lo_inclusive=True,
                           limit="MIN_LAB_INTERVAL = 1 h") = \
        Field("7 day", description="blood counts for CTCAE grading (weekly in the calibration trials); '1 day' "
                                   "grades every simulated day")
    chunk_size: count(1, 100_000) = 1000
    keep_timecourses: count(0, 10_000) = 200
    solver: SolverSpec = Field(default_factory=lambda: SolverSpec(rtol=1e-4, atol=1e-8))

    @model_validator(mode="before")
    @classmethod
    def _shared_names(cls, data):
        """The scenario's names are accepted too: ``horizon`` for ``follow_up``, ``patients: {n: N}``."""
        if isinstance(data, dict) and "horizon" in data:
            if "follow_up" in data:
                raise ValueError("give 'follow_up' or its alias 'horizon', not both")
            data = {("follow_up" if k == "horizon" else k): v for k, v in data.items()}
        if isinstance(data, dict) and isinstance(data.get("patients"), dict):
            p = data["patients"]
            if set(p) - {"n"}:
                raise ValueError(f"in a trial, 'patients' is the number per arm (or {{n: N}}); got the fields "
                                 f"{sorted(map(str, p))}: the population goes under 'population'")
            data = {**data, "patients": p.get("n")}
        return data


@dataclass
class Trial:
    spec: TrialSpec
    source: str
    sha256: str
    model: object = None
    arms: dict = field(default_factory=dict)
    follow_up_days: float = 0.0
    assess_days: float = 0.0
    scan_model: object = None
    lab_days: float = 7.0
    indication: object = None
    perturbation_overrides: dict = field(default_factory=dict)
    twin_guided: dict = field(default_factory=dict)  # arm -> twin_guided.TwinPolicy

    def require_fixed_arms(self, design: str) -> None:
        """Twin-guided arms run in the paired design only (``chemohost trial FILE``); other designs refuse them
        rather than running them as plain arms."""
        if self.twin_guided:
            raise ScenarioError(f"twin-guided arms ({', '.join(self.twin_guided)}) run in the paired trial design "
                                f"only, not in {design}; remove 'twin_guided' or run 'chemohost trial FILE'",
                                file=self.source, field="twin_guided")

    @classmethod
    def load(cls, path: str | Path) -> "Trial":
        data, path = load_yaml_mapping(path, "trial", "name, arms, control")
        return cls.from_dict(data, str(path), hashlib.sha256(path.read_bytes()).hexdigest())

    @classmethod
    def from_dict(cls, data: dict, source: str = "<trial>", sha: str = "") -> "Trial":
        try:
            spec = TrialSpec.model_validate(data)
        except ValidationError as exc:
            from ..spec_types import errors_to_exception, validation_lines

            lines = validation_lines(exc, TrialSpec)
            arms, control = data.get("arms"), data.get("control")
            if isinstance(arms, dict) and isinstance(control, str) and control not in arms and \
                    not any(f == "control" for f, _ in lines):  # a cross-field check the schema cannot make
                lines.append(("control", f"control arm '{control[:60]}' is not one of the arms: "
                                         f"{', '.join(map(str, list(arms)[:10]))}"))
            raise errors_to_exception(lines, source) from None
        t = cls(spec, source, sha)
        t._resolve()
        return t

    def _resolve(self):
        from ..guards import schedule_problems
        from ..spec_types import Collector

        s, f = self.spec, self.source
        col = Collector(f)  # independent checks: every problem of the file is reported at once
        self.warnings: list[tuple[str, str]] = []
        if s.control not in s.arms:
            col.add("control", f"control arm '{s.control}' is not one of the arms: {', '.join(s.arms) or '(none)'}")
        if not s.arms:
            col.add("arms", "give at least one arm")
        try:
            self.model = get_model(s.model)
        except ChemohostError as exc:
            col.add("model", str(exc))
            col.raise_if_any()
        with col.check("model"):
            check_model(self.model, f, "model")
        self.arms = {}
        for name, regs in s.arms.items():
            with col.check(f"arms.{name}"):
                self.arms[name] = build_regimens(regs, self.model.drugs, f, f"arms.{name}")
        self.follow_up_days = quantity_field(s.follow_up, "day", f, "follow_up")  # bounded by the schema
        self.assess_days = quantity_field(s.assessment_interval, "day", f, "assessment_interval")
        self.lab_days = quantity_field(s.lab_interval, "day", f, "lab_interval")
        if self.lab_days > self.follow_up_days:
            col.add("lab_interval", f"must be within the follow-up ({self.follow_up_days:g} days), got "
                                    f"{self.lab_days:g} days")
        if s.indication is not None:
            from .indications import load_indication

            with col.check("indication"):
                self.indication = load_indication(s.indication, self.model.parameters)
        longest = max((r.cycle_length for regs in self.arms.values() for r in regs), default=0.0)
        if self.follow_up_days < longest:
            col.add("follow_up", f"follow-up ({self.follow_up_days:g} days) is shorter than one treatment cycle "
                                 f"({longest:g} days); lengthen follow_up")
        if self.assess_days > self.follow_up_days:
            col.add("assessment_interval", f"must be within the follow-up ({self.follow_up_days:g} days), got "
                                           f"{self.assess_days:g} days")
        window = quantity_field(s.scan_window, "day", f, "scan_window")
        if not window < self.assess_days / 2:
            col.add("scan_window", f"must be less than half the assessment interval ({self.assess_days / 2:g} days), "
                                   f"got {window:g} days")
        for name, regs in self.arms.items():
            errs, warns = schedule_problems(regs, self.model, s.species, self.follow_up_days, f"arms.{name}",
                                            "follow_up")
            for line in errs:
                col.add(*line)
            self.warnings.extend(warns)
        for name, tg in s.twin_guided.items():
            fld = f"twin_guided.{name}"
            if name not in s.arms:
                col.add(fld, f"'{name[:60]}' is not one of the arms: {', '.join(map(str, list(s.arms)[:10]))}")
                continue
            dd = quantity_field(tg.decision_day, "day", f, f"{fld}.decision_day")
            late = [d for d in (*tg.visit_days, *tg.il1a_days) if d > dd]
            if late:
                col.add(f"{fld}.visit_days", f"visits must lie at or before the decision day ({dd:g} days); "
                                             f"got day(s) {', '.join(f'{d:g}' for d in late[:5])}")
            if "continue" not in tg.actions:
                col.add(f"{fld}.actions", "include 'continue' (the protocol without the twin's change)")
            if len(set(tg.actions)) != len(tg.actions):
                col.add(f"{fld}.actions", "each action once")
            if name in self.arms and dd >= self.follow_up_days:
                col.add(f"{fld}.decision_day", f"must be before the end of follow-up ({self.follow_up_days:g} days)")
            if s.model != "host_response":
                col.add(fld, f"the twin runs on model 'host_response'; this trial uses '{s.model}'")
            from .twin_guided import TwinPolicy

            self.twin_guided[name] = TwinPolicy(dd, tuple(sorted(set(tg.visit_days))), tuple(sorted(set(tg.il1a_days))),
                                                tuple(tg.actions), tg.particles, tg.moves, tg.objective,
                                                tg.constraint_max, tg.min_gain)
        targets = s.population.targets or {}
        if targets:
            import numpy as np

            from ..population.virtual import N_COVARIATE_COLUMNS, PopulationSpec, covariates_from_normals

            columns = list(covariates_from_normals(PopulationSpec(), np.zeros((1, N_COVARIATE_COLUMNS))).columns)
            for key in targets:
                if key not in columns:
                    col.add(f"population.targets.{key}", f"not a covariate of the virtual population; allowed: "
                                                         f"{', '.join(c for c in columns if c != 'patient')}")
        with col.check("population"):
            from ..population.virtual import PopulationError, PopulationSpec

            try:
                PopulationSpec.from_dict(s.population.model_dump(exclude_none=True,
                                                                 exclude={"targets", "candidates_per_patient"}))
            except PopulationError as exc:
                raise ScenarioError(str(exc), file=f, field="population") from None
        with col.check("perturbations"):
            self.perturbation_overrides = perturbations_field(s.perturbations, self.model.parameters, f)
        if s.parameters:  # check names and units at load time, not after compiling
            from ..api import parameter_vector

            with col.check("parameters"):
                parameter_vector(self.model, s.species, s.parameters)
        col.raise_if_any()
        from .scans import ScanModel

        self.scan_model = ScanModel(interval_days=self.assess_days, window_days=window,
                                    measurement_error=s.scan_measurement_error)


def _format_validation_trial(exc: ValidationError, file: str) -> ScenarioError:
    return _format_validation(exc, file, TrialSpec)


def control_arm_data(path: str | Path) -> tuple[dict, Path]:
    """The trial file's mapping reduced to its control arm (for calibration and evidence checks)."""
    data, path = load_yaml_mapping(path, "trial", "name, arms, control")
    arms, control = data.get("arms") or {}, data.get("control")
    if control not in arms:
        raise ScenarioError(f"control arm '{control}' is not one of the arms", file=str(path), field="control")
    return {**data, "arms": {control: arms[control]}}, path

