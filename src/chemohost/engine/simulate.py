"""Batched simulation of whole arms of patients.

The compiled model (``codegen``) provides a numba ``simulate_batch`` that runs patients in a
parallel compiled loop (``prange``); this module prepares its inputs: parameter matrix, the linear
sub-system's eigen-decomposition (numpy, batched over patients), dose events, dose-modification
rules, and output selection, and wraps the result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numba
import numpy as np
import pandas as pd

from ..errors import ModelError, ProtocolError, SolverError
from ..model.core import Model
from ..protocol.dosing import ROUTES, DoseTable, Regimen, dose_table
from ..protocol.event_table import PatientDoses
from ..protocol.rules import get_rule
from ..rowcache import RowCache
from .codegen import CompiledModel, compile_model

STATUS = {0: "ok", 1: "max_steps", 2: "step_size_underflow", 3: "non_finite", 4: "pk_not_diagonalisable"}
#: per-dose outcome codes (``SimulationResult.dose_status``)
DOSE_STATUS = {0: "not_reached", 1: "given", 2: "held", 3: "stopped", 4: "discontinued"}
KIND_BOLUS, KIND_START, KIND_STOP = 0, 1, 2


#: the CPU back ends (SolverOptions.backend)
BACKENDS = ("auto", "c", "c-simd", "numba")


@dataclass
class SolverOptions:
    """Integrator settings (Rodas4 with closed-form linear PK).

    ``dense_output``: values at output times inside a step come from Rodas4's continuous extension
    (order 3, error of the order of the local error), so output grids do not limit the step size;
    ``False`` ends a step at every output time (slower on fine grids, as in chemohost <= 0.1).
    ``sparse_lu``: factorise the iteration matrix with generated code on the Jacobian's sparsity
    pattern (falls back to dense partial-pivoting LU when that elimination would be unstable);
    ``False`` uses dense LU every step.  Both change results only within the tolerances.
    ``backend="c"`` runs the CPU engine compiled by the system C compiler (:mod:`.cbackend`: a first compile
    in seconds instead of numba's ~40 s for the full model; results agree with numba to round-off);
    ``"numba"`` the numba-compiled one.  ``"c-simd"``: the C engine with 8 patients side by side in each
    thread's SIMD lanes (AVX-512 vectors, glibc's vector exp/log, fused multiply-add): ~2.4-3x faster
    (``benchmarks/lanes.py``) and not bit-identical to ``"c"``: values within round-off of it, with the same steps
    and dose decisions, except where round-off tips a step's accept (values then differ within the integration
    tolerance) or a monitored value lies within round-off of a rule's threshold (tests/test_lanes.py); a
    patient's result does not depend on the patients beside it.  ``"auto"`` (default): ``"c-simd"`` when a C
    compiler is found (``"c"`` for a model whose kernels the lanes cannot run), else numba.
    """

    rtol: float = 1e-6
    atol: float = 1e-9
    max_steps: int = 200_000
    closed_form: bool = True
    threads: int | None = None
    device: str = "cpu"  # "gpu": the CUDA kernel generated from the same module (engine/gpu.py)
    dense_output: bool = True
    sparse_lu: bool = True
    backend: str = "auto"  # CPU: "c-simd" (lanes), "c" (scalar, compiled by the system C compiler), "numba", "auto"

    @classmethod
    def from_fields(cls, s) -> SolverOptions:
        """The options a scenario's or trial's ``solver`` fields give (``spec_types.SolverFields``)."""
        return cls(rtol=s.rtol, atol=s.atol, max_steps=s.max_steps, closed_form=s.closed_form, device=s.device,
                   backend=s.backend)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise SolverError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {self.backend!r}")
        if not (0 < self.rtol < 1):
            raise SolverError(f"rtol must lie in (0, 1), got {self.rtol}")
        if not self.atol > 0:
            raise SolverError(f"atol must be > 0, got {self.atol}")


@dataclass
class Snapshots:
    """Each patient's whole solver state at given days, saved by the engine so that a later run can restart
    from one of them instead of t = 0 (``simulate(..., resume_from=...)``).  The layout of ``f``/``i`` is the
    solver template's (engine-internal); a slot the run did not reach (failed earlier, or at/after the horizon)
    has ``i[..., 1] == -1``."""

    days: np.ndarray  # (N, S) ascending snapshot days; inf: unused slot
    f: np.ndarray  # (N, S, LF) float state
    i: np.ndarray  # (N, S, LI) integer state
    params: np.ndarray | None = None  # (N, P) the parameters of the run that took them
    settings: tuple = ()  # the solver settings of that run (a restart must use the same)

    def taken(self) -> np.ndarray:
        """(N, S) bool: the slot holds a state."""
        return self.i[:, :, 1] >= 0

    def slot(self, days: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The slot holding each patient's (or each of patients ``rows``') state at ``days`` (exactly a snapshot
        day), -1 where there is none."""
        sel = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        days = np.asarray(days, dtype=float).reshape(-1, 1)
        hit = (self.days[sel] == days) & self.taken()[sel]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


@dataclass
class SimulationResult:
    #: the arrays with one row per patient (what selecting or merging patients of results takes)
    PATIENT_ARRAYS: ClassVar[tuple[str, ...]] = ("values", "status", "dose_factors", "dose_times", "dose_status",
                                                 "steps")
    times: np.ndarray  # (T,) days
    outputs: list[str]
    values: np.ndarray  # (N, T, K)
    status: np.ndarray  # (N,) int
    dose_factors: np.ndarray  # (N, D) applied factor per scheduled dose (after rules)
    doses: DoseTable | None  # the shared schedule; None when each patient has its own (patient_doses)
    steps: np.ndarray  # (N, 2) accepted+rejected steps, rejected steps
    dose_times: np.ndarray | None = None  # (N, D) days when each dose fell due (after delays; nan: never)
    dose_status: np.ndarray | None = None  # (N, D) DOSE_STATUS codes
    patient_doses: PatientDoses | None = None  # per-patient doses (event table), D = most doses of a patient
    snapshots: Snapshots | None = None  # restartable states at the requested snapshot days

    def nominal_dose_times(self) -> np.ndarray:
        """(N, D) planned time (days) of each dose slot; NaN for padding slots of per-patient doses."""
        if self.patient_doses is not None:
            return self.patient_doses.time
        return np.broadcast_to(self.doses.time, self.dose_factors.shape)

    def doses_given(self) -> np.ndarray:
        """(N, D) bool: the dose was administered (possibly reduced)."""
        return self.dose_status == 1

    @property
    def n_patients(self) -> int:
        return self.values.shape[0]

    def output(self, name: str) -> np.ndarray:
        """(N, T) array of one output."""
        try:
            return self.values[:, :, self.outputs.index(name)]
        except ValueError:
            raise ModelError(f"output '{name}' was not recorded; recorded: {self.outputs}") from None

    def to_frame(self, arm: str = "arm", patient_ids: np.ndarray | None = None) -> pd.DataFrame:
        n, t, _ = self.values.shape
        pid = np.arange(n) if patient_ids is None else np.asarray(patient_ids)
        data = {
            "patient": np.repeat(pid, t),
            "arm": pd.Categorical([arm] * (n * t)),
            "time_days": np.tile(self.times, n),
        }
        for k, name in enumerate(self.outputs):
            data[name] = self.values[:, :, k].reshape(-1)
        data["status"] = pd.Categorical(np.repeat([STATUS[int(s)] for s in self.status], t))
        return pd.DataFrame(data)


def _blocks(A: np.ndarray) -> list[np.ndarray]:
    """The diagonal blocks of the linear sub-system: groups of linear states coupled (in either direction) in any
    patient's matrix ``A`` (N, L, L), in index order (each drug's compartments form one block)."""
    from scipy.sparse.csgraph import connected_components

    nz = (A != 0.0).any(axis=0)
    k, label = connected_components(nz | nz.T, directed=False)
    blocks = [np.flatnonzero(label == b) for b in range(k)]
    return sorted(blocks, key=lambda b: int(b[0]))


def _eig(A: np.ndarray, blocks: list[np.ndarray] | None = None):
    """Batched real eigen-decomposition, block by block (``blocks``: :func:`_blocks` of ``A``; the matrix of
    independent drugs is block diagonal: decomposing the blocks is ~10x cheaper than the whole matrix, and a mode
    then has exact zeros outside its drug's compartments); flags complex or ill-conditioned bases (the condition
    number of the whole basis)."""
    n, L = A.shape[0], A.shape[1]
    lam, V = np.zeros((n, L), dtype=complex), np.zeros((n, L, L), dtype=complex)
    smax, smin = np.zeros(n), np.full(n, np.inf)
    for b in _blocks(A) if blocks is None else blocks:
        ix = np.ix_(np.arange(n), b, b)
        if b.size == 1:
            lam[:, b[0]], V[:, b[0], b[0]] = A[:, b[0], b[0]], 1.0
            smax, smin = np.maximum(smax, 1.0), np.minimum(smin, 1.0)
            continue
        lb, Vb = np.linalg.eig(A[ix])
        lam[:, b], V[ix] = lb, Vb
        with np.errstate(all="ignore"):
            sv = np.linalg.svd(Vb.real, compute_uv=False)
        smax, smin = np.maximum(smax, sv.max(axis=1)), np.minimum(smin, sv.min(axis=1))
    scale = np.maximum(np.abs(lam.real).max(axis=1), 1e-300)
    imag = np.abs(lam.imag).max(axis=1) > 1e-9 * scale
    lam, V = lam.real.copy(), V.real.copy()
    with np.errstate(all="ignore"):
        cond = smax / smin
    return lam, V, imag | ~np.isfinite(cond) | (cond > 1e10)


def _inv_blocks(V: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """The inverse of bases ``V`` (N, L, L) that are block diagonal in ``blocks``, block by block."""
    n = V.shape[0]
    out = np.zeros_like(V)
    for b in blocks:
        ix = np.ix_(np.arange(n), b, b)
        out[ix] = np.linalg.inv(V[ix])
    return out


#: the recent patients' linear decompositions kept for reuse (:func:`_linear_decomposition`; ~31 MB per 2,000
#: patients of ``host_response``), least recently used dropped first beyond 64 MB
_recent_dec = RowCache(64 * 2**20)


def _linear_decomposition(cm: CompiledModel, P: np.ndarray, backend: str = "numba", threads: int = 1):
    """``(V, Vinv, lam, bad)``: each patient's eigen-decomposition of the linear sub-system.

    It depends on the parameters only, not on the regimens, so recent patients' decompositions are kept, each found
    by a digest of its parameter row, the model code and the engine (:class:`chemohost.rowcache.RowCache`), and
    reused: a paired trial simulates the same patients in every arm, and again in its second pass (~0.1 ms per
    patient to decompose).  Kept for the C engines, which take them as read-only inputs (numba would compile its
    kernels anew for read-only arrays)."""
    if backend not in ("c", "c-simd") or P.shape[0] == 0:
        return _decompose(cm, P, backend, threads)
    P = np.ascontiguousarray(P, dtype=np.float64)
    prefix = (cm.source_hash, backend, P.shape[1])
    keys = [(prefix, hashlib.blake2b(row, digest_size=16).digest()) for row in P.view(np.uint8)]
    return _recent_dec.get(keys, lambda rows: _decompose(cm, P[rows], backend, threads))


def _decompose(cm: CompiledModel, P: np.ndarray, backend: str, threads: int):
    n, L = P.shape[0], len(cm.lin_species)
    bad = np.zeros(n, dtype=bool)
    if L == 0:
        z = np.zeros((n, 0, 0))
        return z, z.copy(), np.zeros((n, 0)), bad
    A = np.zeros((n, L, L))
    if backend in ("c", "c-simd"):
        from .cbackend import SIMD_LANES, lin_matrices_c

        lin_matrices_c(cm, P, A, threads, SIMD_LANES if backend == "c-simd" else 1)
    else:
        cm.module.lin_matrices(P, A)
    # a patient with NaN/inf parameters must not kill the batch: numpy's batched eig raises for the
    # whole stack, so such patients get an identity basis here and are flagged (status 4 -> 3 below)
    nonfinite = ~np.isfinite(A).all(axis=(1, 2))
    A[nonfinite] = -np.eye(L)
    blocks = _blocks(A)  # (the perturbation below and the identity bases keep them)
    lam, V, bad = _eig(A, blocks)
    bad |= nonfinite
    if bad.any():
        # repeated eigenvalues (e.g. ka equal to an elimination rate) make the eigenbasis singular;
        # a relative perturbation of 1e-6 of each diagonal rate separates them at a cost of ~1e-6
        # relative error in that patient's linear states
        Aj = A[bad].copy()
        d = np.abs(Aj[:, np.arange(L), np.arange(L)])
        Aj[:, np.arange(L), np.arange(L)] -= 1e-6 * np.maximum(d, 1e-12) * (1.0 + np.arange(L)) / L
        lam_j, V_j, bad_j = _eig(Aj, blocks)
        lam[bad], V[bad] = lam_j, V_j
        bad[bad] = bad_j
        bad |= nonfinite
    V[bad] = np.eye(L)
    lam[bad] = 0.0
    return V, _inv_blocks(V, blocks), lam, bad


def _events(cm: CompiledModel, table: DoseTable, amounts: np.ndarray, params: dict[str, int]):
    """Event arrays (N, E).  ``amounts``: (N, D) mg per dose."""
    model = cm.model
    n = amounts.shape[0]
    ev = []  # (time, order, kind, target, dose, bio)
    for d in range(table.n):
        drug = model.drugs.get(table.drug[d])
        if drug is None:
            raise ProtocolError(f"model '{model.name}' has no drug '{table.drug[d]}'; available: {sorted(model.drugs)}")
        route = drug.routes.get(table.route[d])
        if route is None:
            raise ProtocolError(f"drug '{drug.name}' has no route '{table.route[d]}' in model '{model.name}'; "
                                f"available: {sorted(drug.routes)}")
        target = cm.target_index(route.target)
        bio = params[route.bioavailability] if route.bioavailability else -1
        if table.duration[d] > 0:
            ev.append((table.time[d], 2, KIND_START, target, d, bio, route.scale))
            ev.append((table.time[d] + table.duration[d], 0, KIND_STOP, target, d, bio, route.scale))
        else:
            ev.append((table.time[d], 1, KIND_BOLUS, target, d, bio, route.scale))
    ev.sort(key=lambda e: (e[0], e[1], e[4]))
    E = len(ev)
    ev_time = np.array([e[0] for e in ev], dtype=float)
    kinds = np.array([e[2] for e in ev], dtype=np.int64)
    targets = np.array([e[3] for e in ev], dtype=np.int64)
    dose_idx = np.array([e[4] for e in ev], dtype=np.int64)
    bio = np.array([e[5] for e in ev], dtype=np.int64)
    amount = np.zeros((n, E))
    for k, e in enumerate(ev):
        d = e[4]
        if e[2] == KIND_BOLUS:
            amount[:, k] = amounts[:, d] * e[6]
        elif e[2] == KIND_START:
            amount[:, k] = amounts[:, d] * e[6] / table.duration[d]
        else:
            amount[:, k] = d  # a stop event ends the infusion of its dose (unused by the kernel)
    tile = lambda a: np.array(np.broadcast_to(a, (n, E)), order="C")  # noqa: E731  (writable: delays move events)
    return tile(ev_time), tile(kinds), tile(targets), amount, tile(dose_idx), tile(bio), np.full(n, E, dtype=np.int64)


def _rules(cm: CompiledModel, dose_rules: list[str | None]):
    """Rule arrays; ``dose_rules``: the rule name (or None) of each dose (or each regimen)."""
    names = sorted({r for r in dose_rules if r})
    R = max(len(names), 1)
    B = max([len(get_rule(nm).thresholds) for nm in names] + [1])
    out_idx = np.zeros(R, dtype=np.int64)
    th = np.zeros((R, B))
    fa = np.zeros((R, B + 1))
    nb_ = np.zeros(R, dtype=np.int64)
    for i, nm in enumerate(names):
        rule = get_rule(nm)
        if rule.output not in cm.output_names:
            raise ProtocolError(
                f"dose-modification rule '{nm}' reads output '{rule.output}', which model '{cm.model.name}' "
                f"does not have; use a model with that output or drop the rule"
            )
        out_idx[i] = cm.output_names.index(rule.output)
        k = len(rule.thresholds)
        th[i, :k] = rule.thresholds
        fa[i, :k] = rule.factors
        fa[i, k] = rule.below_factor
        nb_[i] = k
    dose_rule = np.array([names.index(r) if r else -1 for r in dose_rules], dtype=np.int64)
    delay_th = np.full(R, -np.inf)
    delay_days = np.zeros(R)
    max_delays = np.zeros(R, dtype=np.int64)
    resume = np.full(R, np.inf)  # hysteresis: a paused regimen resumes when the output is back at this
    for i, nm in enumerate(names):
        rule = get_rule(nm)
        if rule.cycle_start_below is not None:
            delay_th[i], delay_days[i], max_delays[i] = rule.cycle_start_below, rule.delay_days, rule.max_delays
        if rule.resume_at is not None:
            resume[i] = rule.resume_at
    return dose_rule, out_idx, th, fa, nb_, delay_th, delay_days, max_delays, resume


def _cycle_starts(table: DoseTable) -> np.ndarray:
    """(D,) bool: the dose opens a cycle of its regimen (its first administration in that cycle)."""
    seen, out = set(), np.zeros(table.n, dtype=np.bool_)
    for d in range(table.n):
        key = (int(table.regimen[d]), int(table.cycle[d]))
        if key not in seen:
            seen.add(key)
            out[d] = True
    return out


def _patient_events(cm: CompiledModel, doses: PatientDoses, amounts: np.ndarray, params: dict[str, int]):
    """Event arrays (N, E) for per-patient doses, in the order :func:`_events` builds (time, then
    stop < bolus < start, then dose index); ``amounts``: (N, D) mg (NaN in padding slots)."""
    model = cm.model
    N, D = doses.time.shape
    valid = np.arange(D)[None, :] < doses.n_doses[:, None]
    n_routes = len(ROUTES)
    tgt_of = np.zeros((len(doses.drugs), n_routes), dtype=np.int64)
    bio_of = np.full((len(doses.drugs), n_routes), -1, dtype=np.int64)
    scale_of = np.ones((len(doses.drugs), n_routes))
    for di, ri in sorted({(int(a), int(b)) for a, b in zip(doses.drug_index[valid], doses.route[valid])}):
        name, rname = doses.drugs[di], ROUTES[ri]
        drug = model.drugs.get(name)
        if drug is None:
            raise ProtocolError(f"model '{model.name}' has no drug '{name}'; available: {sorted(model.drugs)}")
        route = drug.routes.get(rname)
        if route is None:
            raise ProtocolError(f"drug '{name}' has no route '{rname}' in model '{model.name}'; "
                                f"available: {sorted(drug.routes)}")
        tgt_of[di, ri] = cm.target_index(route.target)
        bio_of[di, ri] = params[route.bioavailability] if route.bioavailability else -1
        scale_of[di, ri] = route.scale
    di = np.where(valid, doses.drug_index, 0)
    ri = np.where(valid, doses.route, 0)
    tgt, bio, scale = tgt_of[di, ri], bio_of[di, ri], scale_of[di, ri]
    dur = np.where(valid, doses.duration, 0.0)
    inf = valid & (dur > 0)
    didx = np.broadcast_to(np.arange(D), (N, D))
    with np.errstate(invalid="ignore", divide="ignore"):
        amt1 = np.where(valid, amounts * scale / np.where(inf, dur, 1.0), 0.0)
    time = np.c_[np.where(valid, doses.time, np.inf), np.where(inf, doses.time + dur, np.inf)]
    order = np.c_[np.where(inf, 2, 1), np.zeros((N, D), dtype=np.int64)]
    kind = np.c_[np.where(inf, KIND_START, KIND_BOLUS), np.full((N, D), KIND_STOP)]
    dose = np.c_[didx, didx]
    idx = np.lexsort((dose, order, time), axis=-1)
    n_ev = (valid.sum(axis=1) + inf.sum(axis=1)).astype(np.int64)
    E = max(int(n_ev.max()), 1) if N else 1
    idx = idx[:, :E]
    take = lambda a: np.ascontiguousarray(np.take_along_axis(a, idx, axis=1))  # noqa: E731
    ev_time = take(time)
    ev_kind = take(kind).astype(np.int64)
    ev_target = take(np.c_[tgt, tgt]).astype(np.int64)
    ev_dose = take(dose).astype(np.int64)
    ev_bio = take(np.c_[bio, bio]).astype(np.int64)
    ev_amount = take(np.c_[amt1, didx.astype(float)])
    return ev_time, ev_kind, ev_target, ev_amount, ev_dose, ev_bio, n_ev


def _patient_groups(doses: PatientDoses):
    """(N, D) dose group (its regimen; event-table doses share one group with no rule) and (N, D)
    cycle-start flags (first dose of each (regimen, cycle) of a patient)."""
    N, D = doses.time.shape
    R = len(doses.regimens)
    reg = doses.regimen
    group = np.where(reg >= 0, reg, R).astype(np.int64)
    cstart = np.zeros((N, D), dtype=np.bool_)
    if R:
        last = np.full((N, R + 1), -1, dtype=np.int64)
        rows = np.arange(N)
        for d in range(D):
            g, c = group[:, d], doses.cycle[:, d]
            new = (reg[:, d] >= 0) & (last[rows, g] != c)
            cstart[:, d] = new
            last[rows, g] = np.where(reg[:, d] >= 0, c, last[rows, g])
    return np.ascontiguousarray(group), cstart


def _settings(options: SolverOptions, backend: str) -> tuple:
    """What a restart must share with the run that took the snapshot: the solver settings and the engine family
    (the scalar engines c, numba and the GPU kernel give the same results; the lane engine c-simd differs from
    them by round-off, so a restart on the other family would continue another trajectory)."""
    return (options.rtol, options.atol, options.max_steps, options.closed_form, options.dense_output,
            options.sparse_lu, "lanes" if backend == "c-simd" else "scalar")


def _backend(options: SolverOptions, cm: CompiledModel) -> str:
    """The CPU back end a run uses ("c-simd", "c" or "numba"; the GPU kernel is numba's).  ``auto`` takes the lane
    engine when a C compiler is found and builds it, else the scalar C engine (a model whose kernels the lanes cannot
    run), else numba (with a warning if the C build failed)."""
    if options.device != "cpu":
        return "numba"
    if options.backend == "auto":
        from .cbackend import SIMD_LANES, available, library

        if not available():
            return "numba"
        for backend, lanes in (("c-simd", SIMD_LANES), ("c", 1)):
            try:
                library(cm, lanes)
                return backend
            except SolverError as exc:
                error = exc
        import warnings

        warnings.warn(f"the C engine could not be built, using numba instead: {error}", RuntimeWarning, stacklevel=3)
        return "numba"
    return options.backend


def engine_id(cm: CompiledModel, options: SolverOptions) -> str:
    """The engine a run with ``options`` uses, as a checkpoint records it beside the model's code hash: its back end
    and, for the C engines, the digest of their C source, build flags and the CPU features a native build
    targets (the numba engine is the model's generated module itself).  A checkpoint is then resumed only on the
    engine that wrote it, never mixed with another's results (which differ by round-off, or by the tolerance
    where an engine's error control changed): not on a CPU with other features either."""
    if options.device != "cpu":
        return options.device
    backend = _backend(options, cm)
    if backend in ("c", "c-simd"):
        from .cbackend import SIMD_LANES, engine_digest

        return f"{backend}:{engine_digest(cm, SIMD_LANES if backend == 'c-simd' else 1)}"
    return backend


def _snapshot_layout(cm: CompiledModel, n_events: int, n_doses: int, n_groups: int) -> tuple[int, int]:
    """Lengths of one snapshot's float and integer parts (the solver template's layout)."""
    n_x = len(cm.ode_species) + len(cm.lin_species)
    return 2 + 5 * n_x + len(cm.ode_species) + 3 * n_doses + 2 * n_events, 4 + 4 * n_events + n_doses + 3 * n_groups


def snapshot_bytes(cm: CompiledModel, regimens: list[Regimen], n_days: int) -> int:
    """Bytes of one patient's ``n_days`` snapshots under ``regimens`` (to size batches by memory)."""
    table = dose_table(list(regimens))
    n_inf = sum(1 for d in range(table.n) if table.duration[d] > 0)
    lf, li = _snapshot_layout(cm, max(table.n + n_inf, 1), max(table.n, 1), max(len(table.regimens), 1))
    return 8 * n_days * (lf + li)


def initial_states(cm: CompiledModel, params: np.ndarray, backend: str = "auto") -> np.ndarray:
    """(N, S) each patient's state at t = 0 (before any dose), one column per species in the model's order
    (``cm.model.species``): the baseline a peer running the exported SBML sets after the patient's parameters,
    since SBML initial assignments are evaluated when the file is loaded, with its own parameter values.
    ``backend``: whose compiled ``init_state`` computes it (as :class:`SolverOptions`; the same values)."""
    P = np.ascontiguousarray(np.atleast_2d(np.asarray(params, dtype=float)))
    n, nl = len(cm.ode_species), len(cm.lin_species)
    col = {s: j for j, s in enumerate(cm.model.species)}
    ode, lin = [col[s] for s in cm.ode_species], [col[s] for s in cm.lin_species]
    out = np.zeros((P.shape[0], len(col)))
    used = _backend(SolverOptions(backend=backend), cm)
    if used in ("c", "c-simd"):
        from .cbackend import SIMD_LANES, library

        Y, XL = np.zeros((P.shape[0], max(n, 1))), np.zeros((P.shape[0], max(nl, 1)))
        library(cm, SIMD_LANES if used == "c-simd" else 1).init_states(P.shape[0], P.shape[1], P.ctypes.data, Y.ctypes.data, XL.ctypes.data)
        out[:, ode], out[:, lin] = Y[:, :n], XL[:, :nl]
        return out
    y, xl = np.zeros(n), np.zeros(nl)
    for i, p in enumerate(P):  # init_state is the compiled model's own, one patient per call (cheap)
        cm.module.init_state(p, y, xl)
        out[i, ode], out[i, lin] = y, xl
    return out


def simulate(model: Model | CompiledModel, params: np.ndarray, regimens: list[Regimen] | DoseTable | PatientDoses,
             times, outputs: list[str] | None = None, *, bsa: np.ndarray | None = None,
             weight: np.ndarray | None = None, options: SolverOptions | None = None,
             stop_days: np.ndarray | None = None, snapshot_days: np.ndarray | None = None, keep_snapshots: bool = True,
             resume_from: tuple[SimulationResult, np.ndarray, np.ndarray] | None = None) -> SimulationResult:
    """Simulate ``params.shape[0]`` patients under the same regimens, or each under its own doses.

    ``regimens``: a list of :class:`Regimen` or a :class:`DoseTable` (one schedule for all), or a
    :class:`PatientDoses` with one row per patient (e.g. an event table replaying observed dosing;
    its doses read from a file have no dose-modification rule: they are given as recorded).

    ``params``: (N, P) matrix in the compiled model's parameter order (see
    :func:`chemohost.model.params.parameter_set` and :mod:`chemohost.api`).  ``bsa``/``weight``
    default to the BSA/WT parameters.  ``times``: output times (days, ascending, >= 0).
    ``stop_days``: (N,) per-patient time from which no further dose is given (treatment stopped,
    e.g. at progression; inf = never).  Dose-modification rules with a cycle-start threshold delay
    a cycle (and the rest of its regimen) while the monitored output is below it (see
    :mod:`chemohost.protocol.rules`); the resulting ``dose_times``/``dose_status`` are returned.

    ``snapshot_days``: (N, S) per-patient days (ascending; NaN or inf = none) at which the whole solver state
    is saved (before that day's doses) in ``result.snapshots``; each is a step boundary.  With
    ``keep_snapshots=False`` they are step boundaries only (nothing saved): a run with the same boundaries as
    one that saves, bit for bit, without the memory.
    ``resume_from = (earlier, rows, slots)``: patient ``q`` of this call is row ``rows[q]`` of the ``earlier``
    result (same parameters, regimens, output times and outputs; taken with ``snapshot_days``) and restarts
    from its snapshot ``slots[q]`` instead of t = 0, with this call's ``stop_days``: its course up to that
    day is the earlier run's, and from there it equals a run from t = 0 with the same snapshot days and
    ``stop_days`` (e.g. treatment stopped at a progression scan, without integrating the months before it
    again).
    """
    options = options or SolverOptions()
    cm = model if isinstance(model, CompiledModel) else compile_model(model, options.closed_form)
    P = np.ascontiguousarray(np.atleast_2d(np.asarray(params, dtype=float)))
    if P.shape[1] != len(cm.param_names):
        raise ModelError(f"parameter matrix has {P.shape[1]} columns; model '{cm.model.name}' has "
                         f"{len(cm.param_names)} parameters ({cm.param_names})")
    n = P.shape[0]
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) < 0) or times[0] < 0 or not np.all(np.isfinite(times)):
        raise SolverError("output times must be a non-empty ascending list of finite values >= 0 (days)")
    outputs = list(outputs) if outputs else list(cm.output_names)
    unknown = [o for o in outputs if o not in cm.output_names]
    if unknown:
        raise ModelError(f"unknown output(s) {unknown} for model '{cm.model.name}'; available: {cm.output_names}")
    out_sel = np.array([cm.output_names.index(o) for o in outputs], dtype=np.int64)
    pidx = {p: i for i, p in enumerate(cm.param_names)}
    if bsa is None:
        bsa = P[:, pidx["BSA"]] if "BSA" in pidx else np.ones(n)
    if weight is None:
        weight = P[:, pidx["WT"]] if "WT" in pidx else np.ones(n)
    if isinstance(regimens, PatientDoses):
        pdoses, table = regimens, None
        if pdoses.n_patients != n:
            raise ProtocolError(f"per-patient doses are given for {pdoses.n_patients} patient(s) but the parameter "
                                f"matrix has {n}; give one dose row-set per patient")
        D = pdoses.max_doses
        amounts = pdoses.amounts_mg(bsa, weight)
        ev = _patient_events(cm, pdoses, amounts, pidx)
        reg_rules = [r.rule for r in pdoses.regimens]
        reg_rule, rule_out, rule_th, rule_fa, rule_n, delay_th, delay_days, max_delays, resume = _rules(cm, reg_rules)
        reg_rule = np.r_[reg_rule, -1].astype(np.int64)  # the last entry: event-table doses (no rule)
        dose_rule = np.ascontiguousarray(np.where(pdoses.regimen >= 0, reg_rule[pdoses.regimen], -1))
        D1 = max(D, 1)
        group, cstart = _patient_groups(pdoses)
        dose_group = np.zeros((n, D1), dtype=np.int64)
        dose_group[:, :D] = group
        dose_cstart = np.zeros((n, D1), dtype=np.bool_)
        dose_cstart[:, :D] = cstart
        if D == 0:
            dose_rule = np.full((n, 1), -1, dtype=np.int64)
    else:
        pdoses = None
        table = regimens if isinstance(regimens, DoseTable) else dose_table(list(regimens))
        D = table.n
        amounts = np.zeros((n, D))
        for d in range(D):
            amounts[:, d] = table.regimens[table.regimen[d]].amounts(bsa, weight)
        ev = _events(cm, table, amounts, pidx)
        dose_rule, rule_out, rule_th, rule_fa, rule_n, delay_th, delay_days, max_delays, resume = _rules(cm, table.rule)
        dose_rule = np.ascontiguousarray(np.broadcast_to(dose_rule, (n, D)))
        D1 = max(D, 1)
        dose_group = np.zeros((n, D1), dtype=np.int64)
        dose_group[:, :D] = table.regimen
        dose_cstart = np.zeros((n, D1), dtype=np.bool_)
        dose_cstart[:, :D] = _cycle_starts(table)
    if stop_days is None:
        stop = np.full(n, np.inf)
    else:
        stop = np.asarray(stop_days, dtype=float).reshape(-1)
        if stop.shape != (n,) or np.isnan(stop).any():
            raise SolverError(f"stop_days must be {n} numbers (days; inf = never), got shape {stop.shape}")
        stop = np.ascontiguousarray(stop)
    dose_time = np.full((n, D1), np.nan)
    dose_status = np.zeros((n, D1), dtype=np.int8)
    n_g = int(dose_group.max()) + 1 if dose_group.size else 1
    LF, LI = _snapshot_layout(cm, ev[0].shape[1], D1, n_g)
    start = np.full(n, -1, dtype=np.int64)
    prior = None
    backend = _backend(options, cm)
    if resume_from is not None:
        if snapshot_days is not None:
            raise SolverError("give snapshot_days or resume_from, not both (a resumed run keeps the earlier snapshot days)")
        earlier, rows, slots = resume_from
        snaps = earlier.snapshots
        rows, start = np.asarray(rows, dtype=np.int64).reshape(-1), np.asarray(slots, dtype=np.int64).reshape(-1)
        if snaps is None:
            raise SolverError("resume_from: the earlier result has no snapshots (run it with snapshot_days)")
        if rows.shape != (n,) or start.shape != (n,):
            raise SolverError(f"resume_from: give one row and one snapshot slot per patient ({n}), got "
                              f"{rows.shape[0]} and {start.shape[0]}")
        if snaps.f.shape[2] != LF or snaps.i.shape[2] != LI:
            raise SolverError("resume_from: the earlier run's doses differ from these (snapshot layout "
                              f"{snaps.f.shape[2]}/{snaps.i.shape[2]}, expected {LF}/{LI}); resume with the same regimens")
        if list(earlier.outputs) != outputs or not np.array_equal(earlier.times, times):
            raise SolverError("resume_from: the earlier run recorded other outputs or output times")
        if not ((rows >= 0) & (rows < snaps.days.shape[0])).all():
            raise SolverError(f"resume_from: rows must index the earlier run's {snaps.days.shape[0]} patients")
        if not ((start >= 0) & (start < snaps.days.shape[1])).all() or not snaps.taken()[rows, start].all():
            raise SolverError("resume_from: a requested snapshot slot was not taken in the earlier run")
        if (earlier.status[rows] != 0).any():
            raise SolverError("resume_from: a requested patient failed in the earlier run (its values are not kept); "
                              "run it from day 0")
        if snaps.settings != _settings(options, backend):
            raise SolverError(f"resume_from: the earlier run used other solver settings or engine {snaps.settings}, "
                              f"these are {_settings(options, backend)}")
        if snaps.params is not None and not np.array_equal(snaps.params[rows], P, equal_nan=True):
            raise SolverError("resume_from: the parameters differ from the earlier run's for these rows")
        snap_t = np.ascontiguousarray(snaps.days[rows])
        snap_f, snap_i = snaps.f[rows], snaps.i[rows]
        # the earlier run's later slots are not this run's: untaken until this run reaches them
        snap_i[np.arange(snap_i.shape[1])[None, :] > start[:, None], 1] = -1
        prior = earlier.values[rows]
    elif snapshot_days is not None:
        sd = np.asarray(snapshot_days, dtype=float)
        if sd.ndim != 2 or sd.shape[0] != n:
            raise SolverError(f"snapshot_days must be an (N, S) array with N = {n} patients, got shape {sd.shape}")
        snap_t = np.ascontiguousarray(np.sort(np.where(np.isnan(sd), np.inf, sd), axis=1))
        lf, li = (LF, LI) if keep_snapshots else (1, 1)
        snap_f = np.zeros((n, sd.shape[1], lf))
        snap_i = np.zeros((n, sd.shape[1], li), dtype=np.int64)
        snap_i[:, :, 1 if keep_snapshots else 0] = -1
    else:
        snap_t, snap_f, snap_i = np.zeros((n, 0)), np.zeros((n, 0, 1)), np.zeros((n, 0, 1), dtype=np.int64)
    n_threads = min(options.threads, numba.config.NUMBA_NUM_THREADS) if options.threads else numba.get_num_threads()
    V, Vinv, lam, bad = _linear_decomposition(cm, P, backend, n_threads)
    needed = np.asarray(cm.module.LIN_NEEDED, dtype=np.int64)
    # a mode matters to the integrated states if its eigenvector has a non-negligible entry in a
    # linear state they read (entries ~1e-18 are round-off of exact structural zeros)
    colmax = np.abs(V).max(axis=1, keepdims=True) if V.shape[1] else V
    mode_needed = np.ascontiguousarray((np.abs(V[:, needed, :]) > 1e-12 * colmax).any(axis=1)) if needed.size \
        else np.zeros(lam.shape, dtype=np.bool_)
    res = np.full((n, times.size, len(outputs)), np.nan) if prior is None else np.array(prior, dtype=float)
    factors = np.ones((n, D1))
    status = np.zeros(n, dtype=np.int64)
    stats = np.zeros((n, 2), dtype=np.int64)
    threads_before = numba.get_num_threads()
    if options.threads:
        numba.set_num_threads(min(options.threads, numba.config.NUMBA_NUM_THREADS))
    try:
        ev_time, ev_kind, ev_target, ev_amount, ev_dose, ev_bio, n_ev = ev
        args = [P, V, Vinv, lam, mode_needed, ev_time, ev_kind, ev_target, ev_amount, ev_dose, n_ev,
                dose_rule, rule_out, rule_th, rule_fa, rule_n, ev_bio, times, out_sel, options.rtol, options.atol,
                options.max_steps, bool(options.dense_output), bool(options.sparse_lu), res, factors, status, stats,
                dose_group, dose_cstart, delay_th, delay_days, max_delays, stop, dose_time, dose_status, resume,
                snap_t, snap_f, snap_i, start]
        if options.device == "gpu":
            from .gpu import simulate_batch_gpu

            simulate_batch_gpu(cm, args)
        elif options.device == "cpu" and backend in ("c", "c-simd"):
            from .cbackend import SIMD_LANES, simulate_batch_c

            simulate_batch_c(cm, args, n_threads, SIMD_LANES if backend == "c-simd" else 1)
        elif options.device == "cpu":
            cm.module.simulate_batch(*args)
        else:
            raise SolverError(f"device must be 'cpu' or 'gpu', got {options.device!r}")
    finally:
        numba.set_num_threads(threads_before)
    status[bad] = 4
    status[~np.isfinite(P).all(axis=1)] = 3  # non-finite parameters: reported as non_finite
    # an output that is NaN/inf (e.g. a ratio of two states that both reached zero) is never 'ok'
    status[(status == 0) & ~np.isfinite(res).all(axis=(1, 2))] = 3
    failed = status != 0
    res[failed] = np.nan
    factors, dose_time, dose_status = factors[:, :D], dose_time[:, :D], dose_status[:, :D]
    if pdoses is not None:
        pad = np.arange(D)[None, :] >= pdoses.n_doses[:, None]
        factors[pad] = np.nan
    snapshots = (Snapshots(snap_t, snap_f, snap_i, P.copy(), _settings(options, backend))
                 if snap_t.shape[1] and snap_f.shape[2] > 1 else None)
    return SimulationResult(times, outputs, res, status, factors, table, stats, dose_time, dose_status,
                            patient_doses=pdoses, snapshots=snapshots)
