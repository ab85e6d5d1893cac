"""Compile a declared model to numba machine code, cached on disk.

Steps (each a plain function of the declaration):
1. symbolic: species derivatives from flows, outputs substituted (sympy);
2. structure: the *linear sub-system* -- species whose derivative is linear in themselves with
   parameter-only coefficients and that no nonlinear species feeds (linear PK, metabolites,
   absorption depots).  These are solved in closed form; the rest is integrated;
3. code: right-hand side, analytic Jacobian (packed on its sparsity pattern), outputs (all at
   once, and one at a time), initial state and the linear system matrix are printed as numba
   functions (common subexpressions shared), with straight-line sparse LU factorisation and
   solves of the Rosenbrock iteration matrix on the Jacobian's pattern (static Markowitz order,
   fill-in fixed here), and joined with the solver template into one module file under the cache
   directory, keyed by a hash of its source.  numba's ``cache=True`` then keeps the machine code
   next to it, so only the first run of a given model compiles; an index keyed by a hash of the
   declaration (:func:`declaration_key`) lets later runs skip the symbolic work as well.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..cachedir import cache_dir
from ..errors import ModelError
from ..model.core import Model
from ..model.expr import parse

if TYPE_CHECKING:
    import sympy as sp


@dataclass
class SymbolicModel:
    model: Model
    sym: dict[str, sp.Symbol]
    derivs: dict[str, sp.Expr]  # species -> d/dt, outputs substituted
    outputs: dict[str, sp.Expr]  # output -> expression over species and parameters
    initial: dict[str, sp.Expr]  # species -> initial value over parameters
    flow_rates: dict[str, sp.Expr]  # flow -> rate, outputs substituted


def symbolic(model: Model) -> SymbolicModel:
    import sympy as sp

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
    import sympy as sp

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


def fold_pairs(args: list[str], pattern: str) -> str:
    """``f(f(a, b), c)`` for an n-ary min/max printed as nested two-argument calls (``pattern``: {0}, {1})."""
    out = args[0]
    for a in args[1:]:
        out = pattern.format(out, a)
    return out


@functools.cache
def _printer():
    """The code printer, one instance (sympy is imported only when code is generated: a cached model needs none)."""
    from sympy.printing.pycode import PythonCodePrinter

    class _Printer(PythonCodePrinter):
        def _print_Symbol(self, expr):
            return expr.name

        def _print_Max(self, expr):
            return fold_pairs([self._print(a) for a in expr.args], "max({0}, {1})")

        def _print_Min(self, expr):
            return fold_pairs([self._print(a) for a in expr.args], "min({0}, {1})")

    return _Printer({"standard": "python3", "fully_qualified_modules": True})


def _hoist(exprs: list[sp.Expr], params: set, registry: dict) -> list[sp.Expr]:
    """Replace parameter-only subexpressions by ``qd[k]`` symbols (computed once per patient)."""
    import sympy as sp

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
    import sympy as sp

    printer = _printer()
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


def _emit_output_one(targets: list[tuple[str, sp.Expr]]) -> str:
    """``output_one(k, t, y, xl, p)``: output ``k`` alone, so recording a few outputs does not
    evaluate all of them (each branch has its own common subexpressions)."""
    import sympy as sp

    printer = _printer()
    lines = ['@nb.njit(cache=True, error_model="numpy")', "def output_one(k, t, y, xl, p):"]
    for k, (_, e) in enumerate(targets):
        lines.append(f"    if k == {k}:")
        repl, (red,) = sp.cse([e], symbols=sp.numbered_symbols("_x"), optimizations="basic")
        for s_, e_ in repl:
            lines.append(f"        {s_} = {printer.doprint(e_)}")
        lines.append(f"        return float({printer.doprint(red)})")
    lines.append("    return math.nan")
    return "\n".join(lines) + "\n"


def sparse_lu_plan(pattern: list[tuple[int, int]], n: int):
    """Static elimination order and fill pattern for W = I/(h gamma) - J with Jacobian ``pattern``.

    Diagonal pivots, chosen greedily by Markowitz count (r - 1)(c - 1) on the structure, ties by
    index (deterministic).  Returns ``order`` (species in pivot order) and the sorted list of
    structurally non-zero (row, col) positions of L + U (the original pattern plus fill-in).
    """
    S = set(pattern) | {(i, i) for i in range(n)}
    rows_of = {k: {i for (i, j) in S if j == k} for k in range(n)}
    cols_of = {k: {j for (i, j) in S if i == k} for k in range(n)}
    rem = set(range(n))
    order = []
    while rem:
        best = min(rem, key=lambda k: ((len(rows_of[k] & rem) - 1) * (len(cols_of[k] & rem) - 1), k))
        rem.discard(best)
        rows = rows_of[best] & rem
        cols = cols_of[best] & rem
        for i in rows:
            for j in cols:
                if (i, j) not in S:
                    S.add((i, j))
                    rows_of[j].add(i)
                    cols_of[i].add(j)
        order.append(best)
    pos = {k: r for r, k in enumerate(order)}
    return order, sorted(S, key=lambda e: (pos[e[0]], pos[e[1]]))


def _maxabs(items: list[str]) -> str:
    out = f"abs({items[0]})"
    for it in items[1:]:
        out = f"max({out}, abs({it}))"
    return out


def _emit_sparse_lu(jac_pattern: list[tuple[int, int]], n: int) -> tuple[str, int]:
    """Straight-line LU factorisation and triangular solves of W = ig*I - J on a fixed pattern.

    ``lu_sp(Jv, ig, a)`` assembles W from the packed Jacobian ``Jv`` (order of ``jac_pattern``) into
    the packed factor array ``a`` and eliminates without pivoting in the static (Markowitz) order,
    keeping reciprocal pivots on the diagonal.  It returns False -- and the caller falls back to
    dense LU with partial pivoting -- for a zero pivot or when an elimination term |l_ik| max|u_k.|
    exceeds LU_GROWTH_MAX times the largest entry of row i of W: that bounds the backward error of
    the factorisation row by row (|L||U| <= LU_GROWTH_MAX |W| in each row's scale), which is
    invariant to the species' units, unlike the multipliers alone.
    ``solve_sp(a, b)`` solves W x = b in place.
    """
    order, lu = sparse_lu_plan(jac_pattern, n)
    pos = {k: r for r, k in enumerate(order)}
    idx = {e: m for m, e in enumerate(lu)}
    jmap = {e: m for m, e in enumerate(jac_pattern)}
    # the entries live in scalars w<k> (fewer array operations for numba to type and compile) and
    # are stored to ``a`` at the end
    L = ['@nb.njit(cache=True, error_model="numpy")', "def lu_sp(Jv, ig, a):"]
    for e in lu:
        i, j = e
        terms = []
        if i == j:
            terms.append("ig")
        if e in jmap:
            terms.append(f"- Jv[{jmap[e]}]")
        rhs = " ".join(terms) if terms else "0.0"
        if rhs.startswith("- "):
            rhs = "-" + rhs[2:]
        L.append(f"    w{idx[e]} = {rhs}")
    below = {k: sorted((i for (i, j) in lu if j == k and pos[i] > pos[k]), key=pos.get) for k in range(n)}
    right = {k: sorted((j for (i, j) in lu if i == k and pos[j] > pos[k]), key=pos.get) for k in range(n)}
    # row scales (only rows that receive eliminations need one); checks accumulate branch-free
    rows_needed = sorted({i for k in range(n) for i in below[k]})
    for i in rows_needed:
        orig = [f"w{idx[(i, j)]}" for j in range(n) if (i, j) in jmap or i == j]
        L.append(f"    r{i} = LU_GROWTH_MAX * {_maxabs(orig)}")
        L.append(f"    e{i} = 0.0")
    L.append("    pmin = math.inf")
    L.append("    psum = 0.0")
    for k in order:
        kk = idx[(k, k)]
        L.append(f"    pmin = min(pmin, abs(w{kk}))")
        L.append(f"    psum += w{kk}")
        if below[k]:
            L.append(f"    uk = {_maxabs([f'w{kk}'] + [f'w{idx[(k, j)]}' for j in right[k]])}")
        L.append(f"    w{kk} = 1.0 / w{kk}")
        for i in below[k]:
            ik = idx[(i, k)]
            L.append(f"    w{ik} *= w{kk}")
            L.append(f"    e{i} = max(e{i}, abs(w{ik}) * uk)")
            for j in right[k]:
                L.append(f"    w{idx[(i, j)]} -= w{ik} * w{idx[(k, j)]}")
    for m in range(len(lu)):
        L.append(f"    a[{m}] = w{m}")
    checks = ["(pmin > 0.0)", "math.isfinite(psum)"] + [f"(e{i} <= r{i})" for i in rows_needed]
    L.append("    return " + " & ".join(checks) if n else "    return True")
    S = ['@nb.njit(cache=True, error_model="numpy")', "def solve_sp(a, b):"]
    S += [f"    x{i} = b[{i}]" for i in range(n)]
    for i in order:  # forward substitution with unit lower L
        lo = sorted((k for (r, k) in lu if r == i and pos[k] < pos[i]), key=pos.get)
        if lo:
            S.append(f"    x{i} = x{i} - " + " - ".join(f"a[{idx[(i, k)]}] * x{k}" for k in lo))
    for k in reversed(order):  # back substitution, reciprocal pivots on the diagonal
        inner = f"x{k}" + "".join(f" - a[{idx[(k, j)]}] * x{j}" for j in right[k])
        S.append(f"    x{k} = ({inner}) * a[{idx[(k, k)]}]")
    S += [f"    b[{i}] = x{i}" for i in range(n)]
    if n == 0:
        S.append("    pass")
    return "\n".join(L) + "\n\n" + "\n".join(S) + "\n", len(lu)


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
    import sympy as sp

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
                    jac_t.append(((i, j), d))
        for q, li in enumerate(lin_needed):
            xs = sp.Symbol(f"xl[{li}]", real=True)
            if xs in e.free_symbols:
                d = sp.diff(e, xs)
                if d != 0:
                    jl_t.append(((i, q), d))
    # parameter-only subexpressions (covariate powers, 4/MTT, ...) are evaluated once per patient
    psyms = {sp.Symbol(f"p[{i}]", real=True) for i in range(len(pnames))}
    registry: dict = {}
    f = _hoist(f, psyms, registry)
    jac_t = list(zip([t for t, _ in jac_t], _hoist([e for _, e in jac_t], psyms, registry)))
    jl_t = list(zip([t for t, _ in jl_t], _hoist([e for _, e in jl_t], psyms, registry)))
    rhs_t = [(f"dy[{i}]", e + sp.Symbol(f"u[{i}]")) for i, e in enumerate(f)]
    # packed Jacobians: values in a fixed (row, col) order, known structure
    jac_pattern = [ij for ij, _ in jac_t]
    jl_pattern = [iq for iq, _ in jl_t]
    jac_p = [(f"Jv[{m}]", e) for m, (_, e) in enumerate(jac_t)]
    jl_p = [(f"JLv[{m}]", e) for m, (_, e) in enumerate(jl_t)]
    lu_src, n_lu = _emit_sparse_lu(jac_pattern, len(ode))
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
        f"JROW = np.array({[i for i, _ in jac_pattern]!r}, dtype=np.int64)",
        f"JCOL = np.array({[j for _, j in jac_pattern]!r}, dtype=np.int64)",
        f"JLROW = np.array({[i for i, _ in jl_pattern]!r}, dtype=np.int64)",
        f"JLCOL = np.array({[q for _, q in jl_pattern]!r}, dtype=np.int64)",
        f"N_JAC = {max(len(jac_pattern), 1)}",
        f"N_JLIN = {max(len(jl_pattern), 1)}",
        f"N_LU = {max(n_lu, 1)}",
        "",
        _emit("derived", "p, qd", derived_t),
        _emit("rhs", "t, y, xl, u, p, qd, dy", rhs_t),
        _emit("jac_sp", "t, y, xl, u, p, qd, Jv", jac_p),
        _emit("jac_lin_sp", "t, y, xl, u, p, qd, JLv", jl_p),
        lu_src,
        _emit("outputs", "t, y, xl, p, o", out_t),
        _emit_output_one(out_t),
        _emit("init_state", "p, y, xl", init_t),
        _emit("lin_matrix", "p, A", lin_t, header="    A[:, :] = 0.0"),
    ]
    return "\n".join(parts) + "\n" + _template_text(), ode, lin, pnames, outs


def _template_text() -> str:
    return (resources.files("chemohost.engine") / "templates" / "rosenbrock.py").read_text()


_loaded: dict[str, CompiledModel] = {}
_generated: dict[str, tuple[str, list[str], list[str], list[str], list[str]]] = {}


def declaration_key(model: Model, closed_form: bool = True) -> str:
    """Hash of everything :func:`generate_source` reads: the model's species, parameters, flows and
    outputs (not parameter values, which are not in code), this generator, the expression parser,
    the solver template and the library versions.  Lets :func:`compile_model` skip the symbolic
    work (seconds of sympy) when the generated module is already on disk."""
    import numba

    from ..model import expr as _expr

    h = hashlib.sha256()
    sympy_version = metadata.version("sympy")  # not sympy.__version__: importing sympy costs 0.3 s per start
    h.update(repr((model.name, bool(closed_form), __version__, sympy_version, numba.__version__, np.__version__)).encode())
    h.update(repr([(s.name, s.initial) for s in model.species.values()]).encode())
    h.update(repr(list(model.parameters)).encode())
    h.update(repr([(f.name, f.source, f.target, f.rate) for f in model.flows.values()]).encode())
    h.update(repr([(o.name, o.expr) for o in model.outputs.values()]).encode())
    h.update(repr(sorted(model.owner.items())).encode())
    h.update(Path(__file__).read_bytes())
    h.update(Path(_expr.__file__).read_bytes())
    h.update(_template_text().encode())
    return h.hexdigest()[:24]


def compile_model(model: Model, closed_form: bool = True) -> CompiledModel:
    """Compile (or load from the on-disk cache) the numba module for ``model``."""
    import numba

    directory = cache_dir() / "models"
    key = declaration_key(model, closed_form)
    index = directory / "index" / f"{key}.json"
    meta = None
    try:
        meta = json.loads(index.read_text())
        if not (directory / f"chemohost_model_{meta['digest']}.py").exists():
            meta = None
    except (OSError, ValueError, KeyError):
        meta = None
    if meta is not None:
        digest, ode, lin, pnames, outs = meta["digest"], meta["ode"], meta["lin"], meta["params"], meta["outputs"]
        source = None
    else:
        if key not in _generated:
            _generated[key] = generate_source(model, closed_form)
        source, ode, lin, pnames, outs = _generated[key]
        digest = hashlib.sha256((source + numba.__version__ + np.__version__).encode()).hexdigest()[:20]
    modname = f"chemohost_model_{digest}"
    path = directory / f"{modname}.py"
    if source is not None:
        # the module file, then the index entry that lets later processes skip generate_source
        directory.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != source:
            _write_atomic(path, source)
        index.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(index, json.dumps({"digest": digest, "ode": ode, "lin": lin, "params": pnames, "outputs": outs}))
    if digest in _loaded:
        return _loaded[digest]
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    cm = CompiledModel(model, ode, lin, pnames, outs, mod, digest, closed_form)
    _loaded[digest] = cm
    return cm


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
