"""Self-contained HTML report of an in-silico trial.

``render_report(ctx)`` fills the Jinja2 template ``templates/trial_report.html.j2`` (autoescaped) with
formatted tables and matplotlib figures embedded as base64 PNG: no external resources, no JavaScript.
``render(name, description, df, summary, samples, manifest)`` is the old entry point, kept as a thin
wrapper that builds a context from the old arguments.

The context (``ctx``) keys read here: ``name``, ``description``, ``design`` ("paired"/"randomized"),
``control``, ``seed``, ``arms``, ``version``, ``patients`` (DataFrame, one row per patient x arm),
``summary`` (``arms``, ``paired``, ``randomized``), ``paired_deltas``, ``samples``, ``cycles``,
``methods``, ``manifest``. Every key except ``patients`` and ``summary`` is optional.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .parallel import render_figures  # noqa: E402

DASH = "\u2013"  # shown for every undefined value
TEMPLATE = "trial_report.html.j2"
_TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

RESPONSE_COLOURS = {"CR": "#1a5276", "PR": "#5dade2", "SD": "#a6acaf", "PD": "#c0392b", "NE": "#f5cba7"}
CTCAE_ANC = [(2.0, "G1"), (1.5, "G2"), (1.0, "G3"), (0.5, "G4")]  # lower limits, x1e9/L
TRAJECTORY_OUTPUTS = [
    ("NLR", "NLR (ratio)"),
    ("ANC", "ANC (\u00d710\u2079/L)"),
    ("gmp_frequency", "GMP frequency (dimensionless)"),
]
DAYS_PER_MONTH = 30.4375

_RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
       "ytick.labelsize": 10, "legend.fontsize": 9.5, "figure.dpi": 100}


# --------------------------------------------------------------------------------------------------
# formatting


def _num(x) -> float | None:
    """A finite float, or None for None/NaN/inf/non-numbers."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _seq(x, n: int) -> list:
    """x as a list of n entries (padded with None) -- tolerates None, scalars, arrays."""
    if x is None or isinstance(x, (str, bytes, dict)):
        return [None] * n
    try:
        v = list(x)
    except TypeError:
        return [x] + [None] * (n - 1)
    return (v + [None] * n)[:n]


def fmt_num(x, digits: int = 2) -> str:
    v = _num(x)
    return DASH if v is None else f"{v:.{digits}f}"


def fmt_int(x) -> str:
    v = _num(x)
    return DASH if v is None else f"{int(round(v))}"


def fmt_pct(x, digits: int = 1) -> str:
    v = _num(x)
    return DASH if v is None else f"{100 * v:.{digits}f}%"


def _range(lo, hi, fmt, open_hi: str = DASH) -> str:
    lo, hi = _num(lo), _num(hi)
    if lo is None and hi is None:
        return ""
    if lo is None or hi is None:  # one-sided: "(5.1 to NR)" reads better than "(5.1––)"
        return f" ({fmt(lo) if lo is not None else DASH} to {fmt(hi) if hi is not None else open_hi})"
    sep = " to " if min(lo, hi) < 0 else "\u2013"  # "(-0.01 to -0.00)", never "(-0.01–-0.00)"
    return f" ({fmt(lo)}{sep}{fmt(hi)})"


def fmt_pct_ci(x, ci, digits: int = 1) -> str:
    """'12.0% (6.5–19.8)'; CI omitted when undefined."""
    if _num(x) is None:
        return DASH
    lo, hi = _seq(ci, 2)
    return fmt_pct(x, digits) + _range(lo, hi, lambda v: f"{100 * v:.{digits}f}")


def fmt_est_ci(x, lo, hi, digits: int = 2, open_hi: str = DASH) -> str:
    """'0.84 (0.60–1.17)'; ``open_hi`` replaces an undefined upper limit ('NR' for KM medians)."""
    if _num(x) is None:
        return DASH
    return fmt_num(x, digits) + _range(lo, hi, lambda v: f"{v:.{digits}f}", open_hi)


def split_ci(text: str):
    """Template filter: 'est (lo–hi)' -> est<br><span class=ci>(lo–hi)</span>, both parts escaped."""
    from markupsafe import Markup

    text = str(text)
    if " (" not in text:
        return text
    est, ci = text.split(" (", 1)
    return Markup('{}<br><span class="ci">({}</span>').format(est, ci)


def fmt_p(p) -> str:
    v = _num(p)
    if v is None:
        return DASH
    if v < 0.001:
        return "<0.001"
    return f"{v:.3f}" if v < 0.1 else f"{v:.2f}"


def fmt_events(events, n) -> str:
    e, n = _num(events), _num(n)
    if e is None:
        return DASH
    return f"{int(round(e))}/{int(round(n))}" if n is not None else f"{int(round(e))}"


# --------------------------------------------------------------------------------------------------
# data helpers


def _arms(ctx: dict) -> list[str]:
    arms = ctx.get("arms")
    if arms:
        return [str(a) for a in arms]
    df = ctx.get("patients")
    if df is not None and "arm" in df and hasattr(df["arm"], "cat"):
        return [str(a) for a in df["arm"].cat.categories]
    if df is not None and "arm" in df:
        return [str(a) for a in pd.unique(df["arm"])]
    return [str(a) for a in (ctx.get("summary") or {}).get("arms", {})]


def _ok_mask(df: pd.DataFrame) -> pd.Series:
    if "status" not in df:
        return pd.Series(True, index=df.index)
    return df["status"].astype(str) == "ok"


def _arm_rows(df: pd.DataFrame, arm: str) -> pd.DataFrame:
    return df[df["arm"].astype(str) == arm]


def _counts(df: pd.DataFrame, arms: list[str]) -> dict:
    """Per arm: n run, n failed, n analysed and failure reasons, from the patient table."""
    out = {}
    ok = _ok_mask(df)
    for arm in arms:
        sel = df["arm"].astype(str) == arm
        n, n_ok = int(sel.sum()), int((sel & ok).sum())
        reasons = df.loc[sel & ~ok, "status"].astype(str).value_counts().to_dict() if "status" in df else {}
        out[arm] = {"n": n, "n_failed": n - n_ok, "n_analysed": n_ok, "reasons": reasons}
    return out


def _png(fig, alt: str) -> dict:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return {"src": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), "alt": alt}


def _wrap(s: str, width: int = 28) -> str:
    return "\n".join(textwrap.wrap(str(s), width)) or str(s)


def _colours(arms: list[str]) -> dict:
    cyc = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {a: cyc[i % len(cyc)] for i, a in enumerate(arms)}


# --------------------------------------------------------------------------------------------------
# figures


def _km_figure(df, arms, summary_arms, control, time_col, event_col, title, hr_key, p_key):
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    ok = df[_ok_mask(df)]
    ok = ok[np.isfinite(ok[time_col].astype(float))]
    colours = _colours(arms)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(10, 5.2))
        fitters, empty = [], []
        tmax = 0.0
        for i, arm in enumerate(arms):
            g = _arm_rows(ok, arm)
            if not len(g):
                empty.append(arm)
                continue
            kmf = KaplanMeierFitter(label=f"{chr(65 + i)}: {arm}" if len(arm) <= 40 else f"{chr(65 + i)}: {arm[:38]}\u2026")
            kmf.fit(g[time_col].astype(float), g[event_col].astype(bool))
            kmf.plot_survival_function(ax=ax, ci_show=True, show_censors=True, color=colours[arm],
                                       censor_styles={"ms": 6, "marker": "|", "mew": 1.2}, lw=1.8)
            fitters.append((chr(65 + i), kmf))
            tmax = max(tmax, float(g[time_col].max()))
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, max(tmax, 1.0) * 1.02)
        step = 3 if tmax <= 36 else 6
        ax.set_xticks(np.arange(0, tmax + 1e-9, step))
        ax.set_xlabel("Time since randomisation (months)")
        ax.set_ylabel(f"{title} probability")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        lines = []
        for arm in arms:
            if arm == control:
                continue
            s = summary_arms.get(arm, {}) or {}
            hr, lo, hi = _seq(s.get(hr_key), 3)
            lines.append(f"{_wrap(arm, 40).splitlines()[0]}{'…' if len(arm) > 40 else ''} vs {control[:30]}: "
                         f"HR {fmt_est_ci(hr, lo, hi)}, log-rank p {fmt_p(s.get(p_key))}")
        for arm in empty:
            lines.append(f"{arm[:40]}: no analysed patients")
        if lines:
            ax.text(0.99, 0.97, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=9.5,
                    bbox={"boxstyle": "round", "fc": "white", "ec": "#888", "alpha": 0.9})
        if fitters:
            ax.legend(loc="lower left", frameon=True, framealpha=0.9)
            add_at_risk_counts(*[k for _, k in fitters], ax=ax, rows_to_show=["At risk"],
                               labels=[lab for lab, _ in fitters], fontsize=10)
            ax.set_xlabel("Time since randomisation (months)")
        else:
            ax.text(0.5, 0.5, "no analysed patients", transform=ax.transAxes, ha="center")
        fig.tight_layout()
    n_txt = ", ".join(f"{a}: {len(_arm_rows(ok, a))}" for a in arms)
    return _png(fig, f"Kaplan-Meier curves of {title.lower()} per arm with 95% confidence bands, censoring "
                     f"ticks and number at risk (analysed patients {n_txt}).")


def _waterfall(df, arms):
    with plt.rc_context(_RC):
        ncol = min(len(arms), 3) or 1
        nrow = -(-len(arms) // ncol) or 1
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.8 * nrow), squeeze=False, sharey=True)
        ok_all = df[_ok_mask(df)]
        finite = ok_all["best_scan_change_pct"].astype(float)
        finite = finite[np.isfinite(finite)]
        top = float(np.clip(finite.max() if len(finite) else 40, 40, 150)) + 5
        for k, arm in enumerate(arms):
            ax = axes[k // ncol][k % ncol]
            g = _arm_rows(df, arm)
            n_run, n_fail = len(g), int((~_ok_mask(g)).sum())
            g = g[_ok_mask(g)]
            v = g["best_scan_change_pct"].astype(float).to_numpy()
            resp = g["best_response"].astype(str).to_numpy() if "best_response" in g else np.array(["NE"] * len(g))
            has = np.isfinite(v)
            order = np.argsort(-v[has], kind="stable")
            vv, rr = v[has][order], resp[has][order]
            # one collection of bars per panel, not one artist per patient (drawing time flat in N)
            x, hgt = np.arange(vv.size, dtype=float), np.clip(vv, -100, top)
            verts = np.stack([np.c_[x - 0.45, np.zeros_like(x)], np.c_[x - 0.45, hgt], np.c_[x + 0.45, hgt],
                              np.c_[x + 0.45, np.zeros_like(x)]], axis=1)
            ax.add_collection(PolyCollection(verts, facecolors=[RESPONSE_COLOURS.get(r, "#7f8c8d") for r in rr],
                                             linewidths=0))
            ax.axhline(20, ls="--", lw=1, color="#c0392b")
            ax.axhline(-30, ls="--", lw=1, color="#1a5276")
            ax.axhline(0, lw=0.6, color="k")
            ax.set_xticks([])
            ax.set_xlim(-1, max(vv.size, 1))
            ax.set_ylim(-100, top)
            extra = []
            if (~has).sum():
                extra.append(f"{int((~has).sum())} without scan")
            if n_fail:
                extra.append(f"{n_fail} failed")
            ax.set_title(f"{_wrap(arm, 34)}\nN = {vv.size} of {n_run}" + (f" ({', '.join(extra)})" if extra else ""),
                         fontsize=10.5)
            ax.set_xlabel("patients (sorted)")
            if k % ncol == 0:
                ax.set_ylabel("Best change in sum of\ndiameters from baseline (%)")
            if not vv.size:
                ax.text(0.5, 0.5, "no measurable patients", transform=ax.transAxes, ha="center")
        for k in range(len(arms), nrow * ncol):
            axes[k // ncol][k % ncol].set_visible(False)
        for k in range(len(arms)):
            if k % ncol == ncol - 1 or k == len(arms) - 1:
                ax = axes[k // ncol][k % ncol]
                ax.text(1.01, 20, "+20%\n(PD)", va="center", fontsize=8.5, color="#c0392b",
                        transform=ax.get_yaxis_transform())
                ax.text(1.01, -30, "\u221230%\n(PR)", va="center", fontsize=8.5, color="#1a5276",
                        transform=ax.get_yaxis_transform())
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in RESPONSE_COLOURS.values()]
        fig.legend(handles, [f"{k}" for k in RESPONSE_COLOURS], title="Best response (RECIST 1.1)",
                   loc="upper center", ncol=5, bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.9 if nrow == 1 else 0.95))
    return _png(fig, "Waterfall plots per arm of the best percentage change in the sum of target-lesion diameters, "
                     "bars coloured by best overall response, with +20% and -30% reference lines.")


def _paired_figure(arms, control, paired, deltas):
    show = [a for a in arms if a != control and a in paired]
    if not show:
        return None
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(len(show), 2, figsize=(11.5, 3.0 * len(show) + 0.6), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 1.25]})
        for r, arm in enumerate(show):
            p = paired.get(arm) or {}
            ax = axes[r][0]
            ys, labels = [], []
            for j, key in enumerate(("rmst_diff_12", "rmst_diff_24")):
                d = p.get(key) or {}
                est, lo, hi = _num(d.get("estimate")), _num(d.get("ci_low")), _num(d.get("ci_high"))
                tau = _num(d.get("tau")) or (12 if key.endswith("12") else 24)
                y = 1 - j
                beyond = bool(d.get("beyond_follow_up"))
                if est is not None:
                    if lo is not None and hi is not None:
                        ax.plot([lo, hi], [y, y], color="k", lw=2)
                    ax.plot([est], [y], "s", ms=8, color="#2e86c1", mfc="white" if beyond else "#2e86c1", mew=2)
                    ax.text(est, y + 0.18, f"{fmt_est_ci(est, lo, hi)} mo", ha="center", fontsize=9)
                labels.append(f"\u03c4 = {tau:g} mo" + (" \u2020" if beyond else ""))
                ys.append(y)
            ax.axvline(0, color="#888", lw=1)
            ax.set_yticks(ys, labels)
            ax.set_ylim(-0.6, 1.6)
            ax.set_xlabel("RMST difference vs control (months, 95% CI)")
            ax.set_title(f"{_wrap(arm, 40)}\nRMST difference", fontsize=10.5)
            ax.grid(axis="x", alpha=0.3)
            xl = ax.get_xlim()
            half = max(abs(xl[0]), abs(xl[1]), 0.1) * 1.15
            ax.set_xlim(-half, half)

            ax = axes[r][1]
            ind = p.get("individual") or {}
            thr = _num(ind.get("threshold_months"))
            dv = np.asarray(deltas.get(arm, []) if deltas else [], dtype=float)
            dv = dv[np.isfinite(dv)]
            if dv.size:
                ax.hist(dv, bins=min(40, max(10, int(np.sqrt(dv.size)) * 2)), color="#85c1e9", edgecolor="#2e86c1")
            else:
                ax.text(0.5, 0.5, "no per-patient differences", transform=ax.transAxes, ha="center")
            if thr is not None:
                for x in (-thr, thr):
                    ax.axvline(x, ls="--", color="#c0392b", lw=1.2)
            ax.axvline(0, color="k", lw=0.8)
            hz = _num(ind.get("horizon_months"))
            ax.set_xlabel("Individual OS difference, arm \u2212 control (months"
                          + (f", restricted to {hz:g} mo)" if hz is not None else ")"))
            ax.set_ylabel("patients")
            thr_txt = f"\u00b1{thr:g} mo" if thr is not None else "threshold"
            ax.set_title(f"Individual OS differences (n = {fmt_int(ind.get('n_pairs')) if ind.get('n_pairs') is not None else dv.size})",
                         fontsize=10.5)
            ax.text(0.98, 0.95, f"gain > {thr_txt}: {fmt_pct(ind.get('frac_gain'))}\n"
                                f"loss > {thr_txt}: {fmt_pct(ind.get('frac_loss'))}\n"
                                f"unchanged: {fmt_pct(ind.get('frac_unchanged'))}\n"
                                f"mean \u0394: {fmt_num(ind.get('mean_delta'))} mo",
                    transform=ax.transAxes, ha="right", va="top", fontsize=9.5,
                    bbox={"boxstyle": "round", "fc": "white", "ec": "#888", "alpha": 0.9})
            ax.grid(alpha=0.3)
        fig.tight_layout()
    return _png(fig, "Paired effects per experimental arm: restricted mean survival time difference versus control "
                     "at 12 and 24 months with 95% CI, and histogram of individual overall-survival differences "
                     "with the +/- threshold lines and the fractions gaining and losing.")


def _power_figures(arms, control, rnd):
    rarms = rnd.get("arms") or {}
    show = [a for a in arms if a in rarms and a != control] or [a for a in arms if a in rarms]
    if not show:
        return None, None
    colours = _colours(arms)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9, 4.8))
        for arm in show:
            pc = rarms[arm].get("power_curve") or []
            n = np.array([_num(x.get("n_per_arm")) or np.nan for x in pc], dtype=float)
            pw = np.array([_num(x.get("power")) if _num(x.get("power")) is not None else np.nan for x in pc])
            lo = np.array([_num(x.get("ci_low")) if _num(x.get("ci_low")) is not None else np.nan for x in pc])
            hi = np.array([_num(x.get("ci_high")) if _num(x.get("ci_high")) is not None else np.nan for x in pc])
            if not n.size:
                continue
            o = np.argsort(n)
            ax.plot(n[o], pw[o], "o-", color=colours[arm], label=_wrap(arm, 40))
            ax.fill_between(n[o], lo[o], hi[o], color=colours[arm], alpha=0.18, lw=0)
            nt = rarms[arm].get("n_for_target")
            if _num(nt) is not None:
                ax.axvline(float(nt), color=colours[arm], ls=":", lw=1.2)
        ax.axhline(0.8, ls="--", color="k", lw=1)
        ax.text(ax.get_xlim()[0], 0.8, " 80% power", va="bottom", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("Patients per arm")
        ax.set_ylabel("Power (fraction of replicate trials\nwith significant log-rank test)")
        ax.set_title("Power vs sample size (95% CI band; dotted: N reaching target)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right")
        fig.tight_layout()
        f_power = _png(fig, "Power of the randomized design versus patients per arm for each experimental arm, "
                            "with 95% confidence bands and the 80% power line.")

        fig, axes = plt.subplots(1, 2, figsize=(11, 0.9 * len(show) + 2.2), squeeze=False)
        for ax, key, xlabel, ref in ((axes[0][0], "hr_quantiles", "Hazard ratio for OS vs control", 1.0),
                                     (axes[0][1], "median_diff_quantiles", "Median OS difference vs control (months)", 0.0)):
            stats = []
            for arm in show:
                q = rarms[arm].get(key) or {}
                vals = [_num(q.get(k)) for k in ("p2.5", "p25", "p50", "p75", "p97.5")]
                if any(v is None for v in vals):
                    continue
                stats.append({"whislo": vals[0], "q1": vals[1], "med": vals[2], "q3": vals[3], "whishi": vals[4],
                              "fliers": [], "label": _wrap(arm, 26)})
            if stats:
                kw = dict(showfliers=False, widths=0.5, boxprops={"facecolor": "#aed6f1"}, patch_artist=True,
                          medianprops={"color": "k"})
                try:
                    ax.bxp(stats, orientation="horizontal", **kw)
                except TypeError:  # matplotlib < 3.10
                    ax.bxp(stats, vert=False, **kw)
            else:
                ax.text(0.5, 0.5, "not available", transform=ax.transAxes, ha="center")
            ax.axvline(ref, color="#c0392b", ls="--", lw=1)
            ax.set_xlabel(xlabel)
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].set_title("Across replicate trials (box: 25-75%, whiskers: 2.5-97.5%)", fontsize=10.5)
        axes[0][1].set_title(f"Replicates: {fmt_int(rnd.get('replicates'))}, {fmt_int(rnd.get('per_arm'))} per arm",
                             fontsize=10.5)
        fig.tight_layout()
        f_hr = _png(fig, "Distribution over replicate randomized trials of the OS hazard ratio and of the median "
                         "OS difference versus control (box 25-75%, whiskers 2.5-97.5%).")
    return f_power, f_hr


def _trajectories(samples, arms, control, cycles):
    outs = [(o, lab) for o, lab in TRAJECTORY_OUTPUTS
            if any(o in (samples.get(a) or (None, {}))[1] for a in arms if samples.get(a) is not None)]
    if not outs:
        return None
    colours = _colours(arms)
    ncol = len(arms)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(len(outs), ncol, figsize=(max(4.0 * ncol, 8), 3.1 * len(outs) + 0.6),
                                 squeeze=False, sharey="row", sharex=True)

        def band(arm, o):
            t, d = samples.get(arm) or (None, {})
            if t is None or o not in d:
                return None
            v = np.asarray(d[o], dtype=float)
            v = v[np.isfinite(v).all(axis=1)] if v.ndim == 2 else v[None, :]
            if not len(v):
                return None
            return np.asarray(t, dtype=float), np.median(v, axis=0), *np.percentile(v, [10, 90], axis=0), len(v)

        for r, (o, lab) in enumerate(outs):
            ctrl = band(control, o) if control in arms else None
            for c, arm in enumerate(arms):
                ax = axes[r][c]
                for s, e in (cycles or {}).get(arm, []) or []:
                    ax.axvspan(float(s), float(e), color="#f9e79f", alpha=0.45, lw=0)
                b = band(arm, o)
                if b is None:
                    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
                else:
                    t, med, lo, hi, k = b
                    ax.fill_between(t, lo, hi, color=colours[arm], alpha=0.25, lw=0, label="10\u201390%")
                    ax.plot(t, med, color=colours[arm], lw=1.8, label=f"median (K={k})")
                    if ctrl is not None and arm != control:
                        ax.plot(ctrl[0], ctrl[1], color="#555", lw=1.1, ls="--", label="control median")
                if o == "ANC":
                    for y, g in CTCAE_ANC:
                        ax.axhline(y, color="#c0392b", lw=0.7, ls=":")
                        if c == ncol - 1:
                            ax.text(1.01, y, g, transform=ax.get_yaxis_transform(), va="center", fontsize=8.5,
                                    color="#c0392b")
                if r == 0:
                    ax.set_title(_wrap(arm, 34), fontsize=10.5)
                if c == 0:
                    ax.set_ylabel(lab)
                if r == len(outs) - 1:
                    ax.set_xlabel("Time from first dose (days)")
                ax.grid(alpha=0.3)
            if o == "ANC":
                axes[r][0].set_ylim(bottom=0)
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = [Line2D([], [], color="#2e4053", lw=1.8), Patch(color="#2e4053", alpha=0.25),
                   Line2D([], [], color="#555", lw=1.1, ls="--"), Patch(color="#f9e79f", alpha=0.6)]
        labels = ["median of sampled patients", "10\u201390% band", "control median", "treatment cycle"]
        if any(o == "ANC" for o, _ in outs):
            handles.append(Line2D([], [], color="#c0392b", lw=0.9, ls=":"))
            labels.append("CTCAE ANC grade limits")
        top = 1 - 0.45 / (3.1 * len(outs) + 0.6)
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout(rect=(0, 0, 1, top))
    return _png(fig, "Small multiples of NLR, ANC and GMP-frequency time courses per arm: median and 10-90% band of "
                     "the sampled patients, control median dashed, treatment cycles shaded, CTCAE ANC grade "
                     "thresholds (G1-G4) dotted.")


# --------------------------------------------------------------------------------------------------
# tables


def _summary_rows(arms, control, summary_arms, counts):
    rows = []
    for arm in arms:
        s = summary_arms.get(arm) or {}
        c = counts.get(arm, {})
        n = s.get("n") if _num(s.get("n")) is not None else c.get("n")
        n_failed = s.get("n_failed") if _num(s.get("n_failed")) is not None else c.get("n_failed")
        n_an = s.get("n_analysed") if _num(s.get("n_analysed")) is not None else c.get("n_analysed")
        hr, lo, hi = _seq(s.get("hr_os_vs_control"), 3)
        is_ctrl = arm == control
        rows.append({
            "arm": arm, "is_control": is_ctrl,
            "n": fmt_int(n), "n_failed": fmt_int(n_failed), "n_analysed": fmt_int(n_an),
            "failed_any": (_num(n_failed) or 0) > 0,
            "orr": fmt_pct_ci(s.get("orr"), s.get("orr_ci")),
            "dcr": fmt_pct_ci(s.get("dcr"), s.get("dcr_ci")),
            "pfs": fmt_est_ci(s.get("median_pfs_months"), s.get("median_pfs_ci_low"), s.get("median_pfs_ci_high"), 1,
                              open_hi="NR"),
            "pfs_events": fmt_events(s.get("pfs_events"), n_an),
            "os": fmt_est_ci(s.get("median_os_months"), s.get("median_os_ci_low"), s.get("median_os_ci_high"), 1,
                             open_hi="NR"),
            "os_events": fmt_events(s.get("os_events"), n_an),
            "os_12m": fmt_pct(s.get("os_12m")),
            "g3": fmt_pct_ci(s.get("neutropenia_g3plus"), s.get("neutropenia_g3plus_ci")),
            "g4": fmt_pct(s.get("neutropenia_g4")),
            "di": fmt_pct(s.get("dose_intensity_mean")),
            "hr": "reference" if is_ctrl else fmt_est_ci(hr, lo, hi),
            "p": "" if is_ctrl else fmt_p(s.get("logrank_p")),
            "hr_pfs": "reference" if is_ctrl else fmt_est_ci(*_seq(s.get("hr_pfs_vs_control"), 3)),
            "p_pfs": "" if is_ctrl else fmt_p(s.get("logrank_p_pfs")),
        })
    return rows


def _paired_rows(arms, control, paired):
    rows = []
    for arm in arms:
        if arm == control or arm not in paired:
            continue
        p = paired.get(arm) or {}
        ind = p.get("individual") or {}
        q = ind.get("quantiles") or {}
        hr = p.get("hr") or {}
        rm = {}
        for key in ("rmst_diff_12", "rmst_diff_24"):
            d = p.get(key) or {}
            rm[key] = {"diff": fmt_est_ci(d.get("estimate"), d.get("ci_low"), d.get("ci_high")),
                       "ctrl": fmt_num(d.get("rmst_ctrl")), "arm": fmt_num(d.get("rmst_arm")),
                       "tau": fmt_num(d.get("tau"), 0), "beyond": bool(d.get("beyond_follow_up"))}
        rows.append({
            "arm": arm, "rmst12": rm["rmst_diff_12"], "rmst24": rm["rmst_diff_24"],
            "hr": fmt_est_ci(hr.get("estimate"), hr.get("ci_low"), hr.get("ci_high")), "hr_p": fmt_p(hr.get("p")),
            "gain": fmt_pct(ind.get("frac_gain")), "loss": fmt_pct(ind.get("frac_loss")),
            "unchanged": fmt_pct(ind.get("frac_unchanged")), "mean_delta": fmt_num(ind.get("mean_delta")),
            "quantiles": " / ".join(fmt_num(q.get(k), 1) for k in ("p5", "p25", "p50", "p75", "p95")),
            "threshold": fmt_num(ind.get("threshold_months"), 1), "horizon": fmt_num(ind.get("horizon_months"), 0),
            "n_pairs": fmt_int(ind.get("n_pairs")),
        })
    return rows


def _power_rows(arms, rnd):
    rarms = rnd.get("arms") or {}
    rows = []
    for arm in arms:
        if arm not in rarms:
            continue
        a = rarms[arm] or {}
        hq, mq = a.get("hr_quantiles") or {}, a.get("median_diff_quantiles") or {}
        rows.append({
            "arm": arm, "power": fmt_pct_ci(a.get("power"), a.get("power_ci")),
            "hr": fmt_est_ci(hq.get("p50"), hq.get("p2.5"), hq.get("p97.5")),
            "hr_iqr": fmt_num(hq.get("p25")) + "\u2013" + fmt_num(hq.get("p75")),
            "md": fmt_est_ci(mq.get("p50"), mq.get("p2.5"), mq.get("p97.5"), 1),
            "n_target": fmt_int(a.get("n_for_target")) if a.get("n_for_target") is not None else "not reached",
            "schoenfeld": fmt_int(a.get("schoenfeld_n")),
        })
    return rows


def _methods(m) -> dict:
    m = m or {}
    ind = m.get("indication")
    if isinstance(ind, dict):
        ind_name = str(ind.get("name", "")) or None
        ind_src = ind.get("source") or ind.get("source_text") or ind.get("text")
        ind_src = None if ind_src is None else str(ind_src)
    else:
        ind_name, ind_src = (None if ind is None else str(ind)), None

    def lst(k):
        v = m.get(k) or []
        return [str(x) for x in ([v] if isinstance(v, str) else v)]

    return {"model": None if m.get("model") is None else str(m.get("model")), "indication": ind_name,
            "indication_source": ind_src, "calibrated": lst("calibrated"), "predictions": lst("predictions"),
            "assumptions": lst("assumptions"), "endpoints": lst("endpoints"), "present": bool(m)}


# --------------------------------------------------------------------------------------------------
# entry points


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATE_DIR)),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def build_view(ctx: dict) -> dict:
    """Everything the template shows, already formatted (strings, lists, embedded figures)."""
    df = ctx["patients"]
    summary = ctx.get("summary") or {}
    arms = _arms(ctx)
    control = str(ctx.get("control") if ctx.get("control") is not None else summary.get("control", arms[0] if arms else ""))
    design = str(ctx.get("design") or ("randomized" if summary.get("randomized") else "paired"))
    summary_arms = {str(k): v for k, v in (summary.get("arms") or {}).items()}
    counts = _counts(df, arms)
    paired = {str(k): v for k, v in (summary.get("paired") or {}).items()}
    rnd = summary.get("randomized") or {}

    warnings = []
    for arm in arms:
        c = counts[arm]
        if c["n"] and c["n_analysed"] == 0:
            warnings.append(f"Arm {arm}: all {c['n']} patients failed to simulate "
                            f"({', '.join(f'{k}: {v}' for k, v in c['reasons'].items())}); no endpoints for this arm.")
        elif c["n_failed"]:
            warnings.append(f"Arm {arm}: {c['n_failed']} of {c['n']} patients failed to simulate "
                            f"({', '.join(f'{k}: {v}' for k, v in c['reasons'].items())}); they are excluded from "
                            f"every endpoint, Kaplan-Meier curve and waterfall.")

    # drawn side by side in forked workers (report.parallel), the slowest first; what the KM figures import is
    # imported here, once, before the workers fork
    importlib.import_module("lifelines.plotting")

    jobs = {"trajectories": (_trajectories, (ctx.get("samples") or {}, arms, control, ctx.get("cycles") or {}))}
    if design == "paired":
        jobs["paired"] = (_paired_figure, (arms, control, paired, ctx.get("paired_deltas") or {}))
    else:
        jobs["power_hr"] = (_power_figures, (arms, control, rnd))
    jobs["km_os"] = (_km_figure, (df, arms, summary_arms, control, "os_months", "os_event", "Overall survival",
                                  "hr_os_vs_control", "logrank_p"))
    jobs["km_pfs"] = (_km_figure, (df, arms, summary_arms, control, "pfs_months", "pfs_event",
                                   "Progression-free survival", "hr_pfs_vs_control", "logrank_p_pfs"))
    jobs["waterfall"] = (_waterfall, (df, arms))
    figs = {"paired": None, "power": None, "hr_dist": None, **render_figures(jobs)}
    if "power_hr" in figs:
        figs["power"], figs["hr_dist"] = figs.pop("power_hr")

    manifest = ctx.get("manifest") or {}
    n_run = {a: counts[a]["n"] for a in arms}
    return {
        "name": str(ctx.get("name") or "trial"), "description": str(ctx.get("description") or ""),
        "design": design, "control": control, "seed": DASH if ctx.get("seed") is None else str(ctx.get("seed")),
        "version": str(ctx.get("version") or manifest.get("chemohost_version") or DASH),
        "arms": arms, "counts": counts, "n_run": n_run,
        "n_run_text": ", ".join(f"{a}: {n}" for a, n in n_run.items()),
        "n_failed_total": sum(c["n_failed"] for c in counts.values()),
        "twin_guided": [f"{a}: at day {tg.get('policy', {}).get('decision_day', float('nan')):g}, "
                        + ", ".join(f"{k} {v}" for k, v in (tg.get("actions") or {}).items())
                        + f" (mean P(IL-1-driven) {tg.get('p_il1_driven_mean', float('nan')):.2f}; "
                        f"{tg.get('policy', {}).get('particles', '?')} particles, treatment threshold "
                        f"{tg.get('policy', {}).get('min_gain', float('nan')):g})"
                        for a, tg in (summary.get("twin_guided") or {}).items()],
        "warnings": warnings,
        "summary_rows": _summary_rows(arms, control, summary_arms, counts),
        "paired_rows": _paired_rows(arms, control, paired) if design == "paired" else [],
        "power_rows": _power_rows(arms, rnd) if design != "paired" else [],
        "replicates": fmt_int(rnd.get("replicates")), "per_arm": fmt_int(rnd.get("per_arm")),
        "figs": figs, "methods": _methods(ctx.get("methods")),
        "manifest_json": json.dumps(manifest, indent=2, default=str, allow_nan=True),
        "dash": DASH,
    }


def render_report(ctx: dict) -> str:
    """The self-contained HTML report of a trial (see the module docstring for ``ctx``)."""
    env = _environment()
    env.filters["split_ci"] = split_ci
    return env.get_template(TEMPLATE).render(**build_view(ctx))


def render(name: str, description: str, df, summary: dict, samples: dict, manifest: dict, **extra) -> str:
    """Old entry point: builds a context from the old arguments and calls :func:`render_report`."""
    df = df.copy()
    if "status" in df and pd.api.types.is_numeric_dtype(df["status"]):  # engine status codes; labels pass through
        df["status"] = np.where(df["status"].to_numpy() == 0, "ok", "failed_" + df["status"].astype(str))
    if "best_scan_change_pct" not in df:
        df["best_scan_change_pct"] = df["best_tumour_change_pct"] if "best_tumour_change_pct" in df else np.nan
    if "arm" in df and hasattr(df["arm"], "cat"):
        arms = [str(a) for a in df["arm"].cat.categories]
    else:
        arms = [str(a) for a in (summary.get("arms") or {})] or [str(a) for a in pd.unique(df["arm"])]
    ctx = {
        "name": name, "description": description, "design": "randomized" if summary.get("randomized") else "paired",
        "control": summary.get("control", arms[0] if arms else ""), "seed": summary.get("seed", manifest.get("seed")),
        "arms": arms, "version": manifest.get("chemohost_version"), "patients": df, "summary": summary,
        "samples": samples or {}, "cycles": {}, "methods": {}, "paired_deltas": {}, "manifest": manifest,
    }
    ctx.update(extra)  # cycles, methods, paired_deltas from the trial runner
    return render_report(ctx)
