"""The shape every study shares (``chemohost sensitivity | optimize | ...``).

A study is a YAML file validated by the spec layer, a CLI verb, batched work through the engine, a
results folder (Parquet + JSON + a self-contained HTML report, published with a completion marker),
reproducible by seed, resumable by chunk checkpoints, and able to run around a fit's posterior.  A
new study is one file in ``studies/`` with a :class:`Study` subclass registered with
:func:`register`:

    @register
    class MyStudy(Study):
        kind = "mystudy"
        Spec = MyStudySpec                   # pydantic model (extends StudySpec)
        def resolve(self): ...               # model-aware checks (collect errors with self.collector)
        def run(self, *, progress=False, checkpoint=None, posterior=None) -> StudyResult: ...
        def write(self, result, folder): ... # files into the staging folder

This module also holds what several studies read from a simulation: :class:`BaseSetup` (the model,
species, typical patient and arms of a base trial file) and *readouts* -- named scalar quantities of
one simulated patient: an output at a time, a statistic over a window, relative to another arm, or
the expected restricted mean survival from the trial's OS link.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator

from ..errors import ChemohostError, ScenarioError
from ..scenario import _Strict, load_yaml_mapping, quantity_field
from ..spec_types import Collector, Quantity, Seed, format_validation, short
from .trial_spec import DAYS_PER_MONTH, Trial

REGISTRY: dict[str, type["Study"]] = {}
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


def register(cls: type["Study"]) -> type["Study"]:
    REGISTRY[cls.kind] = cls
    return cls


class StudySpec(_Strict):
    study: str = Field(description="the study kind, e.g. sensitivity")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    seed: Seed = 0


class ReadoutSpec(_Strict):
    """One scalar per simulated patient and parameter set."""

    name: str = Field(pattern=_IDENT, max_length=60)
    arm: str = Field(max_length=200, description="arm of the base trial file")
    output: str | None = Field(None, description="model output or species, e.g. tumour_total, ANC, NLR")
    endpoint: Literal["rmst"] | None = Field(None, description="rmst: expected restricted mean OS (months) of the "
                                                               "trial's OS link, to 'tau'")
    time: Quantity | None = Field(None, description="read the output at this time, e.g. '168 day'")
    statistic: Literal["value", "min", "max", "mean"] = "value"
    window: list[Quantity] | None = Field(None, min_length=2, max_length=2,
                                          description="[start, end] of min/max/mean, e.g. [0 day, 28 day]")
    change_from_baseline: bool = Field(False, description="divide by the output at time 0")
    relative_to: str | None = Field(None, description="another arm: ratio (outputs) or difference (rmst)")
    tau: Quantity = Field("12 month", description="rmst horizon")
    log: bool = Field(False, description="analyse log(value) (ratios, strictly positive outputs)")


@dataclass
class Readout:
    spec: ReadoutSpec
    arm: str
    ref: str | None
    output: str | None
    time: float | None
    window: tuple[float, float] | None
    tau: float


@dataclass
class BaseSetup:
    """The base trial file of a study: model, species, arms, follow-up, OS link, typical patient."""

    trial: Trial
    names: list[str]
    typical: np.ndarray
    source: dict[str, str]  # parameter -> source text (to flag 'assumed:' parameters)
    bounds: dict[str, tuple[float, float]]  # parameter -> plausible bounds (table)
    cvs: dict[str, float]

    @classmethod
    def load(cls, path: str | Path, base_dir: Path, file: str, fld: str = "base") -> "BaseSetup":
        p = Path(path)
        p = p if p.is_absolute() else base_dir / p
        try:
            trial = Trial.load(p)
            trial.require_fixed_arms("a study")
        except ChemohostError as exc:
            raise ScenarioError(f"{fld}: {exc}", file=file) from None
        from ..api import parameter_vector
        from ..model.params import parameter_set

        ind = trial.indication
        params = {**(ind.parameters if ind else {}), **trial.spec.parameters}
        names, typical, cvs = parameter_vector(trial.model, trial.spec.species, params)
        for k, v in trial.perturbation_overrides.items():
            typical[names.index(k)] = v
        ps = parameter_set(trial.model, trial.spec.species)
        cv = dict(zip(names, cvs))
        if ind is not None:
            cv.update(ind.cvs)
        src = {n: (ind.sources.get(n) if ind is not None and n in ind.sources else ps[n].source) for n in names}
        return cls(trial, names, typical, src, {n: (ps[n].lower, ps[n].upper) for n in names}, cv)

    def grid(self, extra=()) -> np.ndarray:
        fu = self.trial.follow_up_days
        return np.unique(np.r_[np.arange(0.0, fu, 1.0), fu, [t for t in extra if t is not None and 0 <= t <= fu]])


def resolve_readouts(specs: list[ReadoutSpec], base: BaseSetup, col: Collector, prefix: str = "readouts") \
        -> list[Readout]:
    trial = base.trial
    model = trial.model
    quantities = set(model.species) | set(model.outputs)
    out, seen = [], set()
    for i, r in enumerate(specs):
        f = f"{prefix}[{i}]"
        if r.name in seen:
            col.add(f"{f}.name", f"readout name '{r.name}' is used twice; names must be unique")
        seen.add(r.name)
        for a, key in ((r.arm, "arm"), (r.relative_to, "relative_to")):
            if a is not None and a not in trial.arms:
                col.add(f"{f}.{key}", f"{short(a)} is not an arm of the base trial; arms: {', '.join(trial.arms)}")
        if (r.output is None) == (r.endpoint is None):
            col.add(f, "give exactly one of 'output' (a model quantity) or 'endpoint: rmst'")
            continue
        if r.output is not None and r.output not in quantities:
            import difflib

            close = difflib.get_close_matches(r.output, sorted(quantities), n=1)
            col.add(f"{f}.output", f"{short(r.output)} is not an output or species of {model.name}"
                                   + (f" (did you mean '{close[0]}'?)" if close else "")
                                   + f"; see `chemohost outputs --model {model.name}`")
        t = w = None
        fu = trial.follow_up_days
        with col.check(f"{f}.time"):
            if r.time is not None:
                t = quantity_field(r.time, "day", "", f"{f}.time")
                if not 0 <= t <= fu:
                    raise ScenarioError(f"time {t:g} days lies outside the base trial's follow-up (0-{fu:g} days)")
        with col.check(f"{f}.window"):
            if r.window is not None:
                w = tuple(quantity_field(x, "day", "", f"{f}.window") for x in r.window)
                if not 0 <= w[0] < w[1] <= fu:
                    raise ScenarioError(f"window [{w[0]:g}, {w[1]:g}] days must be increasing and within the "
                                        f"follow-up (0-{fu:g} days)")
        if r.output is not None:
            if r.statistic == "value" and t is None:
                col.add(f, "a 'value' readout needs 'time' (or use statistic min/max/mean with 'window')")
            if r.statistic != "value" and w is None:
                col.add(f"{f}.window", f"statistic '{r.statistic}' needs 'window: [start, end]'")
        tau = float("nan")
        with col.check(f"{f}.tau"):
            tau = quantity_field(r.tau, "day", "", f"{f}.tau")
            if r.endpoint == "rmst" and not 0 < tau <= fu:
                raise ScenarioError(f"tau {tau:g} days must be > 0 and within the follow-up ({fu:g} days)")
        out.append(Readout(r, r.arm, r.relative_to, r.output, t, w, tau))
    return out


def readout_outputs(readouts: list[Readout]) -> list[str]:
    need = {r.output for r in readouts if r.output}
    if any(r.spec.endpoint == "rmst" for r in readouts):
        need |= {"tumour_total", "NLR"}
    return sorted(need)


def arm_values(readouts: list[Readout], arm: str, res, base: BaseSetup) -> dict[str, np.ndarray]:
    """{readout name: (N,) raw value of this arm} for the readouts that read ``arm`` (as themselves or
    as their reference), from a SimulationResult on ``base.grid``."""
    t = res.times
    vals = {}
    for r in readouts:
        for which, a in (("self", r.arm), ("ref", r.ref)):
            if a != arm:
                continue
            key = f"{r.spec.name}::{which}"
            if r.spec.endpoint == "rmst":
                vals[key] = expected_rmst(res, base, r.tau)
                continue
            y = res.output(r.output)
            if r.spec.statistic == "value":
                v = _interp_rows(t, y, r.time)
            else:
                m = (t >= r.window[0] - 1e-9) & (t <= r.window[1] + 1e-9)
                f = {"min": np.min, "max": np.max, "mean": np.mean}[r.spec.statistic]
                v = f(y[:, m], axis=1)
            if r.spec.change_from_baseline:
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = v / y[:, 0]
            vals[key] = v
    return vals


def combine(readouts: list[Readout], vals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Final readout values from the per-arm raw values."""
    out = {}
    for r in readouts:
        v = vals[f"{r.spec.name}::self"]
        if r.ref is not None:
            ref = vals[f"{r.spec.name}::ref"]
            with np.errstate(divide="ignore", invalid="ignore"):
                v = v - ref if r.spec.endpoint == "rmst" else v / ref
        if r.spec.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.log(v)
        out[r.spec.name] = v
    return out


def _interp_rows(t, y, at):
    j = np.searchsorted(t, at)
    if j < t.size and abs(t[j] - at) < 1e-9:
        return y[:, j]
    j = min(max(j, 1), t.size - 1)
    w = (at - t[j - 1]) / (t[j] - t[j - 1])
    return (1 - w) * y[:, j - 1] + w * y[:, j]


def expected_rmst(res, base: BaseSetup, tau_days: float) -> np.ndarray:
    """(N,) restricted mean OS to ``tau`` (months) of the trial's OS link on each simulated patient:
    the hazard (Weibull baseline x week-8 tumour-size ratio, baseline size, time-varying NLR) is
    integrated deterministically -- the expectation over the OS noise a trial draws, no Monte Carlo."""
    from .endpoints import sum_of_diameters
    from .endpoints import assessment_indices
    from .survival import OSLinkParams, os_hazard

    ind = base.trial.indication
    osp = ind.os_link if ind else OSLinkParams()
    t = res.times
    sld = sum_of_diameters(res.output("tumour_total"))
    i8 = assessment_indices(t, [t[0] + 56.0])[0]
    hz = os_hazard(osp, t, sld[:, i8] / sld[:, 0], sld[:, 0], res.output("NLR"), nlr_times_days=t)
    dH = 0.5 * (hz[:, 1:] + hz[:, :-1]) * np.diff(t)[None, :]
    H = np.concatenate([np.zeros((hz.shape[0], 1)), np.cumsum(dH, axis=1)], axis=1)
    S = np.exp(-H)
    m = t <= tau_days + 1e-9
    tt, SS = t[m], S[:, m]
    area = np.sum(0.5 * (SS[:, 1:] + SS[:, :-1]) * np.diff(tt)[None, :], axis=1)
    return area / DAYS_PER_MONTH


def posterior_population(base: "BaseSetup", P: np.ndarray, posterior, seed: int, file: str) -> tuple[np.ndarray, list]:
    """Each virtual patient (row of ``P``) gets its own posterior draw of the fit's model parameters as
    typical values (``value x draw / typical``, the patient's own deviation kept): a posterior-
    predictive population, so answers average over the parameter uncertainty at no extra cost.
    Draws are chosen with replacement, seeded.  Returns ``(P, draw ids)``."""
    trial = base.trial
    if posterior.model != trial.model.name or posterior.species != trial.spec.species:
        raise ScenarioError(f"the fit in {posterior.folder} is for {posterior.model} ({posterior.species}); the base "
                            f"trial uses {trial.model.name} ({trial.spec.species})", file=file, field="--posterior")
    fixed = sorted(set(posterior.parameters) & set(trial.spec.parameters))
    if fixed:
        raise ScenarioError(f"the base trial fixes {', '.join(fixed)}, which the posterior samples", file=file,
                            field="--posterior")
    rng = np.random.default_rng([seed, 29])
    k = rng.integers(0, len(posterior.draws), size=P.shape[0])
    P = P.copy()
    for name in posterior.parameters:
        j = base.names.index(name)
        v = posterior.draws[name].to_numpy(float)[k]
        P[:, j] = v if base.typical[j] == 0 else P[:, j] * (v / base.typical[j])
    return P, posterior.draws["draw"].to_numpy()[k].tolist()


# -- the interface -----------------------------------------------------------------------------------
@dataclass
class StudyResult:
    study: "Study"
    tables: dict[str, pd.DataFrame]  # name -> frame (written as NAME.parquet)
    summary: dict
    timings: dict
    notes: list[str] = field(default_factory=list)


class Study:
    kind: ClassVar[str] = ""
    Spec: ClassVar[type[StudySpec]] = StudySpec

    def __init__(self, spec: StudySpec, source: str, sha256: str):
        self.spec = spec
        self.source = source
        self.sha256 = sha256
        self.base_dir = Path(source).parent if Path(source).is_file() else Path.cwd()
        self.collector = Collector(source)
        self.warnings: list[tuple[str, str]] = []

    @classmethod
    def load(cls, path: str | Path) -> "Study":
        data, path = load_yaml_mapping(path, f"{cls.kind} study", "study, name, base, ...")
        return cls.from_dict(data, str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest())

    @classmethod
    def from_dict(cls, data: dict, source: str = "<study>", sha256: str = "") -> "Study":
        kind = data.get("study")
        if kind != cls.kind:
            raise ScenarioError(f"this file is a {short(kind)} study; `chemohost {cls.kind}` needs 'study: "
                                f"{cls.kind}'", file=source, field="study")
        try:
            spec = cls.Spec.model_validate(data)
        except ValidationError as exc:
            raise format_validation(exc, source, cls.Spec) from None
        self = cls(spec, source, sha256)
        self.resolve()
        self.collector.raise_if_any()
        return self

    # to override --------------------------------------------------------------------------------
    def resolve(self) -> None:
        """Model-aware checks; add every problem to ``self.collector``."""

    def run(self, *, progress: bool = False, checkpoint=None, posterior=None) -> StudyResult:
        raise NotImplementedError

    def write(self, result: StudyResult, folder: Path) -> None:
        raise NotImplementedError

    # shared -------------------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        from .. import __version__

        return {"study": self.kind, "file_sha256": self.sha256, "spec": self.spec.model_dump(mode="json"),
                "chemohost_version": __version__}


def parameter_field_check(names: list[str], base: BaseSetup, col: Collector, prefix: str) -> None:
    import difflib

    for n in names:
        if n not in base.names:
            close = difflib.get_close_matches(n, base.names, n=1)
            col.add(f"{prefix}.{n}", f"not a parameter of {base.trial.model.name}"
                                     + (f" (did you mean '{close[0]}'?)" if close else "")
                                     + f"; see `chemohost params --model {base.trial.model.name}`")


def finite_or_nan(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


__all__ = ["Study", "StudySpec", "StudyResult", "REGISTRY", "register", "ReadoutSpec", "Readout", "BaseSetup",
           "resolve_readouts", "readout_outputs", "arm_values", "combine", "expected_rmst", "field_validator"]
