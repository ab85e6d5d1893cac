"""In-silico trials: arms x virtual patients -> endpoints, survival analysis, report.

``chemohost trial SCENARIO.yaml --out DIR`` runs every arm on the *same* virtual patients (common
random numbers), streams them through the engine in chunks (bounded memory; full time courses kept
only for a sample), computes per-patient endpoints (RECIST 1.1 best response from tumour volume,
PFS, OS from a tumour/NLR-linked hazard, CTCAE neutropenia, dose intensity, NLR) and per-arm
statistics (lifelines), and writes patients.parquet, summary.json, report.html and manifest.json
atomically.  The same seed gives identical patients.parquet whatever the chunk size.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from .. import __version__
from ..engine.codegen import compile_model
from ..engine.simulate import SolverOptions, simulate
from ..errors import ChemohostError, ScenarioError
from ..model.registry import get_model
from ..scenario import (Quantity, RegimenSpec, SolverSpec, _format_validation, _Strict, build_regimens,
                        load_yaml_mapping, perturbations_field, quantity_field)

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
        missing = [o for o in OUTPUTS if o not in self.model.outputs and o not in self.model.species]
        if missing:
            raise ScenarioError(f"model '{s.model}' lacks the outputs a trial's endpoints need ({', '.join(missing)}); "
                                "use model host_response", file=f, field="model")
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


from .streams import STREAMS, os_exponentials, patient_stream  # noqa: E402,F401  (public names)


OUTPUTS = ["tumour_total", "met_burden", "ANC", "NLR", "gmp_frequency"]


@dataclass
class TrialResult:
    trial: Trial
    patients: pd.DataFrame
    summary: dict
    samples: dict
    timings: dict
    paired_deltas: dict = field(default_factory=dict)  # arm -> (n_pairs,) OS difference vs control, months

    def manifest(self) -> dict:
        from importlib import metadata

        versions = {}
        for pkg in ("numpy", "numba", "scipy", "pandas", "lifelines", "pyarrow"):
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
        cm = compile_model(self.trial.model, self.trial.spec.solver.closed_form)
        return {"chemohost_version": __version__, "trial": self.trial.spec.model_dump(mode="json"),
                "trial_file": self.trial.source, "trial_sha256": self.trial.sha256,
                "model": self.trial.model.name, "model_code_hash": cm.source_hash,
                "indication": self.trial.indication.to_dict() if self.trial.indication else None,
                "seed": self.summary["seed"], "patients_per_arm": int(len(self.patients) / max(len(self.trial.arms), 1)),
                "timings_s": self.timings, "python": sys.version.split()[0], "packages": versions}


def run_trial(trial: Trial, patients: int | None = None, seed: int | None = None, chunk_size: int | None = None,
              progress: bool = False) -> TrialResult:
    """Run every arm of ``trial`` on the same virtual patients; ``progress`` shows a bar on stderr."""
    from ..population.virtual import sample_population
    from .survival import (OSLinkParams, arm_summary, compare_arms, linked_os, pfs_interval_bounds,
                           progression_or_death)

    spec = trial.spec
    n = spec.patients if patients is None else patients
    seed = spec.seed if seed is None else seed
    chunk = chunk_size or spec.chunk_size
    if n < 1:
        raise ScenarioError("number of patients per arm must be >= 1", file=trial.source, field="patients")
    t0 = time.perf_counter()
    if progress:
        print(f"compiling model {trial.model.name} (cached after the first run) ...", file=sys.stderr, flush=True)
    cm = compile_model(trial.model, spec.solver.closed_form)
    t1 = time.perf_counter()
    pop = dict(spec.population)
    targets = pop.pop("targets", None)
    factor = int(pop.pop("candidates_per_patient", 5))
    acceptance = None
    ind = trial.indication
    params = {**(ind.parameters if ind else {}), **spec.parameters}
    cv_over = dict(ind.cvs) if ind else {}
    try:
        if targets:
            from ..population.virtual import TargetDistribution, select_virtual_population

            names, P, cov = sample_population(trial.model, spec.species, pop, n * factor, seed,
                                              parameters=params, cv_overrides=cv_over)
            tds = {col: TargetDistribution.from_dict(d) for col, d in targets.items()}
            idx, acceptance = select_virtual_population(cov, tds, n, seed)
            P, cov = P[idx], cov.iloc[idx].reset_index(drop=True)
        else:
            names, P, cov = sample_population(trial.model, spec.species, pop, n, seed, parameters=params,
                                              cv_overrides=cv_over)
    except ChemohostError as exc:
        raise ScenarioError(str(exc), file=trial.source, field="population") from None
    for k, v in trial.perturbation_overrides.items():
        P[:, names.index(k)] = v
    opts = SolverOptions(rtol=spec.solver.rtol, atol=spec.solver.atol, max_steps=spec.solver.max_steps,
                         closed_form=spec.solver.closed_form)
    fu = trial.follow_up_days
    times = np.unique(np.r_[np.arange(0.0, fu, 1.0), fu])
    osp = ind.os_link if ind else OSLinkParams()
    rows, samples = [], {}
    keep = min(spec.keep_timecourses, n)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * len(trial.arms), unit="patient", desc=spec.name, file=sys.stderr,
                   mininterval=0.5, dynamic_ncols=True)
        # finer chunks for a smooth bar; results do not depend on the chunk size (tested)
        chunk = min(chunk, max(64, -(-n // 10)))
    e_os = os_exponentials(seed, n)  # the same draws in every arm (paired design)
    from .scans import scan_schedule

    sched = scan_schedule(trial.scan_model, fu, seed, np.arange(n))  # the same scan days in every arm
    n_resim = 0
    for arm, regs in trial.arms.items():
        kept = {o: np.full((keep, times.size), np.nan) for o in OUTPUTS}
        parts = []
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            res, ep, k_re = simulate_patients(cm, P[s:e], regs, times, opts, trial, seed, np.arange(s, e), sched[s:e])
            n_resim += k_re
            os_m, os_e = linked_os(osp, times, ep["tsr_w8"].to_numpy(), ep["sld0_mm"].to_numpy(),
                                   res.output("NLR"), e_os[s:e], follow_up_days=fu)
            ep["os_months"], ep["os_event"] = os_m, os_e
            pfs_m, pfs_e = progression_or_death(ep["pfs_months"], ep["pfs_event"], os_m, os_e)
            ep["pfs_months"], ep["pfs_event"] = pfs_m, pfs_e
            ep["pfs_ic_lower_months"], ep["pfs_ic_upper_months"] = pfs_interval_bounds(
                pfs_m, pfs_e, os_m, os_e, ep["pd_previous_scan_day"])
            y = res.output("tumour_total")
            with np.errstate(invalid="ignore", divide="ignore"):
                ep["best_tumour_change_pct"] = 100 * (np.cbrt(np.fmin.reduce(y, axis=1) / y[:, 0]) - 1)
            if s < keep:
                m = min(keep, e) - s
                for o in OUTPUTS:
                    kept[o][s:s + m] = res.output(o)[:m]
            parts.append(ep)
            if bar is not None:
                bar.set_postfix_str(arm, refresh=False)
                bar.update(e - s)
        df = pd.concat(parts, ignore_index=True)
        df.insert(1, "arm", arm)
        rows.append(df)
        samples[arm] = (times, kept)
    if bar is not None:
        bar.close()
    t2 = time.perf_counter()
    pdf = pd.concat(rows, ignore_index=True)
    covs = cov.drop(columns=[c for c in ("patient",) if c in cov.columns])
    covs.insert(0, "patient", np.arange(n))
    pdf = pdf.merge(covs, on="patient", how="left")
    pdf["arm"] = pd.Categorical(pdf["arm"], categories=list(trial.arms))
    pdf = pdf.sort_values(["arm", "patient"], kind="stable").reset_index(drop=True)
    summary = {"arms": {}, "control": spec.control, "seed": seed,
               "population": {"n_per_arm": n, "selection_acceptance_rate": acceptance},
               "patient_arms_resimulated_after_progression": n_resim}
    from ..engine.simulate import STATUS

    pdf["status"] = pd.Categorical(pdf["status"].map(lambda c: STATUS.get(int(c), f"code_{int(c)}")))
    by_arm = pdf.assign(arm=pdf["arm"].astype(str))
    comp = {ep: compare_arms(by_arm, spec.control, endpoint=ep) for ep in ("os", "pfs")}

    def hr_entry(ep: str, arm: str):
        c = comp[ep].get(arm)
        return ([c["hr"], c["hr_ci_low"], c["hr_ci_high"]] if c else [1.0, float("nan"), float("nan")],
                c["logrank_p"] if c else float("nan"))

    for arm in trial.arms:
        g = pdf[pdf["arm"] == arm]
        ok = g["status"].astype(str) == "ok"
        s_ = arm_summary(g[ok])  # failed patients are rows, excluded from statistics that cannot use them
        s_["n_run"] = int(len(g))
        s_["n_failed"] = int((~ok).sum())
        s_["n_analysed"] = int(ok.sum())
        s_["os_events"] = int(g.loc[ok, "os_event"].sum())
        s_["pfs_events"] = int(g.loc[ok, "pfs_event"].sum())
        s_["hr_os_vs_control"], s_["logrank_p"] = hr_entry("os", arm)
        s_["hr_pfs_vs_control"], s_["logrank_p_pfs"] = hr_entry("pfs", arm)
        s_["n"] = int(s_["n"])
        summary["arms"][arm] = s_
    # paired (counterfactual) effects: the same patients, the same random streams, in every arm
    from .survival import paired_effects

    summary["design"] = "paired"
    summary["paired"] = {}
    ctrl = pdf[pdf["arm"] == spec.control].set_index("patient").sort_index()
    ok_c = ctrl["status"].astype(str) == "ok"
    fu_months = trial.follow_up_days / DAYS_PER_MONTH
    deltas = {}
    for arm in trial.arms:
        if arm == spec.control:
            continue
        g = pdf[pdf["arm"] == arm].set_index("patient").sort_index()
        ok = ok_c & (g["status"].astype(str) == "ok")
        pe = paired_effects(ctrl["os_months"].where(ok), ctrl["os_event"], g["os_months"].where(ok), g["os_event"],
                            taus=(12.0, 24.0), follow_up=fu_months, seed=seed)
        deltas[arm] = pe.pop("deltas", np.empty(0))  # per patient: report figure, not summary.json
        summary["paired"][arm] = pe
    pdf = pdf.rename(columns={"bor": "best_response", "max_neutropenia_grade": "neutropenia_grade_max",
                              "nlr_d28": "nlr_day28"})
    return TrialResult(trial, pdf, summary, samples,
                       {"compile_or_load": t1 - t0, "simulate_and_endpoints": t2 - t1, "statistics": time.perf_counter() - t2},
                       paired_deltas=deltas)


def simulate_patients(cm, P, regs, times, opts, trial: Trial, seed: int, ids, scan_days):
    """Simulate patients ``ids`` (rows of ``P``) under ``regs`` and read their endpoints as a trial would:
    scans on ``scan_days`` with measurement error, and -- if the protocol stops treatment at progression
    -- a second pass for the patients who progressed while doses were still due, re-simulated with no
    dose from the progression scan on (their course up to that scan is unchanged, so the progression
    itself is too).  Returns ``(result, endpoints frame, number re-simulated)``."""
    from .endpoints import patient_endpoints
    from .scans import take_scans

    def endpoints(r):
        sc = take_scans(trial.scan_model, times, r.output("tumour_total"), r.output("met_burden"), scan_days, seed, ids)
        return patient_endpoints(r, assess_every_days=trial.assess_days, lab_every_days=trial.lab_days, scans=sc)

    res = simulate(cm, P, regs, times, OUTPUTS, options=opts)
    ep = endpoints(res)
    k_re = 0
    if trial.spec.stop_treatment_at_progression and res.dose_times is not None and res.dose_times.size:
        pdd = ep["pd_day"].to_numpy(float)
        with np.errstate(invalid="ignore"):
            due_after = (res.dose_times >= pdd[:, None] - 1e-9) & np.isin(res.dose_status, (1, 2))
        redo = np.isfinite(pdd) & due_after.any(axis=1) & (res.status == 0)
        k_re = int(redo.sum())
        if k_re:
            r2 = simulate(cm, P[redo], regs, times, OUTPUTS, options=opts, stop_days=pdd[redo])
            for name in ("values", "status", "dose_factors", "dose_times", "dose_status", "steps"):
                getattr(res, name)[redo] = getattr(r2, name)
            ep = endpoints(res)
    ep["patient"] = np.asarray(ids)
    return res, ep, k_re


def _report_extras(result: TrialResult) -> dict:
    """What the report needs beyond the summary: cycles to shade, per-patient paired OS differences,
    and the methods text (model, indication, what is calibrated and what is a prediction)."""
    trial = result.trial
    spec = trial.spec
    cycles = {arm: sorted({(r.start + c * r.cycle_length, r.start + (c + 1) * r.cycle_length)
                           for r in regs for c in range(r.cycles)}) for arm, regs in trial.arms.items()}
    fu = trial.follow_up_days / DAYS_PER_MONTH
    ind = trial.indication
    methods = {
        "model": f"{trial.model.name} ({spec.species}): mechanistic host-response model (death modes, IL-1alpha and "
                 "other cytokines, marrow, immune cells, stem-like repopulation, metastasis); see docs/architecture.md",
        "indication": ({"name": ind.name, "source": "studies/data/indications.csv"} if ind is not None else "none"),
        "calibrated": ([f"{k}: {v}" for k, v in ind.sources.items() if v.strip().lower().startswith("calibrated")]
                       if ind is not None else []) or ["nothing: no indication layer, every arm is a model prediction"],
        "predictions": ["Every non-control arm (IL-1alpha blockade, caspase-1 inhibition, timing): model predictions, "
                        "not calibrated to any human trial of these combinations.",
                        "Paired effects compare the same virtual patients with the same random OS draws in each arm."],
        "assumptions": ["The human IL-1alpha axis is weak in the model (serum IL-1alpha near detection, mouse-fitted "
                        "IL-1R1 EC50): blockade effects are likely underestimated or uncertain (issue 9).",
                        "Held doses are omitted, not delayed; treatment does not stop at progression (not yet modelled).",
                        "Single parameter values; parameter uncertainty is not yet propagated."],
        "endpoints": [f"RECIST 1.1 from the simulated tumour volume (one sphere-equivalent target lesion) at scans every "
                      f"{trial.assess_days:g} days, without measurement error; new lesions when metastatic burden "
                      "exceeds 0.5 cm3.",
                      "PFS: first progression at a scan or death; median PFS falls on scan dates.",
                      f"OS: Weibull hazard x week-8 tumour-size ratio, baseline size and time-varying NLR; "
                      f"administrative censoring at {fu:g} months.",
                      f"CTCAE v5 neutropenia on laboratory counts every {trial.lab_days:g} days."],
    }
    return {"cycles": cycles, "paired_deltas": result.paired_deltas, "methods": methods}


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _json_safe(x.item())
    return x


def write_trial(result: TrialResult, out: str | Path) -> dict[str, Path]:
    """patients.parquet, summary.json, report.html, manifest.json -- atomically."""
    from ..outputs import write_atomically
    from ..report.trial_report import render

    def write(tmp: Path) -> None:
        result.patients.to_parquet(tmp / "patients.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(_json_safe(result.summary), indent=2))
        manifest = _json_safe(result.manifest())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        (tmp / "report.html").write_text(render(result.trial.spec.name, result.trial.spec.description,
                                                result.patients, result.summary, result.samples, manifest,
                                                **_report_extras(result)))

    return write_atomically(out, write)
