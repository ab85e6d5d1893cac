"""The small public Python API (what ``chemohost simulate`` does, for notebooks).

    >>> import chemohost as ch
    >>> sc = ch.load_scenario("scenarios/gemcitabine_d1_8_15_q28_human.yaml")
    >>> sc = sc.with_parameters(CL_gem="2.0 L/min")
    >>> df = sc.simulate().frame          # tidy DataFrame: patient, arm, time_days, outputs...
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .engine.codegen import compile_model
from .engine.simulate import STATUS, SimulationResult, SolverOptions, simulate
from .errors import ChemohostError, ParameterError, ScenarioError
from .guards import physiology_problems, schedule_problems
from .model.core import Model
from .model.params import default_tables, lognormal_sd, parameter_set
from .model.registry import get_model
from .protocol.dosing import ROUTES
from .protocol.event_table import PatientDoses, read_event_table
from .scenario import ScenarioSpec, build_regimens, parse_spec, perturbations_field, quantity_field, read_spec
from .units import to_internal


def parameter_vector(model: Model, species: str, overrides: dict[str, object] | None = None,
                     where: str = "parameters") -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, typical values, CVs) in internal units; ``overrides`` values are '2.0 L/min' strings
    or numbers in the internal unit."""
    ps = parameter_set(model, species)
    names = list(model.parameters)
    values = np.array([ps[n].value for n in names])
    cvs = np.array([ps[n].cv or 0.0 for n in names])
    for key, val in (overrides or {}).items():
        if key not in ps:
            import difflib
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParameterError(f"field '{where}.{key}': '{key}' is not a parameter of model '{model.name}'{hint}; "
                                 f"see `chemohost params --model {model.name}` for the allowed names")
        try:
            values[names.index(key)] = to_internal(val, ps[key].unit, ps[key].unit)
        except ChemohostError as exc:
            raise ParameterError(f"field '{where}.{key}': {exc}") from None
        if not np.isfinite(values[names.index(key)]):
            raise ParameterError(f"field '{where}.{key}': value must be finite")
        if values[names.index(key)] < 0 <= ps[key].lower:
            raise ParameterError(f"field '{where}.{key}': got {val!r}, but '{key}' cannot be negative (plausible "
                                 f"range {ps[key].lower:g}-{ps[key].upper:g} {ps[key].unit})")
    return names, values, cvs


def sample_patients(typical: np.ndarray, cvs: np.ndarray, n: int, seed: int, variability: bool) -> np.ndarray:
    """(n, P) parameters: log-normal inter-individual variability around the typical values.

    Patient i is the same virtual patient in every arm and for any chunking (one draw per run)."""
    P = np.repeat(typical[None, :], n, axis=0)
    if variability:
        rng = np.random.Generator(np.random.PCG64(seed))
        omega = np.array([lognormal_sd(c) if c > 0 else 0.0 for c in cvs])
        eta = rng.standard_normal((n, typical.size)) * omega[None, :]
        P = P * np.exp(eta)
    return P


@dataclass
class RunResult:
    scenario: "Scenario"
    arms: dict[str, SimulationResult]
    frame: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)

    def manifest(self) -> dict:
        sc = self.scenario
        tables = default_tables()
        versions = {}
        for pkg in ("numpy", "scipy", "numba", "sympy", "pandas", "pyarrow", "pydantic", "pint", "python-libsbml",
                    "matplotlib", "pyyaml"):
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
        status = {}
        for arm, res in self.arms.items():
            vals, counts = np.unique(res.status, return_counts=True)
            status[arm] = {STATUS[int(v)]: int(c) for v, c in zip(vals, counts)}
        return {
            "chemohost_version": __version__,
            "scenario": sc.spec.model_dump(mode="json"),
            "scenario_file": sc.source,
            "scenario_sha256": sc.sha256,
            "event_table_sha256": sc.event_table_sha256,
            "model": sc.model.name,
            "model_code_hash": sc.compiled().source_hash,
            "parameter_table_sha256": hashlib.sha256(b"".join(t.read_bytes() for t in tables)).hexdigest(),
            "parameter_tables": [t.name for t in tables],
            "species": sc.spec.species,
            "seed": sc.spec.seed,
            "patients": sc.spec.patients.n,
            "solver": sc.solver_options().__dict__,
            "status": status,
            "timings_s": self.timings,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": versions,
        }


class Scenario:
    """A parsed scenario: model, parameters, arms.  Cheap to copy and modify."""

    def __init__(self, spec: ScenarioSpec, source: str = "<scenario>", sha256: str = ""):
        from .spec_types import Collector

        self.spec = spec
        self.source = source
        self.sha256 = sha256
        try:
            self.model = get_model(spec.model)
        except ChemohostError as exc:
            raise ScenarioError(str(exc), file=source, field="model") from None
        col = Collector(source)  # independent checks: every problem of the file is reported at once
        self.warnings: list[tuple[str, str]] = []  # accepted, but worth saying (printed by the CLI)
        self.names, self.typical, self.cvs = parameter_vector(self.model, spec.species)
        with col.check("parameters"):
            self.names, self.typical, self.cvs = parameter_vector(self.model, spec.species, spec.parameters)
        with col.check("patients.covariates"):
            cov_names, cov_vals, _ = parameter_vector(self.model, spec.species, spec.patients.covariates,
                                                      where="patients.covariates")
            for k in spec.patients.covariates:
                self.typical[self.names.index(k)] = cov_vals[cov_names.index(k)]
                self.cvs[self.names.index(k)] = 0.0
            errs, warns = physiology_problems(self.model, spec.species, spec.patients.covariates)
            for line in errs:
                col.add(*line)
            self.warnings.extend(warns)
        with col.check("perturbations"):
            for k, v in perturbations_field(spec.perturbations, self.model.parameters, source).items():
                self.typical[self.names.index(k)] = v
                self.cvs[self.names.index(k)] = 0.0
        self.event_table_sha256 = None
        self.arms = {}
        if spec.event_table is not None:
            with col.check("event_table"):
                self.arms = {spec.name: self._event_table(spec, source)}
        else:
            if spec.arms is None and spec.regimens is None:
                col.add("regimens", "missing: give 'regimens' (one arm; 'regimens: []' for an untreated arm), 'arms' "
                                    "(several) or 'event_table' (per-patient doses)")
            arms = spec.arms if spec.arms is not None else {spec.name: spec.regimens or []}
            if spec.arms is not None and not arms:
                col.add("arms", "no arms: give 'regimens' or 'arms'")
            for name, regs in arms.items():
                prefix = "regimens" if spec.arms is None else f"arms.{name}"
                with col.check(prefix):
                    self.arms[name] = build_regimens(regs, self.model.drugs, source, prefix)
        self.horizon = quantity_field(spec.horizon, "day", source, "horizon")  # bounded by the schema
        self.interval = quantity_field(spec.output_interval, "day", source, "output_interval")
        if self.interval > self.horizon:
            col.add("output_interval", f"must be at most the horizon ({self.horizon:g} days), got {self.interval:g} "
                                       "days")
        for name, regs in self.arms.items():
            if isinstance(regs, list):
                errs, warns = schedule_problems(regs, self.model, spec.species, self.horizon,
                                                "regimens" if spec.arms is None else f"arms.{name}", "horizon")
                for line in errs:
                    col.add(*line)
                self.warnings.extend(warns)
        available = list(self.model.species) + list(self.model.outputs)
        self.outputs = spec.outputs or default_outputs(self.model)
        for i, o in enumerate(self.outputs):
            if o not in available:
                import difflib
                close = difflib.get_close_matches(o, available, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                col.add(f"outputs[{i}]", f"unknown output '{o}'{hint}; see `chemohost outputs --model {self.model.name}`")
        with col.check("solver"):
            self.solver_options()
        col.raise_if_any()
        self._check_size()

    def _check_size(self) -> None:
        """Time courses are held in memory: refuse before simulating what would not fit."""
        from .spec_types import MAX_OUTPUT_POINTS, MAX_RESULT_BYTES

        points = int(self.horizon / self.interval) + 2
        if points > MAX_OUTPUT_POINTS:
            raise ScenarioError(f"{points:,} output times per patient (horizon / output_interval) exceed the limit "
                                f"MAX_OUTPUT_POINTS = {MAX_OUTPUT_POINTS:,}; lengthen output_interval",
                                file=self.source, field="output_interval")
        size = points * self.spec.patients.n * len(self.outputs) * len(self.arms) * 8
        if size > MAX_RESULT_BYTES:
            raise ScenarioError(f"the time courses would take {size / 2 ** 30:.1f} GiB in memory ({points:,} times x "
                                f"{self.spec.patients.n:,} patients x {len(self.outputs)} outputs x {len(self.arms)} "
                                f"arm(s)), over the limit MAX_RESULT_BYTES = {MAX_RESULT_BYTES / 2 ** 30:g} GiB; use "
                                "fewer patients, outputs or output times, or `chemohost trial` for large cohorts",
                                file=self.source, field="patients.n")

    def _event_table(self, spec: ScenarioSpec, source: str) -> PatientDoses:
        """The scenario's per-patient doses: ids must be exactly 0..patients.n-1, every (drug, route)
        must exist in the model.  Doses are given as recorded (no dose-modification rule)."""
        base = Path(source).parent if Path(source).is_file() else Path.cwd()
        path = Path(spec.event_table)
        path = path if path.is_absolute() else base / path
        try:
            doses = read_event_table(path, sorted(self.model.drugs))
        except ChemohostError as exc:
            raise ScenarioError(str(exc), file=source, field="event_table") from None
        self.event_table_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        n = spec.patients.n
        ids = doses.patients
        if len(ids) != n or not np.array_equal(ids, np.arange(n)):
            extra = [int(i) for i in ids if i >= n][:5]
            absent = sorted(set(range(n)) - {int(i) for i in ids})[:5]
            detail = (f"ids >= {n}: {extra}" if extra else "") + ("; " if extra and absent else "") + \
                     (f"no rows for patient(s) {absent}" if absent else "")
            raise ScenarioError(f"{path}: the event table must give doses for patients 0..{n - 1} (patients.n = {n}), "
                                f"each at least once; got {len(ids)} patient id(s) ({detail}); set patients.n to "
                                "the number of patients in the file or add their rows", file=source,
                                field="event_table")
        valid = np.arange(doses.max_doses)[None, :] < doses.n_doses[:, None]
        for di, ri in sorted({(int(a), int(b)) for a, b in zip(doses.drug_index[valid], doses.route[valid])}):
            drug = self.model.drugs[doses.drugs[di]]
            if ROUTES[ri] not in drug.routes:
                raise ScenarioError(f"{path}: drug '{drug.name}' has no route '{ROUTES[ri]}' in model "
                                    f"'{self.model.name}'; allowed: {', '.join(sorted(drug.routes))}",
                                    file=source, field="event_table")
        return doses

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "Scenario":
        sha = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
        return cls(parse_spec(data, source), source, sha)

    def with_parameters(self, **overrides) -> "Scenario":
        """A copy with parameter overrides ('2.0 L/min' strings or internal-unit numbers)."""
        spec = copy.deepcopy(self.spec)
        spec.parameters.update(overrides)
        return Scenario(spec, self.source, self.sha256)

    def with_patients(self, n: int | None = None, seed: int | None = None, variability: bool | None = None) -> "Scenario":
        spec = copy.deepcopy(self.spec)
        if n is not None:
            from .spec_types import MAX_PATIENTS

            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PATIENTS:
                raise ScenarioError(f"number of patients must be a whole number >= 1 and <= {MAX_PATIENTS:,} "
                                    f"(MAX_PATIENTS), got {n!r}", file=self.source, field="patients.n")
            spec.patients.n = n
        if seed is not None:
            from .spec_types import MAX_SEED

            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                raise ScenarioError(f"seed must be a whole number >= 0 and <= 2**63 - 1, got {seed!r}",
                                    file=self.source, field="seed")
            spec.seed = seed
        if variability is not None:
            spec.patients.variability = variability
        return Scenario(spec, self.source, self.sha256)

    # -- running --------------------------------------------------------------------------------
    def solver_options(self) -> SolverOptions:
        return SolverOptions.from_fields(self.spec.solver)

    def compiled(self):
        return compile_model(self.model, self.spec.solver.closed_form)

    def times(self) -> np.ndarray:
        n = int(np.floor(self.horizon / self.interval + 1e-9))
        t = np.arange(n + 1) * self.interval
        if t[-1] < self.horizon - 1e-9:
            t = np.append(t, self.horizon)
        return t

    def parameter_matrix(self) -> np.ndarray:
        p = self.spec.patients
        return sample_patients(self.typical, self.cvs, p.n, self.spec.seed, p.variability)

    def simulate(self) -> RunResult:
        t0 = time.perf_counter()
        cm = self.compiled()
        t1 = time.perf_counter()
        P = self.parameter_matrix()
        results, frames = {}, []
        for arm, regs in self.arms.items():
            res = simulate(cm, P, regs, self.times(), self.outputs, options=self.solver_options())
            results[arm] = res
            frames.append(res.to_frame(arm))
        t2 = time.perf_counter()
        frame = pd.concat(frames, ignore_index=True)
        frame["arm"] = pd.Categorical(frame["arm"], categories=list(self.arms))
        return RunResult(self, results, frame, {"compile_or_load": t1 - t0, "simulate": t2 - t1})


def default_outputs(model: Model) -> list[str]:
    preferred = ["C_gem", "dfdctp", "C_cis", "C_dtx", "ANC", "tumour_size"]
    out = [o for o in preferred if o in model.outputs or o in model.species]
    return out or list(model.outputs)[:6]


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    spec = read_spec(path)
    return Scenario(spec, str(path), hashlib.sha256(path.read_bytes()).hexdigest())


def write_run(run: RunResult, out: str | Path) -> dict[str, Path]:
    """Write timecourses.parquet, manifest.json and a figure into ``out`` atomically."""
    from .outputs import write_atomically
    from .report.figures import timecourse_figure

    def write(tmp: Path) -> None:
        run.frame.to_parquet(tmp / "timecourses.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps(run.manifest(), indent=2, default=str))
        timecourse_figure(run, tmp / "timecourses.png")

    return write_atomically(out, write)
