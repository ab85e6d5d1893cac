"""Cisplatin PK reproduces Urien 2004 structure and the label's binding facts."""

import numpy as np
import pytest

import chemohost as ch
from conftest import terminal_half_life, typical

CIS = ch.Regimen("cisplatin", 70, "bsa", "iv", 1 / 24, (1,), 21, 1)


def test_unbound_half_life_urien(tight):
    # derived unbound t1/2 beta ~1.3 h (parameters.md 2); label free cisplatin t1/2 20-30 min (alpha)
    model, names, p = typical("cisplatin_pk")
    t = np.linspace(6 / 24, 12 / 24, 20)
    r = ch.simulate(model, p[None], [CIS], t, ["C_cis"], options=tight)
    assert 1.0 < terminal_half_life(t, r.output("C_cis")[0]) * 24 < 1.6


def test_bound_platinum_half_life_and_fraction(tight):
    model, names, p = typical("cisplatin_pk")
    t = np.array([3 / 24, 2.0, 4.0])
    r = ch.simulate(model, p[None], [CIS], t, ["C_cis", "cis_bound"], options=tight)
    unbound, bound = r.values[0, :, 0], r.values[0, :, 1]
    # label: ~90% of plasma platinum protein-bound 2-3 h after dosing
    assert 0.8 < bound[0] / (bound[0] + unbound[0]) < 0.95
    # Urien Table 5: CLm0/Vm 0.014 /h -> t1/2 ~50 h
    assert np.log(2) / (np.log(bound[1] / bound[2]) / 48) == pytest.approx(49.5, rel=0.02)


def test_clearance_covariates(tight):
    model, names, p = typical("cisplatin_pk")
    low = p.copy()
    low[names.index("CRCL")] = 40.0
    r = ch.simulate(model, np.stack([p, low]), [CIS], np.linspace(0, 1, 200), ["C_cis"], options=tight)
    auc = np.trapezoid(r.output("C_cis"), dx=1 / 199, axis=1)
    # AUC ~ 1/CL and CL ~ CRCL^0.36 (Urien 2004)
    assert auc[1] / auc[0] == pytest.approx((83 / 40) ** 0.36, rel=0.01)
