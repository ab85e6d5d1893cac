"""Tumour assessments as a trial measures them: scans at visit windows, with measurement error.

A virtual patient's tumour is known every simulated day, but a clinician sees it only at scans.
This module turns the simulated trajectory into what the radiologist reports, per patient:

* **Schedule.**  Baseline scan at day 0, then every ``interval_days`` (e.g. 8 weeks), each moved by a
  whole number of days drawn uniformly in ``[-window_days, +window_days]`` (the protocol's visit
  window), never past the follow-up.  Scans therefore fall on different days for different
  patients, as in a real trial, and PFS does not collapse onto one scan date.
* **Measurement error** of the sum of diameters: multiplicative, ``SLD_obs = SLD x exp(e)`` with
  ``e = clip(scale x t_df, -clip, +clip)`` independently at each scan (baseline included).
  ``df``, ``scale`` are calibrated to Oxnard et al. 2011 (J Clin Oncol 29:3114, PMC3157977): on two
  CT scans minutes apart read side by side, 84% of diameter changes were within +/-10% and 3% were
  increases of >= 20% (a RECIST progression by noise alone); ``clip`` keeps the largest changes
  near the observed range (-23% to +31%).  Their median increase (+4.3%) and decrease (-4.2%) are
  not fitted and serve as a check (the model gives +3.6% / -3.5%: somewhat narrower core).
  Smaller lesions were more variable in that study; the model ignores lesion size.
* **New lesions**: detected at a scan when the simulated metastatic burden exceeds a detection
  threshold that varies from scan to scan, ``threshold x exp(new_lesion_sd x z)`` (reader and
  slice variability, an assumption; ``new_lesion_sd`` 0 gives the fixed threshold).

Every draw comes from a per-patient stream keyed by the patient and the endpoint (see
``streams.py``), so a patient's scans fall on the same days with the same errors in every arm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .endpoints import NEW_LESION_THRESHOLD_CM3, sum_of_diameters
from .streams import patient_stream


@dataclass(frozen=True)
class ScanModel:
    interval_days: float = 56.0  # days between scans
    window_days: float = 7.0  # +/- visit window, days
    error_df: float = 1.5  # Student-t degrees of freedom of the log measurement error
    error_scale: float = 0.02275  # scale of the log measurement error
    error_clip: float = 0.20  # |log error| bound
    new_lesion_threshold_cm3: float = NEW_LESION_THRESHOLD_CM3
    new_lesion_sd: float = 0.5  # log-scale SD of the per-scan detection threshold
    measurement_error: bool = True
    sources: dict = field(default_factory=lambda: {
        "interval_days": "trial protocol (assessment_interval)",
        "window_days": "assumption: +/-7 days, the usual visit window of RECIST trials' imaging schedules",
        "error_df": "calibrated: Oxnard 2011 (JCO 29:3114, PMC3157977) repeat-CT diameter changes, 84% within "
                    "+/-10% and 3% >= +20% (scripts/calibrate_scan_error.py)",
        "error_scale": "calibrated: as error_df",
        "error_clip": "assumption: per-scan log error bounded at 0.20 so repeat-scan changes stay near Oxnard's "
                      "observed range (-23% to +31%)",
        "new_lesion_threshold_cm3": "assumption: 1 cm lesion (0.52 cm3), the smallest measurable lesion on CT "
                                    "(RECIST 1.1, Eisenhauer 2009)",
        "new_lesion_sd": "assumption: reader/slice variability of detecting a small new lesion",
    })

    def n_scans(self, follow_up_days: float) -> int:
        """Scans including baseline whose nominal day lies within the follow-up."""
        return int(np.floor(follow_up_days / self.interval_days + 1e-9)) + 1


def measurement_log_errors(u: np.ndarray, model: ScanModel) -> np.ndarray:
    """Log measurement errors from uniforms ``u`` (any shape): clipped scale x Student-t(df)."""
    from scipy.stats import t as student_t

    if not model.measurement_error:
        return np.zeros_like(np.asarray(u, dtype=float))
    e = model.error_scale * student_t.ppf(np.clip(u, 1e-12, 1 - 1e-12), model.error_df)
    return np.clip(e, -model.error_clip, model.error_clip)


@dataclass
class Scans:
    """What the scans of N patients show (all (N, S); column 0 = baseline)."""

    days: np.ndarray  # scan days since randomisation (nan = not done: past the follow-up)
    sld_mm: np.ndarray  # measured sum of diameters (with error), nan where no scan
    sld_true_mm: np.ndarray  # simulated (true) sum of diameters at the scan days
    new_lesion: np.ndarray  # bool, a new lesion seen at that scan


def scan_schedule(model: ScanModel, follow_up_days: float, seed: int, patient_ids) -> np.ndarray:
    """(N, S) scan days per patient (whole days; nan past the follow-up)."""
    ids = np.asarray(patient_ids)
    S = model.n_scans(follow_up_days)
    nominal = np.arange(S) * model.interval_days
    u = patient_stream(seed, "scan_window", ids, S)
    w = np.floor(model.window_days)
    shift = np.floor(u * (2 * w + 1)) - w if w > 0 else np.zeros_like(u)
    shift[:, 0] = 0.0  # baseline at randomisation
    days = np.round(nominal[None, :]) + shift
    return np.where(days <= follow_up_days + 1e-9, days, np.nan)


def take_scans(model: ScanModel, grid_days: np.ndarray, tumour_cm3: np.ndarray, met_cm3: np.ndarray,
               scan_days: np.ndarray, seed: int, patient_ids) -> Scans:
    """Read the simulated daily ``tumour_cm3``/``met_cm3`` (N, T on ``grid_days``) at ``scan_days``
    (N, S) and add measurement error and new-lesion detection noise."""
    grid = np.asarray(grid_days, dtype=float)
    ids = np.asarray(patient_ids)
    n, S = scan_days.shape
    done = np.isfinite(scan_days)
    col = np.searchsorted(grid, np.where(done, scan_days, grid[0]))
    col = np.clip(col, 0, grid.size - 1)
    if np.any(np.abs(grid[col][done] - scan_days[done]) > 1e-6):
        raise ValueError("scan days must lie on the simulated time grid")
    rows = np.arange(n)[:, None]
    sld_true = sum_of_diameters(tumour_cm3[rows, col])
    sld_true = np.where(done, sld_true, np.nan)
    err = measurement_log_errors(patient_stream(seed, "scan_error", ids, S), model)
    sld = sld_true * np.exp(err)
    met = met_cm3[rows, col]
    from scipy.stats import norm

    z = norm.ppf(np.clip(patient_stream(seed, "new_lesion", ids, S), 1e-12, 1 - 1e-12))
    thr = model.new_lesion_threshold_cm3 * np.exp(model.new_lesion_sd * z)
    seen_at_baseline = met[:, 0] >= model.new_lesion_threshold_cm3
    with np.errstate(invalid="ignore"):
        new = (met >= thr) & done & ~seen_at_baseline[:, None]
    new[:, 0] = False
    return Scans(scan_days, sld, sld_true, new)
