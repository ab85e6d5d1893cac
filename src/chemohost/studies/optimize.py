"""Timing and sequence optimisation: ``chemohost optimize STUDY.yaml --out DIR``.

When, how long, how much and how often to give the blocker (IL-1alpha antibody, caspase-1
inhibitor, ...) relative to chemotherapy, and with which chemotherapy schedule variant, to maximise a
declared objective under declared toxicity constraints -- with optuna:

* ``sampler: tpe`` (one objective; constraints through optuna's ``constraints_func``), or
* ``sampler: nsga2`` (two objectives, benefit vs toxicity: the Pareto front).

Every candidate is evaluated on the *same* virtual patients of the base trial with the same random
streams as the control arm (common random numbers), so differences between candidates are effects,
not noise.  Metrics per candidate (paired against the control arm, over ``patients`` patients):

* ``rmst_gain``: mean over patients of the expected restricted mean OS gain to ``tau`` (the trial's
  OS link integrated deterministically, :func:`studies.study.expected_rmst`), months;
* ``pfs_6m``: share progression-free at 6 months (scans as the trial takes them); ``orr``, ``dcr``;
* ``grade4_neutropenia``, ``grade3plus_neutropenia`` (CTCAE on the trial's laboratory days),
  ``dose_intensity``.

The report gives the best regimen(s), the history, the Pareto front (NSGA-II), and how much better
the best is than each shipped regimen (the base file's other arms) with a paired bootstrap 95% CI over
patients.  Checkpoints record each evaluated candidate; ``--resume`` replays the seeded sampler
through them (same asks, same answers) and continues.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ..errors import ScenarioError
from ..scenario import RegimenSpec, _Strict, build_regimens, quantity_field
from ..spec_types import Quantity, count
from .study import BaseSetup, Study, StudyResult, StudySpec, expected_rmst, register

#: virtual patients per cluster task when a candidate is simulated on a Dask cluster
CLUSTER_CHUNK = 100
METRICS = ("rmst_gain", "pfs_6m", "orr", "dcr", "grade4_neutropenia", "grade3plus_neutropenia", "dose_intensity")
MAXIMISE = {"rmst_gain": True, "pfs_6m": True, "orr": True, "dcr": True, "grade4_neutropenia": False,
            "grade3plus_neutropenia": False, "dose_intensity": True}


class RangeQ(_Strict):
    low: Quantity
    high: Quantity
    step: Quantity


class Choices(_Strict):
    choices: list[Quantity] = Field(min_length=1, max_length=50)


class BlockerSpec(_Strict):
    drug: str
    route: Literal["iv", "ip", "sc", "oral"] = "iv"
    infusion: Quantity | None = None
    times_of_day: list[Quantity] | None = Field(None, max_length=24)
    dose: Quantity | Choices
    interval: Quantity | Choices = Field(description="time between administrations (or days of dosing)")
    offset: Quantity | RangeQ = Field("0 day", description="blocker start relative to the first chemotherapy dose; "
                                                           "negative = before chemotherapy")
    duration: Quantity | RangeQ = Field(description="how long the blocker is given")


class ConstraintSpec(_Strict):
    metric: Literal[METRICS]  # type: ignore[valid-type]
    max: float | None = None
    min: float | None = None
    over_control: bool = Field(False, description="bound the difference to the control arm (same patients) instead "
                                                  "of the value, e.g. grade-4 neutropenia at most 5 points above "
                                                  "control")


class OptimizeSpec(StudySpec):
    study: Literal["optimize"]
    base: str = Field(description="base trial file (patients, streams, indication, follow-up)")
    control: str = Field(description="the comparator arm of the base file")
    schedules: dict[str, list[RegimenSpec]] | None = Field(
        None, max_length=20, description="chemotherapy variants (default: the control arm's regimens)")
    blocker: BlockerSpec
    objective: Literal[METRICS] = "rmst_gain"  # type: ignore[valid-type]
    toxicity: Literal[METRICS] = "grade4_neutropenia"  # type: ignore[valid-type]
    tau: Quantity = "12 month"
    constraints: list[ConstraintSpec] = Field(default_factory=list, max_length=10)
    sampler: Literal["tpe", "nsga2"] = "tpe"
    trials: count(1, 100_000) = 100
    patients: count(1, 100_000) = 300
    compare: list[str] | None = Field(None, description="arms of the base file to evaluate as shipped regimens "
                                                        "(default: every arm but the control)")
    bootstrap: count(100, 100_000) = 1000


def _q_days(q, file, fld) -> float:
    return quantity_field(q, "day", file, fld)


@register
class OptimizeStudy(Study):
    kind = "optimize"
    Spec = OptimizeSpec

    def resolve(self) -> None:
        s, col, f = self.spec, self.collector, self.source
        self.base = BaseSetup.load(s.base, self.base_dir, f)
        trial = self.base.trial
        if s.control not in trial.arms:
            col.add("control", f"'{s.control}' is not an arm of the base trial; arms: {', '.join(trial.arms)}")
        drugs = trial.model.drugs
        b = s.blocker
        if b.drug not in drugs:
            col.add("blocker.drug", f"unknown drug '{b.drug}'; this model has: {', '.join(sorted(drugs))}")
        self.space: dict[str, tuple] = {}
        for name in ("dose", "interval", "offset", "duration"):
            v = getattr(b, name)
            fld = f"blocker.{name}"
            with col.check(fld):
                if isinstance(v, Choices):
                    vals = [v_ for v_ in v.choices]
                    if name != "dose":
                        vals = [_q_days(x, f, fld) for x in vals]
                    self.space[name] = ("choice", vals)
                elif isinstance(v, RangeQ):
                    lo, hi, st = (_q_days(x, f, fld) for x in (v.low, v.high, v.step))
                    if not (st > 0 and lo <= hi):
                        raise ScenarioError(f"needs low <= high and step > 0, got {lo:g}, {hi:g}, {st:g} days")
                    self.space[name] = ("range", (lo, hi, st))
                else:
                    self.space[name] = ("fixed", v if name == "dose" else _q_days(v, f, fld))
        for name in ("interval", "duration"):
            kind, vals = self.space.get(name, ("fixed", 1.0))
            low = min(vals) if kind == "choice" else (vals[0] if kind == "range" else vals)
            if not low > 0:
                col.add(f"blocker.{name}", "must be > 0")
        self.schedules: dict[str, list] = {}
        if s.schedules:
            for name, regs in s.schedules.items():
                with col.check(f"schedules.{name}"):
                    self.schedules[name] = build_regimens(regs, drugs, f, f"schedules.{name}")
        elif s.control in trial.arms:
            self.schedules = {s.control: trial.arms[s.control]}
        self.compare = s.compare if s.compare is not None else [a for a in trial.arms if a != s.control]
        for a in self.compare:
            if a not in trial.arms:
                col.add("compare", f"'{a}' is not an arm of the base trial")
        with col.check("tau"):
            self.tau = _q_days(s.tau, f, "tau")
            if not 0 < self.tau <= trial.follow_up_days:
                raise ScenarioError(f"tau must be > 0 and within the base trial's follow-up "
                                    f"({trial.follow_up_days:g} days)")
        if s.sampler == "nsga2" and s.objective == s.toxicity:
            col.add("toxicity", "the second objective of nsga2 must differ from 'objective'")
        for i, c in enumerate(s.constraints):
            if c.max is None and c.min is None:
                col.add(f"constraints[{i}]", "give 'max' or 'min'")
        # every candidate must be buildable: try the corners of the space now, not after hours
        if not col.lines:
            for corner in self._corners():
                with col.check("blocker"):
                    self.candidate_regimens(corner)

    def _corners(self):
        out = []
        for pick in (0, -1):
            c = {}
            for name, (kind, vals) in self.space.items():
                c[name] = vals[pick] if kind == "choice" else (vals[0] if pick == 0 else vals[1]) if kind == "range" \
                    else vals
            c["schedule"] = list(self.schedules)[pick]
            out.append(c)
        return out

    # -- candidates -------------------------------------------------------------------------------------
    def candidate_regimens(self, c: dict) -> list:
        """Chemotherapy variant + the blocker, as Regimens; time 0 = randomisation = the first dose."""
        b = self.spec.blocker
        chemo = [r for r in self.schedules[c["schedule"]]]
        offset, interval, duration = float(c["offset"]), float(c["interval"]), float(c["duration"])
        shift = max(0.0, -offset)
        import dataclasses

        chemo = [dataclasses.replace(r, start=r.start + shift) for r in chemo]
        cycles = max(1, int(math.ceil(duration / interval - 1e-9)))
        spec = RegimenSpec(drug=b.drug, dose=c["dose"], route=b.route, infusion=b.infusion, days=[1],
                           cycle_length=f"{interval!r} day", cycles=cycles, start=f"{max(0.0, offset)!r} day",
                           times_of_day=b.times_of_day)
        blocker = build_regimens([spec], self.base.trial.model.drugs, self.source, "blocker")
        return chemo + blocker

    def suggest(self, trial) -> dict:
        c = {}
        for name, (kind, vals) in self.space.items():
            if kind == "choice":
                c[name] = trial.suggest_categorical(name, vals)
            elif kind == "range":
                lo, hi, st = vals
                k = trial.suggest_int(name + "_steps", 0, int(round((hi - lo) / st)))
                c[name] = lo + k * st
            else:
                c[name] = vals
        c["schedule"] = trial.suggest_categorical("schedule", list(self.schedules)) if len(self.schedules) > 1 \
            else list(self.schedules)[0]
        return c

    # -- evaluation ------------------------------------------------------------------------------------
    def _setup(self, posterior=None):
        from .scans import scan_schedule
        from .streams import os_exponentials
        from .study import posterior_population
        from .trial_runner import sample_trial_patients, setup_trial

        trial, n = self.base.trial, self.spec.patients
        seed = trial.spec.seed
        self._st = setup_trial(trial, seed)
        _, self._P, _, _ = sample_trial_patients(trial, n, seed)
        if posterior is not None:
            self._P, self._draws = posterior_population(self.base, self._P, posterior, self.spec.seed, self.source)
        self._eos = os_exponentials(seed, n)
        self._sched = scan_schedule(trial.scan_model, trial.follow_up_days, seed, np.arange(n))

    def per_patient(self, regs, executor=None) -> pd.DataFrame:
        """(N,) per-patient metric inputs of one regimen list on the study's patients: in this process, or on
        a cluster in blocks of ``CLUSTER_CHUNK`` patients (the same rows: each patient's simulation and random
        streams depend on the patient alone)."""
        from .cluster import arm_chunk, blocks

        n, trial = self.spec.patients, self.base.trial
        if executor is None:
            return self._frame(*arm_chunk(trial, self._st, regs, self._P, np.arange(n), self._sched, self._eos))
        items = [(s, (regs, self._P[s:e], np.arange(s, e), self._sched[s:e], self._eos[s:e]))
                 for s, e in blocks(n, CLUSTER_CHUNK)]
        parts = {s: self._frame(res, ep) for s, (res, ep) in executor.map_trial(trial, self._st, arm_chunk, items)}
        return pd.concat([parts[s] for s in sorted(parts)], ignore_index=True)

    def _frame(self, res, ep) -> pd.DataFrame:
        ok = ep["status"].to_numpy() == 0
        return pd.DataFrame({
            "ok": ok, "rmst": np.where(ok, expected_rmst(res, self.base, self.tau), np.nan),
            "pfs6": np.where(ok, ep["pfs_months"].to_numpy(float) > 6.0, np.nan),
            "resp": np.where(ok, ep["bor"].astype(str).isin(["CR", "PR"]), np.nan),
            "dc": np.where(ok, ep["bor"].astype(str).isin(["CR", "PR", "SD"]), np.nan),
            "g4": np.where(ok, ep["max_neutropenia_grade"].to_numpy(float) >= 4, np.nan),
            "g3": np.where(ok, ep["max_neutropenia_grade"].to_numpy(float) >= 3, np.nan),
            "di": np.where(ok, ep["dose_intensity"].to_numpy(float), np.nan)})

    def metrics(self, pp: pd.DataFrame) -> dict:
        c = self._control
        return {"rmst_gain": float(np.nanmean(pp["rmst"] - c["rmst"])), "pfs_6m": float(np.nanmean(pp["pfs6"])),
                "orr": float(np.nanmean(pp["resp"])), "dcr": float(np.nanmean(pp["dc"])),
                "grade4_neutropenia": float(np.nanmean(pp["g4"])),
                "grade3plus_neutropenia": float(np.nanmean(pp["g3"])),
                "dose_intensity": float(np.nanmean(pp["di"])), "n_failed": int((~pp["ok"]).sum())}

    def run(self, *, progress: bool = False, checkpoint=None, posterior=None, executor=None) -> StudyResult:
        """``executor``: where each candidate's patients are simulated (:mod:`chemohost.studies.cluster`; default
        here).  Candidates are asked and told one at a time either way, so a cluster run follows the same
        optimisation path and gives the same results as an in-process run for the same seed."""
        import optuna

        from .checkpoint import Checkpoint

        s = self.spec
        t0 = time.perf_counter()
        self._setup(posterior)
        fp = self.fingerprint()
        if posterior is not None:
            fp["posterior"] = [str(posterior.folder), posterior.manifest.get("problem_sha256")]
        ck = checkpoint(fp) if checkpoint else Checkpoint(None, {})
        done = ck.load("control")
        self._control = done[0] if done else ck.save("control", self.per_patient(self.base.trial.arms[s.control],
                                                                                  executor))
        self._control_metrics = self.metrics(self._control)
        shipped = {}
        for a in self.compare:
            key = "shipped-" + hashlib.sha256(a.encode()).hexdigest()[:16]
            d = ck.load(key)
            shipped[a] = d[0] if d else ck.save(key, self.per_patient(self.base.trial.arms[a], executor))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        cons = [c for c in s.constraints]

        def constraints_func(trial):
            return trial.user_attrs.get("constraints", [0.0] * len(cons))

        # optuna >= 5: constraints set on the trial (Trial.set_constraint); before: a constraints_func
        new_api = hasattr(optuna.trial.Trial, "set_constraint")
        cf = constraints_func if cons and not new_api else None
        if s.sampler == "tpe":
            sampler = optuna.samplers.TPESampler(seed=s.seed, constraints_func=cf,
                                                 n_startup_trials=min(10, max(2, s.trials // 5)))
            study = optuna.create_study(direction="maximize" if MAXIMISE[s.objective] else "minimize", sampler=sampler)
        else:
            sampler = optuna.samplers.NSGAIISampler(seed=s.seed, constraints_func=cf,
                                                    population_size=min(20, max(4, s.trials // 5)))
            study = optuna.create_study(directions=["maximize" if MAXIMISE[s.objective] else "minimize",
                                                    "maximize" if MAXIMISE[s.toxicity] else "minimize"],
                                        sampler=sampler)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=s.trials, unit="candidate", desc=f"{s.name} ({s.sampler})", file=sys.stderr,
                       mininterval=0.5, dynamic_ncols=True)
        t1 = time.perf_counter()
        rows, cache, pps = [], {}, {}
        for k in range(s.trials):
            tr = study.ask()
            c = self.suggest(tr)
            key = json.dumps(c, sort_keys=True, default=str)
            got = ck.load(f"cand-{k}")
            if got is not None:
                pp = got[0]
                if "key" in pp.columns and len(pp) and pp["key"].iloc[0] != key:
                    raise ScenarioError("--resume: the checkpointed candidates differ from the sampler's replay (the "
                                        "study or chemohost changed); run with --force to start over", file=self.source)
            elif key in cache:
                pp = cache[key]
            else:
                pp = self.per_patient(self.candidate_regimens(c), executor)
                pp = ck.save(f"cand-{k}", pp.assign(key=key))
            cache[key] = pp
            pps[k] = pp
            m = self.metrics(pp)
            viol = []
            for cs in cons:
                v = m[cs.metric] - (self._control_metrics[cs.metric] if cs.over_control else 0.0)
                viol.append(((v - cs.max) if cs.max is not None else 0.0) + ((cs.min - v) if cs.min is not None else 0.0))
            tr.set_user_attr("constraints", viol)
            if cons and new_api:
                for i, v in enumerate(viol):
                    tr.set_constraint(f"c{i}_{cons[i].metric}", float(v))
            feasible = all(v <= 0 for v in viol)
            vals = m[s.objective] if s.sampler == "tpe" else [m[s.objective], m[s.toxicity]]
            study.tell(tr, vals)
            rows.append({"candidate": k, **{kk: v for kk, v in c.items()}, **m, "feasible": feasible,
                         "violation": float(sum(max(v, 0.0) for v in viol))})
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        t2 = time.perf_counter()
        hist = pd.DataFrame(rows)
        hist["dose"] = hist["dose"].astype(str)
        summary, comparison, front = self.summarise(study, hist, pps, shipped)
        if posterior is not None:
            summary["posterior"] = {"fit_folder": str(posterior.folder), "parameters": posterior.parameters,
                                    "note": "each virtual patient carries its own posterior draw (a posterior-"
                                            "predictive population): metrics average over parameter uncertainty"}
        if ck.resumed:
            summary["resumed_chunks"] = ck.resumed
        return StudyResult(self, {"candidates": hist, "comparison": comparison, "pareto": front}, summary,
                           {"setup": t1 - t0, "optimise": t2 - t1, "analyse": time.perf_counter() - t2})

    def _paired_ci(self, a: pd.DataFrame, b: pd.DataFrame, metric: str):
        """Paired bootstrap 95% CI of metric(a) - metric(b) over the same patients."""
        col = {"rmst_gain": "rmst", "pfs_6m": "pfs6", "orr": "resp", "dcr": "dc", "grade4_neutropenia": "g4",
               "grade3plus_neutropenia": "g3", "dose_intensity": "di"}[metric]
        d = (a[col].to_numpy(float) - b[col].to_numpy(float))
        d = d[np.isfinite(d)]
        rng = np.random.default_rng(self.spec.seed)
        idx = rng.integers(0, d.size, size=(self.spec.bootstrap, d.size))
        bs = d[idx].mean(axis=1)
        return float(d.mean()), float(np.quantile(bs, 0.025)), float(np.quantile(bs, 0.975))

    def summarise(self, study, hist, pps, shipped):
        s = self.spec
        asc = not MAXIMISE[s.objective]
        feas = hist[hist["feasible"]]
        best_row = (feas if len(feas) else hist).sort_values([s.objective, "candidate"], ascending=[asc, True]).iloc[0]
        best_pp = pps[int(best_row["candidate"])]
        comp = []
        for a, pp in shipped.items():
            m = self.metrics(pp)
            est, lo, hi = self._paired_ci(best_pp, pp, s.objective)
            comp.append({"regimen": a, **m, f"best_minus_this_{s.objective}": est, "ci_low": lo, "ci_high": hi})
        comparison = pd.DataFrame(comp)
        front = pd.DataFrame()
        if s.sampler == "nsga2":
            ids = {t.number for t in study.best_trials}
            front = hist[hist["candidate"].isin(ids)].sort_values(s.objective)
        best = {k: (v.item() if hasattr(v, "item") else v) for k, v in best_row.items() if k != "key"}
        summary = {"objective": s.objective, "direction": "maximize" if MAXIMISE[s.objective] else "minimize",
                   "sampler": s.sampler, "trials": s.trials, "patients": s.patients, "seed": s.seed,
                   "feasible_candidates": int(hist["feasible"].sum()), "distinct_candidates":
                       int(hist.drop_duplicates([c for c in ("schedule", "dose", "interval", "offset", "duration")
                                                 if c in hist]).shape[0]),
                   "best": best, "constraints": [c.model_dump() for c in s.constraints],
                   "control": {"regimen": s.control, **self._control_metrics},
                   "best_vs_shipped": comparison.to_dict("records")}
        return summary, comparison, front

    def write(self, result: StudyResult, folder: Path) -> None:
        from ..outputs import json_safe
        from ..report.study_report import render_optimize

        for name, df in result.tables.items():
            df.to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "summary.json").write_text(json.dumps(json_safe(result.summary), indent=2, default=str))
        (folder / "report.html").write_text(render_optimize(result))
