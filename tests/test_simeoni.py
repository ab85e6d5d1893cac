"""Simeoni 2004 tumour growth inhibition with the paper's paclitaxel parameters (Table 2, exp. 1)."""

import numpy as np
import pytest

import chemohost as ch
from chemohost.model.core import Module, ParameterSpec, compose
from chemohost.model.mechanisms.simeoni import simeoni
from chemohost.model.params import parameter_set

ROWS = """name,species,value,unit,lower,upper,cv_percent,source
C_fixed,mouse,0,ng/mL,0,100000,,test: constant exposure
sim_w0,mouse,0.05,cm**3,0.01,1,,test
sim_lambda0,mouse,0.273,1/day,0.1,1,,Simeoni 2004 Table 2
sim_lambda1,mouse,0.814,cm**3/day,0.1,2,,Simeoni 2004 Table 2
sim_psi,mouse,20,dimensionless,20,20,,Simeoni 2004
sim_k1,mouse,0.968,1/day,0.1,2,,Simeoni 2004 Table 2
sim_k2_ptx,mouse,6.29e-4,1/(ng/mL)/day,1e-5,1e-2,,Simeoni 2004 Table 2 (nlmixr2lib)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("tbl") / "params.csv"
    path.write_text(ROWS)
    exposure = Module("fixed_exposure", "constant drug concentration", parameters=(ParameterSpec("C_fixed", "ng/mL"),))
    model = compose("simeoni_test", "Simeoni with constant exposure",
                    [exposure, simeoni("sim", {"ptx": "C_fixed"}, {"ptx": "ng/mL"})])
    ps = parameter_set(model, "mouse", table=path)
    names = list(model.parameters)
    return model, names, np.array([ps[n].value for n in names])


def run(setup, t, **kw):
    model, names, p = setup
    p = p.copy()
    for k, v in kw.items():
        p[names.index(k)] = v
    return ch.simulate(model, p[None], [], t, ["sim_size"], options=ch.SolverOptions(rtol=1e-9, atol=1e-14)).output("sim_size")[0]


def test_exponential_then_linear_growth(setup):
    t = np.array([0.0, 1.0, 30.0, 31.0])
    w = run(setup, t)
    # exponential phase: doubling time ln2/lambda0 = 2.54 d
    assert np.log(w[1] / w[0]) == pytest.approx(0.273, rel=1e-3)
    # linear phase: growth rate lambda1 = 0.814 g/day
    assert w[3] - w[2] == pytest.approx(0.814, rel=1e-3)


def test_threshold_concentration(setup):
    # Simeoni 2004: tumour eradication needs a steady concentration above C_T = lambda0/k2 (434 ng/mL)
    ct = 0.273 / 6.29e-4
    t = np.linspace(0, 60, 61)
    above = run(setup, t, C_fixed=1.2 * ct)
    below = run(setup, t, C_fixed=0.8 * ct)
    # net decline rate of cycling cells is k2*C - lambda0 = 0.2*lambda0 above the threshold
    assert above[-1] < 0.2 * above[0] and np.all(np.diff(above[10:]) < 0)
    assert below[-1] > below[0] and np.all(np.diff(below[10:]) > 0)


def test_damage_delay(setup):
    # damaged cells die after a mean 3/k1 = 3.1 days: total size lags the proliferating mass
    t = np.linspace(0, 2, 3)
    w = run(setup, t, C_fixed=1e4)
    assert w[1] > 0.5 * w[0]  # after one day most damaged cells are still counted
