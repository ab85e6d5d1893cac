"""Compile a declared model to numba machine code, cached on disk.

Steps (each a plain function of the declaration):
1. symbolic: species derivatives from flows, outputs substituted (sympy);
2. structure: the *linear sub-system* -- species whose derivative is linear in themselves with
   parameter-only coefficients and that no nonlinear species feeds (linear PK, metabolites,
   absorption depots).  These are solved in closed form; the rest is integrated;
3. code: right-hand side, analytic Jacobian, outputs, initial state and the linear system matrix
   are printed as numba functions (common subexpressions shared) and joined with the solver
   template into one module file under the cache directory, keyed by a hash of its source.
   numba's ``cache=True`` then keeps the machine code next to it, so only the first run of a
   given model compiles.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .. import __version__
from ..errors import ModelError
from ..model.core import Model
from ..model.expr import parse


@dataclass
class SymbolicModel:
    model: Model
    sym: dict[str, sp.Symbol]
    derivs: dict[str, sp.Expr]  # species -> d/dt, outputs substituted
    outputs: dict[str, sp.Expr]  # output -> expression over species and parameters
    initial: dict[str, sp.Expr]  # species -> initial value over parameters
    flow_rates: dict[str, sp.Expr]  # flow -> rate, outputs substituted


def symbolic(model: Model) -> SymbolicModel:
    sym = {n: sp.Symbol(n, real=True) for n in [*model.species, *model.parameters, *model.outputs]}
    # outputs in dependency order (no cycles)
    raw = {o.name: parse(o.expr, sym, f"output '{o.name}' (module {model.owner[o.name]})")
           for o in model.outputs.values()}
    resolved: dict[str, sp.Expr] = {}
    visiting: list[str] = []

    def resolve(name: str) -> sp.Expr:
        if name in resolved:
            return resolved[name]
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name):], name])
            raise ModelError(f"model '{model.name}': outputs depend on each other in a cycle: {cycle}")
        visiting.append(name)
        e = raw[name]
        subs = {sym[d]: resolve(d) for d in (str(s) for s in e.free_symbols) if d in raw}
        resolved[name] = e.xreplace(subs) if subs else e
        visiting.pop()
        return resolved[name]

    for name in raw:
        resolve(name)
    out_subs = {sym[n]: e for n, e in resolved.items()}

    def expand(text, where):
        return parse(text, sym, where).xreplace(out_subs)

    derivs = {s: sp.Integer(0) for s in model.species}
    rates = {}
    for f in model.flows.values():
        r = expand(f.rate, f"flow '{f.name}' (module {model.owner.get(f.source or f.target, '?')})")
        rates[f.name] = r
        if f.source:
            derivs[f.source] -= r
        if f.target:
            derivs[f.target] += r
    species_syms = {sym[s] for s in model.species}
    initial = {}
    for s in model.species.values():
        e = expand(s.initial, f"initial value of species '{s.name}'")
        if e.free_symbols & species_syms:
            raise ModelError(f"initial value of species '{s.name}' may use parameters only, not species")
        initial[s.name] = e
    return SymbolicModel(model, sym, derivs, resolved, initial, rates)


def linear_subsystem(sm: SymbolicModel) -> list[str]:
    """Species whose dynamics form a closed, linear, parameter-coefficient system."""
    params = {sm.sym[p] for p in sm.model.parameters}
    cand = set(sm.model.species)
    changed = True
    while changed:
        changed = False
        csyms = {sm.sym[c] for c in cand}
        for s in sorted(cand):
            e = sm.derivs[s]
            ok = e.free_symbols <= (csyms | params)
            if ok:
                for c in csyms & e.free_symbols:
                    if sp.diff(e, c).free_symbols & csyms:
                        ok = False
                        break
                if ok and e.xreplace({c: 0 for c in csyms}) != 0:
                    ok = False  # affine source terms are integrated numerically
            if not ok:
                cand.discard(s)
                changed = True
    return [s for s in sm.model.species if s in cand]


class _Printer(PythonCodePrinter):
    def _print_Symbol(self, expr):
        return expr.name

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"max({out}, {a})"
        return out

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"min({out}, {a})"
        return out


def _hoist(exprs: list[sp.Expr], params: set, registry: dict) -> list[sp.Expr]:
    """Replace parameter-only subexpressions by ``qd[k]`` symbols (computed once per patient)."""

    def name(e):
        if e not in registry:
            registry[e] = sp.Symbol(f"qd[{len(registry)}]", real=True)
        return registry[e]

    def walk(e):
        if e.is_Atom:
            return e
        fs = e.free_symbols
        if fs and fs <= params:
            return name(e)
        if isinstance(e, (sp.Add, sp.Mul)):
            const = [a for a in e.args if a.free_symbols and a.free_symbols <= params]
            rest = [walk(a) for a in e.args if not (a.free_symbols and a.free_symbols <= params)]
            if len(const) > 1 or (const and not const[0].is_Atom):
                return e.func(name(e.func(*const)), *rest)
            return e.func(*const, *rest)
        return e.func(*[walk(a) for a in e.args])

    return [walk(e) for e in exprs]


def _emit(name: str, args: str, targets: list[tuple[str, sp.Expr]], header: str = "") -> str:
    printer = _Printer({"standard": "python3", "fully_qualified_modules": True})
    exprs = [e for _, e in targets]
    repl, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("_x"), optimizations="basic") if exprs else ([], [])
    lines = ['@nb.njit(cache=True, error_model="numpy")', f"def {name}({args}):"]
    if header:
        lines.append(header)
    for s, e in repl:
        lines.append(f"    {s} = {printer.doprint(e)}")
    for (tgt, _), e in zip(targets, reduced):
        lines.append(f"    {tgt} = {printer.doprint(e)}")
    if len(lines) == 2 + (1 if header else 0):
        lines.append("    pass")
    return "\n".join(lines) + "\n"


@dataclass
class CompiledModel:
    model: Model
    ode_species: list[str]
    lin_species: list[str]
    param_names: list[str]
    output_names: list[str]  # species then outputs
    module: object
    source_hash: str
    closed_form: bool

    @property
    def n_ode(self) -> int:
        return len(self.ode_species)

    def target_index(self, species: str) -> int:
        if species in self.ode_species:
            return self.ode_species.index(species)
        return self.n_ode + self.lin_species.index(species)


def generate_source(model: Model, closed_form: bool = True) -> tuple[str, list[str], list[str], list[str], list[str]]:
    sm = symbolic(model)
    lin = linear_subsystem(sm) if closed_form else []
    ode = [s for s in model.species if s not in lin]
    pnames = list(model.parameters)
    subs = {}
    for i, s in enumerate(ode):
        subs[sm.sym[s]] = sp.Symbol(f"y[{i}]", real=True)
    for i, s in enumerate(lin):
        subs[sm.sym[s]] = sp.Symbol(f"xl[{i}]", real=True)
    for i, pn in enumerate(pnames):
        subs[sm.sym[pn]] = sp.Symbol(f"p[{i}]", real=True)
    ysyms = [sp.Symbol(f"y[{i}]", real=True) for i in range(len(ode))]

    f = [sm.derivs[s].xreplace(subs) for s in ode]
    used = set().union(*(e.free_symbols for e in f)) if f else set()
    lin_needed = [i for i in range(len(lin)) if sp.Symbol(f"xl[{i}]", real=True) in used]
    jac_t, jl_t = [], []
    for i, e in enumerate(f):
        for j, yj in enumerate(ysyms):
            if yj in e.free_symbols:
                d = sp.diff(e, yj)
                if d != 0:
                    jac_t.append((f"J[{i}, {j}]", d))
        for q, li in enumerate(lin_needed):
            xs = sp.Symbol(f"xl[{li}]", real=True)
            if xs in e.free_symbols:
                d = sp.diff(e, xs)
                if d != 0:
                    jl_t.append((f"JL[{i}, {q}]", d))
    # parameter-only subexpressions (covariate powers, 4/MTT, ...) are evaluated once per patient
    psyms = {sp.Symbol(f"p[{i}]", real=True) for i in range(len(pnames))}
    registry: dict = {}
    f = _hoist(f, psyms, registry)
    jac_t = list(zip([t for t, _ in jac_t], _hoist([e for _, e in jac_t], psyms, registry)))
    jl_t = list(zip([t for t, _ in jl_t], _hoist([e for _, e in jl_t], psyms, registry)))
    rhs_t = [(f"dy[{i}]", e + sp.Symbol(f"u[{i}]")) for i, e in enumerate(f)]
    derived_t = [(str(sym), e) for e, sym in registry.items()]
    outs = list(model.species) + list(model.outputs)
    out_t = []
    for k, name in enumerate(outs):
        e = sm.sym[name] if name in model.species else sm.outputs[name]
        out_t.append((f"o[{k}]", e.xreplace(subs)))
    init_t = [(f"y[{i}]", sm.initial[s].xreplace(subs)) for i, s in enumerate(ode)]
    init_t += [(f"xl[{i}]", sm.initial[s].xreplace(subs)) for i, s in enumerate(lin)]
    lin_t = []
    for i, s in enumerate(lin):
        e = sm.derivs[s]
        for j, c in enumerate(lin):
            coef = sp.diff(e, sm.sym[c])
            if coef != 0:
                lin_t.append((f"A[{i}, {j}]", coef.xreplace(subs)))

    parts = [
        "# generated by chemohost.engine.codegen -- do not edit; regenerated from the model declaration",
        f"# model: {model.name}; chemohost {__version__}; closed_form={closed_form}",
        "import math",
        "import numba as nb",
        "import numpy as np",
        "",
        f"N_ODE = {len(ode)}",
        f"N_LIN = {len(lin)}",
        f"N_OUT = {len(outs)}",
        f"LIN_NEEDED = np.array({lin_needed!r}, dtype=np.int64)",
        f"# ODE species: {ode}",
        f"# linear species: {lin}",
        "",
        f"N_DERIVED = {max(len(derived_t), 1)}",
        "",
        _emit("derived", "p, qd", derived_t),
        _emit("rhs", "t, y, xl, u, p, qd, dy", rhs_t),
        _emit("jac", "t, y, xl, u, p, qd, J", jac_t, header="    J[:, :] = 0.0"),
        _emit("jac_lin", "t, y, xl, u, p, qd, JL", jl_t, header="    JL[:, :] = 0.0"),
        _emit("outputs", "t, y, xl, p, o", out_t),
        _emit("init_state", "p, y, xl", init_t),
        _emit("lin_matrix", "p, A", lin_t, header="    A[:, :] = 0.0"),
    ]
    template = (resources.files("chemohost.engine") / "templates" / "rosenbrock.py").read_text()
    return "\n".join(parts) + "\n" + template, ode, lin, pnames, outs


def cache_dir() -> Path:
    d = os.environ.get("CHEMOHOST_CACHE_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chemohost"


_loaded: dict[str, CompiledModel] = {}


def compile_model(model: Model, closed_form: bool = True) -> CompiledModel:
    """Compile (or load from the on-disk cache) the numba module for ``model``."""
    source, ode, lin, pnames, outs = generate_source(model, closed_form)
    import numba

    digest = hashlib.sha256((source + numba.__version__ + np.__version__).encode()).hexdigest()[:20]
    if digest in _loaded:
        return _loaded[digest]
    directory = cache_dir() / "models"
    directory.mkdir(parents=True, exist_ok=True)
    modname = f"chemohost_model_{digest}"
    path = directory / f"{modname}.py"
    if not path.exists() or path.read_text() != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    cm = CompiledModel(model, ode, lin, pnames, outs, mod, digest, closed_form)
    _loaded[digest] = cm
    return cm
