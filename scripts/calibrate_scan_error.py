"""Calibrate the scan measurement-error model (studies/scans.py) to Oxnard et al. 2011.

Oxnard GR et al., J Clin Oncol 2011;29:3114 (PMC3157977): two CT scans minutes apart, lesion
diameters read side by side.  Fitted: 84% of changes within +/-10%, 3% increases >= 20%.  Held out
(printed as a check, not fitted): median increase +4.3%, median decrease -4.2%.

Model: per-scan log error e = clip(scale * t_df, -clip, +clip); a repeat-scan change is
exp(e1 - e2) - 1.  ``clip`` (0.20) is fixed so that changes stay near the observed range (-23% to
+31%); df and scale are chosen on a grid by least squares on the two fitted statistics, with common
random numbers (seed 1, 400,000 pairs).  Deterministic; run: python scripts/calibrate_scan_error.py
"""

import numpy as np
from scipy import stats

CLIP = 0.20
WITHIN_10, UP_20 = 0.84, 0.03


def changes(scale, df, u1, u2):
    e1 = np.clip(scale * stats.t.ppf(u1, df), -CLIP, CLIP)
    e2 = np.clip(scale * stats.t.ppf(u2, df), -CLIP, CLIP)
    return np.expm1(e1 - e2)


def main():
    rng = np.random.default_rng(1)
    u1, u2 = rng.random(400_000), rng.random(400_000)
    best = None
    for df in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0):
        for scale in np.linspace(0.015, 0.05, 141):
            c = changes(scale, df, u1, u2)
            a, b = np.mean(np.abs(c) <= 0.10), np.mean(c >= 0.20)
            loss = (a - WITHIN_10) ** 2 + (b - UP_20) ** 2
            if best is None or loss < best[0]:
                best = (loss, df, scale, a, b)
    _, df, scale, a, b = best
    c = changes(scale, df, u1, u2)
    print(f"fitted: df = {df:g}, scale = {scale:.5f} (clip {CLIP})")
    print(f"  within +/-10%: {a:.3f} (target {WITHIN_10});  >= +20%: {b:.4f} (target {UP_20})")
    print(f"held out: median increase {np.median(c[c > 0]):+.3%} (Oxnard +4.3%), "
          f"median decrease {np.median(c[c < 0]):+.3%} (Oxnard -4.2%)")
    print(f"range of 99% of changes: {np.quantile(c, 0.005):+.1%} to {np.quantile(c, 0.995):+.1%} "
          "(Oxnard observed -23% to +31%)")


if __name__ == "__main__":
    main()
