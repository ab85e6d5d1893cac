"""The engine on a CUDA GPU: a kernel generated from the same declaration as the CPU engine.

The CPU module that :mod:`chemohost.engine.codegen` writes for a model (generated right-hand side,
Jacobian, sparse LU, outputs, closed-form PK, and the Rodas4 solver template with dose events and
dose-modification rules) is turned into a ``numba.cuda`` module by a fixed set of textual rewrites:

* every ``@nb.njit`` function becomes a CUDA device function (``@cuda.jit(device=True)``);
* the solver's work arrays become per-thread local arrays of compile-time size (``N_ODE``, ``N_LIN``,
  ``N_JAC``, ``N_LU``, ...; the dense fallback matrix ``N_ODE x N_ODE``), zeroed explicitly (local
  memory is not);
* the per-patient arrays whose size depends on the schedule (infusion rates per dose, delay counters,
  discontinued / paused flags per regimen) come from the host as rows of global arrays;
* the CPU ``prange`` batch becomes a kernel with one patient per thread.

So the GPU integrates exactly the CPU method: same steps, same error control, same events, same rules;
results agree with the CPU engine to round-off (tested on numba's CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``,
which runs the same kernel source in Python threads).  Each rewrite asserts that the text it expects is
present, so a change of the template that the GPU path does not know fails loudly at generation time.

A dose schedule is per patient (rows of the event arrays), as on the CPU; patients are sent in batches
(``GPU_BATCH``) so memory stays bounded on a 1e6-patient run.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import SolverError

GPU_BATCH = 65_536
THREADS_PER_BLOCK = 64
_loaded: dict = {}

_KERNEL = '''

_N_ODE1 = max(N_ODE, 1)
_N_LIN1 = max(N_LIN, 1)
_N_DERIVED1 = max(N_DERIVED, 1)
_N_JLIN1 = max(N_JLIN, 1)
_N_JAC1 = max(N_JAC, 1)
_N_LU1 = max(N_LU, 1)
_N_OUT1 = max(N_OUT, 1)
_N_NEEDED1 = max(LIN_NEEDED.shape[0], 1)
_N_HEV = 3 * (N_ODE + N_LIN) + 1


@cuda.jit(device=True)
def _zero(v):
    for i in range(v.shape[0]):
        v[i] = 0


@cuda.jit(device=True)
def _zero2(M):
    for i in range(M.shape[0]):
        for q in range(M.shape[1]):
            M[i, q] = 0.0


@cuda.jit
def simulate_kernel(P, V, Vinv, lam, mode_needed, ev_time, ev_kind, ev_target, ev_amount, ev_dose, n_ev,
                    dose_rule, rule_output, rule_thresholds, rule_factors, rule_n,
                    bio_index, t_out, out_sel, rtol, atol, max_steps, dense_output, sparse_lu, res, factors, status,
                    stats, dose_group, dose_cstart, rule_delay_th, rule_delay_days, rule_max_delays, stop_time,
                    dose_time, dose_status, rule_resume, snap_t, snap_f, snap_i, start_snap, w_rate, w_ndel, w_disc,
                    w_paused):
    i = cuda.grid(1)
    if i < P.shape[0]:
        status[i] = simulate_one(P[i], V[i], Vinv[i], lam[i], mode_needed[i], ev_time[i], ev_kind[i], ev_target[i],
                                 ev_amount[i], ev_dose[i], n_ev[i], dose_rule[i], rule_output,
                                 rule_thresholds, rule_factors, rule_n, bio_index[i], t_out, out_sel,
                                 rtol, atol, max_steps, dense_output, sparse_lu, res[i], factors[i], stats[i],
                                 dose_group[i], dose_cstart[i], rule_delay_th, rule_delay_days, rule_max_delays,
                                 stop_time[i], dose_time[i], dose_status[i], rule_resume, snap_t[i], snap_f[i],
                                 snap_i[i], start_snap[i], w_rate[i], w_ndel[i], w_disc[i], w_paused[i])
'''

# local work arrays of the solver: CPU allocation -> (size constant, numba type, 2-D)
_LOCAL = {
    "np.zeros(n)": ("_N_ODE1", "nb.float64"),
    "np.zeros(nl)": ("_N_LIN1", "nb.float64"),
    "np.zeros(N_DERIVED)": ("_N_DERIVED1", "nb.float64"),
    "np.zeros(N_JLIN)": ("_N_JLIN1", "nb.float64"),
    "np.zeros(LIN_NEEDED.shape[0])": ("_N_NEEDED1", "nb.float64"),
    "np.zeros(N_OUT)": ("_N_OUT1", "nb.float64"),
    "np.zeros(N_JAC)": ("_N_JAC1", "nb.float64"),
    "np.zeros(N_LU)": ("_N_LU1", "nb.float64"),
    "np.zeros((n, n))": ("(_N_ODE1, _N_ODE1)", "nb.float64"),
    "np.zeros(n, dtype=np.int64)": ("_N_ODE1", "nb.int64"),
    "np.zeros(nl, dtype=np.int64)": ("_N_LIN1", "nb.int64"),
    "np.zeros(3 * (n + nl))": ("_N_HEV", "nb.float64"),
}
# per-patient arrays sized by the schedule: rows of host arrays
_FROM_HOST = {
    "rate = np.zeros(max(ev_time.shape[0], factors.shape[0], 1))": "rate = w_rate",
    "n_delays = np.zeros(n_groups, dtype=np.int64)": "n_delays = w_ndel",
    "discontinued = np.zeros(n_groups, dtype=np.bool_)": "discontinued = w_disc",
    "paused = np.zeros(n_groups, dtype=np.bool_)": "paused = w_paused",
}


def cuda_source(cpu_source: str) -> str:
    """The numba.cuda module text for a generated CPU module's text."""
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise SolverError(f"GPU code generation: the solver template no longer has {what}; update engine/gpu.py")

    src = cpu_source
    need("def simulate_batch(" in src and "def simulate_one(" in src, "simulate_one/simulate_batch")
    # drop the CPU batch drivers (prange); the kernel replaces them
    cut = src.index('@nb.njit(cache=True, parallel=True, error_model="numpy")\ndef simulate_batch(')
    src = src[:cut]
    n_dec = src.count('@nb.njit(cache=True, error_model="numpy")')
    need(n_dec > 10 and "parallel=True" not in src, "the njit decorators")
    src = src.replace('@nb.njit(cache=True, error_model="numpy")', "@cuda.jit(device=True)")
    src = src.replace("import numba as nb\n", "import numba as nb\nfrom numba import cuda\n", 1)
    # simulate_one: signature, host work arrays, local arrays
    head = src.index("def simulate_one(")
    body_start = src.index("):\n", head) + 2
    sig = src[head:body_start]
    need(sig.rstrip().endswith("start_snap):"), "simulate_one(..., start_snap)")
    sig = sig.replace("start_snap):", "start_snap, w_rate, w_ndel, w_disc, w_paused):")
    body = src[body_start:]
    for old, new in _FROM_HOST.items():
        need(old in body, old)
        var = new.split(" = ")[0]
        body = body.replace(old, f"{new}\n    _zero({var})", 1)
    lines = []
    for line in body.splitlines():
        m = re.match(r"^(\s+)(\w+) = (np\.zeros\(.*?\))(\s*#.*)?$", line)
        if m and m.group(3) in _LOCAL:
            ind, var, alloc = m.group(1), m.group(2), m.group(3)
            size, typ = _LOCAL[alloc]
            lines.append(f"{ind}{var} = cuda.local.array({size}, {typ})")
            lines.append(f"{ind}{'_zero2' if size.startswith('(') else '_zero'}({var})")
            continue
        need("np.zeros(" not in line, f"no other allocation in simulate_one (found: {line.strip()})")
        lines.append(line)
    src = src[:head] + sig + "\n".join(lines) + "\n"
    return src + _KERNEL


def gpu_module(cm):
    """The CUDA module of compiled model ``cm`` (generated once, cached beside the CPU module)."""
    key = (cm.source_hash, os.environ.get("NUMBA_ENABLE_CUDASIM", "0"))
    if key in _loaded:
        return _loaded[key]
    cpu_path = Path(cm.module.__file__)
    path = cpu_path.with_name(cpu_path.stem + "_cuda.py")
    text = cuda_source(cpu_path.read_text())
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _loaded[key] = mod
    return mod


def check_gpu() -> None:
    """Refuse clearly when no CUDA device is usable (the simulator counts as one)."""
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba without its CUDA target
        raise SolverError(f"--device gpu needs numba's CUDA target ({exc}); install numba-cuda") from None
    if not cuda.is_available():
        raise SolverError("--device gpu: numba sees no CUDA GPU (numba.cuda.is_available() is False); run with "
                          "--device cpu, or install the CUDA driver and numba-cuda on a machine with an NVIDIA GPU")


def simulate_batch_gpu(cm, args: list) -> None:
    """Run the kernel on ``args`` (exactly the CPU ``simulate_batch`` arguments), writing the result arrays
    (res, factors, status, stats, dose_time, dose_status) in place, ``GPU_BATCH`` patients at a time."""
    from numba import cuda

    check_gpu()
    mod = gpu_module(cm)
    (P, V, Vinv, lam, mode_needed, ev_time, ev_kind, ev_target, ev_amount, ev_dose, n_ev, dose_rule, rule_out,
     rule_th, rule_fa, rule_n, ev_bio, times, out_sel, rtol, atol, max_steps, dense, sparse, res, factors, status,
     stats, dose_group, dose_cstart, delay_th, delay_days, max_delays, stop, dose_time, dose_status, resume,
     snap_t, snap_f, snap_i, start_snap) = args
    n = P.shape[0]
    E = ev_time.shape[1]
    G = int(dose_group.max()) + 1 if dose_group.size else 1
    shared = [cuda.to_device(np.ascontiguousarray(a)) for a in (rule_out, rule_th, rule_fa, rule_n, times, out_sel,
                                                                delay_th, delay_days, max_delays, resume)]
    d_rule_out, d_th, d_fa, d_rn, d_t, d_sel, d_dth, d_ddays, d_maxd, d_resume = shared
    for s in range(0, n, GPU_BATCH):
        e = min(n, s + GPU_BATCH)
        m = e - s
        per = [P, V, Vinv, lam, mode_needed, ev_time, ev_kind, ev_target, ev_amount, ev_dose, n_ev, dose_rule, ev_bio,
               snap_t, start_snap]
        dP, dV, dVi, dlam, dmn, det, dek, detg, dea, ded, dne, ddr, deb, dsnt, dsns = (
            cuda.to_device(np.ascontiguousarray(a[s:e])) for a in per)
        outs = [res, factors, status, stats, dose_time, dose_status, snap_f, snap_i]
        dres, dfac, dst, dstats, ddt, dds, dsnf, dsni = (cuda.to_device(np.ascontiguousarray(a[s:e])) for a in outs)
        dgrp, dcs, dstop = (cuda.to_device(np.ascontiguousarray(a[s:e])) for a in (dose_group, dose_cstart, stop))
        w_rate = cuda.to_device(np.zeros((m, max(E, factors.shape[1], 1))))
        w_ndel = cuda.to_device(np.zeros((m, G), dtype=np.int64))
        w_disc = cuda.to_device(np.zeros((m, G), dtype=np.bool_))
        w_paused = cuda.to_device(np.zeros((m, G), dtype=np.bool_))
        blocks = math.ceil(m / THREADS_PER_BLOCK)
        mod.simulate_kernel[blocks, THREADS_PER_BLOCK](
            dP, dV, dVi, dlam, dmn, det, dek, detg, dea, ded, dne, ddr, d_rule_out, d_th, d_fa, d_rn, deb, d_t, d_sel,
            float(rtol), float(atol), int(max_steps), bool(dense), bool(sparse), dres, dfac, dst, dstats, dgrp, dcs,
            d_dth, d_ddays, d_maxd, dstop, ddt, dds, d_resume, dsnt, dsnf, dsni, dsns, w_rate, w_ndel, w_disc, w_paused)
        cuda.synchronize()
        for host, dev in zip(outs, (dres, dfac, dst, dstats, ddt, dds, dsnf, dsni)):
            host[s:e] = dev.copy_to_host()
