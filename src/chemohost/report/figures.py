"""Figures (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def timecourse_figure(run, path: str | Path) -> Path:
    """One panel per output: median and 5-95% band across patients, one colour per arm."""
    outputs = [o for o in run.scenario.outputs]
    n = len(outputs)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    model = run.scenario.model
    for k, name in enumerate(outputs):
        ax = axes[k // cols][k % cols]
        for arm, res in run.arms.items():
            v = res.output(name)
            ok = np.isfinite(v).all(axis=1)
            if not ok.any():
                continue
            v = v[ok]
            med = np.median(v, axis=0)
            line, = ax.plot(res.times, med, lw=1.3, label=arm)
            if v.shape[0] > 1:
                lo, hi = np.percentile(v, [5, 95], axis=0)
                ax.fill_between(res.times, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        unit = model.outputs[name].unit if name in model.outputs else model.species[name].unit
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("time (days)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{run.scenario.spec.name} ({run.scenario.spec.species}, {run.scenario.model.name})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
