"""The trial file: its schema (pydantic), checks at load time, and the resolved :class:`Trial`.

Everything a trial needs is checked here, before anything is compiled or simulated: names, units
(strict quantities), the arms' regimens, the indication layer, parameters, perturbations, the scan
protocol, and that the model has the outputs the endpoints need.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from ..errors import ChemohostError, ScenarioError
from ..model.registry import get_model
from ..scenario import (Quantity, RegimenSpec, SolverSpec, _format_validation, _Strict, build_regimens,
                        load_yaml_mapping, perturbations_field, quantity_field)

from .endpoint_registry import check_model, needed_outputs

#: model outputs the trial endpoints read (from the endpoint registry; checked at load time)
OUTPUTS = needed_outputs()

DAYS_PER_MONTH = 30.4375


class TrialSpec(_Strict):
    name: str
    description: str = ""
    model: str = "host_response"
    species: Literal["human", "mouse"] = "human"
    seed: int = 0
    patients: int = Field(200, description="virtual patients per arm")
    follow_up: Quantity = "12 month"
    control: str
    arms: dict[str, list[RegimenSpec]]
    population: dict = Field(default_factory=dict)
    indication: str | None = Field(None, description="disease layer from studies/data/indications.csv")
    parameters: dict[str, Quantity] = Field(default_factory=dict)
    perturbations: list[str] = Field(default_factory=list)
    assessment_interval: Quantity = "8 week"
    scan_window: Quantity = Field("7 day", description="+/- visit window of each scan (uniform, whole days)")
    scan_measurement_error: bool = Field(True, description="measurement error of the sum of diameters (Oxnard 2011)")
    stop_treatment_at_progression: bool = Field(True, description="no dose after the scan that shows progression")
    lab_interval: Quantity = Field("7 day", description="blood counts for CTCAE grading (weekly in the "
                                                        "calibration trials); '1 day' grades every simulated day")
    chunk_size: int = 1000
    keep_timecourses: int = 200
    solver: SolverSpec = Field(default_factory=lambda: SolverSpec(rtol=1e-4, atol=1e-8))


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

    @classmethod
    def load(cls, path: str | Path) -> "Trial":
        data, path = load_yaml_mapping(path, "trial", "name, arms, control")
        return cls.from_dict(data, str(path), hashlib.sha256(path.read_bytes()).hexdigest())

    @classmethod
    def from_dict(cls, data: dict, source: str = "<trial>", sha: str = "") -> "Trial":
        try:
            spec = TrialSpec.model_validate(data)
        except ValidationError as exc:
            raise _format_validation_trial(exc, source) from None
        t = cls(spec, source, sha)
        t._resolve()
        return t

    def _resolve(self):
        s, f = self.spec, self.source
        if s.patients < 1:
            raise ScenarioError("number of patients per arm must be >= 1", file=f, field="patients")
        if s.chunk_size < 1:
            raise ScenarioError("chunk_size must be >= 1", file=f, field="chunk_size")
        if not s.arms:
            raise ScenarioError("give at least one arm", file=f, field="arms")
        if s.control not in s.arms:
            raise ScenarioError(f"control arm '{s.control}' is not one of the arms: {', '.join(s.arms)}",
                                file=f, field="control")
        try:
            self.model = get_model(s.model)
        except ChemohostError as exc:
            raise ScenarioError(str(exc), file=f, field="model") from None
        check_model(self.model, f, "model")
        self.arms = {name: build_regimens(regs, self.model.drugs, f, f"arms.{name}") for name, regs in s.arms.items()}
        self.follow_up_days = quantity_field(s.follow_up, "day", f, "follow_up")
        self.assess_days = quantity_field(s.assessment_interval, "day", f, "assessment_interval")
        self.lab_days = quantity_field(s.lab_interval, "day", f, "lab_interval")
        if not 0 < self.lab_days <= self.follow_up_days:
            raise ScenarioError("lab_interval must be > 0 and within the follow-up", file=f, field="lab_interval")
        if s.indication is not None:
            from .indications import load_indication

            try:
                self.indication = load_indication(s.indication, self.model.parameters)
            except ChemohostError as exc:
                raise ScenarioError(str(exc), file=f, field="indication") from None
        longest = max((r.cycle_length for regs in self.arms.values() for r in regs), default=0.0)
        if not self.follow_up_days >= longest or self.follow_up_days <= 0:
            raise ScenarioError(f"follow-up ({self.follow_up_days:g} days) is shorter than one treatment cycle "
                                f"({longest:g} days); lengthen follow_up", file=f, field="follow_up")
        if not 0 < self.assess_days <= self.follow_up_days:
            raise ScenarioError("assessment_interval must be > 0 and within the follow-up", file=f,
                                field="assessment_interval")
        window = quantity_field(s.scan_window, "day", f, "scan_window")
        if not 0 <= window < self.assess_days / 2:
            raise ScenarioError(f"scan_window must be >= 0 and less than half the assessment interval "
                                f"({self.assess_days / 2:g} days), got {window:g} days", file=f, field="scan_window")
        from .scans import ScanModel

        self.scan_model = ScanModel(interval_days=self.assess_days, window_days=window,
                                    measurement_error=s.scan_measurement_error)
        self.perturbation_overrides = perturbations_field(s.perturbations, self.model.parameters, f)
        if s.parameters:  # check names and units at load time, not after compiling
            from ..api import parameter_vector

            try:
                parameter_vector(self.model, s.species, s.parameters)
            except ChemohostError as exc:
                raise ScenarioError(str(exc), file=f, field="parameters") from None


def _format_validation_trial(exc: ValidationError, file: str) -> ScenarioError:
    return _format_validation(exc, file, TrialSpec)


def control_arm_data(path: str | Path) -> tuple[dict, Path]:
    """The trial file's mapping reduced to its control arm (for calibration and evidence checks)."""
    data, path = load_yaml_mapping(path, "trial", "name, arms, control")
    arms, control = data.get("arms") or {}, data.get("control")
    if control not in arms:
        raise ScenarioError(f"control arm '{control}' is not one of the arms", file=str(path), field="control")
    return {**data, "arms": {control: arms[control]}}, path

