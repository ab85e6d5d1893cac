"""Proof that the patient twin works (issue 12 item 5), at full size: synthetic patients drawn from the
twin's own prior (truth known), measured like the shipped IL-1-high example (ANC, lymphocytes, G-CSF on
days 0/8/15/22/28, IL-1alpha on days 0 and 3, baseline SLD), filtered visit by visit.

    python scripts/validate_twin.py [--patients 30] [--particles 300] [--seed 11] [--moves 2]

Prints the next-visit forecast error and 90% interval coverage by visits assimilated, the IL-1
classification after the last visit (ROC AUC), and the recommended action against the fixed protocol
judged on the true parameters.  tests/test_twin.py runs the same at reduced size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--particles", type=int, default=300)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--moves", type=int, default=2)
    a = ap.parse_args()
    os.environ.setdefault("CHEMOHOST_CACHE_DIR", str(ROOT / ".chemohost-cache"))
    from sklearn.metrics import roc_auc_score

    from chemohost.studies.patient_record import load_patient
    from chemohost.studies.twin import validate_twin

    t0 = time.perf_counter()
    v = validate_twin(load_patient(ROOT / "scenarios" / "patients" / "patient_il1_high.yaml"), n_patients=a.patients,
                      particles=a.particles, seed=a.seed, moves=a.moves)
    e, c, r = v["errors"], v["classification"], v["recommendation"]
    print(f"validate_twin: {a.patients} synthetic patients, {a.particles} particles, {a.moves} moves, seed {a.seed}: "
          f"{time.perf_counter() - t0:.0f} s")
    print(v["forecast"].to_string(index=False))
    print(f"nominal 90% predictive intervals cover {e['inside_90'].mean():.3f} of {len(e)} next-visit measurements "
          f"(per patient: median {e.groupby('patient')['inside_90'].mean().median():.2f}, "
          f"min {e.groupby('patient')['inside_90'].mean().min():.2f})")
    drv = c["il1_driven_truth"].astype(bool)
    auc = roc_auc_score(drv, c["p_il1_driven"]) if 0 < drv.sum() < len(drv) else float("nan")
    print(f"IL-1-driven host response after {int(v['forecast']['visits_assimilated'].max()) + 1} visits: ROC AUC "
          f"{auc:.3f}; P > 0.5 in {int((c.loc[drv, 'p_il1_driven'] > 0.5).sum())}/{int(drv.sum())} driven, "
          f"P < 0.5 in {int((c.loc[~drv, 'p_il1_driven'] < 0.5).sum())}/{int((~drv).sum())} not driven")
    rm = v["recommended_minus_fixed"]
    print(f"recommended action minus continue, judged on the truth (objective P(progression-free at the next scan)): "
          f"{rm['mean']:+.3f} (95% bootstrap CI {rm['ci'][0]:+.3f} to {rm['ci'][1]:+.3f}); recommendations: "
          + ", ".join(f"{k} {n}" for k, n in r["recommended"].value_counts().items()))


if __name__ == "__main__":
    main()
