"""The CPU engine compiled by the system C compiler instead of numba (``SolverOptions(backend="c-simd")``, the
default when a compiler is found, or ``"c"``).

The generated numba module of a model stays the single source of the model's mathematics: its kernels
(right-hand side, sparse Jacobians, the generated sparse LU and solve, outputs, initial state, derived
parameters, the linear PK matrix) are translated to C statement by statement from their Python syntax tree
(:func:`kernels_c`: straight-line arithmetic, ``if``/``return``, subscripts; ``max``/``min`` with Python's
semantics); the step kernels again in lane form (:func:`lane_kernels_c`, :class:`LaneKernelC`: LANES patients
side by side, arrays ``[i * LANES + lane]``; the step start's right-hand side and Jacobians fused into one
lane loop, ``start_v``, so the compiler computes the powers and logarithms they share once); and
``templates/rosenbrock.c``, a line-by-line translation of the solver template ``templates/rosenbrock.py``
restructured into lanes, is appended.  The text is compiled once per
model and lane count into a shared library (``c``: 1 lane, ``gcc -O2 -fopenmp -ffp-contract=off``; ``c-simd``: 8
lanes, :data:`SIMD_FLAGS`; cached beside the numba module, keyed by the text, the flags and the compiler) and
called through ctypes, which releases the GIL; each OpenMP thread runs LANES patients at a time.

Why: numba spends ~40 s typing and lowering the generated module of ``host_response`` on a first run; the
C compiler builds the same kernels in seconds (``benchmarks/small_runs.py``).  With 1 lane and without
floating-point contraction both back ends perform the same operations in the same order, so they agree to
round-off, bit for bit in the tests (tests/test_cbackend.py); 8 lanes run ~2.4-3x faster
(``benchmarks/lanes.py``) within round-off or the tolerance (tests/test_lanes.py).  The GPU kernel (:mod:`.gpu`)
is still generated from the numba module.
OpenMP (libgomp) is not fork-safe: a process that ran the C engine must not run it again in a forked child
(Dask's LocalCluster starts its worker processes with spawn, not fork).
"""

from __future__ import annotations

import ast
import copy
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SolverError

_TEMPLATE = Path(__file__).with_name("templates") / "rosenbrock.c"
#: the kernels the C template calls
KERNELS = ("derived", "rhs", "jac_sp", "jac_lin_sp", "lu_sp", "solve_sp", "output_one", "init_state", "lin_matrix")
_RETURNS = {"lu_sp": "int", "output_one": "double"}
FLAGS = ["-O2", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", "-std=gnu11"]
#: the lane engine (backend "c-simd"): vector loops (``#pragma omp simd``; -O3 built 1 s slower and ran no faster),
#: glibc's vector math (no errno), no FP traps (if-conversion), contraction into FMA
SIMD_FLAGS = ["-O2", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11"]
#: patients side by side per thread in the "c-simd" engine (AVX-512: 8 doubles; narrower units split the loops)
SIMD_LANES = 8
#: the step kernels, also generated in lane form (``<name>_v``; the step start's rhs and Jacobians also as one fused
#: loop, ``start_v``)
LANE_KERNELS = ("rhs", "lu_sp", "solve_sp")
#: the kernels fused into ``start_v`` (a step's start: one lane loop, shared powers computed once)
START_KERNELS = ("rhs", "jac_sp", "jac_lin_sp")
#: on x86-64 the library is built for this CPU (AVX-512 etc., as numba does); its cache key then names the CPU, so a
#: cache directory shared by machines of different CPUs holds one library per CPU
NATIVE = ["-march=native"] if platform.machine() in ("x86_64", "AMD64") else []
#: the lane engine's loops on AVX-512 units in full 512-bit vectors (gcc's default for these CPUs is 256 bits): 8 lanes
#: in one register, glibc's 8-wide exp/log; 5% of a whole run faster, same-process A/B (no effect without AVX-512)
SIMD_NATIVE = NATIVE + ["-mprefer-vector-width=512"] if NATIVE else []
_loaded: dict = {}
_failed: dict = {}


class KernelC(ast.NodeVisitor):
    """C text of one generated kernel (the subset of Python the code generator writes)."""

    def __init__(self, n_lin: int):
        self.n_lin = n_lin

    def index(self, node) -> str:
        return str(node.value) if isinstance(node, ast.Constant) else self.expr(node)

    def expr(self, n) -> str:
        if isinstance(n, ast.Constant):
            if isinstance(n.value, bool):
                return "1" if n.value else "0"
            if isinstance(n.value, (int, float)):
                return repr(float(n.value))
        elif isinstance(n, ast.Name):
            return n.id
        elif isinstance(n, ast.Attribute) and ast.unparse(n) in ("math.nan", "math.inf", "np.nan", "np.inf"):
            return "NAN" if ast.unparse(n).endswith("nan") else "INFINITY"
        elif isinstance(n, ast.Subscript):
            name = n.value.id
            if isinstance(n.slice, ast.Tuple):  # 2-D (lin_matrix's A, row-major)
                i, j = (self.index(e) for e in n.slice.elts)
                return f"{name}[({i}) * {self.n_lin} + ({j})]"
            return f"{name}[{self.index(n.slice)}]"
        elif isinstance(n, ast.BinOp):
            a, b = self.expr(n.left), self.expr(n.right)
            if isinstance(n.op, ast.Pow):
                if isinstance(n.right, ast.Constant) and n.right.value == 2:
                    return f"_sq({a})"  # numba: x*x for an integer literal 2
                if isinstance(n.right, ast.Constant) and isinstance(n.right.value, int):
                    raise SolverError(f"C code generation: integer power {n.right.value} is not supported")
                return f"pow({a}, {b})"
            ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.BitAnd: "&", ast.BitOr: "|"}
            if type(n.op) in ops:
                return f"({a} {ops[type(n.op)]} {b})"
        elif isinstance(n, ast.UnaryOp):
            if isinstance(n.op, ast.USub):
                return f"(-{self.expr(n.operand)})"
            if isinstance(n.op, ast.Not):
                return f"(!{self.expr(n.operand)})"
        elif isinstance(n, ast.Call):
            f, args = ast.unparse(n.func), [self.expr(a) for a in n.args]
            if f in ("max", "min"):
                out = args[0]
                for a in args[1:]:
                    out = f"_p{f}({out}, {a})"
                return out
            fn = {"abs": "fabs", "float": "(double)", "math.isfinite": "isfinite", "math.exp": "exp",
                  "math.log": "log", "math.sqrt": "sqrt", "math.expm1": "expm1", "math.log1p": "log1p"}.get(f)
            if fn:
                return f"{fn}({', '.join(args)})"
        elif isinstance(n, ast.Compare) and len(n.ops) == 1:
            ops = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
            side = [self.index(e) if isinstance(e, ast.Constant) and type(e.value) is int else self.expr(e)
                    for e in (n.left, n.comparators[0])]  # (int == int: output_one's switch on k)
            return f"({side[0]} {ops[type(n.ops[0])]} {side[1]})"
        elif isinstance(n, ast.IfExp):
            return f"({self.expr(n.test)} ? {self.expr(n.body)} : {self.expr(n.orelse)})"
        raise SolverError(f"C code generation: unsupported expression {ast.unparse(n)[:120]!r}")

    def body(self, stmts, declared: set, ind: str = "    ") -> list[str]:
        out = []
        for st in stmts:
            if isinstance(st, ast.Assign) and len(st.targets) == 1:
                tg = st.targets[0]
                if isinstance(tg, ast.Name):
                    out.append(f"{ind}{'' if tg.id in declared else 'double '}{tg.id} = {self.expr(st.value)};")
                    declared.add(tg.id)
                elif (isinstance(tg, ast.Subscript) and isinstance(tg.slice, ast.Tuple)
                      and all(isinstance(e, ast.Slice) for e in tg.slice.elts)):  # A[:, :] = value
                    nn = self.n_lin * self.n_lin
                    out.append(f"{ind}for (int _i = 0; _i < {nn}; _i++) {tg.value.id}[_i] = {self.expr(st.value)};")
                else:
                    out.append(f"{ind}{self.expr(tg)} = {self.expr(st.value)};")
            elif isinstance(st, ast.AugAssign) and type(st.op) in (ast.Add, ast.Sub, ast.Mult):
                op = {ast.Add: "+=", ast.Sub: "-=", ast.Mult: "*="}[type(st.op)]
                out.append(f"{ind}{self.expr(st.target)} {op} {self.expr(st.value)};")
            elif isinstance(st, ast.Return):
                out.append(f"{ind}return {self.expr(st.value)};" if st.value is not None else f"{ind}return;")
            elif isinstance(st, ast.If):
                out.append(f"{ind}if ({self.expr(st.test)}) {{")
                out += self.body(st.body, set(declared), ind + "    ")
                if st.orelse:
                    out.append(f"{ind}}} else {{")
                    out += self.body(st.orelse, set(declared), ind + "    ")
                out.append(f"{ind}}}")
            elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant):
                continue  # docstring
            elif isinstance(st, ast.Pass):
                continue
            else:
                raise SolverError(f"C code generation: unsupported statement {ast.unparse(st)[:120]!r}")
        return out


def _constants(tree) -> dict:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, v = node.targets[0].id, node.value
            if isinstance(v, ast.Constant) and isinstance(v.value, (int, float)):
                out[name] = v.value
            elif isinstance(v, ast.Call) and ast.unparse(v.func) == "np.array" and v.args:
                out[name] = [int(x) for x in ast.literal_eval(v.args[0])]
    return out


def kernels_c(py_source: str) -> str:
    """The C header (constants) and kernels of a generated numba module's text."""
    tree = ast.parse(py_source)
    c = _constants(tree)
    need = ["N_ODE", "N_LIN", "N_OUT", "N_DERIVED", "N_JAC", "N_JLIN", "N_LU", "LIN_NEEDED", "JROW", "JCOL",
            "JLROW", "JLCOL", "REL_FLOOR", "LU_GROWTH_MAX"]
    missing = [k for k in need if k not in c]
    if missing:
        raise SolverError(f"C code generation: the generated module has no {missing}; update engine/cbackend.py")
    lines = ["#include <math.h>", "#include <stdint.h>", "#include <stdlib.h>", ""]
    for k in ("N_ODE", "N_LIN", "N_OUT", "N_DERIVED", "N_JAC", "N_JLIN", "N_LU"):
        lines.append(f"#define {k} {int(c[k])}")
        lines.append(f"#define {k}1 {max(int(c[k]), 1)}")
    lines.append(f"#define N_NEEDED {len(c['LIN_NEEDED'])}")
    lines.append(f"#define N_NEEDED1 {max(len(c['LIN_NEEDED']), 1)}")
    lines.append(f"#define REL_FLOOR {float(c['REL_FLOOR'])!r}")
    lines.append(f"#define LU_GROWTH_MAX {float(c['LU_GROWTH_MAX'])!r}")
    for k in ("LIN_NEEDED", "JROW", "JCOL", "JLROW", "JLCOL"):
        vals = c[k] or [0]
        lines.append(f"static const int64_t {k}[{len(vals)}] = {{{', '.join(map(str, vals))}}};")
    lines += ["static inline double _sq(double x) { return x * x; }",
              "static inline double _pmax(double a, double b) { return b > a ? b : a; }  /* Python's max */",
              "static inline double _pmin(double a, double b) { return b < a ? b : a; }  /* Python's min */", ""]
    found = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name in KERNELS}
    if set(found) != set(KERNELS):
        raise SolverError(f"C code generation: kernels {sorted(set(KERNELS) - set(found))} not found; "
                          "update engine/cbackend.py")
    conv = KernelC(int(c["N_LIN"]))
    for name in KERNELS:
        f = found[name]
        args = []
        for a in f.args.args:
            if a.arg in ("t", "ig"):
                args.append(f"double {a.arg}")
            elif a.arg == "k":
                args.append(f"int64_t {a.arg}")
            else:
                args.append(f"double *restrict {a.arg}")
        lines.append(f"static {_RETURNS.get(name, 'void')} {name}({', '.join(args)}) {{")
        lines += conv.body(f.body, set())
        if name == "output_one":
            lines.append("    return NAN;")
        lines += ["}", ""]
    return "\n".join(lines)


#: pow in the lane kernels: exp(b log|a|) (glibc's vector exp and log cost a fraction of its vector pow, measured in
#: benchmarks/lanes.py), with pow's results where that differs: a finite negative base (an integer exponent gives a
#: signed power, any other NaN; -inf and -0.0: odd integers give the sign), pow(x, 0) = pow(1, y) = pow(-1, +-inf) = 1.
#: glibc's vector log and exp fall back to scalar code, lane by lane, for special arguments (measured: 11% of the time
#: on a population whose marrow states reach zero), so a zero base and exp arguments below -708 are selected, not
#: computed; results below ~1e-308 are flushed to 0.  Every pair of special, subnormal and ordinary values is tested
#: against pow.  Relative error ~|b log a| ulp (1e-13 at |b log a| = 700).  gcc 12 vectorises the kernels' loops
#: only for some forms of these selects: check with -fopt-info-vec after a change (tests/test_lanes.py checks that
#: the library calls the vector exp and log).
_VPOW = """static inline __attribute__((always_inline)) double _vpow(double a, double b) {
    double aa = fabs(a);
    double t = b * log(aa == 0.0 ? 1.0 : aa);  /* (log(0) and exp below -708 run glibc's scalar code: avoided) */
    double lo = (double)(t < -708.0);
    double r = exp(t + lo * (-708.0 - t)) * (1.0 - lo);
    r = t == INFINITY ? INFINITY : r;
    r = t == -INFINITY ? 0.0 : r;
    r = t != t ? NAN : r;
    r = aa == 0.0 ? (b < 0.0 ? INFINITY : (b > 0.0 ? 0.0 : NAN)) : r;
    double nb = nearbyint(b), nh = nearbyint(0.5 * b);
    double sgn = b == nb ? (0.5 * b != nh ? -r : r) : r;
    double neg = b != nb ? ((fabs(a) != INFINITY) & (a != 0.0) ? NAN : sgn) : sgn;
    double x = copysign(1.0, a) < 0.0 ? neg : r;  /* (-0.0 too; signbit() does not vectorise in gcc 12) */
    x = b == 0.0 ? 1.0 : x;
    x = a == 1.0 ? 1.0 : x;
    return a == -1.0 ? (fabs(b) == INFINITY ? 1.0 : x) : x;  /* (chained selects: gcc 12 vectorises these) */
}"""


class LaneKernelC(KernelC):
    """C text of a step kernel for ``LANES`` (a C macro) patients side by side: every array indexed
    ``[i * LANES + l]``, the
    scalars ``t``/``ig`` per lane, inside one ``#pragma omp simd`` loop over the lanes; ``lu_sp``'s final
    ``return`` (its stability check) becomes the lane's flag ``ok[l]``."""

    def expr(self, n) -> str:
        if isinstance(n, ast.Subscript) and not isinstance(n.slice, ast.Tuple):
            return f"{n.value.id}[({self.index(n.slice)}) * LANES + l]"
        if isinstance(n, ast.Name) and n.id in ("t", "ig"):
            return f"{n.id}[l]"
        out = super().expr(n)
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) and out.startswith("pow("):
            out = "_v" + out
        return out

    def kernel(self, f: ast.FunctionDef) -> list[str]:
        body = [st for st in f.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
        for st in ast.walk(ast.Module(body=body[:-1], type_ignores=[])):
            if isinstance(st, ast.Return):  # an early return cannot be a lane's (the lanes run on together)
                raise SolverError(f"C code generation: kernel {f.name} returns before its end; the lane engine "
                                  "(backend 'c-simd') cannot run this model, use backend 'c'")
        ret = body and isinstance(body[-1], ast.Return)
        if ret != (f.name == "lu_sp"):
            raise SolverError(f"C code generation: kernel {f.name} {'returns' if ret else 'has no return'}; "
                              "update engine/cbackend.py")
        args = [f"double *restrict {a.arg}" for a in f.args.args] + (["int *restrict ok"] if ret else [])
        lines = [f"static void {f.name}_v({', '.join(args)}) {{", "#pragma omp simd", "    for (int l = 0; l < LANES; l++) {"]
        lines += self.body(body[:-1] if ret else body, set(), "        ")
        if ret:
            lines.append(f"        ok[l] = {self.expr(body[-1].value)};")
        return lines + ["    }", "}", ""]

    def fused(self, name: str, funcs: list) -> list[str]:
        """One lane loop running the bodies of ``funcs`` (the step-start kernels: the same inputs, their own
        outputs) in turn, their temporaries renamed apart: the compiler then computes a power or logarithm that
        several of them share once."""
        args, bodies = [], []
        for k, f in enumerate(funcs):
            f = copy.deepcopy(f)
            for node in ast.walk(f):
                if isinstance(node, ast.Name) and node.id.startswith("_x"):
                    node.id = f"_f{k}{node.id}"
            args += [a.arg for a in f.args.args if a.arg not in args]
            bodies += [st for st in f.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
        for st in ast.walk(ast.Module(body=bodies, type_ignores=[])):
            if isinstance(st, ast.Return):
                raise SolverError("C code generation: a step-start kernel returns; the lane engine (backend 'c-simd') "
                                  "cannot run this model, use backend 'c'")
        lines = [f"static void {name}({', '.join(f'double *restrict {a}' for a in args)}) {{", "#pragma omp simd",
                 "    for (int l = 0; l < LANES; l++) {"]
        lines += self.body(bodies, set(), "        ")
        return lines + ["    }", "}", ""]


def lane_kernels_c(py_source: str, lanes: int) -> str:
    """``LANES`` and the step kernels in lane form (``rhs_v`` ...) of a generated numba module's text."""
    tree = ast.parse(py_source)
    n_lin = int(_constants(tree)["N_LIN"])
    lines = [f"#define LANES {int(lanes)}"]
    if lanes > 1:  # glibc's vector variants (libmvec), as math.h declares them under -ffast-math only
        lines += [f"double {f}(double) __attribute__((simd(\"notinbranch\")));" for f in ("exp", "log")]
        lines += ["double pow(double, double) __attribute__((simd(\"notinbranch\")));", _VPOW]
    else:
        lines += ["#define _vpow pow"]
    conv = LaneKernelC(n_lin)
    found = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    for name in LANE_KERNELS:
        lines += conv.kernel(found[name])
    lines += conv.fused("start_v", [found[k] for k in START_KERNELS])
    return "\n".join(lines)


def c_source(py_source: str, lanes: int = 1) -> str:
    """The whole C text (kernels, lane kernels, then the solver template) of a generated numba module's text."""
    return kernels_c(py_source) + "\n" + lane_kernels_c(py_source, lanes) + "\n" + _TEMPLATE.read_text()


def _cpu_id() -> str:
    """What the native build depends on: the machine and its CPU's feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        flags = platform.processor()
    return platform.machine() + flags


def available() -> bool:
    """A C compiler is there (the ``auto`` backend then uses this engine)."""
    try:
        compiler()
        return True
    except SolverError:
        return False


def compiler() -> str:
    """The C compiler (``$CC``, else gcc or cc on PATH)."""
    env = os.environ.get("CC")
    if env:
        cc = shutil.which(env)
        if not cc:
            raise SolverError(f"backend 'c': the C compiler $CC={env!r} was not found; set CC to an installed compiler "
                              "or unset it")
        return cc
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise SolverError("backend 'c' needs a C compiler (gcc, or $CC); none was found on PATH. Install gcc "
                          "(Debian: apt-get install gcc) or use backend 'numba'")
    return cc


def library(cm, lanes: int = 1):
    """The compiled C engine of model ``cm`` with ``lanes`` patients side by side per thread (1: backend "c";
    :data:`SIMD_LANES`: "c-simd"), built once and cached beside its numba module.  A build or load that failed is
    remembered (raised again, not retried on every call): for the process, and for later processes by a
    ``.failed`` file beside the library (so ``auto`` on a platform without vector maths does not pay a failed
    lane build in every process or Dask worker)."""
    cc = compiler()
    mkey = (cm.module.__file__, cc, lanes)
    if mkey in _loaded:
        return _loaded[mkey]
    if mkey in _failed:
        raise SolverError(_failed[mkey])
    try:
        lib = _build_and_load(cm, cc, lanes)
    except SolverError as exc:
        _failed[mkey] = str(exc)
        raise
    _loaded[mkey] = lib
    return lib


def _source_digest(cm, lanes: int) -> tuple[str, str | None]:
    """``(digest of the engine's C source, the source or None)``.  The source is generated (~0.15 s) only when no
    earlier process recorded its digest for the same inputs: the model module, the template, this generator and
    the Python that parses the module."""
    module = Path(cm.module.__file__)
    py = module.read_text()
    inputs = hashlib.sha256("\0".join([py, _TEMPLATE.read_text(), Path(__file__).read_text(), str(lanes),
                                        sys.version]).encode())
    record = module.parent / f"chemohost_csrc_{inputs.hexdigest()[:20]}.sha256"
    try:
        digest = record.read_text().strip()
        if len(digest) == 64:
            return digest, None
    except OSError:
        pass
    text = c_source(py, lanes)
    digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        fd, tmp = tempfile.mkstemp(prefix=record.name, dir=module.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(digest)
        os.replace(tmp, record)
    except OSError:  # a read-only cache: the source is generated again next time
        pass
    return digest, text


def build_flags(lanes: int) -> list[str]:
    """The compiler flags of the engine with ``lanes`` patients side by side (1: "c"; else "c-simd")."""
    return FLAGS + NATIVE if lanes == 1 else SIMD_FLAGS + SIMD_NATIVE


def engine_digest(cm, lanes: int) -> str:
    """What the engine's results depend on beyond the model's code: its C source, build flags and, for a build
    for this machine's CPU (``-march=native``), the CPU's features, which select the instructions and glibc's
    math variants and so the round-off (a checkpoint records it, :func:`chemohost.engine.simulate.engine_id`)."""
    cpu = _cpu_id() if NATIVE else ""
    return hashlib.sha256((_source_digest(cm, lanes)[0] + " ".join(build_flags(lanes)) + "\0" + cpu).encode()
                          ).hexdigest()[:16]


def _build_and_load(cm, cc: str, lanes: int):
    digest, text = _source_digest(cm, lanes)
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SolverError(f"backend 'c': the C compiler {cc!r} does not run ({exc})") from None
    flags = build_flags(lanes)
    key = hashlib.sha256("\0".join([digest, cc, version, *flags, _cpu_id() if NATIVE else ""]).encode()).hexdigest()[:20]
    directory = Path(cm.module.__file__).parent
    so = directory / f"chemohost_c_{key}.so"
    failed = so.with_suffix(".failed")  # a build or load that failed, remembered across processes
    if failed.exists():
        raise SolverError(f"{failed.read_text(errors='replace')} (remembered in {failed}; delete it to try again)")
    try:
        return _compile_and_open(cm, cc, lanes, so, key, flags, text)
    except SolverError as exc:
        try:
            failed.write_text(str(exc))
        except OSError:
            pass
        raise


def _compile_and_open(cm, cc: str, lanes: int, so: Path, key: str, flags: list, text: str | None):
    directory = so.parent
    if not so.exists():
        if text is None:
            text = c_source(Path(cm.module.__file__).read_text(), lanes)
        tmp_src = tmp = None
        try:
            fd, tmp_src = tempfile.mkstemp(prefix=f"chemohost_c_{key}.", suffix=".c", dir=directory)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            fd, tmp = tempfile.mkstemp(prefix=f"chemohost_c_{key}.", suffix=".so", dir=directory)
            os.close(fd)
            r = subprocess.run([cc, *flags, "-o", tmp, tmp_src, "-lm"], capture_output=True, text=True)
            if r.returncode != 0:
                raise SolverError(f"backend 'c': compiling the engine of model '{cm.model.name}' failed ({cc} exit "
                                  f"{r.returncode}):\n{r.stderr[-2000:]}")
            os.replace(tmp_src, directory / f"chemohost_c_{key}.c")  # (kept beside the library, for reading)
            tmp_src = None
            os.replace(tmp, so)
            tmp = None
        except OSError as exc:
            raise SolverError(f"backend 'c': cannot build the engine in {directory} ({exc})") from None
        finally:
            for leftover in (tmp_src, tmp):
                if leftover:
                    Path(leftover).unlink(missing_ok=True)
    try:
        lib = ctypes.CDLL(str(so))
    except OSError as exc:
        so.unlink(missing_ok=True)  # an unloadable library must not be served from the cache again
        raise SolverError(f"backend 'c': the compiled engine {so} does not load ({exc}); removed it") from None
    i64, dbl, ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    lib.simulate_batch.restype = None
    lib.simulate_batch.argtypes = [i64] * 12 + [ptr] * 19 + [dbl, dbl, i64, i64, i64] + [ptr] * 17 + [i64]
    lib.lin_matrices.restype = None
    lib.lin_matrices.argtypes = [i64, i64, i64, ptr, ptr, i64]
    lib.init_states.restype = None
    lib.init_states.argtypes = [i64, i64, ptr, ptr, ptr]
    return lib


def _c(a, dtype):
    """A C-contiguous array of ``dtype`` (a copy only where needed) for read-only arguments."""
    return np.ascontiguousarray(a, dtype=dtype)


def _out(a, dtype, name):
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable):
        raise SolverError(f"backend 'c': {name} must be a writeable C-contiguous {np.dtype(dtype).name} array")
    return a


def simulate_batch_c(cm, args: list, threads: int, lanes: int = 1) -> None:
    """Run the C engine (``lanes`` patients side by side per thread) on ``args`` (exactly the numba
    ``simulate_batch`` arguments), writing the result arrays in place."""
    lib = library(cm, lanes)
    (P, V, Vinv, lam, mode_needed, ev_time, ev_kind, ev_target, ev_amount, ev_dose, n_ev, dose_rule, rule_out,
     rule_th, rule_fa, rule_n, ev_bio, times, out_sel, rtol, atol, max_steps, dense, sparse, res, factors, status,
     stats, dose_group, dose_cstart, delay_th, delay_days, max_delays, stop, dose_time, dose_status, resume,
     snap_t, snap_f, snap_i, start_snap) = args
    f8, i8, b1 = np.float64, np.int64, np.bool_
    N, NP = P.shape
    nl = lam.shape[1] if lam.ndim == 2 else 0
    E = ev_time.shape[1]
    D1 = factors.shape[1]
    R, B = rule_th.shape
    T, K = times.shape[0], out_sel.shape[0]
    NS, LF, LI = snap_f.shape[1], snap_f.shape[2], snap_i.shape[2]
    if nl != int(cm.module.N_LIN):  # (the template's arrays are sized by the compiled N_LIN)
        raise SolverError(f"backend 'c': the linear sub-system has {nl} states, the compiled model {cm.module.N_LIN}")
    keep = [
        _c(P, f8), _c(V, f8), _c(Vinv, f8), _c(lam, f8), _c(mode_needed, b1),
        _out(ev_time, f8, "ev_time"), _out(ev_kind, i8, "ev_kind"), _out(ev_target, i8, "ev_target"),
        _out(ev_amount, f8, "ev_amount"), _out(ev_dose, i8, "ev_dose"), _c(n_ev, i8), _c(dose_rule, i8),
        _c(rule_out, i8), _c(rule_th, f8), _c(rule_fa, f8), _c(rule_n, i8), _out(ev_bio, i8, "bio_index"),
        _c(times, f8), _c(out_sel, i8),
    ]
    tail = [
        _out(res, f8, "res"), _out(factors, f8, "factors"), _out(status, i8, "status"), _out(stats, i8, "stats"),
        _c(dose_group, i8), _c(dose_cstart, b1), _c(delay_th, f8), _c(delay_days, f8), _c(max_delays, i8),
        _c(stop, f8), _out(dose_time, f8, "dose_time"), _out(dose_status, np.int8, "dose_status"), _c(resume, f8),
        _c(snap_t, f8), _out(snap_f, f8, "snap_f"), _out(snap_i, i8, "snap_i"), _c(start_snap, i8),
    ]
    lib.simulate_batch(N, NP, nl, E, D1, R, B, T, K, NS, LF, LI, *[a.ctypes.data for a in keep],
                       float(rtol), float(atol), int(max_steps), int(bool(dense)), int(bool(sparse)),
                       *[a.ctypes.data for a in tail], int(threads))


def lin_matrices_c(cm, P: np.ndarray, A: np.ndarray, threads: int, lanes: int = 1) -> None:
    """(N, L, L) the linear sub-system's matrix of each patient, in place (the C ``lin_matrix``)."""
    P = _c(P, np.float64)
    _out(A, np.float64, "A")
    library(cm, lanes).lin_matrices(P.shape[0], P.shape[1], A.shape[1] if A.ndim == 3 else 0, P.ctypes.data, A.ctypes.data,
                             int(threads))
