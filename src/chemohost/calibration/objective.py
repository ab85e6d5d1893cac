"""The negative log-posterior of a calibration problem, computed with chemohost's own engine.

Why not the exported PEtab problem through a generic simulator: (1) chemohost's engine evaluates a
*batch* of parameter vectors in one compiled call (all cores), so a central finite-difference
gradient (1 + 2d vectors) or a whole half-ensemble of MCMC walkers costs about one wall-clock
simulation; (2) the engine applies the conditions' dose-modification rules, which SBML events
cannot express; (3) left/right-censored rows (below the detection limit, PEtab v1 has no censoring)
enter the likelihood as CDF terms instead of being left out.  On the uncensored rows the value is
PEtab v1's (same noise models and normalisation, tested against pyPESTO + libRoadRunner on the
exported problem).

Parameter vector ``x``: the problem's estimates in their order (model parameters, then estimated
sigmas), each on its PEtab scale (``lin``, ``log`` = ln, ``log10``).  Priors are pyPESTO's
(:func:`pypesto.objective.get_parameter_prior_dict`, PEtab v1 meanings); a parameter without a
prior is flat on its parameter scale within its bounds (PEtab's default).

Likelihood per row (PEtab v1, ``h`` the simulated observable, ``y`` the measurement, ``s`` sigma)::

    normal, lin      0.5*log(2*pi*s^2) + 0.5*((y - h)/s)^2
    normal, log      the same on ln(y), ln(h), plus ln(y)
    laplace, lin     log(2*s) + |y - h|/s
    laplace, log     the same on ln(y), ln(h), plus ln(y)
    left-censored    -log F(lloq | h, s)        (F: the noise model's CDF; log scale for log noise)
    right-censored   -log(1 - F(bound | h, s))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy import special

from ..engine.codegen import compile_model
from ..engine.simulate import SolverOptions, simulate
from ..model.expr import parse
from .problem import Estimate, Observable, Problem, Row

_LN10 = math.log(10.0)


def to_scale(value, scale: str):
    """A value in its internal unit -> the parameter scale (lin, log = ln, log10)."""
    v = np.asarray(value, dtype=float)
    out = {"lin": v, "log": np.log(v), "log10": np.log10(v)}[scale]
    return out if out.ndim else float(out)


def from_scale(x, scale: str):
    x = np.asarray(x, dtype=float)
    out = {"lin": x, "log": np.exp(x), "log10": np.power(10.0, x)}[scale]
    return out if out.ndim else float(out)


@dataclass
class _Block:
    """Rows of one condition: where each row's value sits in that condition's simulation."""

    condition: str
    regimens: list
    times: np.ndarray  # (T,) days, unique ascending
    rows: list[Row]
    t_index: np.ndarray  # (R,) index into times
    obs_index: np.ndarray  # (R,) index into the objective's observable list


class EngineObjective:
    """Batched negative log-posterior ``f(X)`` for ``X`` (K, d) on the parameter scale.

    ``solver``: integrator settings for the fit (default rtol 1e-8, atol 1e-12: tight enough that
    finite-difference gradients with ``fd_step`` 1e-4 on the log10 scale are not dominated by the
    solver's step-size noise; measured in tests/test_fit.py).
    """

    def __init__(self, problem: Problem, solver: SolverOptions | None = None, fd_step: float = 1e-4):
        self.problem = problem
        self.solver = solver or SolverOptions(rtol=1e-8, atol=1e-12)
        self.fd_step = float(fd_step)
        self.cm = compile_model(problem.model, self.solver.closed_form)
        self.estimates: list[Estimate] = list(problem.estimates.values())
        self.x_names = [e.name for e in self.estimates]
        self.scales = [e.scale for e in self.estimates]
        self.lb = np.array([to_scale(e.lower, e.scale) for e in self.estimates])
        self.ub = np.array([to_scale(e.upper, e.scale) for e in self.estimates])
        self.x_nominal = np.array([to_scale(e.nominal, e.scale) for e in self.estimates])
        self.base = np.array([problem.values[n] for n in problem.names], dtype=float)
        self.model_index = {e.name: problem.names.index(e.name) for e in self.estimates if e.name in problem.names}
        self.sigma_index = {}
        self.observables: list[Observable] = list(problem.observables.values())
        for k, o in enumerate(self.observables):
            if o.sigma_kind == "estimate":
                self.sigma_index[k] = self.x_names.index(o.sigma_parameter.name)
        self._formulas, needed = self._compile_formulas()
        self.outputs = sorted(needed)
        self.blocks = self._blocks()
        self.prior = self._priors()
        self.n_evaluations = 0  # parameter vectors simulated (each over every condition)

    def __deepcopy__(self, memo):
        # pyPESTO deep-copies the objective for every start; the compiled model (a module) cannot be
        # copied and nothing here changes between evaluations except the evaluation counter
        return self

    # -- set-up ------------------------------------------------------------------------------------
    def _compile_formulas(self):
        model = self.problem.model
        quantities = set(model.species) | set(model.outputs)
        sym = {n: sp.Symbol(n, real=True) for n in quantities}
        funcs, needed = [], set()
        for o in self.observables:
            text = (self.problem.spec.observables[o.name].formula or o.name).strip()
            if text in quantities:
                funcs.append((text, None))
                needed.add(text)
                continue
            expr = parse(text, sym, f"observables.{o.name}.formula")
            names = sorted(str(s) for s in expr.free_symbols)
            needed.update(names)
            funcs.append((names, sp.lambdify([sym[n] for n in names], expr, "numpy")))
        return funcs, needed

    def _blocks(self) -> list[_Block]:
        obs_pos = {o.name: k for k, o in enumerate(self.observables)}
        by_cond: dict[str, list[Row]] = {}
        for r in [*self.problem.rows, *self.problem.censored]:
            by_cond.setdefault(r.condition, []).append(r)
        blocks = []
        for cid, rows in by_cond.items():
            times = np.unique(np.array([r.time for r in rows], dtype=float))
            t_index = np.searchsorted(times, [r.time for r in rows])
            blocks.append(_Block(cid, self.problem.conditions[cid].regimens, times, rows, t_index,
                                 np.array([obs_pos[r.observable] for r in rows])))
        return blocks

    def _priors(self):
        from pypesto.objective import NegLogParameterPriors, get_parameter_prior_dict

        dicts = [get_parameter_prior_dict(i, e.prior[0], list(e.prior[1]), e.scale)
                 for i, e in enumerate(self.estimates) if e.prior is not None]
        return NegLogParameterPriors(dicts) if dicts else None

    # -- evaluation --------------------------------------------------------------------------------
    def parameter_matrix(self, X: np.ndarray) -> np.ndarray:
        """(K, n_model_parameters) engine parameters for ``X`` (K, d) on the parameter scale."""
        X = np.atleast_2d(X)
        P = np.repeat(self.base[None, :], X.shape[0], axis=0)
        for i, e in enumerate(self.estimates):
            if e.name in self.model_index:
                P[:, self.model_index[e.name]] = from_scale(X[:, i], e.scale)
        return P

    def simulate_observables(self, X: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """condition -> ((K, R) simulated observable per row, (K,) engine status)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        P = self.parameter_matrix(X)
        self.n_evaluations += X.shape[0]
        out = {}
        for b in self.blocks:
            res = simulate(self.cm, P, b.regimens, b.times, self.outputs, options=self.solver)
            h = np.empty((X.shape[0], len(b.rows)))
            for j, (ti, oi) in enumerate(zip(b.t_index, b.obs_index)):
                name, fn = self._formulas[oi]
                if fn is None:
                    h[:, j] = res.output(name)[:, ti]
                else:
                    h[:, j] = fn(*[res.output(n)[:, ti] for n in name])
            out[b.condition] = (h, res.status)
        return out

    def sigmas(self, X: np.ndarray, block: _Block) -> np.ndarray:
        """(K, R) sigma of each row (model unit, or natural-log scale for log noise)."""
        X = np.atleast_2d(X)
        s = np.empty((X.shape[0], len(block.rows)))
        for j, (r, oi) in enumerate(zip(block.rows, block.obs_index)):
            o = self.observables[oi]
            if o.sigma_kind == "estimate":
                i = self.sigma_index[oi]
                s[:, j] = from_scale(X[:, i], self.scales[i])
            elif o.sigma_kind == "row":
                s[:, j] = r.sigma
            else:
                s[:, j] = o.sigma
        return s

    def nllh(self, X: np.ndarray, sim: dict | None = None) -> np.ndarray:
        """(K,) negative log-likelihood; ``inf`` where a simulation failed or a log observable is <= 0."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        sim = self.simulate_observables(X) if sim is None else sim
        total = np.zeros(X.shape[0])
        for b in self.blocks:
            h, status = sim[b.condition]
            s = self.sigmas(X, b)
            total += self._block_nllh(b, h, s)
            total[status != 0] = np.inf
        return total

    def _block_nllh(self, b: _Block, h: np.ndarray, s: np.ndarray) -> np.ndarray:
        K = h.shape[0]
        out = np.zeros(K)
        for j, (r, oi) in enumerate(zip(b.rows, b.obs_index)):
            o = self.observables[oi]
            hj, sj = h[:, j], s[:, j]
            log = o.transformation == "log"
            with np.errstate(divide="ignore", invalid="ignore"):
                mu = np.log(hj) if log else hj
            bad = ~np.isfinite(mu)
            if r.censoring == "none":
                y = math.log(r.value) if log else r.value
                z = (y - mu) / sj
                if o.distribution == "normal":
                    term = 0.5 * np.log(2 * np.pi * sj ** 2) + 0.5 * z ** 2
                else:
                    term = np.log(2 * sj) + np.abs(z)
                if log:
                    term = term + y
            else:
                bound = r.lloq if r.censoring == "left" or not math.isfinite(r.value) else r.value
                yb = math.log(bound) if log else bound
                z = (yb - mu) / sj
                if o.distribution == "normal":
                    logcdf = special.log_ndtr(z if r.censoring == "left" else -z)
                else:
                    zz = z if r.censoring == "left" else -z
                    logcdf = np.where(zz < 0, np.log(0.5) + zz, np.log1p(-0.5 * np.exp(-np.abs(zz))))
                term = -logcdf
            term = np.where(bad, np.inf, term)
            out += term
        return out

    def prior_nll(self, X: np.ndarray) -> np.ndarray:
        """(K,) negative log-prior (pyPESTO's densities); 0 without priors; inf outside the bounds."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        out = np.zeros(X.shape[0])
        if self.prior is not None:
            out = np.array([float(self.prior(x)) for x in X])
        outside = ((X < self.lb - 1e-12) | (X > self.ub + 1e-12)).any(axis=1)
        out[outside] = np.inf
        return out

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """(K,) negative log-posterior (likelihood + prior, up to the flat priors' constants)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        prior = self.prior_nll(X)
        ok = np.isfinite(prior)
        out = np.full(X.shape[0], np.inf)
        if ok.any():
            out[ok] = self.nllh(X[ok]) + prior[ok]
        return out

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Value and central finite-difference gradient, all 1 + 2d vectors in one engine batch.

        Near a bound the difference is one-sided (the step never leaves the bounds)."""
        x = np.asarray(x, dtype=float)
        d = x.size
        h = self.fd_step
        up = np.minimum(x + h, self.ub)
        dn = np.maximum(x - h, self.lb)
        X = np.repeat(x[None, :], 1 + 2 * d, axis=0)
        for i in range(d):
            X[1 + i, i] = up[i]
            X[1 + d + i, i] = dn[i]
        f = self(X)
        width = up - dn
        grad = np.where(width > 0, (f[1:1 + d] - f[1 + d:]) / np.where(width > 0, width, 1.0), 0.0)
        if not np.isfinite(f[0]):
            return float("inf"), np.full(d, np.nan)
        bad = ~np.isfinite(grad)
        if bad.any():  # one side failed: fall back to the other one-sided difference
            for i in np.flatnonzero(bad):
                if np.isfinite(f[1 + i]) and up[i] > x[i]:
                    grad[i] = (f[1 + i] - f[0]) / (up[i] - x[i])
                elif np.isfinite(f[1 + d + i]) and x[i] > dn[i]:
                    grad[i] = (f[0] - f[1 + d + i]) / (x[i] - dn[i])
                else:
                    grad[i] = 0.0
        return float(f[0]), grad

    def pypesto_problem(self):
        """A :class:`pypesto.Problem` on this objective (value + batched FD gradient)."""
        import pypesto

        obj = pypesto.Objective(fun=self.value_and_grad, grad=True, x_names=self.x_names)
        return pypesto.Problem(objective=obj, lb=self.lb, ub=self.ub, x_names=self.x_names,
                               x_scales=self.scales)
