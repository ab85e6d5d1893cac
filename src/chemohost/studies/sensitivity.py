"""Global sensitivity analysis: ``chemohost sensitivity STUDY.yaml --out DIR``.

Which unknowns decide an outcome?  The study varies chosen parameters of the base trial's typical
patient over their declared ranges and measures how much of each readout's variance each one
explains, with SALib:

* ``sobol`` (Saltelli sampling, N (2D + 2) runs): first-order S1 and total-order ST indices with
  bootstrap confidence intervals; a convergence plot over nested prefixes of the sample (N/8 .. N:
  each prefix of the Saltelli matrix is itself a Saltelli design, so no extra runs);
* ``morris`` (elementary effects, N (D + 1) runs): mu* with CI and sigma, for screening many
  parameters;
* ``fast`` (extended FAST, N D runs): first- and total-order indices.

Ranges (``parameters:``): ``bounds`` (default: the parameter table's plausible range for the species,
or ``lower``/``upper`` given), ``iiv`` (typical x exp(+/- 2 omega) of the table or indication CV), or
``posterior`` (the 2.5-97.5% range of a fit's posterior draws, with ``--posterior FIT``).  ``scale:
log`` samples uniformly on the log scale (the default when the range spans a decade or more).  With
``--posterior``, the fit's other estimated model parameters are set to their posterior medians.

The sample matrix goes through the engine in chunks (one batched call per arm and chunk, checkpointed
for ``--resume``).  Parameters whose total index exceeds ``threshold`` and whose source is an
assumption are flagged: what to measure first.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ..errors import ScenarioError
from ..scenario import _Strict
from ..spec_types import count
from .study import (BaseSetup, ReadoutSpec, Study, StudyResult, StudySpec, arm_values, combine, parameter_field_check,
                    readout_outputs, register, resolve_readouts)


class RangeSpec(_Strict):
    range: Literal["bounds", "iiv", "posterior"] = "bounds"
    lower: float | None = None
    upper: float | None = None
    scale: Literal["lin", "log"] | None = None


class SensitivitySpec(StudySpec):
    study: Literal["sensitivity"]
    base: str = Field(description="base trial file (its model, species, indication, arms, follow-up)")
    method: Literal["sobol", "morris", "fast"] = "sobol"
    samples: count(4, 1_000_000) = Field(512, description="N: sobol N(2D+2), morris N(D+1), fast N*D runs")
    second_order: bool = False
    morris_levels: count(2, 20) = 4
    parameters: dict[str, RangeSpec | None] = Field(min_length=1, max_length=200)
    readouts: list[ReadoutSpec] = Field(min_length=1, max_length=100)
    threshold: float = Field(0.1, ge=0, le=1, description="flag parameters whose total index (sobol/fast) or "
                                                         "normalised mu* (morris) exceeds this")
    chunk_size: count(1, 100_000) = 2000
    bootstrap: count(10, 10_000) = 200


def salib_indices(method: str, problem: dict, X: np.ndarray, y: np.ndarray, *, seed: int = 0, bootstrap: int = 200,
                  second_order: bool = False, levels: int = 4, samples: int | None = None):
    """SALib indices of one output ``y`` (rows of the sample ``X``): ``(rows, convergence rows)``, one row per
    parameter (S1/ST with 95% bootstrap half-widths, or Morris mu*/sigma); for Sobol also the indices on
    nested prefixes of the Saltelli design (N/8, N/4, N/2, N)."""
    from SALib.analyze import fast, morris, sobol

    names = problem["names"]
    if np.std(y) == 0:
        return ([{"parameter": pn, "S1": 0.0, "S1_conf": 0.0, "ST": 0.0, "ST_conf": 0.0, "mu_star": 0.0,
                  "mu_star_conf": 0.0, "sigma": 0.0, "mu_star_norm": 0.0, "note": "readout constant"} for pn in names],
                [])
    rows, conv = [], []
    if method == "sobol":
        res = sobol.analyze(problem, y, calc_second_order=second_order, num_resamples=bootstrap, conf_level=0.95,
                            seed=seed)
        rows = [{"parameter": pn, "S1": res["S1"][j], "S1_conf": res["S1_conf"][j], "ST": res["ST"][j],
                 "ST_conf": res["ST_conf"][j]} for j, pn in enumerate(names)]
        block = (2 * len(names) + 2) if second_order else (len(names) + 2)
        nn = samples or y.size // block
        for m in sorted({max(8, nn // 8), max(8, nn // 4), max(8, nn // 2), nn}):
            if m > nn:
                continue
            sub = sobol.analyze(problem, y[: m * block], calc_second_order=second_order, num_resamples=bootstrap,
                                conf_level=0.95, seed=seed)
            conv += [{"parameter": pn, "N": m, "runs": m * block, "ST": sub["ST"][j], "ST_conf": sub["ST_conf"][j],
                      "S1": sub["S1"][j]} for j, pn in enumerate(names)]
    elif method == "morris":
        res = morris.analyze(problem, X, y, conf_level=0.95, num_resamples=bootstrap, num_levels=levels, seed=seed)
        top = max(float(np.nanmax(res["mu_star"])), 1e-300)
        rows = [{"parameter": pn, "mu_star": res["mu_star"][j], "mu_star_conf": res["mu_star_conf"][j],
                 "sigma": res["sigma"][j], "mu_star_norm": res["mu_star"][j] / top} for j, pn in enumerate(names)]
    else:
        import warnings

        with warnings.catch_warnings():  # said in the rows instead: SALib issue 649
            warnings.simplefilter("ignore", UserWarning)
            res = fast.analyze(problem, y, num_resamples=bootstrap, conf_level=0.95, seed=seed)
        rows = [{"parameter": pn, "S1": res["S1"][j], "S1_conf": res["S1_conf"][j], "ST": res["ST"][j],
                 "ST_conf": res["ST_conf"][j], "note": "FAST bootstrap CIs are indicative only (SALib issue 649)"}
                for j, pn in enumerate(names)]
    return rows, conv


@register
class SensitivityStudy(Study):
    kind = "sensitivity"
    Spec = SensitivitySpec

    def resolve(self) -> None:
        s, col = self.spec, self.collector
        self.base = BaseSetup.load(s.base, self.base_dir, self.source)
        parameter_field_check(list(s.parameters), self.base, col, "parameters")
        self.readouts = resolve_readouts(s.readouts, self.base, col)
        self.ranges = {}
        for name, r in s.parameters.items():
            if name not in self.base.names:
                continue
            r = r or RangeSpec()
            f = f"parameters.{name}"
            typ = float(self.base.typical[self.base.names.index(name)])
            lo_t, hi_t = self.base.bounds[name]
            if r.range == "iiv":
                cv = self.base.cvs.get(name) or 0.0
                if not cv > 0:
                    col.add(f, "range 'iiv' needs an inter-individual CV in the parameter table or indication; give "
                               "lower/upper instead")
                    continue
                w = 2 * math.sqrt(math.log1p(cv ** 2))
                lo, hi, scale = typ * math.exp(-w), typ * math.exp(w), "log"
            elif r.range == "posterior":
                lo = hi = float("nan")  # set from the posterior at run time
                scale = r.scale or "log"
            else:
                lo = r.lower if r.lower is not None else lo_t
                hi = r.upper if r.upper is not None else hi_t
                scale = r.scale or ("log" if lo > 0 and hi / lo >= 10 else "lin")
            if r.range != "posterior":
                if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                    col.add(f, f"needs lower < upper, got {lo:g} and {hi:g} ({self.base.trial.model.name} table "
                               f"bounds {lo_t:g}-{hi_t:g})")
                    continue
                if scale == "log" and lo <= 0:
                    col.add(f, f"scale log needs a lower bound > 0, got {lo:g}; use scale lin")
                    continue
            self.ranges[name] = [lo, hi, scale, r.range]
        if s.method == "sobol" and s.samples & (s.samples - 1):
            col.add("samples", f"sobol needs a power of 2 (Saltelli/Sobol sequence balance), got {s.samples}; e.g. "
                               f"{2 ** round(math.log2(s.samples))}")
        if s.method == "fast" and s.samples <= 4 * 4 ** 2:
            col.add("samples", "fast needs samples > 64 (4 M^2 with M = 4 harmonics)")
        d = len(s.parameters)
        runs = self.n_runs(d)
        if runs * len(self.arms_needed()) > 20_000_000:
            col.add("samples", f"{runs:,} runs x {len(self.arms_needed())} arm(s) exceeds 20,000,000 simulations")

    def arms_needed(self) -> list[str]:
        arms = []
        for r in getattr(self, "readouts", []):
            for a in (r.arm, r.ref):
                if a is not None and a not in arms:
                    arms.append(a)
        return arms

    def n_runs(self, d: int) -> int:
        s = self.spec
        return {"sobol": s.samples * (2 * d + 2 if s.second_order else d + 2), "morris": s.samples * (d + 1),
                "fast": s.samples * d}[s.method]

    # -- running -------------------------------------------------------------------------------------
    def problem(self) -> dict:
        names = list(self.ranges)
        bounds = [[math.log10(lo), math.log10(hi)] if sc == "log" else [lo, hi] for lo, hi, sc, _ in self.ranges.values()]
        return {"num_vars": len(names), "names": names, "bounds": bounds}

    def _apply_posterior(self, posterior, notes: list[str]) -> dict:
        """Ranges 'posterior' from the draws; other estimated model parameters at their medians."""
        fixed = {}
        if posterior is None:
            missing = [n for n, r in self.ranges.items() if r[3] == "posterior"]
            if missing:
                raise ScenarioError(f"parameters {', '.join(missing)} have range 'posterior': give --posterior FIT",
                                    file=self.source, field="parameters")
            return fixed
        if posterior.model != self.base.trial.model.name or posterior.species != self.base.trial.spec.species:
            raise ScenarioError(f"the fit in {posterior.folder} is for {posterior.model} ({posterior.species}); the "
                                f"base trial uses {self.base.trial.model.name}", file=self.source, field="base")
        for n in posterior.parameters:
            v = posterior.draws[n].to_numpy(float)
            if n in self.ranges and self.ranges[n][3] == "posterior":
                lo, hi = np.quantile(v, [0.025, 0.975])
                self.ranges[n][0], self.ranges[n][1] = float(lo), float(hi)
            elif n not in self.ranges:
                fixed[n] = float(np.median(v))
        for n, r in self.ranges.items():
            if r[3] == "posterior" and not math.isfinite(r[0]):
                raise ScenarioError(f"parameter {n} has range 'posterior' but the fit in {posterior.folder} did not "
                                    "estimate it", file=self.source, field=f"parameters.{n}")
        if fixed:
            notes.append("posterior medians used for " + ", ".join(f"{k} = {v:.4g}" for k, v in fixed.items()))
        return fixed

    def sample(self) -> np.ndarray:
        from SALib.sample import fast_sampler, morris, sobol

        p, s = self.problem(), self.spec
        if s.method == "sobol":
            X = sobol.sample(p, s.samples, calc_second_order=s.second_order, seed=s.seed)
        elif s.method == "morris":
            X = morris.sample(p, s.samples, num_levels=s.morris_levels, seed=s.seed)
        else:
            X = fast_sampler.sample(p, s.samples, seed=s.seed)
        return X

    def values(self, X: np.ndarray) -> np.ndarray:
        """Sample matrix (on the SALib scale) -> parameter values."""
        V = np.array(X, dtype=float)
        for j, (_, _, sc, _) in enumerate(self.ranges.values()):
            if sc == "log":
                V[:, j] = 10.0 ** V[:, j]
        return V

    def run(self, *, progress: bool = False, checkpoint=None, posterior=None, executor=None) -> StudyResult:
        from ..engine.simulate import SolverOptions
        from .checkpoint import Checkpoint
        from .cluster import InProcess, blocks, simulate_remote

        notes: list[str] = []
        t0 = time.perf_counter()
        fixed = self._apply_posterior(posterior, notes)
        X = self.sample()
        V = self.values(X)
        trial, base = self.base.trial, self.base
        opts = SolverOptions.from_fields(trial.spec.solver)
        grid = base.grid([r.time for r in self.readouts])
        outputs = readout_outputs(self.readouts)
        typical = base.typical.copy()
        for k, v in fixed.items():
            typical[base.names.index(k)] = v
        cols = [base.names.index(n) for n in self.ranges]
        ck = checkpoint({**self.fingerprint(), "posterior_fixed": fixed,
                         "ranges": {k: v[:3] for k, v in self.ranges.items()}}) if checkpoint else Checkpoint(None, {})
        n, chunk = X.shape[0], self.spec.chunk_size
        arms = self.arms_needed()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n * len(arms), unit="run", desc=f"{self.spec.name} ({self.spec.method})", file=sys.stderr,
                       mininterval=0.5, dynamic_ncols=True)
        t1 = time.perf_counter()
        ex = executor or InProcess()
        frames, items = {}, []
        for s, e in blocks(n, chunk):
            done = ck.load(f"chunk-{s}")
            if done is not None:
                frames[s] = done[0]
                if bar is not None:
                    bar.update((e - s) * len(arms))
                continue
            P = np.repeat(typical[None, :], e - s, axis=0)
            P[:, cols] = V[s:e]
            items += [((s, arm), (trial.model.name, trial.spec.solver.closed_form, P, trial.arms[arm], grid, outputs,
                                  opts)) for arm in arms]
        got: dict = {}
        for (s, arm), res in ex.map(simulate_remote, items):
            got.setdefault(s, {})[arm] = res
            if bar is not None:
                bar.update(res.status.size)
            if len(got[s]) == len(arms):  # every arm of this chunk is in: one checkpointed frame
                raw, status = {}, np.zeros(res.status.size, dtype=np.int64)
                for a in arms:
                    status = np.maximum(status, got[s][a].status)
                    raw.update(arm_values(self.readouts, a, got[s][a], base))
                frame = pd.DataFrame(combine(self.readouts, raw))
                frame.insert(0, "status", status)
                frame.insert(0, "run", np.arange(s, s + status.size))
                frames[s] = ck.save(f"chunk-{s}", frame)
                del got[s]
        parts = [frames[s] for s, _ in blocks(n, chunk)]
        if bar is not None:
            bar.close()
        t2 = time.perf_counter()
        runs = pd.concat(parts, ignore_index=True)
        for j, name in enumerate(self.ranges):
            runs.insert(2 + j, name, V[:, j])
        failed = runs["status"].to_numpy() != 0
        n_failed = int(failed.sum())
        if n_failed:
            notes.append(f"{n_failed} of {n} runs failed in the solver; their readouts are replaced by the mean of "
                         "the successful runs before the analysis (SALib needs every row)")
        indices, convergence = self.analyse(X, runs, failed)
        summary = self.summarise(indices)
        summary.update({"runs": int(n), "arms_simulated": arms, "runs_failed": n_failed, "method": self.spec.method,
                        "samples": self.spec.samples, "seed": self.spec.seed,
                        "ranges": {k: {"lower": v[0], "upper": v[1], "scale": v[2], "from": v[3]}
                                   for k, v in self.ranges.items()}, "posterior_fixed": fixed})
        if ck.resumed:
            summary["resumed_chunks"] = ck.resumed
        return StudyResult(self, {"runs": runs, "indices": indices, "convergence": convergence}, summary,
                           {"sample": t1 - t0, "simulate": t2 - t1, "analyse": time.perf_counter() - t2}, notes)

    def analyse(self, X: np.ndarray, runs: pd.DataFrame, failed: np.ndarray):
        p, s = self.problem(), self.spec
        rows, conv = [], []
        for r in self.readouts:
            name = r.spec.name
            y = runs[name].to_numpy(float).copy()
            bad = failed | ~np.isfinite(y)
            if bad.all():
                continue
            y[bad] = np.nanmean(y[~bad])
            ind, cv = salib_indices(s.method, p, X, y, seed=s.seed, bootstrap=s.bootstrap,
                                    second_order=s.second_order, levels=s.morris_levels, samples=s.samples)
            rows += [{"readout": name, **row} for row in ind]
            conv += [{"readout": name, **row} for row in cv]
        idx = pd.DataFrame(rows)
        idx["source"] = [self.base.source.get(pn, "") for pn in idx["parameter"]] if len(idx) else []
        idx["assumed"] = idx["source"].str.lower().str.startswith(("assumed", "uncertain")) if len(idx) else []
        key = "mu_star_norm" if s.method == "morris" else "ST"
        if len(idx):
            idx["influential"] = idx[key].fillna(0) > s.threshold
            idx["measure_first"] = idx["influential"] & idx["assumed"]
            idx["rank"] = idx.groupby("readout")[key].rank(ascending=False, method="first").astype(int)
        return idx, pd.DataFrame(conv)

    def summarise(self, idx: pd.DataFrame) -> dict:
        key = "mu_star_norm" if self.spec.method == "morris" else "ST"
        out = {"index": key, "threshold": self.spec.threshold, "readouts": {}}
        for name, g in idx.groupby("readout", sort=False):
            g = g.sort_values(key, ascending=False)
            out["readouts"][name] = {
                "ranking": [{"parameter": r["parameter"], key: r[key],
                             **({"ci": [r[key] - r["ST_conf"], r[key] + r["ST_conf"]], "S1": r["S1"]}
                                if key == "ST" else {"sigma": r["sigma"]}),
                             "assumed": bool(r["assumed"]), "measure_first": bool(r["measure_first"])}
                            for _, r in g.iterrows()],
                "measure_first": [r["parameter"] for _, r in g.iterrows() if r["measure_first"]]}
        return out

    def write(self, result: StudyResult, folder: Path) -> None:
        import json

        from ..outputs import json_safe
        from ..report.study_report import render_sensitivity

        for name, df in result.tables.items():
            df.to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "summary.json").write_text(json.dumps(json_safe(result.summary), indent=2))
        (folder / "report.html").write_text(render_sensitivity(result))
