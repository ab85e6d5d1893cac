"""Self-contained HTML reports of the studies (``chemohost sensitivity | optimize | ...``).

Each ``render_*`` takes a study result (read duck-typed: ``result.study``, ``result.tables``,
``result.summary``, ``result.timings``, ``result.notes``) and fills ``templates/study_report.html.j2``
with sections of tables and embedded PNG figures; nothing above the report layer is imported.
"""

from __future__ import annotations

import json

import numpy as np

from .fit_report import _g
from .trial_report import DASH, _environment, _png, plt


def _section(title: str, intro: str = "", tables=(), figures=(), sid: str = "") -> dict:
    return {"title": title, "intro": intro, "tables": list(tables), "figures": [f for f in figures if f],
            "id": sid or title.lower().replace(" ", "-")}


def _table(header, rows, caption: str = "", tid: str = "", wrap=()) -> dict:
    """``wrap``: indices of long-text columns (left-aligned, wrapped)."""
    return {"header": list(header), "rows": [list(r) for r in rows], "caption": caption, "id": tid,
            "wrap": list(wrap)}


def render(title: str, subtitle: str, meta: dict, sections: list[dict], notes: list[str], manifest: dict) -> str:
    return _environment().get_template("study_report.html.j2").render(
        title=title, subtitle=subtitle, meta=meta, sections=sections, notes=notes,
        manifest_json=json.dumps(manifest, indent=2, default=str), dash=DASH)


# -- sensitivity ----------------------------------------------------------------------------------------
def _ranked_figure(idx, readout: str, method: str):
    g = idx[idx["readout"] == readout]
    key = "mu_star_norm" if method == "morris" else "ST"
    g = g.sort_values(key, ascending=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(g) + 1.4))
    y = np.arange(len(g))
    colours = ["#c0392b" if a else "#2e86c1" for a in g["assumed"]]
    if method == "morris":
        ax.barh(y, g["mu_star_norm"], color=colours, alpha=0.85, label="mu* / max mu*")
        ax.errorbar(g["mu_star_norm"], y, xerr=g["mu_star_conf"] / max(float(g["mu_star"].max()), 1e-300),
                    fmt="none", ecolor="#1c2833", capsize=3)
        ax.set_xlabel("normalised mu* (Morris), with 95% CI")
    else:
        ax.barh(y + 0.2, g["ST"], height=0.4, color=colours, alpha=0.85, label="total order ST")
        ax.errorbar(g["ST"], y + 0.2, xerr=g["ST_conf"], fmt="none", ecolor="#1c2833", capsize=3)
        ax.barh(y - 0.2, g["S1"], height=0.4, color="#a6acaf", label="first order S1")
        ax.errorbar(g["S1"], y - 0.2, xerr=g["S1_conf"], fmt="none", ecolor="#566573", capsize=2)
        ax.set_xlabel("Sobol index (95% bootstrap CI)")
    ax.set_yticks(y)
    ax.set_yticklabels(g["parameter"])
    ax.axvline(0, color="#7f8c8d", lw=0.8)
    ax.set_title(f"{readout}: parameters ranked (red: value assumed, blue: from data)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig, f"Ranked sensitivity indices of {readout} with confidence intervals")


def _convergence_figure(conv, readout: str):
    g = conv[conv["readout"] == readout]
    if g.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for pn, h in g.groupby("parameter", sort=False):
        h = h.sort_values("N")
        ax.errorbar(h["runs"], h["ST"], yerr=h["ST_conf"], marker="o", ms=3, capsize=2, label=pn)
    ax.set_xscale("log")
    ax.set_ylim(-0.1, 1.1)
    ax.set_xlabel("model runs (nested prefixes of the Saltelli design)")
    ax.set_ylabel("total-order index ST")
    ax.set_title(f"{readout}: convergence", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _png(fig, f"Convergence of the total-order indices of {readout} with the number of runs")


def render_sensitivity(result) -> str:
    st, s = result.study, result.summary
    idx, conv, runs = result.tables["indices"], result.tables["convergence"], result.tables["runs"]
    method = st.spec.method
    sections = []
    key = "mu_star_norm" if method == "morris" else "ST"
    flagged = idx[idx["measure_first"]] if len(idx) else idx
    intro = (f"{s['runs']:,} runs of the typical patient of {st.base.trial.spec.name} ({st.base.trial.model.name}, "
             f"{st.base.trial.spec.species}) x {len(s['arms_simulated'])} arm(s); method {method}, N = {st.spec.samples}.")
    measure = sorted(set(flagged["parameter"])) if len(flagged) else []
    sections.append(_section("What to measure first", intro + (
        f" Parameters whose {key} exceeds {st.spec.threshold:g} for some readout and whose value is an assumption: "
        f"<b>{', '.join(measure)}</b>." if measure else " No assumed parameter exceeds the threshold."),
        sid="section-summary"))
    for r in st.readouts:
        g = idx[idx["readout"] == r.spec.name].sort_values(key, ascending=False)
        y = runs[r.spec.name].to_numpy(float)
        head = ["rank", "parameter", "range", "S1 (95% CI)", "ST (95% CI)", "source", "flag"] if method != "morris" \
            else ["rank", "parameter", "range", "mu* (95% CI)", "sigma", "source", "flag"]
        rows = []
        for _, row in g.iterrows():
            lo, hi, sc, frm = st.ranges[row["parameter"]]
            rng = f"{_g(lo)} – {_g(hi)} ({sc}, {frm})"
            if method == "morris":
                vals = [f"{_g(row['mu_star'])} ± {_g(row['mu_star_conf'], 2)}", _g(row["sigma"])]
            else:
                vals = [f"{_g(row['S1'], 2)} ± {_g(row['S1_conf'], 2)}", f"{_g(row['ST'], 2)} ± {_g(row['ST_conf'], 2)}"]
            flag = "measure first" if row["measure_first"] else ("influential" if row["influential"] else "")
            rows.append([int(row["rank"]), row["parameter"], rng, *vals, str(row["source"])[:140], flag])
        what = (f"{r.output or r.spec.endpoint} of arm '{r.arm}'" + (f" relative to '{r.ref}'" if r.ref else "")
                + (f" at day {r.time:g}" if r.time is not None else "")
                + (f", {r.spec.statistic} over days {r.window[0]:g}-{r.window[1]:g}" if r.window else "")
                + (" (log)" if r.spec.log else ""))
        sections.append(_section(
            f"Readout {r.spec.name}", f"{what}. Across the runs: median {_g(np.nanmedian(y))}, 5–95% "
                                      f"{_g(np.nanquantile(y, 0.05))} – {_g(np.nanquantile(y, 0.95))}.",
            tables=[_table(head, rows, tid=f"table-{r.spec.name}", wrap=(5,))],
            figures=[_ranked_figure(idx, r.spec.name, method),
                     _convergence_figure(conv, r.spec.name) if len(conv) else None],
            sid=f"section-{r.spec.name}"))
    meta = {"Study": st.spec.name, "Base trial": st.spec.base, "Method": method,
            "Runs": f"{s['runs']:,} parameter sets x {len(s['arms_simulated'])} arm(s)",
            "Failed runs": s["runs_failed"], "Seed": st.spec.seed,
            "Time": ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())}
    return render(st.spec.name, "global sensitivity analysis", meta, sections, result.notes,
                  {"summary": s, "file": st.source})


# -- optimize ----------------------------------------------------------------------------------------------
def _history_figure(hist, objective: str, maximise: bool):
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ok = hist["feasible"].to_numpy(bool)
    ax.plot(hist["candidate"][ok], hist[objective][ok], "o", ms=4, color="#2e86c1", label="feasible")
    ax.plot(hist["candidate"][~ok], hist[objective][~ok], "x", ms=5, color="#c0392b", label="violates a constraint")
    run = hist[objective].where(ok).cummax() if maximise else hist[objective].where(ok).cummin()
    ax.plot(hist["candidate"], run, "-", color="#1b4f72", lw=1.5, label="best so far")
    ax.set_xlabel("candidate (order evaluated)")
    ax.set_ylabel(objective)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, f"Optimisation history of {objective} over the evaluated candidates")


def _pareto_figure(hist, front, objective: str, toxicity: str):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(hist[toxicity], hist[objective], "o", ms=4, color="#aed6f1", label="candidates")
    if len(front):
        f = front.sort_values(toxicity)
        ax.plot(f[toxicity], f[objective], "o-", color="#c0392b", label="Pareto front")
    ax.set_xlabel(toxicity)
    ax.set_ylabel(objective)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, f"Pareto front of {objective} against {toxicity}")


def _param_figure(hist, objective: str):
    params = [c for c in ("offset", "duration", "interval", "dose", "schedule") if c in hist and hist[c].nunique() > 1]
    if not params:
        return None
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.2), squeeze=False)
    for ax, p in zip(axes[0], params):
        x = hist[p]
        if x.dtype == object or p in ("dose", "schedule"):
            cats = sorted(x.astype(str).unique())
            pos = x.astype(str).map({c: i for i, c in enumerate(cats)})
            ax.plot(pos + np.random.default_rng(0).uniform(-0.15, 0.15, len(pos)), hist[objective], "o", ms=3,
                    alpha=0.7)
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, rotation=20, fontsize=8)
        else:
            ax.plot(x, hist[objective], "o", ms=3, alpha=0.7)
        ax.set_xlabel(p + (" (days)" if p in ("offset", "duration", "interval") else ""))
        ax.set_ylabel(objective)
    fig.tight_layout()
    return _png(fig, f"{objective} of each candidate against its parameters")


def render_optimize(result) -> str:
    st, s = result.study, result.summary
    hist, comp, front = result.tables["candidates"], result.tables["comparison"], result.tables["pareto"]
    obj = s["objective"]
    b = s["best"]
    maximise = s["direction"] == "maximize"

    def regimen(r) -> str:
        parts = [f"blocker start {r['offset']:+g} d vs chemotherapy", f"every {r['interval']:g} d",
                 f"for {r['duration']:g} d", f"dose {r['dose']}"]
        if "schedule" in r:
            parts.append(f"chemotherapy '{r['schedule']}'")
        return ", ".join(parts)

    metric_cols = ["rmst_gain", "pfs_6m", "orr", "grade4_neutropenia", "grade3plus_neutropenia", "dose_intensity"]
    top = hist[hist["feasible"]].sort_values(obj, ascending=not maximise).drop_duplicates(
        [c for c in ("schedule", "dose", "interval", "offset", "duration") if c in hist]).head(10)
    rows = [[int(r["candidate"]), regimen(r), *[_g(r[m], 3) for m in metric_cols]] for _, r in top.iterrows()]
    sections = [_section(
        "Best regimen", f"Objective: {s['direction']} <b>{obj}</b> over {s['patients']} paired virtual patients "
        f"(the control arm '{st.spec.control}' on the same patients and streams); {s['feasible_candidates']} of "
        f"{s['trials']} candidates met the constraints ({s['distinct_candidates']} distinct). Best: <b>{regimen(b)}</b>: "
        f"{obj} {_g(b[obj], 3)}.",
        tables=[_table(["#", "regimen", *metric_cols], rows, caption="The ten best distinct feasible candidates. "
                       "rmst_gain: expected restricted mean OS gain vs control (months, to tau); shares of patients "
                       "otherwise.", tid="table-best", wrap=(1,))],
        figures=[_history_figure(hist, obj, maximise), _param_figure(hist, obj)], sid="section-best")]
    if len(comp):
        crow = [[r["regimen"], _g(r[obj], 3), _g(r["grade4_neutropenia"], 3),
                 f"{_g(r[f'best_minus_this_{obj}'], 3)} ({_g(r['ci_low'], 3)} to {_g(r['ci_high'], 3)})"]
                for _, r in comp.iterrows()]
        sections.append(_section(
            "Best versus the shipped regimens", "Paired differences on the same patients, 95% bootstrap CI over "
            "patients.", tables=[_table(["shipped regimen", obj, "grade4_neutropenia", f"best minus this ({obj})"],
                                        crow, tid="table-comparison")], sid="section-comparison"))
    if len(front):
        sections.append(_section("Pareto front", f"{obj} against {st.spec.toxicity} (NSGA-II).",
                                 figures=[_pareto_figure(hist, front, obj, st.spec.toxicity)], sid="section-pareto"))
    meta = {"Study": st.spec.name, "Base trial": st.spec.base, "Control": st.spec.control,
            "Sampler": f"optuna {s['sampler']} (seed {s['seed']})", "Candidates": s["trials"],
            "Patients per candidate": s["patients"],
            "Time": ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())}
    return render(st.spec.name, "timing and sequence optimisation", meta, sections, result.notes,
                  {"summary": s, "file": st.source})


# -- phase 1 ------------------------------------------------------------------------------------------------
def _oc_figure(oc, doses, true):
    D = len(doses)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    w = 0.8 / max(len(oc), 1)
    x = np.arange(D + 1)
    for k, (_, r) in enumerate(oc.iterrows()):
        sel = [r[f"select_{i}"] for i in range(D)] + [r["select_none"]]
        axes[0].bar(x + (k - (len(oc) - 1) / 2) * w, sel, width=w, label=r["design"])
        pts = [r[f"patients_{i}"] for i in range(D)]
        axes[1].bar(np.arange(D) + (k - (len(oc) - 1) / 2) * w, pts, width=w, label=r["design"])
    labels = [f"{d}\n(p={p:.2f})" for d, p in zip(doses, true)]
    axes[0].set_xticks(x)
    axes[0].set_xticklabels(labels + ["none"], fontsize=8)
    axes[0].set_ylabel("P(selected as MTD)")
    axes[1].set_xticks(np.arange(D))
    axes[1].set_xticklabels(labels, fontsize=8)
    axes[1].set_ylabel("patients treated (mean per trial)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, "Probability of selecting each dose and patients treated per dose, by design")


def render_phase1(result) -> str:
    st, s = result.study, result.summary
    oc, doses = result.tables["operating_characteristics"], result.tables["doses"]
    D = len(s["doses"])
    dose_rows = [[str(r["dose"]), _g(r["true_dlt"], 3), *([r.get("pool", DASH), _g(r.get("neutropenia_dlt"), 3),
                                                          _g(r.get("blocker_ae_dlt"), 3)] if "pool" in r else [])]
                 for _, r in doses.iterrows()]
    head = ["dose", "DLT probability"] + (["virtual patients", "neutropenia DLT", "blocker AE DLT"]
                                          if "pool" in doses else [])
    intro = (f"Target DLT rate {s['target']:g}; true MTD (highest dose with DLT probability <= target): "
             f"<b>{s['true_mtd'] or 'none'}</b>." + (f" DLT: {s['dlt_definition']}." if "dlt_definition" in s else
                                                      " Design-only mode: declared true DLT probabilities."))
    oc_rows = []
    for _, r in oc.iterrows():
        oc_rows.append([r["design"], *[_g(r[f"select_{i}"], 3) for i in range(D)], _g(r["select_none"], 3),
                        _g(r["p_correct"], 3), _g(r["p_overdose_selected"], 3), _g(r["patients_mean"], 3),
                        _g(r["dlts_mean"], 3), _g(r["length_days_mean"] / 30.4375, 3)])
    sections = [
        _section("Dose levels", intro, tables=[_table(head, dose_rows, tid="table-doses")], sid="section-doses"),
        _section("Operating characteristics", f"{s['trials']:,} simulated trials per design. BOIN boundaries: "
                 f"escalate if the observed DLT rate <= {s['boin']['lambda_e']:.3f}, de-escalate if >= "
                 f"{s['boin']['lambda_d']:.3f}.",
                 tables=[_table(["design", *[f"P(select {d})" for d in s["doses"]], "P(no MTD)", "P(correct)",
                                 "P(select an overdose)", "patients", "DLTs", "length (months)"], oc_rows,
                                tid="table-oc")],
                 figures=[_oc_figure(oc, s["doses"], s["true_dlt"])], sid="section-oc")]
    meta = {"Study": st.spec.name, "Mode": s["mode"], "Designs": ", ".join(st.spec.designs),
            "Cohort size": st.spec.cohort_size, "Maximum sample size": st.spec.max_patients,
            "Time": ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())}
    return render(st.spec.name, "phase-I dose escalation", meta, sections, result.notes, {"summary": s,
                                                                                          "file": st.source})


# -- biomarkers -------------------------------------------------------------------------------------------------
def _roc_figure(tables, labels):
    from sklearn.metrics import roc_curve

    have = [lab for lab in labels if f"{lab}_predictions" in tables]
    if not have:
        return None
    fig, axes = plt.subplots(1, len(have), figsize=(5 * len(have), 4.2), squeeze=False)
    for ax, lab in zip(axes[0], have):
        p = tables[f"{lab}_predictions"]
        for m in [c for c in p.columns if c not in ("patient", "label")]:
            fpr, tpr, _ = roc_curve(p["label"], p[m])
            ax.plot(fpr, tpr, label=m)
        ax.plot([0, 1], [0, 1], "--", color="#7f8c8d", lw=1)
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.set_title(f"{lab}: cross-validated ROC", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, "Cross-validated ROC curves of the two models for each label")


def _calibration_figure(summary, labels):
    have = [lab for lab in labels if "models" in summary["labels"][lab]]
    if not have:
        return None
    fig, axes = plt.subplots(1, len(have), figsize=(5 * len(have), 4.2), squeeze=False)
    for ax, lab in zip(axes[0], have):
        for m in summary["labels"][lab]["models"]:
            c = m["calibration"]
            ax.plot(c["curve_predicted"], c["curve_observed"], "o-", ms=3, label=f"{m['model']} (Brier {c['brier']:.3f})")
        ax.plot([0, 1], [0, 1], "--", color="#7f8c8d", lw=1)
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed fraction")
        ax.set_title(f"{lab}: calibration (out of fold)", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, "Calibration of the out-of-fold predicted probabilities")


def _power_figure(enr):
    if not enr or "all_comers" not in enr:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(enr["all_comers"]["ns"], enr["all_comers"]["power"], "o-", label="all comers")
    mp = enr.get("marker_positive") or {}
    if "ns" in mp:
        ax.plot(mp["ns"], mp["power"], "s-", label=f"{enr['marker']} {'>=' if enr['direction'] == 'higher' else '<='} "
                                                    f"{enr['cut_point']:.3g}")
    ax.axhline(0.8, color="#c0392b", ls="--", lw=1)
    ax.set_xlabel("patients per arm")
    ax.set_ylabel("power (log-rank, replicate trials)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, "Power against patients per arm, all comers and marker-positive only")


def render_biomarkers(res) -> str:
    s, tables = res.summary, res.tables
    sections = []
    for lab in ("benefit", "harm"):
        e = s["labels"][lab]
        what = (f"individual paired OS effect of '{s['benefit_arm']}' vs '{s['control']}' > {s['threshold_months']:.3g} months"
                if lab == "benefit" else
                f"control outcome worse than the same patient with '{s['harm_arm']}' by > {s['threshold_harm_months']:.3g} months")
        intro = f"<b>{lab}</b>: {what}; {e['positives']} of {e['n']} patients ({100 * e['prevalence']:.1f}%)."
        if "note" in e:
            sections.append(_section(f"Label: {lab}", intro + " " + e["note"], sid=f"section-{lab}"))
            continue
        mrows = [[m["model"], f"{m['auc']:.3f} ({m['auc_ci'][0]:.3f} – {m['auc_ci'][1]:.3f})",
                  _g(m["calibration"]["brier"], 3), _g(m["calibration"]["slope"], 3),
                  _g(m["calibration"]["intercept"], 3)] for m in e["models"]]
        krows = [[i + 1, r["marker"], f"{r['auc']:.3f} ({r['auc_ci_low']:.3f} – {r['auc_ci_high']:.3f})",
                  f"{'>=' if r['direction'] == 'higher' else '<='} {_g(r['cut_point'], 4)}", _g(r["sensitivity"], 3),
                  _g(r["specificity"], 3), "yes" if r["baseline"] else "no"] for i, r in enumerate(e["top_markers"])]
        sections.append(_section(
            f"Label: {lab}", intro,
            tables=[_table(["model", "CV ROC AUC (95% CI)", "Brier", "calibration slope", "calibration intercept"],
                           mrows, tid=f"table-{lab}-models", caption="5-fold cross-validated (out-of-fold) "
                           "predictions; AUC CI by bootstrap over patients."),
                    _table(["rank", "marker", "AUC (95% CI)", "cut-point (Youden)", "sensitivity", "specificity",
                            "baseline"], krows, tid=f"table-{lab}-markers",
                           caption="mk_X_dD: marker X at day D of the control arm; rel_X_dD: ratio to day 0.")],
            sid=f"section-{lab}"))
    sections.append(_section("ROC and calibration", figures=[_roc_figure(tables, ("benefit", "harm")),
                                                             _calibration_figure(s, ("benefit", "harm"))],
                             sid="section-roc"))
    enr = s.get("enrichment")
    if enr and "all_comers" in enr:
        ac, mp = enr["all_comers"], enr.get("marker_positive") or {}
        txt = (f"Selection by the best baseline marker <b>{enr['marker']} {'>=' if enr['direction'] == 'higher' else '<='} "
               f"{enr['cut_point']:.3g}</b> (AUC {enr['marker_auc']:.2f}; {100 * enr['positive_fraction']:.0f}% of "
               f"patients positive). {enr['replicates']} randomised replicate trials. Patients per arm for 80% power: "
               f"all comers {_g(ac.get('n_interp_loglinear'))}"
               + (f"; marker-positive {_g(mp.get('n_interp_loglinear'))} (screening {_g(mp.get('screened_per_arm'))} "
                  "per arm)" if "ns" in mp else f"; marker-positive: {mp.get('note', 'not reached')}")
               + ". Not reached within the simulated sizes is shown as a dash.")
        sections.append(_section("Enrichment design", txt, figures=[_power_figure(enr)], sid="section-enrichment"))
    meta = {"Trial": s["trial"], "Control": s["control"], "Benefit arm": s["benefit_arm"], "Harm arm": s["harm_arm"],
            "Candidate markers": len(s["features"]),
            "Time": ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items())}
    return render(s["trial"] or "trial", "biomarkers of harm and benefit", meta, sections, res.notes, {"summary": s})


# -- twin -------------------------------------------------------------------------------------------------------
def _twin_fit_figure(res):
    from ..studies.patient_record import OBSERVABLES  # noqa: F401  (units for the labels)

    keys = sorted(set(res.fitted["observable"]))
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        f = res.fitted[res.fitted["observable"] == k]
        ax.fill_between(f["day"], f["q05"], f["q95"], color="#aed6f1", alpha=0.6, label="posterior 90%")
        ax.plot(f["day"], f["q50"], color="#1b4f72", lw=1.4, label="posterior median")
        obs = [o for o in res.record.observations if o.observable == k]
        ax.plot([o.day for o in obs if not o.censored], [o.value for o in obs if not o.censored], "o",
                color="#c0392b", label="measured")
        cen = [o for o in obs if o.censored]
        if cen:
            ax.plot([o.day for o in cen], [o.lloq for o in cen], "v", color="#7d3c98", label="< detection limit")
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("day")
        if (f["q05"] > 0).all():
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig, "Posterior trajectories of each measured quantity against the patient's measurements")


def _twin_update_figure(res):
    h = res.history
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].plot(h["day"], h["p_il1_high"], "o-", color="#c0392b")
    axes[0].set_ylim(0, 1)
    axes[0].set_xlabel("visit day")
    axes[0].set_ylabel("P(IL-1-driven host response)")
    for c in ("il1r1_ec50", "gcsf_il1_emax"):
        axes[1].plot(h["day"], h[f"{c}_median"], "o-", label=c)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("visit day")
    axes[1].set_ylabel("posterior median")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, "Posterior probability of an IL-1-driven host response and the couplings, visit by visit")


def render_twin(res) -> str:
    rec, r = res.record, res.recommendation
    fc = res.forecasts
    qorder = ["p_progression_free_next_scan", "p_progression_free_6m", "p_grade4_next_cycle", "p_grade3_next_cycle",
              "anc_nadir_next_cycle", "nlr_next_visit", "sld_next_scan"]
    rows = []
    for a in res.options.actions:
        g = fc[fc["action"] == a].set_index("quantity")
        cells = []
        for q in qorder:
            m, se, lo, hi = g.loc[q, "mean"], g.loc[q, "se"], g.loc[q, "q05"], g.loc[q, "q95"]
            cells.append(f"{_g(m, 3)} ± {_g(se, 2)}" if q.startswith("p_") else f"{_g(m, 3)} ({_g(lo, 3)} – {_g(hi, 3)})")
        rows.append([("★ " if a == r["action"] else "") + a, *cells])
    upd = [[int(x["visit"]), _g(x["day"], 4), int(x["n_measurements"]), _g(x["ess_before_resampling"], 4),
            int(x.get("tempering_steps", 1)), "yes" if x["resampled"] else "no", _g(x["move_acceptance"], 2),
            _g(x["p_il1_high"], 3)]
           for x in res.history.to_dict("records")]
    voi = [[x["measurement"], _g(x["relative_reduction"], 3), _g(x["expected_reduction"], 3)]
           for x in res.voi.to_dict("records")]
    sections = [
        _section("Recommendation", f"<b>{r['action']}</b>: {r['objective']} {r['expected']:.3f} ± {r['se']:.3f} "
                 f"(Monte-Carlo SE) subject to {r['constraint']}" + ("" if r["constraint_met"] else
                 " — no action meets the constraint; the best objective is shown") + ".",
                 tables=[_table(["action", *qorder], rows, tid="table-actions",
                                caption="Probabilities: posterior mean ± Monte-Carlo SE; other quantities: posterior "
                                        "mean (90% interval). ANC in 1e9/L, sum of diameters in mm.")],
                 sid="section-recommendation"),
        _section("Posterior against the measurements", figures=[_twin_fit_figure(res)], sid="section-fit"),
        _section("Visit-by-visit updates", tables=[_table(["visit", "day", "measurements", "lowest ESS",
                                                           "tempering steps", "resampled", "move acceptance",
                                                           "P(IL-1-driven)"], upd,
                                                          tid="table-updates")],
                 figures=[_twin_update_figure(res)], sid="section-updates"),
        _section("What the next measurement would be worth",
                 f"Expected reduction of the posterior variance of {r['objective']} under '{r['action']}' from one "
                 f"measurement on day {res.record.now + 7:g}.",
                 tables=[_table(["measurement", "relative reduction", "absolute reduction"], voi, tid="table-voi")],
                 sid="section-voi")]
    meta = {"Patient": rec.spec.patient, "Model": f"{rec.spec.model} ({rec.spec.species})",
            "Indication": rec.spec.indication or DASH, "Decision day": f"{rec.now:g}",
            "Visits": len(rec.visit_days), "Measurements": len(rec.observations),
            "Particles": res.options.particles,
            "Time": ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items())}
    return render(rec.spec.patient, "patient twin", meta, sections, res.notes, {"record": rec.source})
