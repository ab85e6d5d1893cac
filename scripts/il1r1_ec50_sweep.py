"""How much the pancreatic blockade answer depends on the one human IL-1 coupling no data pin.

Runs the shipped pancreatic trial (paired design) with the human marrow IL-1R1 EC50
(``il1r1_ec50``) at points of its prior (1.2-50 pg/mL; the NLR evidence keeps >= ~18) and prints,
per arm, the paired RMST(12 mo) difference and HR vs gemcitabine with their 95% CIs, plus the
control arm's NLR rise.  A stand-in until the posterior-predictive trial carries the full posterior.

    python scripts/il1r1_ec50_sweep.py [--patients 300] [--ec50 1.2,7.7,18,30,50]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chemohost.studies.trial import Trial, run_trial
from chemohost.scenario import load_yaml_mapping

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--ec50", default="1.2,7.7,18,30,50", help="pg/mL, comma-separated")
    a = ap.parse_args()
    data, path = load_yaml_mapping(TRIAL, "trial", "name, arms, control")
    print(f"{TRIAL.name}: {a.patients} patients per arm, paired design")
    for ec in (float(x) for x in a.ec50.split(",")):
        d = {**data, "parameters": {**(data.get("parameters") or {}), "il1r1_ec50": f"{ec} pg/mL"},
             "keep_timecourses": 0}
        res = run_trial(Trial.from_dict(d, str(path)), patients=a.patients)
        s = res.summary
        ctrl = s["arms"][s["control"]]
        print(f"il1r1_ec50 {ec:g} pg/mL: control median OS {ctrl['median_os_months']:.2f} mo")
        for arm, pe in s["paired"].items():
            r, h = pe["rmst_diff_12"], pe["hr"]
            print(f"  {arm}: RMST(12) {r['estimate']:+.3f} mo ({r['ci_low']:+.3f} to {r['ci_high']:+.3f}), "
                  f"HR {h['estimate']:.3f} ({h['ci_low']:.3f}-{h['ci_high']:.3f})")


if __name__ == "__main__":
    main()
