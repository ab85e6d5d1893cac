"""Fitting a calibration problem: pyPESTO multi-start optimisation, profile likelihoods, and
posterior sampling (emcee), all on chemohost's engine (:class:`~.objective.EngineObjective`).

``chemohost fit P.yaml --out DIR``.  The steps and why:

1. **Multi-start local optimisation** (pyPESTO ``minimize`` with scipy L-BFGS-B, bounded): start
   points are a seeded Latin hypercube over the bounds on the parameter scale (the nominal vector is
   start 0), so a fit is reproducible by ``seed``.  Gradients are central finite differences evaluated
   as one engine batch (the model is compiled to numba code with no sensitivity equations; the batch
   of 1 + 2d vectors costs about one simulation on two cores).
2. **Profile likelihoods** (pyPESTO ``parameter_profile``) of the negative log-posterior (priors
   included, so a parameter the data cannot pin has the profile of its prior): 95% intervals from the
   chi-square threshold (``chi2_quantile_to_ratio``); a profile that stays above the threshold at a
   bound is reported as *not identifiable on that side*.
3. **Posterior sampling** with emcee's affine-invariant ensemble sampler, *vectorised*: each half-
   ensemble update is one engine batch (pyPESTO's ``EmceeSampler`` calls the objective one walker
   at a time, which forfeits the batch engine).  Walkers start around the optimum with spreads from
   the profile intervals, so parameters the data cannot pin start spread over their prior range.
   Burn-in and thinning from emcee's integrated autocorrelation time; the effective sample size is
   reported, with a warning when the chain is shorter than 50 autocorrelation times.
4. **Predictions**: the optimum and a subset of posterior draws on a dense time grid for every
   observable and condition, with and without measurement noise (visual predictive check), and the
   fraction of measurements inside the 90% posterior-predictive interval.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..engine.simulate import SolverOptions
from ..errors import ScenarioError
from ..outputs import json_safe
from .objective import EngineObjective, from_scale
from .problem import Problem, load_problem

FIT_FILES = ("fit.json", "estimates.csv", "starts.parquet", "profiles.parquet", "posterior.parquet",
             "predictions.parquet", "report.html", "manifest.json")


class FitError(ScenarioError):
    """A fit could not be run as asked (bad options, every start failed, an unreadable fit folder)."""


@dataclass
class FitOptions:
    starts: int = 20
    seed: int = 0
    max_iterations: int = 200
    profile: bool = True
    sample: bool = True
    walkers: int | None = None  # default: max(16, 4 d), even
    steps: int = 5000
    prediction_draws: int = 200
    rtol: float = 1e-8
    atol: float = 1e-12
    fd_step: float = 1e-4

    def check(self) -> None:
        for name, lo in (("starts", 1), ("max_iterations", 1), ("steps", 20), ("prediction_draws", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise FitError(f"--{name.replace('_', '-')} must be a whole number >= {lo}, got {v!r}")
        if self.walkers is not None and (isinstance(self.walkers, bool) or not isinstance(self.walkers, int)
                                         or self.walkers < 4):
            raise FitError(f"--walkers must be a whole number >= 4, got {self.walkers!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FitError(f"--seed must be a whole number >= 0, got {self.seed!r}")


@dataclass
class FitResult:
    problem: Problem
    options: FitOptions
    x_names: list[str]
    scales: list[str]
    units: list[str]
    lb: np.ndarray
    ub: np.ndarray
    x_best: np.ndarray
    f_best: float
    starts: pd.DataFrame
    estimates: pd.DataFrame
    profiles: pd.DataFrame
    posterior: pd.DataFrame
    predictions: pd.DataFrame
    diagnostics: dict
    timings: dict
    evaluations: dict
    data: pd.DataFrame  # the measurement rows with the fitted values at the optimum
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"problem": self.problem.spec.problem, "model": self.problem.model.name,
                "species": self.problem.spec.species, "objective": "negative log-posterior (PEtab v1 likelihood "
                "+ priors; censored rows as CDF terms)", "f_best": self.f_best,
                "estimates": self.estimates.to_dict("records"), "diagnostics": self.diagnostics,
                "timings_s": self.timings, "engine_evaluations": self.evaluations, "notes": self.notes,
                "options": asdict(self.options)}


# -------------------------------------------------------------------------------------------------
def _startpoints(obj: EngineObjective, n: int, seed: int) -> np.ndarray:
    from scipy.stats import qmc

    d = obj.lb.size
    xs = np.empty((n, d))
    xs[0] = obj.x_nominal
    if n > 1:
        u = qmc.LatinHypercube(d=d, seed=np.random.default_rng(seed)).random(n - 1)
        xs[1:] = obj.lb + u * (obj.ub - obj.lb)
    return xs


def optimise(obj: EngineObjective, options: FitOptions):
    """pyPESTO multi-start L-BFGS-B; returns (pypesto problem, result, optimizer, starts frame)."""
    import pypesto.optimize as optimize
    from pypesto.startpoint import FunctionStartpoints

    pp = obj.pypesto_problem()
    xs = _startpoints(obj, options.starts, options.seed)
    sp = FunctionStartpoints(lambda n_starts, lb, ub, priors=None: xs[:n_starts], use_guesses=False,
                             check_fval=False)
    optimizer = optimize.ScipyOptimizer(method="L-BFGS-B", options={"maxiter": options.max_iterations})
    logging.getLogger("pypesto").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = optimize.minimize(pp, optimizer=optimizer, n_starts=options.starts, startpoint_method=sp,
                                   progress_bar=False, options=optimize.OptimizeOptions(allow_failed_starts=True))
    rows = []
    for r in result.optimize_result.list:
        x0 = np.asarray(r.x0, dtype=float) if r.x0 is not None else np.full(obj.lb.size, np.nan)
        x = np.asarray(r.x, dtype=float) if r.x is not None else np.full(obj.lb.size, np.nan)
        row = {"start": int(str(r.id).split("_")[-1]) if str(r.id).split("_")[-1].isdigit() else str(r.id),
               "fval": float(r.fval) if r.fval is not None else float("nan"),
               "fval0": float(r.fval0) if r.fval0 is not None else float("nan"),
               "n_fval": int(r.n_fval or 0), "message": str(r.message)[:200], "exitflag": r.exitflag}
        for i, name in enumerate(obj.x_names):
            row[f"x0_{name}"], row[f"x_{name}"] = x0[i], x[i]
        rows.append(row)
    starts = pd.DataFrame(rows).sort_values("fval", kind="stable").reset_index(drop=True)
    if not np.isfinite(starts["fval"]).any():
        raise FitError(f"every one of the {options.starts} starts failed (the model could not be simulated or the "
                       "likelihood is infinite everywhere tried); check bounds and observables")
    return pp, result, optimizer, starts


def profiles(pp, result, optimizer, obj: EngineObjective, f_best: float):
    """pyPESTO profiles of every parameter; returns (frame, {name: (lo, hi, open_lo, open_hi)})."""
    import pypesto.profile as profile

    opts = profile.ProfileOptions(ratio_min=0.1, whole_path=False, step_size_precheck_mode="off",
                                  default_step_size_absolute=0.02, max_step_size_absolute=0.2)
    failed = {}
    for i, name in enumerate(obj.x_names):  # one parameter at a time: a failed profile does not sink the others
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = profile.parameter_profile(pp, result, optimizer, profile_index=[i], profile_options=opts,
                                                   progress_bar=False)
        except (RuntimeError, ValueError, FloatingPointError) as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    thr = profile.chi2_quantile_to_ratio(0.95)
    frames, cis = [], {}
    for i, name in enumerate(obj.x_names):
        pr = next((pl[i] for pl in result.profile_result.list if pl[i] is not None), None) \
            if result.profile_result is not None and result.profile_result.list else None
        if pr is None or name in failed:
            continue
        xs = np.asarray(pr.x_path)[i]
        ratio = np.asarray(pr.ratio_path)
        order = np.argsort(xs)
        xs, ratio = xs[order], ratio[order]
        frames.append(pd.DataFrame({"parameter": name, "x": xs, "value": from_scale(xs, obj.scales[i]),
                                    "ratio": ratio, "fval": np.asarray(pr.fval_path)[order]}))
        ok = np.flatnonzero(ratio >= thr)
        if ok.size == 0:
            continue
        lo_i, hi_i = ok[0], ok[-1]
        lo = xs[lo_i] if lo_i == 0 else np.interp(thr, [ratio[lo_i - 1], ratio[lo_i]], [xs[lo_i - 1], xs[lo_i]])
        hi = xs[hi_i] if hi_i == xs.size - 1 else np.interp(thr, [ratio[hi_i + 1], ratio[hi_i]],
                                                            [xs[hi_i + 1], xs[hi_i]])
        span = obj.ub[i] - obj.lb[i]
        open_lo = lo_i == 0 and xs[0] <= obj.lb[i] + 1e-6 * span
        open_hi = hi_i == xs.size - 1 and xs[-1] >= obj.ub[i] - 1e-6 * span
        cis[name] = (float(lo), float(hi), bool(open_lo), bool(open_hi))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["parameter", "x", "value", "ratio", "fval"])
    return frame, cis, failed


def sample(obj: EngineObjective, x_best: np.ndarray, spread: np.ndarray, options: FitOptions):
    """Vectorised emcee; returns (posterior frame, diagnostics)."""
    import emcee

    d = x_best.size
    walkers = options.walkers or max(16, 4 * d)
    walkers += walkers % 2
    rng = np.random.default_rng(options.seed + 1)
    p0 = np.empty((walkers, d))
    filled = 0
    tries = 0
    while filled < walkers:
        cand = x_best + spread * rng.standard_normal((walkers, d))
        cand = np.clip(cand, obj.lb, obj.ub)
        f = obj(cand)
        good = cand[np.isfinite(f)]
        take = min(walkers - filled, good.shape[0])
        p0[filled:filled + take] = good[:take]
        filled += take
        tries += 1
        if tries > 20 and filled < walkers:
            raise FitError("could not place the MCMC walkers: the posterior is infinite around the optimum")

    def log_prob(X):
        return -obj(X)

    sampler = emcee.EnsembleSampler(walkers, d, log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(options.seed).get_state()
    sampler.run_mcmc(p0, options.steps, progress=False)
    chain = sampler.get_chain()  # (steps, walkers, d)
    lp = sampler.get_log_prob()
    tau = np.asarray(sampler.get_autocorr_time(tol=0, quiet=True), dtype=float)
    tau_max = float(np.nanmax(tau)) if np.isfinite(tau).any() else float(options.steps)
    burn = int(min(options.steps // 2, max(math.ceil(3 * tau_max), options.steps // 5)))
    thin = max(1, int(tau_max // 2))
    kept = chain[burn::thin]
    klp = lp[burn::thin]
    steps_kept = np.arange(burn, options.steps, thin)[:kept.shape[0]]
    S, W = kept.shape[:2]
    frame = pd.DataFrame({"draw": np.arange(S * W), "step": np.repeat(steps_kept, W),
                          "walker": np.tile(np.arange(W), S), "log_posterior": klp.reshape(-1)})
    for i, name in enumerate(obj.x_names):
        frame[name] = from_scale(kept[:, :, i].reshape(-1), obj.scales[i])
    ess = (options.steps - burn) * walkers / np.where(np.isfinite(tau) & (tau > 0), tau, np.nan)
    diag = {"sampler": f"emcee {emcee.__version__} EnsembleSampler (stretch move), vectorised over walkers",
            "walkers": walkers, "steps": options.steps, "burn_in": burn, "thin": thin,
            "draws": int(len(frame)), "acceptance_fraction": float(np.mean(sampler.acceptance_fraction)),
            "autocorrelation_time": dict(zip(obj.x_names, [float(t) for t in tau])),
            "effective_sample_size": dict(zip(obj.x_names, [float(e) for e in ess])),
            "chain_long_enough": bool(options.steps >= 50 * tau_max)}
    if not diag["chain_long_enough"]:
        diag["warning"] = (f"the chain ({options.steps} steps) is shorter than 50 autocorrelation times "
                           f"({tau_max:.0f} steps): run longer (--steps) before trusting tail quantiles")
    return frame, diag


def predictions(obj: EngineObjective, x_best: np.ndarray, posterior: pd.DataFrame, options: FitOptions):
    """Dense-grid trajectories per (observable, condition): the optimum, the posterior's 5/50/95%
    band (parameters only) and the 5/95% predictive band (with measurement noise); plus, per data row,
    the optimum's prediction and whether the row lies inside the 90% predictive interval."""
    from ..engine.simulate import simulate

    rng = np.random.default_rng(options.seed + 2)
    if len(posterior):
        idx = rng.choice(len(posterior), size=min(options.prediction_draws, len(posterior)), replace=False)
        X = np.column_stack([_to_x(posterior[n].to_numpy()[idx], s) for n, s in zip(obj.x_names, obj.scales)])
    else:
        X = np.empty((0, x_best.size))
    allX = np.vstack([x_best[None, :], X])
    P = obj.parameter_matrix(allX)
    frames, data_rows = [], []
    for b in obj.blocks:
        t_end = max(float(b.times.max()) * 1.05, 1.0)
        grid = np.unique(np.r_[np.linspace(0.0, t_end, 241), b.times])
        res = simulate(obj.cm, P, b.regimens, grid, obj.outputs, options=obj.solver)
        ok = res.status == 0
        for oi in sorted(set(b.obs_index.tolist())):
            o = obj.observables[oi]
            name, fn = obj._formulas[oi]
            h = res.output(name) if fn is None else fn(*[res.output(n) for n in name])
            h = np.where(ok[:, None], h, np.nan)
            rows_here = [j for j in range(len(b.rows)) if b.obs_index[j] == oi]
            sig = obj.sigmas(allX, b)[:, rows_here[0]] if o.sigma_kind != "row" else \
                np.full(allX.shape[0], np.nanmedian([b.rows[j].sigma for j in rows_here]))
            noisy = _noisy(h[1:], sig[1:, None], o, rng) if X.shape[0] else np.empty((0, grid.size))
            q = (np.nanquantile(h[1:], [0.05, 0.5, 0.95], axis=0) if X.shape[0] >= 2
                 else np.full((3, grid.size), np.nan))
            qn = (np.nanquantile(noisy, [0.05, 0.95], axis=0) if X.shape[0] >= 2 else np.full((2, grid.size), np.nan))
            frames.append(pd.DataFrame({"observable": o.name, "condition": b.condition, "time_days": grid,
                                        "best": h[0], "q05": q[0], "q50": q[1], "q95": q[2],
                                        "pred_q05": qn[0], "pred_q95": qn[1], "unit": o.unit}))
            for j in rows_here:
                r = b.rows[j]
                k = int(np.searchsorted(grid, r.time))
                lo, hi = qn[0][k], qn[1][k]
                inside = None
                if np.isfinite(lo) and np.isfinite(hi):
                    inside = bool(lo <= r.value <= hi) if r.censoring == "none" else \
                        bool(lo <= r.lloq) if r.censoring == "left" else bool(hi >= r.value)
                data_rows.append({"observable": o.name, "condition": b.condition, "time_days": r.time,
                                  "value": r.value, "unit": o.unit, "censoring": r.censoring, "lloq": r.lloq,
                                  "sigma": float(sig[0]) if o.sigma_kind != "row" else r.sigma,
                                  "noise": f"{o.distribution}, {o.transformation}",
                                  "fitted": float(h[0][k]), "inside_90pct_predictive": inside, "where": r.where})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(data_rows)


def _to_x(values, scale):
    v = np.asarray(values, dtype=float)
    return {"lin": v, "log": np.log(v), "log10": np.log10(v)}[scale]


def _noisy(h, sig, o, rng, replicates: int = 25):
    """(K*replicates, T) draws of the measurement: each trajectory with ``replicates`` noise draws."""
    h = np.repeat(h, replicates, axis=0)
    sig = np.repeat(sig, replicates, axis=0)
    eps = rng.standard_normal(h.shape) if o.distribution == "normal" else rng.laplace(size=h.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return h * np.exp(sig * eps) if o.transformation == "log" else h + sig * eps


# -------------------------------------------------------------------------------------------------
def run_fit(problem: Problem | str | Path, options: FitOptions | None = None, progress: bool = False) -> FitResult:
    """Fit ``problem`` (a :class:`Problem` or a problem YAML path)."""
    options = options or FitOptions()
    options.check()
    try:
        import emcee  # noqa: F401
        import pypesto  # noqa: F401
    except ImportError as exc:
        raise FitError(f"chemohost fit needs pyPESTO and emcee ({exc}); install them with "
                       "pip install 'chemohost[calibration]'") from None
    if not isinstance(problem, Problem):
        problem = load_problem(problem)
    if not problem.estimates:
        raise FitError("the problem estimates nothing: add parameters under 'estimate:' (or an estimated sigma)",
                       file=problem.source, field="estimate")

    def say(msg):
        if progress:
            print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    say(f"compiling model {problem.model.name} (cached after the first run) ...")
    obj = EngineObjective(problem, SolverOptions(rtol=options.rtol, atol=options.atol), fd_step=options.fd_step)
    timings, evals = {"compile_or_load": time.perf_counter() - t0}, {}

    def phase(name, fn):
        n0, t = obj.n_evaluations, time.perf_counter()
        out = fn()
        timings[name], evals[name] = time.perf_counter() - t, obj.n_evaluations - n0
        return out

    say(f"optimising: {options.starts} starts, {len(obj.x_names)} parameters ...")
    pp, result, optimizer, starts = phase("optimise", lambda: optimise(obj, options))
    best = result.optimize_result.list[0]
    x_best, f_best = np.asarray(best.x, dtype=float), float(best.fval)
    tol = 0.1
    n_hit = int((starts["fval"] <= f_best + tol).sum())
    diagnostics = {"starts": options.starts, "starts_finite": int(np.isfinite(starts["fval"]).sum()),
                   "starts_reaching_best": n_hit,
                   "starts_reaching_best_note": f"final value within {tol} of the best"}
    notes = list(problem.notes)
    if problem.censored:
        notes.append(f"{len(problem.censored)} censored row(s) enter the likelihood as CDF terms")
    rules = sorted({r for c in problem.conditions.values() for r in c.rules})
    if rules:
        notes.append(f"dose-modification rule(s) {', '.join(rules)} are applied by the engine during the fit "
                     "(the PEtab export gives the doses as scheduled)")

    cis: dict = {}
    prof = pd.DataFrame(columns=["parameter", "x", "value", "ratio", "fval"])
    if options.profile:
        say("profiling ...")
        prof, cis, failed = phase("profile", lambda: profiles(pp, result, optimizer, obj, f_best))
        for name, why in failed.items():
            notes.append(f"profile of {name} failed ({why}); its interval is not reported")
    span = obj.ub - obj.lb
    spread = np.array([max((cis[n][1] - cis[n][0]) / 4.0, 1e-3 * span[i]) if n in cis else 0.05 * span[i]
                       for i, n in enumerate(obj.x_names)])
    posterior = pd.DataFrame(columns=["draw", "step", "walker", "log_posterior", *obj.x_names])
    if options.sample:
        say(f"sampling the posterior: {options.steps} steps ...")
        posterior, sdiag = phase("sample", lambda: sample(obj, x_best, spread, options))
        diagnostics["sampling"] = sdiag
    say("predictions ...")
    pred, data = phase("predict", lambda: predictions(obj, x_best, posterior, options))
    inside = data["inside_90pct_predictive"].dropna()
    diagnostics["vpc_fraction_inside_90pct"] = float(inside.mean()) if len(inside) else None
    diagnostics["vpc_rows"] = int(len(inside))
    est = _estimates(obj, x_best, cis, posterior, problem)
    units = [e.unit for e in obj.estimates]
    timings["total"] = time.perf_counter() - t0
    return FitResult(problem, options, obj.x_names, obj.scales, units, obj.lb, obj.ub, x_best, f_best, starts, est,
                     prof, posterior, pred, diagnostics, timings, evals, data, notes)


def _estimates(obj: EngineObjective, x_best, cis, posterior, problem) -> pd.DataFrame:
    from ..model.params import parameter_set

    ps = parameter_set(problem.model, problem.spec.species)
    rows = []
    for i, e in enumerate(obj.estimates):
        s = e.scale
        row = {"parameter": e.name, "unit": e.unit, "scale": s, "lower": e.lower, "upper": e.upper,
               "nominal": e.nominal, "prior": f"{e.prior[0]} {e.prior[1]}" if e.prior else "flat on the scale",
               "source": ps[e.name].source if e.name in ps else "noise parameter",
               "estimate": from_scale(x_best[i], s)}
        if e.name in cis:
            lo, hi, olo, ohi = cis[e.name]
            row.update(profile_ci_low=from_scale(lo, s), profile_ci_high=from_scale(hi, s),
                       ci_open_low=olo, ci_open_high=ohi)
            row["identifiable"] = ("yes" if not (olo or ohi) else
                                   "no (the profile stays above the 95% threshold at "
                                   + " and ".join(k for k, v in (("the lower bound", olo), ("the upper bound", ohi))
                                                  if v) + ")")
        else:
            row.update(profile_ci_low=np.nan, profile_ci_high=np.nan, ci_open_low=None, ci_open_high=None,
                       identifiable="not profiled")
        if len(posterior):
            v = posterior[e.name].to_numpy(dtype=float)
            row.update(posterior_median=float(np.median(v)), posterior_q025=float(np.quantile(v, 0.025)),
                       posterior_q975=float(np.quantile(v, 0.975)))
            prior_w = obj.ub[i] - obj.lb[i]
            post_w = np.quantile(_to_x(v, s), 0.975) - np.quantile(_to_x(v, s), 0.025)
            row["posterior_95_width_over_bounds"] = float(post_w / prior_w) if prior_w > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------------
def fit_manifest(fit: FitResult) -> dict:
    from importlib import metadata

    from ..engine.codegen import declaration_key

    versions = {}
    for pkg in ("numpy", "numba", "scipy", "pandas", "pypesto", "emcee", "petab"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    p = fit.problem
    return {"chemohost_version": __version__, "problem_file": p.source, "problem_sha256": p.sha256,
            "problem": p.spec.model_dump(mode="json"), "tables": p.tables, "model": p.model.name,
            "species": p.spec.species, "model_declaration_key": declaration_key(p.model),
            "seed": fit.options.seed, "options": asdict(fit.options),
            "parameters": {n: {"scale": s, "unit": u, "lower": float(lo), "upper": float(hi)}
                           for n, s, u, lo, hi in zip(fit.x_names, fit.scales, fit.units,
                                                       [e.lower for e in p.estimates.values()],
                                                       [e.upper for e in p.estimates.values()])},
            "model_parameters": [n for n in fit.x_names if n in p.model.parameters],
            "python": sys.version.split()[0], "packages": versions}


def write_fit(fit: FitResult, out: str | Path) -> dict[str, Path]:
    """fit.json, estimates.csv, starts/profiles/posterior/predictions.parquet, report.html, manifest.json
    -- atomically (nothing appears in ``out`` unless every file was written)."""
    from ..outputs import write_atomically
    from ..report.fit_report import render_fit_report

    def write(tmp: Path) -> None:
        manifest = json_safe(fit_manifest(fit))
        (tmp / "fit.json").write_text(json.dumps(json_safe(fit.summary()), indent=2))
        fit.estimates.to_csv(tmp / "estimates.csv", index=False)
        fit.starts.to_parquet(tmp / "starts.parquet", index=False)
        fit.profiles.to_parquet(tmp / "profiles.parquet", index=False)
        fit.posterior.to_parquet(tmp / "posterior.parquet", index=False)
        fit.predictions.to_parquet(tmp / "predictions.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        (tmp / "report.html").write_text(render_fit_report(fit, manifest))

    return write_atomically(out, write)


# -------------------------------------------------------------------------------------------------
@dataclass
class Posterior:
    """Posterior draws of a fit folder, for posterior-predictive studies."""

    folder: Path
    model: str
    species: str
    parameters: list[str]  # model parameters among the draws (noise parameters left out)
    draws: pd.DataFrame  # draw id + one column per model parameter (internal units)
    manifest: dict

    def select(self, k: int, seed: int) -> pd.DataFrame:
        """``k`` draws chosen without replacement (seeded), in draw order."""
        if k > len(self.draws):
            raise FitError(f"--draws {k}: the fit in {self.folder} has only {len(self.draws)} posterior draws; "
                           f"give --draws <= {len(self.draws)} or run the fit with more --steps")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(self.draws), size=k, replace=False))
        return self.draws.iloc[idx].reset_index(drop=True)


def load_posterior(folder: str | Path) -> Posterior:
    """Read ``posterior.parquet`` and ``manifest.json`` of a ``chemohost fit`` output folder."""
    from ..outputs import MARKER, verify_output

    folder = Path(folder)
    man_path, post_path = folder / "manifest.json", folder / "posterior.parquet"
    for p in (man_path, post_path):
        if not p.is_file():
            raise FitError(f"--posterior {folder}: {p.name} not found; give the --out folder of `chemohost fit`",
                           file=str(folder), field="posterior")
    try:  # only a complete, unchanged fit folder (its completion marker and file hashes)
        verify_output(folder, need=("manifest.json", "posterior.parquet"))
    except ScenarioError as exc:
        raise FitError(f"--posterior {folder}: {str(exc).removeprefix(str(folder) + ': ')} ({MARKER})",
                       file=str(folder), field="posterior") from None
    try:
        manifest = json.loads(man_path.read_text())
        draws = pd.read_parquet(post_path)
    except Exception as exc:  # a damaged file: json/arrow raise several types
        raise FitError(f"--posterior {folder}: cannot read the fit ({type(exc).__name__}: {exc})",
                       file=str(folder), field="posterior") from None
    params = list(manifest.get("model_parameters") or [])
    missing = [p for p in params if p not in draws.columns]
    if missing or not len(draws):
        raise FitError(f"--posterior {folder}: posterior.parquet has {len(draws)} draws and lacks columns {missing}; "
                       "was the fit run with sampling (not --no-sample)?", file=str(folder), field="posterior")
    vals = draws[params].to_numpy(dtype=float)
    if not np.isfinite(vals).all():
        raise FitError(f"--posterior {folder}: posterior.parquet holds non-finite draws", file=str(folder),
                       field="posterior")
    return Posterior(folder, str(manifest.get("model")), str(manifest.get("species")), params,
                     draws[["draw", *params]].reset_index(drop=True), manifest)
