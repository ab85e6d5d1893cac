"""Engine behaviour: stiffness, closed-form PK vs full integration, events, rules, failures, caching."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chemohost as ch
from chemohost.engine.codegen import compile_model, linear_subsystem, symbolic
from chemohost.model.core import Flow, Module, ParameterSpec, Species, compose
from chemohost.model.params import parameter_set
from chemohost.protocol.rules import get_rule
from conftest import typical

GEM = ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 2, rule="gemcitabine_label_anc")
CIS = ch.Regimen("cisplatin", 70, "bsa", "iv", 1 / 24, (1,), 28, 2, start=1 / 24)

ROBER_ROWS = """name,species,value,unit,lower,upper,cv_percent,source
k1,all,0.04,1/day,0.04,0.04,,Robertson 1966 test problem
k2,all,3e7,1/day,3e7,3e7,,Robertson 1966 test problem
k3,all,1e4,1/day,1e4,1e4,,Robertson 1966 test problem
"""


def test_robertson_stiff_problem(tmp_path):
    """The classic stiff test (Hairer & Wanner II): reference values at t = 40."""
    path = tmp_path / "p.csv"
    path.write_text(ROBER_ROWS)
    mod = Module("rober", "Robertson chemical kinetics",
                 species=(Species("A", "mol", 1.0), Species("B", "mol", 0.0), Species("C", "mol", 0.0)),
                 parameters=(ParameterSpec("k1", "1/day"), ParameterSpec("k2", "1/day"), ParameterSpec("k3", "1/day")),
                 flows=(Flow("r1", "A", "B", "k1*A"), Flow("r2", "B", "C", "k2*B**2"), Flow("r3", "B", "A", "k3*B*C")))
    model = compose("rober", "Robertson", [mod])
    ps = parameter_set(model, "human", table=path)
    p = np.array([[ps[n].value for n in model.parameters]])
    r = ch.simulate(model, p, [], [40.0], ["A", "B", "C"], options=ch.SolverOptions(rtol=1e-8, atol=1e-14))
    np.testing.assert_allclose(r.values[0, 0], [0.7158270687, 9.185534765e-6, 0.2841637457], rtol=1e-6)
    assert r.steps[0, 0] < 2000  # an explicit method would need ~1e6 steps here


def test_linear_subsystem_detection():
    model = ch.get_model("chemo_core")
    lin = linear_subsystem(symbolic(model))
    assert {"gem_c", "gem_p", "dfdu_c", "cis_c", "cis_bound", "gem_depot"} <= set(lin)
    # dFdCTP formation saturates (Michaelis-Menten in plasma gemcitabine): integrated, not closed form
    assert not {"neut_prol", "neut_circ", "tumour_x1", "dfdctp"} & set(lin)


def test_closed_form_matches_full_integration():
    model, names, p = typical("chemo_core")
    t = np.linspace(0.013, 56, 300)
    outs = ["C_gem", "dfdctp", "C_cis", "cis_bound", "ANC", "tumour_size"]
    opts = dict(rtol=1e-9, atol=1e-12)
    a = ch.simulate(model, p[None], [GEM, CIS], t, outs, options=ch.SolverOptions(**opts, closed_form=True))
    b = ch.simulate(model, p[None], [GEM, CIS], t, outs, options=ch.SolverOptions(**opts, closed_form=False))
    assert (a.status == 0).all() and (b.status == 0).all()
    ref = b.values[0]
    err = np.abs(a.values[0] - ref) / np.maximum(np.abs(ref), 1e-6 * np.abs(ref).max(axis=0))
    assert err.max() < 1e-5


@pytest.mark.parametrize("scale", [0.0, 1.0, 10.0, 100.0])
def test_extreme_doses_stay_non_negative_and_finite(scale):
    model, names, p = typical("chemo_core")
    regs = [ch.Regimen("gemcitabine", 1000 * scale, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 2),
            ch.Regimen("cisplatin", 70 * scale, "bsa", "iv", 1 / 24, (2,), 28, 2)]
    r = ch.simulate(model, p[None], regs, np.linspace(0, 56, 113), list(model.species))
    assert (r.status == 0).all()
    assert np.isfinite(r.values).all()
    assert (r.values >= 0).all()
    if scale == 0:
        np.testing.assert_allclose(r.output("neut_circ")[0], p[names.index("neut_circ0")], rtol=1e-12)


def test_failed_patient_is_flagged_not_fatal():
    model, names, p = typical("chemo_core")
    P = np.repeat(p[None], 3, axis=0)
    P[1, names.index("neut_mtt")] = np.nan
    r = ch.simulate(model, P, [GEM], np.linspace(0, 28, 29), ["ANC"])
    assert r.status[0] == 0 and r.status[2] == 0 and r.status[1] != 0
    assert np.isnan(r.output("ANC")[1]).all() and np.isfinite(r.output("ANC")[[0, 2]]).all()
    df = r.to_frame()
    assert set(df.loc[df.patient == 1, "status"]) != {"ok"}


def test_max_steps_flag():
    model, names, p = typical("chemo_core")
    r = ch.simulate(model, p[None], [GEM], [0.0, 56.0], ["ANC"], options=ch.SolverOptions(max_steps=20))
    assert r.status[0] == 1


def test_dose_modification_rule_uses_simulated_anc():
    model, names, p = typical("chemo_core")
    # a patient with strong marrow toxicity so that the label rule must act
    P = np.repeat(p[None], 3, axis=0)
    P[:, names.index("neut_slope_gem")] *= np.array([1.0, 4.0, 10.0])
    table = ch.dose_table([GEM])
    t = np.unique(np.concatenate([table.time, np.linspace(0, 56, 57)]))
    r = ch.simulate(model, P, [GEM], t, ["ANC"])
    rule = get_rule("gemcitabine_label_anc")
    for i in range(3):
        for d, td in enumerate(table.time):
            anc = r.output("ANC")[i, np.searchsorted(t, td)]
            assert r.dose_factors[i, d] == rule.factor(anc)
    assert set(np.unique(r.dose_factors[2])) >= {0.0}  # the most sensitive patient has doses held
    assert (r.dose_factors[0] == 1.0).all()


def test_rule_reduced_dose_changes_exposure():
    model, names, p = typical("chemo_core")
    held = ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 15), 28, 1)
    P = p[None].copy()
    P[0, names.index("neut_slope_gem")] *= 4  # ANC ~0.6e9/L on day 15 -> 75%
    t = np.array([14.0 + 0.5 / 24])
    free = ch.simulate(model, P, [held], t, ["gem_c"]).values[0, 0, 0]
    ruled = ch.simulate(model, P, [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 15), 28, 1,
                                              rule="gemcitabine_label_anc")], t, ["gem_c"])
    factor = ruled.dose_factors[0, 1]
    assert factor == 0.75
    assert ruled.values[0, 0, 0] == pytest.approx(free * factor, rel=1e-3, abs=1e-6)


def test_start_offset_sequences_drugs():
    model, names, p = typical("chemo_core")
    late = ch.Regimen("cisplatin", 70, "bsa", "iv", 1 / 24, (1,), 21, 1, start=3.0)
    r = ch.simulate(model, p[None], [late], [0.0, 2.99, 3.02], ["C_cis"])
    c = r.output("C_cis")[0]
    assert c[0] == 0 and c[1] == 0 and c[2] > 0


def test_same_result_whatever_the_batch_split():
    model, names, p = typical("chemo_core")
    rng = np.random.default_rng(3)
    P = p[None] * np.exp(0.2 * rng.standard_normal((8, p.size)))
    t = np.linspace(0, 56, 57)
    whole = ch.simulate(model, P, [GEM, CIS], t, ["ANC", "tumour_size"]).values
    parts = np.concatenate([ch.simulate(model, P[i:i + 3], [GEM, CIS], t, ["ANC", "tumour_size"]).values
                            for i in range(0, 8, 3)])
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize("backend,pattern", [("numba", "*.nbi"), ("c", "chemohost_c_*.so")])
def test_compiled_code_is_cached_on_disk(tmp_path, backend, pattern):
    """A second process loads the machine code from the cache instead of compiling again (numba's index files,
    or the C engine's shared library, next to the generated module)."""
    env = dict(os.environ, CHEMOHOST_CACHE_DIR=str(tmp_path))
    code = ("import time,numpy as np,chemohost as ch;from chemohost.api import parameter_vector;"
            "m=ch.get_model('gemcitabine_pk');n,p,_=parameter_vector(m,'human');t=time.time();"
            "ch.simulate(m,p[None],[ch.Regimen('gemcitabine',1000,'bsa','iv',0.02,(1,),7,1)],[1.0],"
            f"options=ch.SolverOptions(backend={backend!r}));"
            "print(time.time()-t)")
    first = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    second = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    files = list(Path(tmp_path).rglob(pattern))
    assert files, f"{pattern} should be written next to the generated module"
    assert second < first / 3


def test_repeated_eigenvalues_in_linear_pk():
    """ka equal to the dFdCTP elimination rate makes the depot->plasma->dFdCTP chain defective
    (Jordan block); the engine perturbs the rates by 1e-8 and stays accurate."""
    model, names, p = typical("gemcitabine_pk", "mouse")
    p = p.copy()
    p[names.index("ka_gem")] = p[names.index("k_tp_out")]
    near = p.copy()
    near[names.index("ka_gem")] *= 1 + 1e-5
    reg = [ch.Regimen("gemcitabine", 120, "weight", "ip", None, (1,), 7, 1)]
    t = np.linspace(0, 3, 61)
    r = ch.simulate(model, np.stack([p, near]), reg, t, ["dfdctp", "C_gem"], options=ch.SolverOptions(rtol=1e-9, atol=1e-14))
    assert (r.status == 0).all()
    np.testing.assert_allclose(r.values[0], r.values[1], rtol=1e-4, atol=1e-5)  # values ~1-300


def test_linear_decomposition_block_by_block():
    """The linear sub-system is decomposed drug by drug (its diagonal blocks): the basis reconstructs each
    patient's matrix, a mode is exactly zero outside its block, and one ill-conditioned block flags the
    patient (the condition number of the whole basis)."""
    from chemohost.engine.simulate import _blocks, _eig, _linear_decomposition

    model, names, p = typical("host_response")
    cm = compile_model(model)
    P = np.stack([p, p * np.linspace(0.9, 1.1, p.size)])
    V, Vinv, lam, bad = _linear_decomposition(cm, P)
    A = np.zeros((2, V.shape[1], V.shape[1]))
    cm.module.lin_matrices(P, A)
    assert not bad.any() and len(_blocks(A)) > 5  # one block per drug (and the IL-1 depot)
    np.testing.assert_allclose(V @ (lam[:, :, None] * Vinv), A, atol=1e-9 * np.abs(A).max())
    block = np.zeros(A.shape[1], dtype=int)
    for k, b in enumerate(_blocks(A)):
        block[b] = k
    outside = block[:, None] != block[None, :]
    assert (V[:, outside] == 0).all() and (Vinv[:, outside] == 0).all()
    # a defective 2x2 block (a Jordan block) beside well-conditioned ones
    J = np.zeros((1, 4, 4))
    J[0, :2, :2] = [[-1.0, 1.0], [0.0, -1.0]]
    J[0, 2:, 2:] = [[-2.0, 0.0], [1.0, -3.0]]
    assert _eig(J)[2][0]
    J[0, 0, 0] = -1.5
    assert not _eig(J)[2][0]


@pytest.mark.parametrize("backend", ["numba", "c", "c-simd"])
def test_no_patients_is_an_empty_result(backend):
    """N = 0 (an empty block of a study) gives empty arrays, not an error from the linear sub-system."""
    from chemohost.engine import cbackend

    if backend != "numba" and not cbackend.available():
        pytest.skip("no C compiler")
    model, names, p = typical("chemo_core")
    r = ch.simulate(model, np.zeros((0, p.size)), [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.02, (1,), 21, 1)],
                    [0.0, 1.0], ["ANC"], options=ch.SolverOptions(backend=backend))
    assert r.values.shape == (0, 2, 1) and r.status.shape == (0,) and r.output("ANC").shape == (0, 2)


def test_output_times_within_round_off_of_event_times():
    """2-h output grid vs an infusion ending at 1 h + 1 h: times equal up to one ulp."""
    model, names, p = typical("chemo_core")
    regs = [ch.Regimen("cisplatin", 70, "bsa", "iv", 1 / 24, (1,), 21, 2, start=1 / 24)]
    t = np.arange(0, 43) * (2 / 24)
    r = ch.simulate(model, p[None], regs, t, ["C_cis", "ANC"])
    assert (r.status == 0).all() and np.isfinite(r.values).all()
