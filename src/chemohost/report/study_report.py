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
