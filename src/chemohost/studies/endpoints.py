"""Per-patient clinical endpoints from simulated trajectories (vectorised over patients).

Units: time in days on input, months (30.4375 days) on output; tumour volume cm3, diameters mm,
ANC 1e9/L.  Every function takes (N, T) arrays (patients x assessments) and returns (N,) arrays.

Simplifications (stated once, here):

* **One target lesion.**  The simulated primary (``tumour_total``: bulk + stem-like cells) is one
  sphere of the same volume; its diameter is the RECIST sum of diameters (SLD).  Non-target
  lesions are not modelled.
* **New lesions** are metastases whose simulated burden (``met_burden``) reaches a detection
  threshold (default 0.5 cm3, a 1 cm sphere, the smallest measurable lesion on CT) at an
  assessment, having been below it at baseline.  Patients with detectable burden at baseline are
  never flagged (non-target progression is not modelled).
* **Assessment schedule** is chosen by the caller (RECIST-style trials: every 6-8 weeks); only the
  values at those times are used, so a response between assessments is not seen.
* **RECIST 1.1** (Eisenhauer 2009, Eur J Cancer 45:228) time-point response, in precedence order:
  PD = SLD >= 1.2 x nadir (smallest SLD at any earlier assessment, baseline included) and
  >= 5 mm above it, or a new lesion; CR = SLD < 10 mm (the single lesion is below the size that
  counts as disappeared/normal); PR = SLD <= 0.7 x baseline; otherwise SD.
  Best overall response (BOR) uses assessments up to and including the first PD.  CR and PR need
  confirmation by an assessment >= ``confirm_days`` later (before any PD) that is at least as good
  (CR for CR; CR or PR for PR); an unconfirmed CR/PR counts as SD.  SD needs one post-baseline
  non-PD assessment (no minimum duration beyond the caller's schedule).  'NE' only when no
  post-baseline assessment is evaluable (non-finite SLD).
* **PFS** here is radiological progression only: time from baseline to the first PD assessment,
  censored at the last evaluable assessment.  Death is handled in ``survival.py``
  (``progression_or_death``).
* **CTCAE v5 neutropenia** is graded on the values passed (a daily simulated grid sees nadirs
  that weekly laboratory tests would miss; pass the lab schedule to mimic a trial).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAYS_PER_MONTH = 30.4375
RESPONSES = ("CR", "PR", "SD", "PD")
_SD, _PR, _CR, _PD, _NE = 0, 1, 2, 3, -1

#: CTCAE v5.0 "Neutrophil count decreased": lower limit of normal (1e9/L) and grade thresholds
ANC_LLN = 2.0
ANC_GRADE_THRESHOLDS = (1.5, 1.0, 0.5)  # G1: [1.5, LLN), G2: [1.0, 1.5), G3: [0.5, 1.0), G4: < 0.5

#: detection threshold for a new metastatic lesion, cm3 (sphere of 1 cm diameter ~ 0.52 cm3)
NEW_LESION_THRESHOLD_CM3 = 0.5


def sum_of_diameters(volume_cm3) -> np.ndarray:
    """RECIST sum of diameters (mm) of one sphere-equivalent target lesion: (6 V / pi)^(1/3) x 10.

    Assumption: the whole primary volume is one spherical target lesion.  Negative volumes (solver
    round-off) count as 0; non-finite values stay non-finite.
    """
    v = np.asarray(volume_cm3, dtype=float)
    return np.cbrt(6.0 * np.maximum(v, 0.0) / np.pi) * 10.0


def new_lesion_flags(met_burden_cm3, threshold_cm3: float = NEW_LESION_THRESHOLD_CM3,
                     baseline_index: int = 0) -> np.ndarray:
    """(N, T) bool: metastatic burden >= ``threshold_cm3`` at an assessment, undetectable at baseline.

    ``met_burden_cm3``: (N, T) values at the assessment times (same columns as the SLD passed to
    :func:`recist`).
    """
    m = np.atleast_2d(np.asarray(met_burden_cm3, dtype=float))
    detected = m >= threshold_cm3
    return detected & ~detected[:, [baseline_index]]


@dataclass
class RecistResult:
    """Per-patient RECIST 1.1 outcome (all arrays (N,))."""

    bor: np.ndarray  # object: 'CR', 'PR', 'SD', 'PD' or 'NE'
    pd_day: np.ndarray  # days from baseline to first PD (nan if none)
    pfs_months: np.ndarray  # months to first PD, or to the last evaluable assessment if censored
    pfs_event: np.ndarray  # bool, True = progression observed
    timepoint: np.ndarray  # (N, T) object: time-point response per assessment ('' before baseline)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"bor": self.bor, "pd_day": self.pd_day, "pfs_months": self.pfs_months,
                             "pfs_event": self.pfs_event})


def recist(times_days, sld_mm, new_lesion_flags, baseline_index: int = 0,
           confirm_days: float = 28.0) -> RecistResult:
    """RECIST 1.1 best overall response and progression time, vectorised over patients.

    ``times_days``: (T,) assessment times, or (N, T) per patient (days, increasing; nan for scans
    not done, after the last one; baseline at ``baseline_index``, earlier columns ignored).  ``sld_mm``: (N, T) sum of diameters at those times (see
    :func:`sum_of_diameters`).  ``new_lesion_flags``: (N, T) bool (see :func:`new_lesion_flags`)
    or None.  ``confirm_days``: minimum interval for confirmation of CR/PR (RECIST 1.1: 4 weeks).
    See the module docstring for the rules and simplifications.
    """
    sld = np.atleast_2d(np.asarray(sld_mm, dtype=float))
    n, T = sld.shape
    t = np.asarray(times_days, dtype=float)
    if t.shape not in ((T,), (n, T)):
        raise ValueError(f"times_days has shape {t.shape}, sld_mm has {T} assessment columns")
    t = np.broadcast_to(t, (n, T))
    done = np.isfinite(t)
    tf = np.where(done, t, np.inf)
    if np.any(np.diff(np.where(done, t, -np.inf), axis=1)[done[:, 1:]] <= 0) or np.any(~done[:, 0]):
        raise ValueError("times_days must be strictly increasing (nan only for scans not done, after the last one)")
    sld = np.where(done, sld, np.nan)
    if not 0 <= baseline_index < T:
        raise ValueError(f"baseline_index {baseline_index} outside 0..{T - 1}")
    new = (np.zeros((n, T), dtype=bool) if new_lesion_flags is None
           else np.broadcast_to(np.asarray(new_lesion_flags, dtype=bool), (n, T)))
    b = baseline_index
    post = np.arange(T) > b  # (T,)
    base = sld[:, b]
    evaluable = np.isfinite(sld) & np.isfinite(base)[:, None]

    # nadir over earlier assessments (baseline included), ignoring non-evaluable ones
    s = np.where(evaluable, sld, np.inf)
    s[:, :b] = np.inf
    running_min = np.minimum.accumulate(s, axis=1)
    nadir_prev = np.full((n, T), np.inf)
    nadir_prev[:, 1:] = running_min[:, :-1]

    with np.errstate(invalid="ignore"):
        pd_size = (sld >= 1.2 * nadir_prev) & (sld - nadir_prev >= 5.0)
        cr = sld < 10.0
        pr = sld <= 0.7 * base[:, None]
    is_pd = post & done & ((evaluable & pd_size) | new)
    resp = np.full((n, T), _SD)
    resp[pr] = _PR
    resp[cr] = _CR
    resp[~evaluable] = _NE
    resp[is_pd] = _PD
    resp[:, ~post] = _NE

    any_pd = is_pd.any(axis=1)
    first_pd = np.where(any_pd, is_pd.argmax(axis=1), T)  # (N,)
    before_pd = np.arange(T)[None, :] < first_pd[:, None]  # assessments before first PD
    usable = post & before_pd & (resp != _NE)

    # confirmation: later assessment k (before PD), t_k - t_j >= confirm_days, at least as good
    with np.errstate(invalid="ignore"):
        later = (tf[:, None, :] - tf[:, :, None] >= confirm_days - 1e-9) & \
            (np.arange(T)[None, :] > np.arange(T)[:, None])[None]
    ok_k = usable[:, None, :] & later  # (N, j, k)
    conf_cr = usable & (resp == _CR) & (ok_k & (resp == _CR)[:, None, :]).any(axis=2)
    conf_pr = usable & (resp >= _PR) & (resp <= _CR) & \
        (ok_k & ((resp == _PR) | (resp == _CR))[:, None, :]).any(axis=2)

    bor = np.full(n, "NE", dtype=object)
    bor[usable.any(axis=1)] = "SD"
    bor[any_pd & ~usable.any(axis=1)] = "PD"
    bor[conf_pr.any(axis=1)] = "PR"
    bor[conf_cr.any(axis=1)] = "CR"

    rows = np.arange(n)
    pd_day = np.where(any_pd, t[rows, np.minimum(first_pd, T - 1)] - t[:, b], np.nan)
    eval_post = post & (evaluable | new) & done
    last_idx = np.where(eval_post.any(axis=1), T - 1 - np.argmax(eval_post[:, ::-1], axis=1), b)
    censor_day = t[rows, last_idx] - t[:, b]
    pfs_days = np.where(any_pd, pd_day, censor_day)

    labels = np.array(["SD", "PR", "CR", "PD", "NE"], dtype=object)
    tp = labels[np.where(resp == _NE, 4, resp)]
    tp[:, ~post] = ""
    tp[:, b] = "BL"
    return RecistResult(bor=bor, pd_day=pd_day, pfs_months=pfs_days / DAYS_PER_MONTH,
                        pfs_event=any_pd.copy(), timepoint=tp)


def best_scan_change(scan_days, sld_mm, pd_day) -> np.ndarray:
    """(N,) best % change of the SLD from baseline (column 0) at the post-baseline scans up to and
    including the first progression: what a RECIST waterfall shows.  nan without a post-baseline scan.
    ``scan_days``: (T,) or (N, T) days since baseline; ``sld_mm``: (N, T); ``pd_day``: (N,) (nan = no PD)."""
    sld = np.atleast_2d(np.asarray(sld_mm, dtype=float))
    ta = np.broadcast_to(np.asarray(scan_days, dtype=float), sld.shape)
    pd_day = np.asarray(pd_day, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        chg = 100.0 * (sld / sld[:, :1] - 1.0)
        upto = (ta > 0) & (np.isnan(pd_day)[:, None] | (ta <= pd_day[:, None] + 1e-9))
    best = np.where(upto & np.isfinite(chg), chg, np.inf).min(axis=1)
    return np.where(np.isfinite(best), best, np.nan)


def _previous_scan_day(scan_days, pd_day) -> np.ndarray:
    """(N,) day of the last scan before the progression scan (the left end of the interval in which
    progression happened: interval-censored PFS); nan without progression."""
    d = np.asarray(scan_days, dtype=float)
    pd_day = np.asarray(pd_day, dtype=float)
    with np.errstate(invalid="ignore"):
        before = np.where(np.isfinite(d) & (d < pd_day[:, None] - 1e-9), d, -np.inf).max(axis=1)
    return np.where(np.isfinite(pd_day) & np.isfinite(before), before, np.nan)


def ctcae_neutropenia_grade(anc_1e9_per_L, lln: float = ANC_LLN) -> np.ndarray:
    """CTCAE v5.0 'neutrophil count decreased' grade (0-4), element-wise; -1 where non-finite.

    G0 >= LLN (2.0); G1 [1.5, LLN); G2 [1.0, 1.5); G3 [0.5, 1.0); G4 < 0.5 (x 1e9/L).
    Boundary values belong to the milder grade (CTCAE: "<LLN - 1500/mm3" etc.).
    """
    a = np.asarray(anc_1e9_per_L, dtype=float)
    g1, g2, g3 = ANC_GRADE_THRESHOLDS
    grade = (a < lln).astype(np.int8) + (a < g1) + (a < g2) + (a < g3)
    return np.where(np.isfinite(a), grade, -1).astype(np.int8)


def worst_neutropenia_grade(anc_1e9_per_L, lln: float = ANC_LLN) -> np.ndarray:
    """(N,) maximum CTCAE grade per patient over the time axis (last axis) of an (N, T) array."""
    return ctcae_neutropenia_grade(np.atleast_2d(anc_1e9_per_L), lln).max(axis=-1)


def dose_intensity(dose_factors, scheduled_mask=None) -> np.ndarray:
    """Relative dose intensity per patient: delivered / planned over the scheduled doses.

    ``dose_factors``: (N, D) applied factor per scheduled dose (``SimulationResult.dose_factors``;
    1 = full, 0.75 = reduced, 0 = held).  ``scheduled_mask``: (D,) or (N, D) bool selecting the
    doses that count as planned (e.g. one drug: ``np.array(result.doses.drug) == 'gemcitabine'``,
    or doses before a patient came off study); None = all.  Within a cycle held doses are omitted
    (delivered 0); delayed cycles are counted by the dose, not per unit time.
    nan where nothing was planned.
    """
    f = np.atleast_2d(np.asarray(dose_factors, dtype=float))
    m = np.ones_like(f, dtype=bool) if scheduled_mask is None else np.broadcast_to(
        np.asarray(scheduled_mask, dtype=bool), f.shape)
    planned = m.sum(axis=1).astype(float)
    delivered = np.where(m, f, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(planned > 0, delivered / planned, np.nan)


def assessment_indices(times_days, assessment_days, tol_days: float = 0.5) -> np.ndarray:
    """Column indices of ``times_days`` nearest to each of ``assessment_days`` (error if > tol)."""
    t = np.asarray(times_days, dtype=float)
    a = np.asarray(assessment_days, dtype=float)
    idx = np.abs(t[None, :] - a[:, None]).argmin(axis=1)
    if np.any(np.abs(t[idx] - a) > tol_days):
        bad = a[np.abs(t[idx] - a) > tol_days]
        raise ValueError(f"assessment days {bad.tolist()} not on the simulated time grid "
                         f"[{t[0]}, {t[-1]}] within {tol_days} d")
    return idx


def patient_endpoints(result, *, assess_every_days: float = 56.0, assessment_days=None,
                      met_threshold_cm3: float = NEW_LESION_THRESHOLD_CM3,
                      confirm_days: float = 28.0, scheduled_mask=None,
                      tsr_day: float = 56.0, nlr_day: float = 28.0,
                      lab_every_days: float | None = None, scans=None) -> pd.DataFrame:
    """One row per patient from a ``host_response`` ``SimulationResult``.

    Needs outputs ``tumour_total`` and ``met_burden`` (tumour endpoints), ``ANC`` (neutropenia) and
    ``NLR`` (``nlr_baseline``, ``nlr_d28``); missing outputs give nan columns.  Baseline is the first
    simulated time; assessments every ``assess_every_days`` (default 8 weeks) while inside the
    horizon, or exactly ``assessment_days``.  Columns: patient, status, sld0_mm, tsr_w8
    (SLD at ``tsr_day`` / baseline), bor, pd_day, pfs_months, pfs_event, max_neutropenia_grade
    (over the whole simulated grid, or on laboratory days every ``lab_every_days`` from baseline, as a
    trial's blood counts would see it), dose_intensity, nlr_baseline, nlr_d28.
    Patients whose simulation failed (status != 0) get nan / 'NE'.
    """
    t = np.asarray(result.times, dtype=float)
    n = result.n_patients
    ok = np.asarray(result.status) == 0
    out = {"patient": np.arange(n), "status": np.asarray(result.status)}
    names = set(result.outputs)
    if assessment_days is None:
        assessment_days = np.arange(t[0], t[-1] + 1e-9, assess_every_days)
    idx = assessment_indices(t, assessment_days)
    if {"tumour_total", "met_burden"} <= names:
        sld = sum_of_diameters(result.output("tumour_total"))
        sld[~ok] = np.nan
        new = new_lesion_flags(result.output("met_burden")[:, idx], met_threshold_cm3)
        new[~ok] = False
        if scans is None:
            sdays, ssld = np.broadcast_to(t[idx] - t[0], (n, idx.size)), sld[:, idx]
        else:  # what the radiologist measured: per-patient scan days, with measurement error
            sdays, ssld, new = scans.days, np.where(ok[:, None], scans.sld_mm, np.nan), scans.new_lesion & ok[:, None]
        r = recist(sdays, ssld, new, 0, confirm_days)
        i8 = assessment_indices(t, [t[0] + tsr_day])[0]
        prev = _previous_scan_day(sdays, r.pd_day)
        out |= {"sld0_mm": sld[:, 0], "tsr_w8": sld[:, i8] / sld[:, 0], "bor": r.bor,
                "pd_day": r.pd_day, "pfs_months": np.where(ok, r.pfs_months, np.nan),
                "pfs_event": r.pfs_event & ok,
                "pd_previous_scan_day": np.where(ok, prev, np.nan),
                "best_scan_change_pct": best_scan_change(sdays, ssld, r.pd_day)}
    else:
        out |= {k: np.full(n, np.nan) for k in ("sld0_mm", "tsr_w8", "pd_day", "pfs_months", "pd_previous_scan_day",
                                                 "best_scan_change_pct")}
        out |= {"bor": np.full(n, "NE", dtype=object), "pfs_event": np.zeros(n, dtype=bool)}
    if "ANC" in names:
        anc = result.output("ANC")
        if lab_every_days is not None:
            anc = anc[:, assessment_indices(t, np.arange(t[0], t[-1] + 1e-9, lab_every_days))]
        g = worst_neutropenia_grade(anc).astype(float)
        out["max_neutropenia_grade"] = np.where(ok, g, np.nan)
    else:
        out["max_neutropenia_grade"] = np.full(n, np.nan)
    df = np.asarray(result.dose_factors)
    ds = getattr(result, "dose_status", None)
    if ds is not None and df.size:
        # planned = doses due while on treatment (given, held, or cancelled by discontinuation for
        # toxicity); doses after treatment stopped (progression) or past the horizon are not planned
        on = np.isin(ds, (1, 2, 4))
        mask = on if scheduled_mask is None else on & np.broadcast_to(np.asarray(scheduled_mask, bool), on.shape)
        out["dose_intensity"] = np.where(ok, dose_intensity(df, mask), np.nan)
        nominal = result.nominal_dose_times()
        with np.errstate(invalid="ignore"):
            delay = np.where(ds == 1, result.dose_times - nominal, 0.0)
        out["doses_given"] = (ds == 1).sum(axis=1)
        out["doses_held"] = (ds == 2).sum(axis=1)
        out["treatment_delay_days"] = np.where(ok, np.nanmax(np.c_[delay, np.zeros(n)], axis=1), np.nan)
        reason = np.full(n, "completed", dtype=object)
        reason[(ds == 3).any(axis=1)] = "progression"
        reason[(ds == 4).any(axis=1)] = "toxicity"
        reason[~ok] = "failed"
        out["off_treatment"] = reason
    else:
        out["dose_intensity"] = (dose_intensity(df, scheduled_mask) if df.size else np.full(n, np.nan))
    if "NLR" in names:
        nlr = result.output("NLR")
        i28 = assessment_indices(t, [t[0] + nlr_day])[0]
        out["nlr_baseline"] = np.where(ok, nlr[:, 0], np.nan)
        out["nlr_d28"] = np.where(ok, nlr[:, i28], np.nan)
    else:
        out["nlr_baseline"] = out["nlr_d28"] = np.full(n, np.nan)
    return pd.DataFrame(out)
