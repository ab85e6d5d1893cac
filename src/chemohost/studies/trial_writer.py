"""Writing a trial's results: patients.parquet, summary.json, report.html, manifest.json (atomically)."""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import json_safe
from .trial_runner import TrialResult
from .trial_spec import DAYS_PER_MONTH


def _report_extras(result: TrialResult) -> dict:
    """What the report needs beyond the summary: cycles to shade, per-patient paired OS differences,
    and the methods text (model, indication, what is calibrated and what is a prediction)."""
    trial = result.trial
    spec = trial.spec
    cycles = {arm: sorted({(r.start + c * r.cycle_length, r.start + (c + 1) * r.cycle_length)
                           for r in regs for c in range(r.cycles)}) for arm, regs in trial.arms.items()}
    fu = trial.follow_up_days / DAYS_PER_MONTH
    ind = trial.indication
    methods = {
        "model": f"{trial.model.name} ({spec.species}): mechanistic host-response model (death modes, IL-1alpha and "
                 "other cytokines, marrow, immune cells, stem-like repopulation, metastasis); see docs/architecture.md",
        "indication": ({"name": ind.name, "source": "studies/data/indications.csv"} if ind is not None else "none"),
        "calibrated": ([f"{k}: {v}" for k, v in ind.sources.items() if v.strip().lower().startswith("calibrated")]
                       if ind is not None else []) or ["nothing: no indication layer, every arm is a model prediction"],
        "predictions": ["Every non-control arm (IL-1alpha blockade, caspase-1 inhibition, timing): model predictions, "
                        "not calibrated to any human trial of these combinations.",
                        "Paired effects compare the same virtual patients with the same random OS draws in each arm."],
        "assumptions": ["The human IL-1alpha axis is weak in the model (serum IL-1alpha near detection, mouse-fitted "
                        "IL-1R1 EC50): blockade effects are likely underestimated or uncertain (issue 9).",
                        "Dose modification: the arm's rule (gemcitabine label: doses within a cycle reduced or held, i.e. "
                        "omitted; with a day-1 rule the cycle is delayed a week at a time, off treatment after 3 "
                        "delays). Treatment stops at the scan that shows progression"
                        + ("" if spec.stop_treatment_at_progression else " -- switched off in this trial file")
                        + "; OS continues after it.",
                        "Single parameter values; parameter uncertainty is not yet propagated."],
        "endpoints": [f"RECIST 1.1 from the simulated tumour volume (one sphere-equivalent target lesion) at scans every "
                      f"{trial.assess_days:g} days with a +/-{trial.scan_model.window_days:g}-day visit window, "
                      + ("with measurement error calibrated to repeat CT (Oxnard 2011: 84% of changes within "
                         "+/-10%)" if trial.scan_model.measurement_error else "without measurement error")
                      + "; new lesions when metastatic burden exceeds a detection threshold near 0.5 cm3 (noisy).",
                      "PFS as assessed at scans (progression dated at the scan that shows it) or death; the "
                      "interval-censored median (Weibull, progression between the last two scans) is shown beside it.",
                      f"OS: Weibull hazard x week-8 tumour-size ratio, baseline size and time-varying NLR; "
                      f"administrative censoring at {fu:g} months.",
                      f"CTCAE v5 neutropenia on laboratory counts every {trial.lab_days:g} days."],
    }
    return {"cycles": cycles, "paired_deltas": result.paired_deltas, "methods": methods}



_json_safe = json_safe  # kept for callers of the old private name



def write_trial(result: TrialResult, out: str | Path) -> dict[str, Path]:
    """patients.parquet, summary.json, report.html, manifest.json -- atomically."""
    from ..outputs import write_atomically
    from ..report.trial_report import render

    def write(tmp: Path) -> None:
        result.patients.to_parquet(tmp / "patients.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(json_safe(result.summary), indent=2))
        manifest = json_safe(result.manifest())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        (tmp / "report.html").write_text(render(result.trial.spec.name, result.trial.spec.description,
                                                result.patients, result.summary, result.samples, manifest,
                                                **_report_extras(result)))

    return write_atomically(out, write)
