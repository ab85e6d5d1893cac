"""Self-contained HTML report of a calibration fit (``chemohost fit``).

``render_fit_report(fit, manifest)`` fills ``templates/fit_report.html.j2`` (Jinja2, autoescaped) with
formatted tables and matplotlib figures embedded as base64 PNG (no external resources, no
JavaScript): the fit against the data with posterior and predictive bands (visual predictive check),
the multi-start waterfall, profile likelihoods, posterior marginals and pair plots.  ``fit`` is read
duck-typed (the attributes of :class:`chemohost.calibration.fit.FitResult`), so this module imports
nothing above the report layer.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .trial_report import DASH, _environment, _png, plt

TEMPLATE = "fit_report.html.j2"


def _g(x, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return DASH
    return f"{v:.{digits}g}" if math.isfinite(v) else DASH


def _log(ax, which: str = "x") -> None:
    """Log scale without overlapping minor-tick labels (ranges under a decade label 2x10^0 ... otherwise)."""
    from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_formatter(LogFormatterSciNotation())
    axis.set_minor_formatter(NullFormatter())


def _fit_figure(pred: pd.DataFrame, data: pd.DataFrame):
    keys = list(dict.fromkeys(zip(pred["observable"], pred["condition"])))
    if not keys:
        return None
    n = len(keys)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (obs, cond) in zip(axes.flat, keys):
        p = pred[(pred.observable == obs) & (pred.condition == cond)]
        d = data[(data.observable == obs) & (data.condition == cond)]
        t = p["time_days"].to_numpy()
        ax.fill_between(t, p["pred_q05"], p["pred_q95"], color="#aed6f1", alpha=0.45,
                        label="90% predictive (with noise)")
        ax.fill_between(t, p["q05"], p["q95"], color="#2e86c1", alpha=0.45, label="90% posterior (parameters)")
        ax.plot(t, p["best"], color="#1b4f72", lw=1.6, label="optimum")
        unc = d[d.censoring == "none"]
        if len(unc):
            y = unc["value"].to_numpy(float)
            s = unc["sigma"].to_numpy(float)
            if str(unc["noise"].iloc[0]).endswith("log"):
                err = np.vstack([y - y * np.exp(-s), y * np.exp(s) - y])
            else:
                err = np.vstack([s, s])
            ax.errorbar(unc["time_days"], y, yerr=err, fmt="o", color="#c0392b", ms=5, capsize=3, label="data (±1 σ)")
        cen = d[d.censoring == "left"]
        if len(cen):
            ax.plot(cen["time_days"], cen["lloq"], "v", color="#7d3c98", ms=8, label="below detection (< LLOQ)")
        if str(d["noise"].iloc[0] if len(d) else "").endswith("log") and (p["best"] > 0).all():
            _log(ax, "y")
        unit = p["unit"].iloc[0]
        ax.set_title(f"{obs} — {cond}", fontsize=10)
        ax.set_xlabel("time since first dose (days)")
        ax.set_ylabel(f"{obs} ({unit})")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), bbox_to_anchor=(0.5, -0.02),
               frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _png(fig, "Model fit against the measurements with posterior and predictive bands")


def _waterfall(starts: pd.DataFrame, f_best: float):
    f = np.sort(starts["fval"].to_numpy(float))
    if not f.size:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    fin = np.isfinite(f)
    ax.plot(np.arange(1, f.size + 1)[fin], f[fin] - f_best + 1e-3, "o-", color="#1b4f72", ms=4)
    ax.set_yscale("log")
    ax.axhline(0.1 + 1e-3, color="#7f8c8d", ls="--", lw=1)
    ax.set_xlabel("start (sorted by final value)")
    ax.set_ylabel("final value − best + 0.001")
    ax.set_title(f"Multi-start optimisation: {int(fin.sum())}/{f.size} finite")
    fig.tight_layout()
    return _png(fig, "Multi-start waterfall: final objective value of every start")


def _profiles(prof: pd.DataFrame, est: pd.DataFrame):
    names = [n for n in est["parameter"] if n in set(prof["parameter"])]
    if not names:
        return None
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.1 * rows), squeeze=False)
    thr = math.exp(-3.841458820694124 / 2)
    for ax, name in zip(axes.flat, names):
        p = prof[prof.parameter == name]
        e = est.set_index("parameter").loc[name]
        ax.plot(p["value"], p["ratio"], "-", color="#1b4f72")
        ax.axhline(thr, color="#c0392b", ls="--", lw=1, label="95% threshold")
        ax.axvline(e["estimate"], color="#7f8c8d", lw=1)
        ax.axvspan(e["lower"], e["upper"], color="#f2f4f4", zorder=-1)
        if e["scale"] != "lin":
            _log(ax, "x")
        ax.set_xlim(e["lower"], e["upper"])
        ax.set_ylim(0, 1.05)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"{name} ({e['unit']})")
        ax.set_ylabel("posterior ratio")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig, "Profile likelihood of each estimated parameter with the 95% threshold")


def _posterior(post: pd.DataFrame, est: pd.DataFrame):
    names = list(est["parameter"])
    if not len(post) or not names:
        return None
    d = len(names)
    e = est.set_index("parameter")
    size = 2.3 if d > 2 else 3.0
    fig, axes = plt.subplots(d, d, figsize=(size * d + 0.6, size * d), squeeze=False)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            xa = post[b].to_numpy(float)
            logx = e.loc[b, "scale"] != "lin"
            if i == j:
                bins = np.geomspace(e.loc[b, "lower"], e.loc[b, "upper"], 31) if logx else \
                    np.linspace(e.loc[b, "lower"], e.loc[b, "upper"], 31)
                ax.hist(xa, bins=bins, color="#5dade2", edgecolor="white")
                ax.axvline(e.loc[b, "estimate"], color="#1b4f72", lw=1.2)
                ax.set_yticks([])
            else:
                ya = post[a].to_numpy(float)
                ax.plot(xa, ya, ".", ms=2, alpha=0.25, color="#1b4f72")
                if e.loc[a, "scale"] != "lin":
                    _log(ax, "y")
                ax.set_ylim(e.loc[a, "lower"], e.loc[a, "upper"])
            if logx:
                _log(ax, "x")
            ax.set_xlim(e.loc[b, "lower"], e.loc[b, "upper"])
            if i == d - 1:
                ax.set_xlabel(b, fontsize=9)
            if j == 0 and i > 0:
                ax.set_ylabel(a, fontsize=9)
    fig.suptitle("Posterior draws (axes span the bounds, i.e. the prior's support)", fontsize=11)
    fig.tight_layout()
    return _png(fig, "Posterior marginals and pairs")


def render_fit_report(fit, manifest: dict) -> str:
    est = fit.estimates
    diag = fit.diagnostics
    samp = diag.get("sampling") or {}
    rows = []
    for r in est.to_dict("records"):
        ci = DASH
        if r.get("profile_ci_low") is not None and not pd.isna(r.get("profile_ci_low")):
            ci = f"{'≤ ' if r.get('ci_open_low') else ''}{_g(r['profile_ci_low'])} – " \
                 f"{_g(r['profile_ci_high'])}{' (bound)' if r.get('ci_open_high') else ''}"
            if r.get("ci_open_low"):
                ci = f"{_g(r['profile_ci_low'])} (bound) – {_g(r['profile_ci_high'])}" + \
                     (" (bound)" if r.get("ci_open_high") else "")
        cri = DASH if pd.isna(r.get("posterior_median", np.nan)) else \
            f"{_g(r['posterior_median'])} ({_g(r['posterior_q025'])} – {_g(r['posterior_q975'])})"
        rows.append({"name": r["parameter"], "unit": r["unit"], "scale": r["scale"],
                     "bounds": f"{_g(r['lower'])} – {_g(r['upper'])}", "nominal": _g(r["nominal"]),
                     "estimate": _g(r["estimate"]), "ci": ci, "cri": cri,
                     "width": _g(r.get("posterior_95_width_over_bounds"), 2),
                     "identifiable": r.get("identifiable", DASH), "prior": r["prior"], "source": r["source"]})
    data_rows = []
    for r in fit.data.to_dict("records"):
        inside = r.get("inside_90pct_predictive")
        data_rows.append({"observable": r["observable"], "condition": r["condition"], "time": _g(r["time_days"], 4),
                          "value": ("< " + _g(r["lloq"])) if r["censoring"] == "left" else _g(r["value"]),
                          "unit": r["unit"], "fitted": _g(r["fitted"]), "sigma": _g(r["sigma"]),
                          "noise": r["noise"], "inside": DASH if inside is None or pd.isna(inside)
                          else ("yes" if inside else "no"), "where": r["where"]})
    view = {
        "name": fit.problem.spec.problem, "description": fit.problem.spec.description,
        "model": fit.problem.model.name, "species": fit.problem.spec.species,
        "version": manifest.get("chemohost_version", DASH), "seed": fit.options.seed,
        "f_best": _g(fit.f_best, 6), "rows": rows, "data_rows": data_rows,
        "starts": diag.get("starts"), "starts_best": diag.get("starts_reaching_best"),
        "starts_finite": diag.get("starts_finite"),
        "sampling": {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in samp.items()},
        "vpc_inside": sum(1 for r in data_rows if r["inside"] == "yes"), "vpc_rows": diag.get("vpc_rows"),
        "timings": {k: f"{v:.1f} s" for k, v in fit.timings.items()},
        "evaluations": fit.evaluations, "notes": fit.notes,
        "figs": {"fit": _fit_figure(fit.predictions, fit.data), "waterfall": _waterfall(fit.starts, fit.f_best),
                 "profiles": _profiles(fit.profiles, est), "posterior": _posterior(fit.posterior, est)},
        "manifest_json": json.dumps(manifest, indent=2, default=str), "dash": DASH,
    }
    return _environment().get_template(TEMPLATE).render(**view)
