"""Self-contained HTML report of a trial: Kaplan-Meier curves, waterfall, NLR and marrow bands,
summary table (figures embedded as base64 PNG, no external files)."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _km_figure(df, time_col, event_col, title):
    from lifelines import KaplanMeierFitter

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, g in df.groupby("arm", observed=True):
        g = g[np.isfinite(g[time_col].to_numpy(float))]  # failed patients have no survival time
        if len(g):
            KaplanMeierFitter().fit(g[time_col], g[event_col].astype(bool), label=str(arm)).plot_survival_function(
                ax=ax, ci_show=True)
    ax.set_xlabel("months")
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _waterfall(df):
    arms = list(df["arm"].cat.categories) if hasattr(df["arm"], "cat") else sorted(df["arm"].unique())
    fig, axes = plt.subplots(1, len(arms), figsize=(4 * len(arms), 3.4), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        v = df.loc[df.arm == arm, "best_tumour_change_pct"].to_numpy(float)
        v = np.sort(v[np.isfinite(v)])[::-1]
        colors = ["#c0392b" if x >= 20 else "#2e86c1" if x <= -30 else "#95a5a6" for x in v]
        ax.bar(np.arange(v.size), v, color=colors, width=1.0)
        ax.axhline(20, ls="--", lw=0.8, color="k")
        ax.axhline(-30, ls="--", lw=0.8, color="k")
        ax.set_title(str(arm), fontsize=9)
        ax.set_ylabel("best change in SLD (%)")
        ax.set_xticks([])
    fig.tight_layout()
    return _png(fig)


def _bands(samples, output, ylabel):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, (t, outs) in samples.items():
        v = outs[output]
        v = v[np.isfinite(v).all(axis=1)]
        if not len(v):
            continue
        med = np.median(v, axis=0)
        line, = ax.plot(t, med, label=str(arm))
        lo, hi = np.percentile(v, [10, 90], axis=0)
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("days")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{output}: median and 10-90% band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def render(name: str, description: str, df, summary: dict, samples: dict, manifest: dict) -> str:
    rows = []
    keys = ["n_run", "n_failed", "n", "orr", "dcr", "median_pfs_months", "median_os_months", "os_12m", "neutropenia_g3plus",
            "neutropenia_g4", "hr_os_vs_control", "logrank_p"]
    for arm, s in summary["arms"].items():
        cells = []
        for k in keys:
            v = s.get(k)
            if isinstance(v, list):
                cells.append(f"{v[0]:.2f} ({v[1]:.2f}-{v[2]:.2f})" if all(np.isfinite(v)) else "-")
            elif isinstance(v, float):
                cells.append("-" if not np.isfinite(v) else f"{v:.3g}")
            else:
                cells.append(html.escape(str(v)))
        rows.append("<tr><th>" + html.escape(arm) + "</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    imgs = [
        ("Overall survival", _km_figure(df, "os_months", "os_event", "Overall survival")),
        ("Progression-free survival", _km_figure(df, "pfs_months", "pfs_event", "Progression-free survival")),
        ("Best tumour change (waterfall)", _waterfall(df)),
    ]
    for out, label in (("NLR", "NLR"), ("ANC", "1e9/L"), ("gmp_frequency", "relative")):
        if samples and out in next(iter(samples.values()))[1]:
            imgs.append((f"{out} trajectories", _bands(samples, out, label)))
    body = "\n".join(f"<h2>{html.escape(t)}</h2><img src='{src}'/>" for t, src in imgs)
    head = "".join(f"<th>{k}</th>" for k in keys)
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}} img{{max-width:100%}}</style></head><body>
<h1>{html.escape(name)}</h1><p>{html.escape(description)}</p>
<p>control arm: <b>{html.escape(summary['control'])}</b>; seed {summary['seed']}; chemohost {html.escape(str(manifest.get('chemohost_version')))}</p>
<table><tr><th>arm</th>{head}</tr>{''.join(rows)}</table>
{body}
<h2>Manifest</h2><pre>{html.escape(__import__('json').dumps(manifest, indent=2, default=str))}</pre>
</body></html>"""
