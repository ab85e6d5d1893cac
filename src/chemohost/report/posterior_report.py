"""Self-contained HTML report of a posterior-predictive trial (``chemohost trial --posterior``).

``render_posterior_report(res, manifest)`` fills ``templates/posterior_report.html.j2``: the credible
intervals of each arm's paired effect vs the control over the posterior draws, the per-draw effects
against each uncertain parameter (what would need to be measured), and the arms' endpoints with
credible intervals.  ``res`` is read duck-typed (:class:`chemohost.studies.posterior_trial.
PosteriorTrialResult`); nothing above the report layer is imported.
"""

from __future__ import annotations

import json

import numpy as np

from .fit_report import _g, _log
from .trial_report import DASH, _colours, _environment, _png, plt


def _ci(e: dict, digits: int = 2, pct: bool = False) -> str:
    if not e or e.get("median") is None:
        return DASH
    f = 100.0 if pct else 1.0
    return f"{e['median'] * f:.{digits}f} ({e['q025'] * f:.{digits}f} to {e['q975'] * f:.{digits}f})"


def _forest(per_draw, control, arms, colours):
    eff = [a for a in arms if a != control]
    if not eff:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.9 + 0.9 * len(eff)), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, m, title in zip(axes[0], ("rmst_diff_12", "rmst_diff_24"), ("RMST gain at 12 months", "RMST gain at 24 months")):
        if not np.isfinite(per_draw[m].to_numpy(float)).any():
            ax.text(0.5, 0.5, f"{title}: past the trial's follow-up", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        for k, arm in enumerate(eff):
            v = per_draw.loc[per_draw["arm"] == arm, m].to_numpy(float)
            v = v[np.isfinite(v)]
            if not v.size:
                continue
            y = len(eff) - 1 - k
            ax.plot(v, y + 0.18 * rng.uniform(-1, 1, v.size), ".", ms=3, alpha=0.5, color=colours[arm])
            lo, med, hi = np.quantile(v, [0.025, 0.5, 0.975])
            ax.plot([lo, hi], [y, y], "-", lw=3, color="#1c2833")
            ax.plot([med], [y], "D", ms=7, color="#1c2833")
        ax.axvline(0, color="#7f8c8d", lw=1, ls="--")
        ax.set_yticks(range(len(eff)))
        ax.set_yticklabels(list(reversed(eff)))
        ax.set_xlabel(f"{title} vs {control} (months)")
    fig.suptitle("Paired effect per posterior draw (dots), median and 95% credible interval (black)", fontsize=11)
    fig.tight_layout()
    return _png(fig, "Forest plot of the posterior-predictive paired effects")


def _scatter(per_draw, control, arms, params, scales, colours, summary):
    eff = [a for a in arms if a != control]
    if not eff or not params:
        return None
    fig, axes = plt.subplots(1, len(params), figsize=(4.4 * len(params), 3.6), squeeze=False)
    for ax, p in zip(axes[0], params):
        for arm in eff:
            g = per_draw[per_draw["arm"] == arm]
            ax.plot(g[p], g["rmst_diff_12"], "o", ms=4, alpha=0.7, color=colours[arm], label=arm)
        v = per_draw[p].to_numpy(float)
        if scales.get(p, "log10") != "lin" and np.nanmin(v) > 0 and np.nanmax(v) / np.nanmin(v) > 10:
            _log(ax, "x")  # a log axis only where the draws span more than a decade (else no tick labels)
        shares = []
        for arm in eff:
            a = (summary["effects"][arm].get("attribution_rmst_diff_12") or {}).get("parameters", {}).get(p)
            if a and a.get("share") is not None:
                shares.append(f"{a['share']:.2f}")
        ax.set_title(f"{p}" + (f" (share {', '.join(shares)})" if shares else ""), fontsize=10)
        ax.set_xlabel(p)
        ax.set_ylabel("RMST gain at 12 mo (months)")
        ax.axhline(0, color="#7f8c8d", lw=1, ls="--")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, "Per-draw effect against each uncertain parameter")


def render_posterior_report(res, manifest: dict) -> str:
    trial, summary, per_draw = res.trial, res.summary, res.per_draw
    control = summary["control"]
    arms = list(trial.arms)
    colours = _colours(arms)
    effect_rows, attr_rows, arm_rows = [], [], []
    for arm in arms:
        a = summary["arms"][arm]
        arm_rows.append({"arm": arm, "control": arm == control, "orr": _ci(a["orr"], 1, True),
                         "g3": _ci(a["neutropenia_g3plus"], 1, True), "os": _ci(a["median_os_months"]),
                         "nlr": _ci(a["nlr_day28_median"]), "tumour": _ci(a["best_tumour_change_median"], 1)})
        if arm == control:
            continue
        e = summary["effects"][arm]
        r12, r24, hr, gain = e["rmst_diff_12"], e["rmst_diff_24"], e["hr"], e["mean_os_gain"]
        effect_rows.append({"arm": arm, "r12": _ci(r12), "p12": _g(r12.get("p_benefit"), 3),
                            "mc12": _g(r12.get("mc_share_of_between_draw_variance"), 2),
                            "r24": _ci(r24), "hr": _ci(hr, 3), "phr": _g(hr.get("p_benefit"), 3),
                            "gain": _ci(gain)})
        att = e.get("attribution_rmst_diff_12") or {}
        for p in att.get("ranked", []):
            v = att["parameters"][p]
            attr_rows.append({"arm": arm, "parameter": p, "share": _g(v["share"], 2),
                              "ci": f"{_g(v['share_ci'][0], 2)} – {_g(v['share_ci'][1], 2)}",
                              "rho": _g(v["spearman_rho"], 2), "joint": _g(att.get("joint_r2"), 2)})
    draws_table = res.draws.copy()
    view = {
        "name": trial.spec.name, "description": trial.spec.description, "control": control, "arms": arms,
        "draws": summary["draws"], "n": summary["patients_per_arm"], "seed": summary["seed"],
        "fit_folder": res.fit_folder, "fit_problem": summary.get("fit_problem") or DASH,
        "parameters": res.parameters, "version": manifest.get("chemohost_version", DASH),
        "n_failed": summary.get("n_failed", 0), "notes": res.notes,
        "effect_rows": effect_rows, "attr_rows": attr_rows, "arm_rows": arm_rows,
        "draw_rows": [{"draw": int(r["draw"]), "values": ", ".join(f"{p} = {_g(r[p], 4)}" for p in res.parameters)}
                      for r in draws_table.to_dict("records")],
        "figs": {"forest": _forest(per_draw, control, arms, colours),
                 "scatter": _scatter(per_draw, control, arms, res.parameters, res.scales, colours, summary)},
        "timings": {k: f"{v:.1f} s" for k, v in res.timings.items()},
        "manifest_json": json.dumps(manifest, indent=2, default=str), "dash": DASH,
    }
    return _environment().get_template("posterior_report.html.j2").render(**view)
