"""What patients side by side in SIMD lanes would give: the per-step kernels of ``host_response`` run for one patient
(the C engine's kernels, as the engine calls them; the peer) and for 8 patients at once in the 8 double lanes of AVX-512 (C, ``#pragma omp
simd``, glibc's vector ``pow``), timed per patient and per call in the same process.

This measures the lever issue 13 lists first, before building it into the solver: the lanes version of each kernel is
the C engine's own translation (``cbackend.KernelC``) with every array indexed ``[i * 8 + lane]``; the integrator
around the kernels (per-lane step sizes, accept masks, events) is not built.  The rhs/Jacobian/LU/solve of a Rodas4
step are ~2/3 of its time (the rest: the closed-form PK at the stage times, vector updates, error norm).

    python benchmarks/simd_lanes.py
"""

from __future__ import annotations

import ast
import ctypes
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LANES = 8
STEP_KERNELS = {"rhs": 6, "jac_sp": 1, "jac_lin_sp": 1, "lu_sp": 1, "solve_sp": 6}  # calls per Rodas4 step

_BENCH = r"""
#include <time.h>
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }
double bench(int which, long K, double *t, double *y, double *xl, double *u, double *p, double *qd, double *out,
             double *a, double *b) {
    double t0 = now();
    for (long i = 0; i < K; i++) {
        t[0] += 1e-15;
        switch (which) {
        case 0: RHS(T, y, xl, u, p, qd, out); break;
        case 1: JAC(T, y, xl, u, p, qd, out); break;
        case 2: JLIN(T, y, xl, u, p, qd, out); break;
        case 3: LU(out, IG, a); break;
        default: SOLVE(a, b); break;
        }
    }
    return (now() - t0) / K;
}
"""


def lane_kernels(py_source: str) -> str:
    """C text of the per-step kernels for LANES patients side by side (arrays ``[i * LANES + l]``)."""
    from chemohost.engine.cbackend import KernelC, kernels_c

    class Lanes(KernelC):
        def expr(self, n):
            if isinstance(n, ast.Subscript) and not isinstance(n.slice, ast.Tuple):
                return f"{n.value.id}[({self.index(n.slice)}) * {LANES} + l]"
            if isinstance(n, ast.Name) and n.id in ("t", "ig"):
                return f"{n.id}[l]"
            return super().expr(n)

        def body(self, stmts, declared, ind="    "):
            out = super().body(stmts, declared, ind)
            return [s.replace("return ", "ok[l] = ") for s in out]  # lu_sp's pivot check, per lane

    tree = ast.parse(py_source)
    header = kernels_c(py_source).split("static void derived(")[0]  # constants and helpers
    lines = [header]
    n_lin = next(int(ast.literal_eval(n.value)) for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", "") == "N_LIN")
    conv = Lanes(n_lin)
    for f in tree.body:
        if isinstance(f, ast.FunctionDef) and f.name in STEP_KERNELS:
            args = [f"double *restrict {a.arg}" for a in f.args.args]
            if f.name == "lu_sp":
                args.append("int *restrict ok")
            lines.append(f"void {f.name}_v({', '.join(args)}) {{")
            lines.append("    #pragma omp simd")
            lines.append(f"    for (int l = 0; l < {LANES}; l++) {{")
            lines += conv.body(f.body, set(), "        ")
            lines += ["    }", "}", ""]
    return "\n".join(lines)


def build(text: str, flags: list[str], directory: Path, name: str):
    src, so = directory / f"{name}.c", directory / f"{name}.so"
    src.write_text(text)
    t0 = time.perf_counter()
    subprocess.run(["gcc", *flags, "-fPIC", "-shared", "-o", str(so), str(src), "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(so))
    lib.bench.restype = ctypes.c_double
    return lib, time.perf_counter() - t0


def main():
    import numba

    import chemohost as ch
    from chemohost.api import parameter_vector, sample_patients
    from chemohost.engine import cbackend, codegen

    m = ch.get_model("host_response")
    cm = codegen.compile_model(m, True)
    M = cm.module
    py = Path(M.__file__).read_text()
    names, typ, cv = parameter_vector(m, "human", {})
    P = sample_patients(typ, cv, LANES, 1, True)
    n, nl = M.N_ODE, M.N_LIN
    Y, XL, QD = np.zeros((n, LANES)), np.zeros((nl, LANES)), np.zeros((M.N_DERIVED, LANES))
    for lane in range(LANES):
        y, xl, qd = np.zeros(n), np.zeros(nl), np.zeros(M.N_DERIVED)
        M.init_state(P[lane], y, xl)
        M.derived(P[lane], qd)
        Y[:, lane], XL[:, lane], QD[:, lane] = y * 0.7 + 1e-3, xl + 1e-2, qd
    print(f"chemohost {ch.__version__}, numba {numba.__version__}, gcc "
          f"{subprocess.run(['gcc', '-dumpversion'], capture_output=True, text=True).stdout.strip()}; "
          f"{os.cpu_count()} CPUs; host_response: {n} integrated states, {M.N_JAC} Jacobian entries, {M.N_LU} LU entries")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scalar_c = cbackend.kernels_c(py).replace("static void ", "void ").replace("static int ", "int ")
        bench = _BENCH.replace("RHS", "rhs").replace("JAC", "jac_sp").replace("JLIN", "jac_lin_sp").replace(
            "LU(out, IG, a)", "s_ += lu_sp(out, 100.0 + t[0], a)").replace("SOLVE", "solve_sp").replace("(T,", "(t[0],")
        bench = bench.replace("double t0 = now();", "double t0 = now(); int s_ = 0;").replace(
            "return (now() - t0) / K;", "return (now() - t0) / K + 0.0 * s_;")
        lib_s, t_s = build(scalar_c + bench, cbackend.FLAGS[:1] + cbackend.NATIVE + ["-ffp-contract=off"], tmp, "scalar")
        vec = lane_kernels(py)
        bench_v = _BENCH.replace("RHS", "rhs_v").replace("JAC", "jac_sp_v").replace("JLIN", "jac_lin_sp_v").replace(
            "LU(out, IG, a)", "lu_sp_v(out, t, a, ok)").replace("SOLVE", "solve_sp_v").replace("(T,", "(t,")
        bench_v = bench_v.replace("double t0 = now();", f"int ok[{LANES}]; double t0 = now();")
        lib_v, t_v = build(vec + bench_v, ["-O3", "-fopenmp-simd", "-ffast-math"] + cbackend.NATIVE, tmp, "lanes")
        print(f"gcc: scalar kernels built in {t_s:.2f} s, lane kernels in {t_v:.2f} s")
        ptr = lambda a: ctypes.c_void_p(a.ctypes.data)  # noqa: E731
        # scalar inputs: patient 0; lanes: the 8 patients interleaved
        y0, xl0, qd0, p0 = Y[:, 0].copy(), XL[:, 0].copy(), QD[:, 0].copy(), P[0].copy()
        u0, out0, a0, b0 = np.zeros(n), np.zeros(max(M.N_JAC, n)), np.zeros(M.N_LU), np.ones(n)
        M.jac_sp(0.1, y0, xl0, u0, p0, qd0, out0[:M.N_JAC])
        lanes = {k: np.ascontiguousarray(v).ravel() for k, v in (("y", Y), ("xl", XL), ("qd", QD), ("p", P.T))}
        uL, outL = np.zeros(n * LANES), np.repeat(out0[:, None], LANES, axis=1).ravel()
        aL, bL, tL = np.zeros(M.N_LU * LANES), np.ones(n * LANES), np.full(LANES, 100.0)
        K = 200_000
        print("\n| kernel (calls per step) | C, 1 patient (us) | C, 8 lanes: per patient (us) | lanes vs 1 patient |")
        print("|---|---|---|---|")
        tot = {"c": 0.0, "v": 0.0}
        for which, (name, calls) in enumerate(STEP_KERNELS.items()):
            # (every array the C side writes is a named copy: a temporary would be freed while C uses it)
            ts, outs, as_, bs = np.array([0.1]), out0.copy(), a0.copy(), b0.copy()
            t_c = lib_s.bench(which, ctypes.c_long(K), ptr(ts), ptr(y0), ptr(xl0), ptr(u0), ptr(p0), ptr(qd0),
                              ptr(outs), ptr(as_), ptr(bs)) * 1e6
            tv, outv, av, bv = tL.copy(), outL.copy(), aL.copy(), bL.copy()
            t_v = lib_v.bench(which, ctypes.c_long(K // 4), ptr(tv), ptr(lanes["y"]), ptr(lanes["xl"]), ptr(uL),
                              ptr(lanes["p"]), ptr(lanes["qd"]), ptr(outv), ptr(av), ptr(bv)) * 1e6 / LANES
            for k, v in (("c", t_c), ("v", t_v)):
                tot[k] += calls * v
            print(f"| {name} ({calls}) | {t_c:.3f} | {t_v:.3f} | {t_c / t_v:.1f}x |")
        print(f"| **kernels per Rodas4 step** | {tot['c']:.2f} | {tot['v']:.2f} | {tot['c'] / tot['v']:.1f}x |")
        # the lanes compute what the scalar kernels compute (lane 3 vs numba on patient 3)
        dyL = np.zeros(n * LANES)
        lib_v.rhs_v(ptr(tL), ptr(lanes["y"]), ptr(lanes["xl"]), ptr(uL), ptr(lanes["p"]), ptr(lanes["qd"]), ptr(dyL))
        ref = np.zeros(n)
        M.rhs(100.0, Y[:, 3].copy(), XL[:, 3].copy(), np.zeros(n), P[3].copy(), QD[:, 3].copy(), ref)
        err = np.max(np.abs(dyL.reshape(n, LANES)[:, 3] - ref) / (np.abs(ref) + 1e-12 * np.abs(ref).max()))
        print(f"lane 3's rhs vs numba on patient 3: max relative difference {err:.1e} (vector pow, -ffast-math)")


if __name__ == "__main__":
    sys.exit(main())
