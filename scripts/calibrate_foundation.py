"""Reproduce the 'calibrated:' values of the foundation model (chemo_core, human).

Targets (see docs/calibration.md):
  k_tp_vmax       -> PBMC dFdCTP AUC0-24h 2640 uM*h after 1000 mg/m2 over 30 min (typical patient,
                     BSA 1.8 m2; PMID 29451684), with k_tp_km from Grunewald 1991 (see parameters.csv)
  neut_slope_gem  -> 27% of virtual patients with grade >= 3 neutropenia (ANC < 1.0e9/L) on
                     gemcitabine 1000 mg/m2 d1,8,15 q28d x6 (MPACT gemcitabine arm, Von Hoff 2013)
  neut_slope_cis  -> 71% grade 3/4 neutropenia on gemcitabine d1,8,15 + cisplatin 70 mg/m2 d2
                     q28d x6 (von der Maase 2000)
  tumour_k2_gem   -> typical patient: 22.3% tumour-size inhibition vs untreated after 6 cycles
                     (Eur J Pharm Sci 2018;115:296)
  tumour_k2_cis   -> typical GC patient's best response at the RECIST PR border (-30% diameter,
                     volume ratio 0.343; ORR 49%, von der Maase 2000)
Run: python scripts/calibrate_foundation.py  (prints the values to put in parameters.csv)
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

import chemohost as ch
from chemohost.api import parameter_vector, sample_patients

N = 2000
SEED = 1
model = ch.get_model("chemo_core")
names, typical, cvs = parameter_vector(model, "human")
idx = {n: i for i, n in enumerate(names)}
opts = ch.SolverOptions(rtol=1e-5, atol=1e-9)
gem = ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 6, rule="gemcitabine_label_anc")
gc_gem = gem
gc_cis = ch.Regimen("cisplatin", 70, "bsa", "iv", 1 / 24, (2,), 28, 6)
times = np.arange(0, 168.01, 0.25)
# only the myelosuppression parameters vary here: the calibration target is a neutropenia rate
neut_cv = np.where([n.startswith("neut_") for n in names], cvs, 0.0)


def g3_rate(P, regs):
    r = ch.simulate(model, P, regs, times, ["ANC"], options=opts)
    return float((np.nanmin(r.output("ANC"), axis=1) < 1.0).mean())


def with_(base, **kw):
    p = base.copy()
    for k, v in kw.items():
        p[..., idx[k]] = v
    return p



def dfdctp_auc24(vmax_per_h: float) -> float:
    """PBMC dFdCTP AUC0-24h (uM*h) of the typical 1.8 m2 patient after 1000 mg/m2 over 30 min."""
    pk = ch.get_model("gemcitabine_pk")
    n, p, _ = parameter_vector(pk, "human", {"BSA": "1.8 m2", "k_tp_vmax": f"{vmax_per_h} umol/L/h"})
    t = np.linspace(0.0, 1.0, 2881)
    d = ch.simulate(pk, p[None], [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1,), 7, 1)], t, ["dfdctp"],
                    options=ch.SolverOptions(rtol=1e-9, atol=1e-12)).values[0, :, 0]
    return float(np.trapezoid(d, t * 24))


vmax = brentq(lambda v: dfdctp_auc24(v) - 2640.0, 10.0, 2000.0, xtol=1e-6)
print(f"k_tp_vmax = {vmax:.5g} umol/L/h (AUC0-24h {dfdctp_auc24(vmax):.1f} uM*h)")
if abs(typical[idx["k_tp_vmax"]] / 24 - vmax) > 1e-3 * vmax:
    print("  (parameters.csv differs: put this value there and rerun)")

pop = sample_patients(typical, neut_cv, N, SEED, True)
s_gem = brentq(lambda s: g3_rate(with_(pop, neut_slope_gem=s * pop[:, idx["neut_slope_gem"]] / typical[idx["neut_slope_gem"]]), [gem]) - 0.27,
               1e-4, 0.05, xtol=1e-6)
print(f"neut_slope_gem = {s_gem:.5g} 1/(umol/L)")
pop2 = with_(pop, neut_slope_gem=s_gem * pop[:, idx["neut_slope_gem"]] / typical[idx["neut_slope_gem"]])
s_cis = brentq(lambda s: g3_rate(with_(pop2, neut_slope_cis=s * pop[:, idx["neut_slope_cis"]] / typical[idx["neut_slope_cis"]]), [gc_gem, gc_cis]) - 0.71,
               1e-4, 5.0, xtol=1e-6)
print(f"neut_slope_cis = {s_cis:.5g} 1/(umol/L)")

t1 = with_(typical, neut_slope_gem=s_gem, neut_slope_cis=s_cis)
end = np.array([168.0])
untreated = ch.simulate(model, t1[None], [], end, ["tumour_size"], options=opts).values[0, -1, 0]


def tgi(k2):
    p = with_(t1, tumour_k2_gem=k2)
    treated = ch.simulate(model, p[None], [gem], end, ["tumour_size"], options=opts).values[0, -1, 0]
    return 1 - treated / untreated


k2g = brentq(lambda k: tgi(k) - 0.223, 1e-7, 1e-2, xtol=1e-10)
print(f"tumour_k2_gem = {k2g:.5g} 1/(umol/L)/day (TGI {tgi(k2g):.3f})")
t2 = with_(t1, tumour_k2_gem=k2g)


def best_ratio(k2c):
    p = with_(t2, tumour_k2_cis=k2c)
    v = ch.simulate(model, p[None], [gc_gem, gc_cis], times, ["tumour_size"], options=opts).values[0, :, 0]
    return v.min() / v[0]


k2c = brentq(lambda k: best_ratio(k) - 0.343, 1e-6, 10, xtol=1e-9)
print(f"tumour_k2_cis = {k2c:.5g} 1/(umol/L)/day (best volume ratio {best_ratio(k2c):.3f})")
