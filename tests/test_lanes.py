"""The lane engine (``backend="c-simd"``: 8 patients side by side in each thread's SIMD lanes) against the scalar C
engine: the same solver, so the same steps, dose decisions and failures, and values within the integration
tolerance (vector exp/log, fused multiply-add); a patient's result does not depend on the patients beside it.
(Models without a linear part or without ODEs: tests/test_cbackend.py; a collapsed marrow against a tight reference:
tests/test_engine_speedups.py.)"""

from __future__ import annotations

import ctypes
import itertools
import json
import platform
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from chemohost.api import parameter_vector, sample_patients
from chemohost.engine import cbackend
from chemohost.engine.codegen import compile_model
from chemohost.engine.simulate import SimulationResult, SolverOptions, simulate
from chemohost.model.registry import get_model
from chemohost.protocol.dosing import Regimen, parse_dose
from chemohost.protocol.event_table import PatientDoses
from chemohost.studies.indications import load_indication

pytestmark = pytest.mark.skipif(not cbackend.available(), reason="no C compiler")

G, GB = parse_dose("1000 mg/m2")
B, BB = parse_dose("7.5 mg/kg")
#: rules, infusions, a covariate dose and three-times-daily oral doses
REGS = [Regimen(drug="gemcitabine", dose=G, basis=GB, infusion=30 / 1440, days=(1, 8, 15), cycle_length=28, cycles=3,
                rule="gemcitabine_label_anc_delay"),
        Regimen(drug="bermekimab", dose=B, basis=BB, infusion=1 / 24, days=(1,), cycle_length=14, cycles=6),
        Regimen("belnacasan", 900, "flat", "oral", None, tuple(range(1, 15)), 28, 1,
                times_of_day=(0.0, 8 / 24, 16 / 24))]
OUTS = ["ANC", "NLR", "tumour_total", "il1a_pgml", "casp1_inhibition"]


@pytest.fixture(scope="module")
def host():
    m = get_model("host_response")
    ind = load_indication("pancreatic_advanced", m.parameters)
    names, typ, cvs = parameter_vector(m, "human", dict(ind.parameters))
    P = sample_patients(typ, cvs, 19, 11, True)  # 19: two full threads of lanes and a partial one
    P[0, names.index("bm_slope_gem")] *= 8.0   # deep nadir: the ANC rule delays doses
    P[1, names.index("tumour_k2_gem")] *= 6.0
    return compile_model(m), names, P


def _rel(a, b):
    """Largest difference relative to the value, floored at 1e-6 of each output's peak (outputs that are 0 in
    every patient must be 0)."""
    peak = np.abs(b).max(axis=(0, 1))
    assert np.array_equal(a[..., peak == 0], b[..., peak == 0])
    b, a, peak = b[..., peak > 0], a[..., peak > 0], peak[peak > 0]
    return (np.abs(a - b) / (np.abs(b) + 1e-6 * peak)).max()


def _same_decisions(a, b):
    """The same statuses and dose decisions; the same step counts but where round-off tipped a few steps' accept
    (at most 3 steps or 0.5% per patient)."""
    assert a.status.tolist() == b.status.tolist()
    for f in ("dose_factors", "dose_status", "dose_times"):
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f
    d = np.abs(a.steps - b.steps)
    assert (d <= np.maximum(3, 0.005 * b.steps)).all(), (a.steps, b.steps)
    assert (d == 0).mean() >= 0.8, "most patients take exactly the same steps"


@pytest.mark.parametrize("rtol,atol,bound", [(1e-6, 1e-10, 1e-6), (1e-4, 1e-8, 1e-5)])
def test_lanes_agree_with_the_scalar_engine_within_the_tolerance(host, rtol, atol, bound):
    cm, names, P = host
    t = np.arange(0.0, 120.0, 1.0)
    c = simulate(cm, P, REGS, t, OUTS, options=SolverOptions(backend="c", rtol=rtol, atol=atol))
    s = simulate(cm, P, REGS, t, OUTS, options=SolverOptions(backend="c-simd", rtol=rtol, atol=atol, threads=2))
    assert (c.status == 0).all()
    _same_decisions(s, c)  # (measured: the same steps; values differ by <= 2e-8 relative)
    assert (c.dose_status == 4).any() or (c.dose_times > c.nominal_dose_times()).any()  # the rule acted
    assert 0 < _rel(s.values, c.values) < bound  # (not bit for bit: vector exp/log and FMA)


def test_a_patients_result_does_not_depend_on_the_patients_beside_it(host):
    """Lanes compute independently: alone, in reverse order, or with other threads, a patient's values are the
    same bit for bit (so chunking, Dask workers and restarts do not change results)."""
    cm, names, P = host
    t = np.arange(0.0, 60.0, 1.0)
    opts = dict(backend="c-simd", rtol=1e-5, atol=1e-9)
    ref = simulate(cm, P, REGS, t, OUTS, options=SolverOptions(threads=2, **opts))
    alone = simulate(cm, P[[5]], REGS, t, OUTS, options=SolverOptions(threads=1, **opts))
    rev = simulate(cm, P[::-1], REGS, t, OUTS, options=SolverOptions(threads=1, **opts))
    for f in SimulationResult.PATIENT_ARRAYS:
        assert np.array_equal(getattr(alone, f)[0], getattr(ref, f)[5], equal_nan=True), f
        assert np.array_equal(getattr(rev, f)[::-1], getattr(ref, f), equal_nan=True), f


def _drop_doses(pd_, i: int, first: int = 0) -> None:
    """Patient ``i`` of per-patient doses ``pd_`` gets only its doses before ``first``."""
    pd_.time[i, first:] = pd_.amount[i, first:] = pd_.duration[i, first:] = np.nan
    for f in ("drug_index", "route", "basis", "regimen"):
        getattr(pd_, f)[i, first:] = -1
    pd_.cycle[i, first:] = 0
    pd_.n_doses[i] = first


def _one_patient(pd_, i: int):
    """Patient ``i``'s rows of per-patient doses ``pd_``, as doses of one patient."""
    return PatientDoses(**{f: getattr(pd_, f)[[i]] if isinstance(getattr(pd_, f), np.ndarray) else getattr(pd_, f)
                           for f in pd_.__dataclass_fields__})


def test_a_mode_one_lane_does_not_use_cannot_spoil_it():
    """A lane's closed-form PK adds only its own modes: another lane's mode is evaluated beside it, and with a
    growing eigenvalue (here a non-physical negative cisplatin clearance, in a patient given no cisplatin) exp
    overflows, and inf * 0 would be NaN.  The patient beside one who gets cisplatin is the patient alone."""
    m = get_model("chemo_core")
    cm = compile_model(m)
    names, typ, cvs = parameter_vector(m, "human")
    P = np.repeat(typ[None], 2, axis=0)
    P[0, names.index("CL_cis")] = -20000.0
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1,), 60, 1),
            Regimen("cisplatin", 75, "bsa", "iv", 1 / 24, (1,), 60, 1)]
    pd_ = PatientDoses.from_regimens(regs, 2, drugs=sorted(cm.model.drugs))
    _drop_doses(pd_, 0, first=1)  # patient 0: gemcitabine only
    alone_doses = _one_patient(pd_, 0)
    t = np.arange(0.0, 60.0, 1.0)
    opts = SolverOptions(backend="c-simd", threads=1)
    both = simulate(cm, P, pd_, t, ["ANC", "C_gem", "C_cis"], options=opts)
    alone = simulate(cm, P[[0]], alone_doses, t, ["ANC", "C_gem", "C_cis"], options=opts)
    assert alone.status[0] == 0 and both.status.tolist() == [0, 0]
    for f in SimulationResult.PATIENT_ARRAYS:
        assert np.array_equal(getattr(both, f)[0], getattr(alone, f)[0], equal_nan=True), f


def test_a_lane_without_modes_beside_lanes_with_modes_is_the_patient_alone():
    """The step start runs one fused kernel for every lane: a patient with no drug on board (no active PK modes) gets
    the same right-hand side and Jacobian bit for bit whether its companions have modes or not (with a separate path
    for lanes without modes, a restart whose companions differed moved a value by an ulp)."""
    m = get_model("host_response")
    cm = compile_model(m)
    names, typ, cvs = parameter_vector(m, "human")
    P = sample_patients(typ, cvs, 4, 3, True)
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8), 21, 2)]
    pd_ = PatientDoses.from_regimens(regs, 4, drugs=sorted(cm.model.drugs))
    for i in (1, 3):  # no dose at all: no modes ever
        _drop_doses(pd_, i)
    t = np.arange(0.0, 40.0, 1.0)
    opts = SolverOptions(backend="c-simd", threads=1)
    mixed = simulate(cm, P, pd_, t, ["ANC", "tumour_total"], options=opts)
    for i in range(4):
        alone = simulate(cm, P[[i]], _one_patient(pd_, i), t, ["ANC", "tumour_total"], options=opts)
        assert alone.status[0] == 0
        for f in SimulationResult.PATIENT_ARRAYS:
            assert np.array_equal(getattr(mixed, f)[i], getattr(alone, f)[0], equal_nan=True), (i, f)


def test_lanes_restart_from_snapshots_bit_for_bit(host):
    cm, names, P = host
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 3, rule="gemcitabine_label_anc_delay")]
    t = np.arange(0.0, 100.0)
    opts = SolverOptions(backend="c-simd", rtol=1e-6, atol=1e-10)
    n = len(P)
    sd = np.array([[20.0, 56.0 + 0.2 / 24, np.nan]] * n)
    full = simulate(cm, P, regs, t, ["ANC"], options=opts, snapshot_days=sd)
    stop = np.full(n, 56.0 + 0.2 / 24)
    rows = np.arange(n)[::-1].copy()  # restarted in another order (other lane companions)
    ref = simulate(cm, P[rows], regs, t, ["ANC"], options=opts, snapshot_days=sd[rows], stop_days=stop)
    res = simulate(cm, P[rows], regs, t, ["ANC"], options=opts, stop_days=stop,
                   resume_from=(full, rows, np.ones(n, dtype=int)))
    for f in SimulationResult.PATIENT_ARRAYS:
        assert np.array_equal(getattr(res, f), getattr(ref, f), equal_nan=True), f
    assert (res.dose_status == 3).any()
    # the scalar engines continue other trajectories (round-off apart): a lane snapshot is theirs to refuse
    from chemohost.errors import SolverError

    with pytest.raises(SolverError, match="other solver settings or engine .*'lanes'.*'scalar'"):
        simulate(cm, P[rows], regs, t, ["ANC"], options=SolverOptions(backend="c", rtol=1e-6, atol=1e-10),
                 stop_days=stop, resume_from=(full, rows, np.ones(n, dtype=int)))


def test_lanes_dense_lu_fallback_and_failures(host):
    """sparse_lu=False: every lane on the dense partial-pivoting fallback; and the failure codes."""
    cm, names, P = host
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8), 21, 2, rule="gemcitabine_label_anc")]
    t = np.arange(0.0, 45.0, 0.5)
    kw = dict(rtol=1e-6, atol=1e-10, sparse_lu=False, dense_output=False)
    c = simulate(cm, P[:9], regs, t, ["ANC", "tumour_total"], options=SolverOptions(backend="c", **kw))
    s = simulate(cm, P[:9], regs, t, ["ANC", "tumour_total"], options=SolverOptions(backend="c-simd", **kw))
    assert (c.status == 0).all()
    _same_decisions(s, c)
    assert _rel(s.values, c.values) < 1e-6
    Q = P[:10].copy()
    Q[2, names.index("bm_slope_gem")] = np.nan
    kw = dict(rtol=1e-6, atol=1e-10, max_steps=300)
    c = simulate(cm, Q, regs, np.arange(0.0, 40.0), ["ANC"], options=SolverOptions(backend="c", **kw))
    s = simulate(cm, Q, regs, np.arange(0.0, 40.0), ["ANC"], options=SolverOptions(backend="c-simd", **kw))
    assert set(c.status.tolist()) >= {1, 3}
    _same_decisions(s, c)


def test_a_trial_on_the_lane_engine_gives_the_same_clinical_endpoints():
    from chemohost.studies.trial import Trial, run_trial

    d = {"name": "mini", "model": "host_response", "species": "human", "seed": 5, "patients": 20,
         "follow_up": "4 month", "control": "gem", "assessment_interval": "8 week",
         "arms": {"gem": [{"drug": "gemcitabine", "dose": "1000 mg/m2", "infusion": "30 min", "days": [1, 8, 15],
                           "cycle_length": "28 day", "cycles": 3, "dose_modification": "gemcitabine_label_anc"}],
                  "gem + casp1i": [{"drug": "gemcitabine", "dose": "1000 mg/m2", "infusion": "30 min",
                                    "days": [1, 8, 15], "cycle_length": "28 day", "cycles": 3,
                                    "dose_modification": "gemcitabine_label_anc"},
                                   {"drug": "belnacasan", "dose": "900 mg", "route": "oral", "days": list(range(1, 29)),
                                    "times_of_day": ["0 h", "8 h", "16 h"], "cycle_length": "28 day",
                                    "cycles": 3}]}}
    res = {}
    for be in ("c", "c-simd"):
        dd = json.loads(json.dumps(d))
        dd["solver"] = {"backend": be}
        res[be] = run_trial(Trial.from_dict(dd, "mini.yaml")).patients
    a, b = res["c"], res["c-simd"]
    discrete = [c for c in a.columns if a[c].dtype.kind in "iubO"] + ["pfs_months", "os_months"]
    pd.testing.assert_frame_equal(a[discrete], b[discrete])
    num = [c for c in a.columns if a[c].dtype.kind == "f" and c not in discrete]
    assert np.allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-5, atol=1e-9, equal_nan=True)


def test_vector_pow_has_pows_results_on_special_values(tmp_path):
    """The lane kernels' pow (exp(b log|a|) with pow's special cases): every pair of special, subnormal and
    ordinary values, compiled with the lane engine's flags; subnormal results may be flushed to (signed) zero."""
    src = tmp_path / "vp.c"
    src.write_text("#include <math.h>\n" + cbackend._VPOW +
                   "\nvoid f(int n, double *a, double *b, double *o1, double *o2) {\n"
                   "    for (int i = 0; i < n; i++) { o1[i] = _vpow(a[i], b[i]); o2[i] = pow(a[i], b[i]); }\n}\n")
    so = tmp_path / "vp.so"
    subprocess.run([cbackend.compiler(), *cbackend.SIMD_FLAGS, *cbackend.SIMD_NATIVE, "-o", str(so), str(src), "-lm"],
                   check=True)
    lib = ctypes.CDLL(str(so))
    vals = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 4.0, -4.0, np.inf, -np.inf, np.nan, 1e-300, 1e300,
            7.3, -7.3, 1e-5, 0.0002, 1e-320, -1e-320, 5e-324, 1e-160, 1e160]
    pairs = list(itertools.product(vals, vals))
    a, b = (np.array([p[k] for p in pairs]) for k in (0, 1))
    o1, o2 = np.zeros_like(a), np.zeros_like(a)
    ptr = lambda x: ctypes.c_void_p(x.ctypes.data)  # noqa: E731
    lib.f(len(a), ptr(a), ptr(b), ptr(o1), ptr(o2))
    finite = np.isfinite(o2) & np.isfinite(o1)
    with np.errstate(invalid="ignore"):
        close = np.abs(o1 - o2) <= 1e-13 * np.abs(o2)
    same = np.where(finite, close, (o1 == o2) | (np.isnan(o1) & np.isnan(o2)))  # infinities: exactly, with sign
    same &= (o2 != 0) | (np.signbit(o1) == np.signbit(o2))  # zeros: with their sign
    tiny = np.abs(o2) < 2.0 ** -1022  # subnormal results are flushed to zero (documented)
    same |= tiny & (o1 == 0) & (np.signbit(o1) == np.signbit(o2))
    assert same.all(), [(x, y, u, v) for x, y, u, v in zip(a[~same], b[~same], o1[~same], o2[~same])]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not shutil.which("nm"),
                    reason="x86-64 glibc's vector math, read with nm")
def test_the_lane_kernels_vectorise(host):
    """gcc vectorises the lane loops only for some forms of code (signbit(), nested selects before log/exp and
    fmax() silently kept them scalar, at a third of the speed): the lane library must call glibc's vector exp and
    log (the right-hand side's pow) and the scalar one must not."""
    cm, names, P = host
    syms = {n: subprocess.run(["nm", "-D", cbackend.library(cm, n)._name], capture_output=True, text=True).stdout
            for n in (1, cbackend.SIMD_LANES)}
    assert re.search(r"_ZGV[a-z]N\d+v_exp", syms[cbackend.SIMD_LANES]), "the lane kernels did not vectorise"
    assert re.search(r"_ZGV[a-z]N\d+v_log", syms[cbackend.SIMD_LANES]), "the lane kernels' pow did not vectorise"
    assert "_ZGV" not in syms[1]


def test_lane_engine_in_a_file_and_the_refusal_of_early_returns():
    from chemohost.errors import SolverError
    from chemohost.spec_types import SolverFields

    assert SolverOptions.from_fields(SolverFields(backend="c-simd")).backend == "c-simd"
    conv = cbackend.LaneKernelC(0)
    import ast

    f = ast.parse("def rhs(t, y, dy):\n    if y[0] > 1.0:\n        return\n    dy[0] = 1.0\n").body[0]
    with pytest.raises(SolverError, match="returns before its end.*use backend 'c'"):
        conv.kernel(f)
    with pytest.raises(SolverError, match="step-start kernel returns.*use backend 'c'"):  # the fused step start
        conv.fused("start_v", [f])
