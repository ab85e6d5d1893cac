"""Validation checks: evidence that no parameter of the model was set from.

Every check here compares a prediction with data that were *not* used to calibrate or set any
parameter (the calibration checks in ``checks.py`` guard fitted targets against drift).  What was
used where: dFdCTP formation capacity ``k_tp_vmax`` from the PBMC AUC of PMID 29451684 and the
saturation constant ``k_tp_km`` from Grunewald 1991's saturation statement; trial-level parameters
from Burris 1997 (OS, ORR, DCR) and MPACT (grade >= 3 neutropenia only).  So Tempero 2003's
fixed-dose-rate comparison, MPACT's efficacy figures and the dose-response behaviour are
predictions.  Where the model misses, the check says so as a known gap with its reason.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.stats import norm

from ..api import parameter_vector
from ..engine.simulate import SolverOptions, simulate
from ..model.registry import get_model
from ..protocol.dosing import Regimen
from .framework import CheckResult, check

OPTS = SolverOptions(rtol=1e-8, atol=1e-12)
PATIENTS = 400  # virtual patients per arm in the trial-level checks (same seed as the shipped trial)
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"  # package data (also ./scenarios in a checkout)


def _dfdctp_course(dose_mg_m2: float, minutes: float, km: float | None = None):
    """(t in h, plasma gemcitabine uM, PBMC dFdCTP uM) over 24 h, typical 1.8 m2 patient, one dose."""
    model = get_model("gemcitabine_pk")
    over = {"BSA": "1.8 m2"}
    if km is not None:
        over["k_tp_km"] = f"{km} umol/L"
    names, p, _ = parameter_vector(model, "human", over)
    t = np.linspace(0.0, 1.0, 2881)
    r = simulate(model, p[None], [Regimen("gemcitabine", dose_mg_m2, "bsa", "iv", minutes / 1440, (1,), 7, 1)], t,
                 ["C_gem_uM", "dfdctp"], options=OPTS)
    return t * 24, r.values[0, :, 0], r.values[0, :, 1]


def _peak_auc(dose, minutes, km=None):
    t, c, d = _dfdctp_course(dose, minutes, km)
    return float(d.max()), float(np.trapezoid(d, t)), float(c.max())


@check("gemcitabine_fdr_dfdctp",
       "Fixed-dose-rate gemcitabine (1500 mg/m2 at 10 mg/m2/min, 150 min) gives about twice the intracellular "
       "dFdCTP of the dose-intense 30-min infusion (2200 mg/m2): dFdCTP formation saturates",
       "Tempero 2003 J Clin Oncol 21:3402 (randomised phase II, n=92; two-fold increase in intracellular "
       "gemcitabine triphosphate in the FDR arm, P = .046); Grunewald 1991 Cancer Chemother Pharmacol 27:258",
       kind="validation")
def _fdr_dfdctp():
    fdr, std = _peak_auc(1500, 150), _peak_auc(2200, 30)
    peak_ratio, auc_ratio = fdr[0] / std[0], fdr[1] / std[1]
    km_lo, km_hi = (_peak_auc(1500, 150, k)[0] / _peak_auc(2200, 30, k)[0] for k in (1.0, 10.0))
    lin_fdr, lin_std = _peak_auc(1500, 150, 1e6), _peak_auc(2200, 30, 1e6)  # Km >> C: linear formation
    g800 = _peak_auc(800, 60)[1] / _peak_auc(800, 30)[1]
    # Tempero's ratio 2 with two-sided P = .046 implies SE(log ratio) = log 2 / z(0.023) and a 95% CI
    se = np.log(2.0) / norm.isf(0.046 / 2)
    lo, hi = 2.0 * np.exp(-1.96 * se), 2.0 * np.exp(1.96 * se)
    t, c, d = _dfdctp_course(1500, 150)
    ts, cs, ds = _dfdctp_course(2200, 30)

    def draw(fig):
        a1, a2 = fig.subplots(1, 2)
        a1.plot(t, c, label="FDR 1500 mg/m2 / 150 min")
        a1.plot(ts, cs, label="2200 mg/m2 / 30 min")
        a1.set_yscale("log")
        a1.set_ylabel("plasma gemcitabine (uM)")
        a2.plot(t, d, label="FDR")
        a2.plot(ts, ds, label="30 min")
        a2.set_ylabel("PBMC dFdCTP (uM)")
        for ax in (a1, a2):
            ax.set_xlabel("time (h)")
            ax.set_xlim(0, 12)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.set_size_inches(8.4, 3.4)
        fig.tight_layout()

    return CheckResult(
        observed={"FDR_over_standard_peak": round(peak_ratio, 3), "FDR_over_standard_AUC24": round(auc_ratio, 3),
                  "peak_ratio_over_km_1_to_10_uM": [round(km_lo, 3), round(km_hi, 3)],
                  "linear_formation_peak_ratio": round(lin_fdr[0] / lin_std[0], 3),
                  "plasma_gem_cmax_uM": {"FDR": round(fdr[2], 1), "standard": round(std[2], 1)},
                  "Grunewald_800mg_60_over_30min_AUC": round(g800, 3)},
        expected=f"FDR/standard intracellular dFdCTP 2 (P = .046; implied 95% CI {lo:.2f}-{hi:.2f}): the peak ratio "
                 "inside that interval for k_tp_km anywhere in 1-10 uM (linear formation gives < 1)",
        passed=bool(lo <= min(peak_ratio, km_lo, km_hi) and max(peak_ratio, km_lo, km_hi) <= hi),
        details="Typical 1.8 m2 patient, Jiang 2008 PK, one dose each. Tempero reports the triphosphate "
                "concentration (the peak is compared; the 24-h AUC ratio is reported too). Not met: Grunewald "
                "1991's 4-fold dFdCTP AUC for 800 mg/m2 over 60 vs 30 min (model ~1.2): saturable formation with "
                "first-order elimination cannot make the same dose 4x more effective by doubling the infusion time; "
                "concentration-dependent elimination (Heinemann 1992 Cancer Res 52:533, self-potentiation) is not "
                "modelled, and that comparison had few patients.",
        figure=draw)


def _gem(dose: str, infusion: str) -> dict:
    return {"drug": "gemcitabine", "dose": dose, "route": "iv", "infusion": infusion, "days": [1, 8, 15],
            "cycle_length": "28 day", "cycles": 6, "dose_modification": "gemcitabine_label_anc_delay"}


STD, FDR = "2200 mg/m2 / 30 min", "FDR 1500 mg/m2 / 150 min"
TRIALS = {  # name -> (control arm, {arm: [regimen dicts]}) run on the shipped pancreatic trial's patients
    "tempero": (STD, {STD: [_gem("2200 mg/m2", "30 min")], FDR: [_gem("1500 mg/m2", "150 min")]}),
    "mpact": ("gemcitabine", {"gemcitabine": [_gem("1000 mg/m2", "30 min")]}),
}


@lru_cache(maxsize=4)
def _trial(name: str):
    """Run the arms of ``TRIALS[name]`` with the population, indication and endpoints of the shipped
    pancreatic trial (paired design, PATIENTS per arm)."""
    from ..studies.trial import Trial, control_arm_data, run_trial

    control, arms = TRIALS[name]
    d, path = control_arm_data(SCENARIOS / "trial_pancreatic_il1_blockade.yaml")
    d = {**d, "arms": arms, "control": control, "keep_timecourses": 0}
    return run_trial(Trial.from_dict(d, str(path)), patients=PATIENTS)


@check("gemcitabine_fdr_trial",
       "In advanced pancreatic cancer, fixed-dose-rate gemcitabine (1500 mg/m2 over 150 min) causes more "
       "haematological toxicity than dose-intense 30-min gemcitabine (2200 mg/m2) and longer survival "
       "(median 8.0 vs 5.0 months)",
       "Tempero 2003 J Clin Oncol 21:3402 (d1,8,15 q4w; 'consistently more hematologic toxicity' in the FDR arm; "
       "median OS 8.0 vs 5.0 months, P = .013)",
       kind="validation")
def _fdr_trial():
    res = _trial("tempero")
    s = res.summary["arms"]
    std, fdr = s[STD], s[FDR]
    pe = res.summary["paired"][FDR]
    more_tox = fdr["neutropenia_g3plus"] > std["neutropenia_g3plus"]
    longer = pe["rmst_diff_12"]["ci_low"] > 0
    os_ratio = fdr["median_os_months"] / std["median_os_months"]
    return CheckResult(
        observed={"G3plus_neutropenia": {"standard": round(std["neutropenia_g3plus"], 3),
                                         "FDR": round(fdr["neutropenia_g3plus"], 3)},
                  "median_os_months": {"standard": round(std["median_os_months"], 2),
                                       "FDR": round(fdr["median_os_months"], 2)},
                  "paired_RMST12_FDR_minus_standard": [round(pe["rmst_diff_12"][k], 3)
                                                       for k in ("estimate", "ci_low", "ci_high")],
                  "paired_HR": round(pe["hr"]["estimate"], 3), "patients_per_arm": int(std["n"])},
        expected="FDR grade >= 3 neutropenia above the 30-min arm; FDR survival longer on the same patients "
                 "(paired RMST(12 mo) difference > 0 with its 95% CI); median OS ratio near 8.0/5.0 = 1.6 reported",
        passed=bool(more_tox and longer),
        gap=("the model predicts the direction but a far smaller survival gain than Tempero's 1.6x median OS: in "
             "the calibrated OS link the tumour's response to chemotherapy moves OS only weakly (ORR 5-8%), and "
             "Tempero's 92-patient phase II effect is itself uncertain") if more_tox else "",
        details="Paired design on the 400 virtual patients of the shipped pancreatic trial (indication "
                "pancreatic_advanced), label ANC rule with delays in both arms. Neither arm's data were used for "
                "calibration.")


MPACT = {"median_os_months": (6.7, 6.0, 7.2), "median_pfs_months": (3.7, 3.6, 4.0), "orr": (0.07, 0.04, 0.10),
         "os_12m": (0.22, 0.18, 0.26)}


@check("mpact_gemcitabine_arm",
       "The gemcitabine arm of MPACT (n=430, metastatic pancreatic cancer): median OS 6.7 months (95% CI 6.0-7.2), "
       "median PFS 3.7 (3.6-4.0), response 7% (independent review), 12-month OS 22%",
       "Von Hoff 2013 NEJM 369:1691 (MPACT; PMC4631139); only its grade >= 3 neutropenia (27%) was used in "
       "calibration, so these efficacy figures are predictions",
       kind="validation")
def _mpact():
    res = _trial("mpact")
    s = res.summary["arms"]["gemcitabine"]
    obs = {k: round(float(s[k]), 3) for k in MPACT}
    inside = {k: bool(lo <= s[k] <= hi) for k, (_, lo, hi) in MPACT.items()}
    return CheckResult(
        observed={**obs, "inside_published_CI": inside, "patients": int(s["n"])},
        expected="each figure inside MPACT's 95% CI (ORR: binomial 95% CI of 7% of 430, 0.04-0.10; 12-month OS "
                 "+/- 0.04)",
        passed=all(inside.values()),
        gap="the virtual arm is calibrated to Burris 1997 (median OS 5.65 months, an older cohort with locally "
            "advanced disease) and so lands below MPACT's longer OS; PFS is short because 53% of patients "
            "progress at the first 8-week scan (docs/calibration.md)",
        details="Virtual gemcitabine arm of the shipped pancreatic trial (400 patients, 8-weekly scans). MPACT "
                "scanned every 8 weeks too.")


DOSE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _monotone(x, increasing=True, tol=1e-9):
    d = np.diff(np.asarray(x, dtype=float))
    return bool(np.all(d > -tol) if increasing else np.all(d < tol))


@check("dose_response_sanity",
       "Over 0.25x-4x of the shipped chemotherapy doses, tumour kill and marrow toxicity rise with dose in mouse and "
       "human, and so do the host-response readouts the mechanism implies (dFdCTP, lytic death, serum IL-1alpha, "
       "marrow GMP skew in tumour-bearing mice)",
       "Dose-response of cytotoxic chemotherapy (Friberg 2002 J Clin Oncol 20:4713: myelosuppression rises with "
       "exposure); mechanism of the Nat Commun 2026 paper (more pyroptotic death -> more IL-1alpha -> more skew)",
       kind="validation")
def _dose_response():
    from .checks import CIS_MOUSE, GEM_MOUSE, MODEL
    from dataclasses import replace

    model = get_model(MODEL)
    rows = {}
    for species in ("mouse", "human"):
        names, p, _ = parameter_vector(model, species, {})
        if species == "mouse":
            base = [GEM_MOUSE, CIS_MOUSE]
            t = np.round(np.arange(0, 21.0001, 0.125), 6)
        else:
            base = [Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 1)]
            t = np.round(np.arange(0, 28.0001, 0.25), 6)
        untreated = simulate(model, p[None], [], t, ["tumour_total"], options=SolverOptions(rtol=1e-6, atol=1e-10))
        u_end = float(untreated.output("tumour_total")[0, -1])
        out = {"tumour_reduction": [], "anc_nadir_rel": [], "dfdctp_peak": [], "lytic_death": [],
               "il1a_peak": [], "gmp_peak": []}
        for f in DOSE_FACTORS:
            regs = [replace(r, dose=r.dose * f) for r in base]
            r = simulate(model, p[None], regs, t, ["tumour_total", "ANC", "dfdctp", "lytic_flux", "il1a_pgml",
                                                   "gmp_frequency"], options=SolverOptions(rtol=1e-6, atol=1e-10))
            if r.status[0] != 0:
                raise RuntimeError(f"{species} x{f}: simulation failed (status {r.status[0]})")
            o = {k: r.output(k)[0] for k in ("tumour_total", "ANC", "dfdctp", "lytic_flux", "il1a_pgml", "gmp_frequency")}
            out["tumour_reduction"].append(1 - o["tumour_total"][-1] / u_end)
            out["anc_nadir_rel"].append(o["ANC"].min() / o["ANC"][0])
            out["dfdctp_peak"].append(o["dfdctp"].max())
            # host-response readouts over the first week, while tumour sizes are still comparable
            w = t <= 7.0
            out["lytic_death"].append(np.trapezoid(o["lytic_flux"][w], t[w]))
            out["il1a_peak"].append(o["il1a_pgml"][w].max())
            out["gmp_peak"].append(o["gmp_frequency"][w].max())
        rows[species] = out
    ok = {}
    for sp, o in rows.items():
        # toxicity must not only be non-increasing but fall by >= 5% of baseline ANC over the 16-fold range
        tox = _monotone(o["anc_nadir_rel"], False) and o["anc_nadir_rel"][0] - o["anc_nadir_rel"][-1] >= 0.05
        ok[sp] = {"kill_rises": _monotone(o["tumour_reduction"]), "toxicity_rises": bool(tox),
                  "dfdctp_rises": _monotone(o["dfdctp_peak"]), "lytic_rises": _monotone(o["lytic_death"]),
                  "il1a_rises": _monotone(o["il1a_peak"])}
        if sp == "mouse":
            ok[sp]["gmp_skew_rises"] = _monotone(o["gmp_peak"])
    passed = all(all(v.values()) for v in ok.values())
    only_mouse_marrow = not passed and not ok["mouse"]["toxicity_rises"] and all(
        v for sp, flags in ok.items() for k, v in flags.items() if (sp, k) != ("mouse", "toxicity_rises"))

    def draw(fig):
        axes = fig.subplots(1, 3)
        for ax, key, lab in zip(axes, ("tumour_reduction", "anc_nadir_rel", "il1a_peak"),
                                ("tumour reduction vs untreated", "ANC nadir / baseline", "peak serum IL-1a (pg/mL)")):
            for sp, o in rows.items():
                ax.plot(DOSE_FACTORS, o[key], "o-", label=sp)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("dose / shipped dose")
            ax.set_title(lab, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.set_size_inches(11, 3.4)
        fig.tight_layout()

    larger = {sp: [f for f, r in zip(DOSE_FACTORS, o["tumour_reduction"]) if r < 0] for sp, o in rows.items()}
    return CheckResult(
        observed={"monotone": ok, "dose_factors_with_tumour_larger_than_untreated": larger,
                  **{f"{sp}_{k}": [round(float(v), 4) for v in vals]
                                      for sp, o in rows.items() for k, vals in o.items()}},
        expected="every listed readout monotone in dose over 0.25x-4x (x = " + ", ".join(map(str, DOSE_FACTORS)) + "); "
                 "the ANC nadir (relative to baseline) at least 0.05 lower at 4x than at 0.25x",
        passed=passed,
        gap=("mouse marrow toxicity is nearly flat in dose (ANC nadir "
             f"{rows['mouse']['anc_nadir_rel'][0]:.3f} -> {rows['mouse']['anc_nadir_rel'][-1]:.3f} of baseline over "
             "0.25x-4x): the mouse marrow slope could not be set from mouse blood counts (none found; "
             "docs/calibration.md)") if only_mouse_marrow else "",
        details="Typical animal/patient: mouse gemcitabine 120 mg/kg + cisplatin 6 mg/kg i.p. weekly x3 (21 days); "
                "human gemcitabine 1000 mg/m2 d1,8,15 (one 28-day cycle); tumour reduction at the end vs untreated. "
                "Reported, not gated: the dose factors at which the treated tumour ends LARGER than untreated (the "
                "host response -- MDSC support, stem-like repopulation -- outweighing the kill): low mouse doses, and "
                "every human dose after one cycle (the human TGI turns positive only over later cycles; calibrated "
                "22.3% after 6 cycles). Whether early tumour growth above untreated is real is an open question of "
                "the model's structure, not evidence.",
        figure=draw)
