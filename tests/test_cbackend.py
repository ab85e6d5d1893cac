"""The CPU engine compiled by the system C compiler (engine/cbackend.py) against the numba engine: the same
solver, so the same steps, events, rules, snapshots and outputs (bit for bit); clear errors without a compiler."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from chemohost.api import parameter_vector, sample_patients
from chemohost.engine import cbackend
from chemohost.engine.codegen import compile_model
from chemohost.engine.simulate import SimulationResult, SolverOptions, simulate
from chemohost.errors import SolverError
from chemohost.model.registry import get_model
from chemohost.protocol.dosing import Regimen, parse_dose
from chemohost.studies.indications import load_indication

pytestmark = pytest.mark.skipif(not cbackend.available(), reason="no C compiler")


def _both(cm, P, regs, t, outs, **kw):
    opts = dict(rtol=kw.pop("rtol", 1e-6), atol=kw.pop("atol", 1e-10), max_steps=kw.pop("max_steps", 200_000),
                sparse_lu=kw.pop("sparse_lu", True), dense_output=kw.pop("dense_output", True))
    a = simulate(cm, P, regs, t, outs, options=SolverOptions(backend="numba", **opts), **kw)
    b = simulate(cm, P, regs, t, outs, options=SolverOptions(backend="c", **opts), **kw)
    return a, b


def _agree(a, b):
    """Bit for bit: same operations in the same order, no floating-point contraction, the same libm."""
    for f in SimulationResult.PATIENT_ARRAYS:
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f


@pytest.fixture(scope="module")
def host():
    m = get_model("host_response")
    ind = load_indication("pancreatic_advanced", m.parameters)
    names, typ, cvs = parameter_vector(m, "human", dict(ind.parameters))
    P = sample_patients(typ, cvs, 6, 11, True)
    P[0, names.index("bm_slope_gem")] *= 8.0   # deep nadir: the ANC rule holds and delays doses
    P[1, names.index("tumour_k2_gem")] *= 6.0  # deep response: the hysteresis rule pauses
    return compile_model(m), names, P


def test_c_engine_equals_numba_on_the_full_model_with_rules_infusions_and_oral_doses(host):
    cm, names, P = host
    g, gb = parse_dose("1000 mg/m2")
    b, bb = parse_dose("7.5 mg/kg")
    t = np.arange(0.0, 120.0, 1.0)
    outs = ["ANC", "NLR", "tumour_total", "il1a_pgml", "casp1_inhibition"]
    for rule in ("gemcitabine_label_anc_delay", "adaptive_pause_at_half_burden"):
        regs = [Regimen(drug="gemcitabine", dose=g, basis=gb, infusion=30 / 1440, days=(1, 8, 15), cycle_length=28,
                        cycles=3, rule=rule),
                Regimen(drug="bermekimab", dose=b, basis=bb, infusion=1 / 24, days=(1,), cycle_length=14, cycles=6),
                Regimen("belnacasan", 900, "flat", "oral", None, tuple(range(1, 15)), 28, 1,
                        times_of_day=(0.0, 8 / 24, 16 / 24))]
        a, c = _both(cm, P, regs, t, outs)
        _agree(a, c)
        assert (a.status == 0).all()
    assert 2 in a.dose_status or 4 in a.dose_status or (a.dose_times > a.nominal_dose_times()).any()


def test_c_engine_snapshots_and_restarts_equal_numba(host):
    cm, names, P = host
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 3, rule="gemcitabine_label_anc_delay")]
    t = np.arange(0.0, 100.0)
    sd = np.array([[20.0, 56.0 + 0.2 / 24, np.nan]] * 6)
    a, c = _both(cm, P, regs, t, ["ANC"], snapshot_days=sd)
    _agree(a, c)
    assert np.array_equal(a.snapshots.i, c.snapshots.i)
    assert np.array_equal(a.snapshots.f, c.snapshots.f, equal_nan=True)
    rows, stop = np.arange(6), np.full(6, 56.0 + 0.2 / 24)
    ra = simulate(cm, P, regs, t, ["ANC"], options=SolverOptions(backend="numba", rtol=1e-6, atol=1e-10),
                  stop_days=stop, resume_from=(a, rows, np.ones(6, dtype=int)))
    rc = simulate(cm, P, regs, t, ["ANC"], options=SolverOptions(backend="c", rtol=1e-6, atol=1e-10),
                  stop_days=stop, resume_from=(c, rows, np.ones(6, dtype=int)))
    _agree(ra, rc)
    assert (rc.dose_status == 3).any()


@pytest.mark.parametrize("pair", [("numba", "c"), ("c", "c-simd")])
@pytest.mark.parametrize("model,closed_form", [("chemo_core", False), ("gemcitabine_pk", True),
                                               ("friberg_docetaxel", True)])
def test_c_engine_equals_numba_without_linear_part_or_without_odes(model, closed_form, pair):
    """chemo_core fully integrated (no closed-form PK), gemcitabine_pk (closed form only: nothing integrated); C
    against numba bit for bit, and the lane engine against C (11 patients: a full set of 8 lanes and a partial one)
    within the tolerance with the same steps."""
    m = get_model(model)
    cm = compile_model(m, closed_form)
    _, typ, cvs = parameter_vector(m, "human")
    P = sample_patients(typ, cvs, 11, 3, True)
    drug = "docetaxel" if model.startswith("friberg") else "gemcitabine"
    regs = [Regimen(drug, 75 if drug == "docetaxel" else 1000, "bsa", "iv", 1 / 24, (1,), 21, 2)]
    t = np.arange(0.0, 43.0, 0.5)
    a, c = (simulate(cm, P, regs, t, None, options=SolverOptions(backend=b, rtol=1e-6, atol=1e-10)) for b in pair)
    if pair == ("numba", "c"):
        _agree(a, c)
        return
    assert (a.status == 0).all() and np.array_equal(a.steps, c.steps)
    peak = np.abs(a.values).max(axis=(0, 1))
    assert np.array_equal(a.values[..., peak == 0], c.values[..., peak == 0])
    scale = np.abs(a.values[..., peak > 0]) + 1e-6 * peak[peak > 0]
    assert (np.abs(c.values[..., peak > 0] - a.values[..., peak > 0]) / scale).max() < 1e-6


def test_c_engine_equals_numba_with_dense_lu_and_steps_clipped_at_outputs(host):
    """The reference settings (dense LU with partial pivoting every step, no dense output)."""
    cm, names, P = host
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8), 21, 2, rule="gemcitabine_label_anc")]
    a, c = _both(cm, P[:3], regs, np.arange(0.0, 45.0, 0.5), ["ANC", "tumour_total"], sparse_lu=False,
                 dense_output=False)
    _agree(a, c)
    assert (a.status == 0).all()


def test_failures_are_reported_alike(host):
    cm, names, P = host
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8), 21, 2)]
    Q = P.copy()
    Q[2, names.index("bm_slope_gem")] = np.nan
    a, c = _both(cm, Q, regs, np.arange(0.0, 40.0), ["ANC"], max_steps=300)
    _agree(a, c)
    assert set(a.status.tolist()) >= {1, 3}  # max_steps, non-finite parameters


def test_missing_or_broken_compiler_is_a_clear_error(host, monkeypatch, tmp_path):
    cm, names, P = host
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1,), 21, 1)]
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    with pytest.raises(SolverError, match=r"\$CC='no-such-compiler-xyz' was not found"):
        simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="c"))
    assert not cbackend.available()
    # auto falls back to numba (same results)
    r = simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="auto"))
    assert r.status[0] == 0
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'broken compiler' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.raises(SolverError, match=r"compiling .* failed .*exit 3.*\n.*broken compiler"):
        simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="c"))
    with pytest.warns(RuntimeWarning, match="using numba instead"):  # auto: the numba engine, said so
        r = simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="auto"))
    assert r.status[0] == 0
    with pytest.raises(SolverError, match="backend must be"):
        SolverOptions(backend="fortran")


def test_a_library_that_does_not_load_is_removed_and_a_failed_build_not_retried(host, monkeypatch, tmp_path):
    cm, names, P = host
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1,), 21, 1)]
    log = tmp_path / "calls"
    junk = tmp_path / "cc"  # "compiles" by writing a file that is no shared library
    junk.write_text(f"#!/bin/sh\necho x >> {log}\n"
                    "prev=; for a; do [ \"$prev\" = -o ] && echo junk > \"$a\"; prev=$a; done\nexit 0\n")
    junk.chmod(0o755)
    monkeypatch.setenv("CC", str(junk))
    with pytest.raises(SolverError, match="does not load .*removed it"):
        simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="c"))
    so_dir = Path(cm.module.__file__).parent
    assert not any(f.read_bytes().startswith(b"junk") for f in so_dir.glob("chemohost_c_*.so"))
    calls = len(log.read_text().splitlines())
    with pytest.warns(RuntimeWarning, match="using numba instead"):
        r = simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="auto"))
    assert r.status[0] == 0
    # auto tried the lane library once (compiler --version and build: 2 calls); the scalar one's failure is remembered
    assert len(log.read_text().splitlines()) == calls + 2
    with pytest.warns(RuntimeWarning, match="using numba instead"):
        simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="auto"))
    assert len(log.read_text().splitlines()) == calls + 2  # remembered: not built again in this process
    monkeypatch.setattr(cbackend, "_failed", {})  # a new process: the failures are remembered on disk
    with pytest.raises(SolverError, match=r"does not load .*remembered in .*\.failed; delete it to try again"):
        simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="c-simd"))
    with pytest.warns(RuntimeWarning, match="using numba instead"):
        simulate(cm, P[:1], regs, [0.0, 1.0], ["ANC"], options=SolverOptions(backend="auto"))
    assert len(log.read_text().splitlines()) == calls + 4  # (compiler --version only: nothing built)


def test_a_cached_library_loads_without_generating_its_source(host, monkeypatch, tmp_path):
    """A process that finds the engine built loads it without translating the model again (the digest of the C
    source is recorded beside the module); a changed template is translated again."""
    cm, names, P = host
    regs = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1,), 21, 1)]
    cbackend.library(cm, 1)  # built (or loaded) once
    ref = simulate(cm, P[:1], regs, [0.0, 7.0], ["ANC"], options=SolverOptions(backend="c"))
    calls = []
    real = cbackend.c_source
    monkeypatch.setattr(cbackend, "c_source", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(cbackend, "_loaded", {})  # as a new process
    r = simulate(cm, P[:1], regs, [0.0, 7.0], ["ANC"], options=SolverOptions(backend="c"))
    assert calls == [] and np.array_equal(r.values, ref.values)
    changed = tmp_path / "rosenbrock.c"
    mark = f"/* changed {tmp_path.name} */\n"  # (new in every run: a record of an earlier run must not match)
    changed.write_text(cbackend._TEMPLATE.read_text() + mark)
    monkeypatch.setattr(cbackend, "_TEMPLATE", changed)
    records = set(Path(cm.module.__file__).parent.glob("chemohost_csrc_*"))
    try:
        digest, text = cbackend._source_digest(cm, 1)
        assert text is not None and text.endswith(mark) and len(calls) == 1
        assert digest == hashlib.sha256(text.encode()).hexdigest()
        assert cbackend._source_digest(cm, 1) == (digest, None)  # recorded
    finally:
        for f in set(Path(cm.module.__file__).parent.glob("chemohost_csrc_*")) - records:
            f.unlink()


def test_translation_refuses_what_it_does_not_know():
    with pytest.raises(SolverError, match="has no"):
        cbackend.kernels_c("N_ODE = 1\n")
    src = "N_ODE = 1\nN_LIN = 0\nN_OUT = 1\nN_DERIVED = 0\nN_JAC = 0\nN_JLIN = 0\nN_LU = 0\nREL_FLOOR = 1e-300\n" \
          "LU_GROWTH_MAX = 100.0\n" + "".join(f"{k} = np.array([], dtype=np.int64)\n"
                                             for k in ("LIN_NEEDED", "JROW", "JCOL", "JLROW", "JLCOL"))
    kern = "".join(f"def {k}(p, y):\n    y[0] = 1.0\n" for k in cbackend.KERNELS if k != "rhs")
    with pytest.raises(SolverError, match="unsupported statement"):
        cbackend.kernels_c(src + kern + "def rhs(t, y):\n    for i in range(3):\n        y[i] = 0.0\n")
    with pytest.raises(SolverError, match="unsupported expression"):
        cbackend.kernels_c(src + kern + "def rhs(t, y):\n    y[0] = np.sin(t)\n")


def test_an_unknown_backend_in_a_file_exits_2_with_file_and_field(tmp_path, capsys):
    from chemohost.cli import main

    src = Path(__file__).resolve().parents[1] / "scenarios" / "trial_pancreatic_il1_blockade.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(src.read_text().replace("\nseed: 2026\n", "\nseed: 2026\nsolver: {backend: fortran}\n"))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "solver.backend" in err and "'auto', 'c', 'c-simd' or 'numba'" in err and "fortran" in err
