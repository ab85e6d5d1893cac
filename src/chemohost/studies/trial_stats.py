"""Trial statistics of the paired design: per-arm summaries and paired effects vs the control.

Failed patients are rows (``status`` != ok) and are excluded from the statistics that cannot use
them; each arm reports how many ran, failed and were analysed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .trial_spec import DAYS_PER_MONTH, Trial


def summarise_paired(pdf: pd.DataFrame, trial: Trial, seed: int) -> tuple[dict, dict]:
    """``(summary, per-patient paired OS differences by arm)`` for a paired trial's patient rows."""
    from .survival import arm_summary, compare_arms, paired_effects

    spec = trial.spec
    summary = {"arms": {}, "control": spec.control, "seed": seed}
    by_arm = pdf.assign(arm=pdf["arm"].astype(str))
    comp = {ep: compare_arms(by_arm, spec.control, endpoint=ep) for ep in ("os", "pfs")}

    def hr_entry(ep: str, arm: str):
        c = comp[ep].get(arm)
        return ([c["hr"], c["hr_ci_low"], c["hr_ci_high"]] if c else [1.0, float("nan"), float("nan")],
                c["logrank_p"] if c else float("nan"))

    for arm in trial.arms:
        g = pdf[pdf["arm"] == arm]
        ok = g["status"].astype(str) == "ok"
        s_ = arm_summary(g[ok])  # failed patients are rows, excluded from statistics that cannot use them
        s_["n_run"] = int(len(g))
        s_["n_failed"] = int((~ok).sum())
        s_["n_analysed"] = int(ok.sum())
        s_["os_events"] = int(g.loc[ok, "os_event"].sum())
        s_["pfs_events"] = int(g.loc[ok, "pfs_event"].sum())
        s_["hr_os_vs_control"], s_["logrank_p"] = hr_entry("os", arm)
        s_["hr_pfs_vs_control"], s_["logrank_p_pfs"] = hr_entry("pfs", arm)
        if "off_treatment" in g:
            off = g.loc[ok, "off_treatment"].astype(str)
            s_["off_treatment_progression"] = float((off == "progression").mean()) if ok.any() else float("nan")
            s_["off_treatment_toxicity"] = float((off == "toxicity").mean()) if ok.any() else float("nan")
            s_["treatment_delay_days_mean"] = float(g.loc[ok, "treatment_delay_days"].mean()) if ok.any() \
                else float("nan")
        s_["n"] = int(s_["n"])
        summary["arms"][arm] = s_
    # paired (counterfactual) effects: the same patients, the same random streams, in every arm
    summary["design"] = "paired"
    summary["paired"] = {}
    ctrl = pdf[pdf["arm"] == spec.control].set_index("patient").sort_index()
    ok_c = ctrl["status"].astype(str) == "ok"
    fu_months = trial.follow_up_days / DAYS_PER_MONTH
    deltas = {}
    for arm in trial.arms:
        if arm == spec.control:
            continue
        g = pdf[pdf["arm"] == arm].set_index("patient").sort_index()
        ok = ok_c & (g["status"].astype(str) == "ok")
        pe = paired_effects(ctrl["os_months"].where(ok), ctrl["os_event"], g["os_months"].where(ok), g["os_event"],
                            taus=(12.0, 24.0), follow_up=fu_months, seed=seed)
        deltas[arm] = pe.pop("deltas", np.empty(0))  # per patient: report figure, not summary.json
        summary["paired"][arm] = pe
    return summary, deltas
