"""Write the shipped example patient records (scenarios/patients/): two synthetic patients of the
pancreatic indication on gemcitabine d1,8,15 q28d, simulated from known parameters with the record's
measurement noise -- one with an IL-1-driven host response (il1r1_ec50 2 pg/mL, gcsf_il1_emax 30) and
one without (40 pg/mL, 1), both with little metastatic seeding -- and their truth (a JSON beside
each).  Deterministic.

    python scripts/make_synthetic_patients.py
"""

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chemohost.studies.twin import synthetic_record  # noqa: E402

GEM = [{"drug": "gemcitabine", "dose": "1000 mg/m2", "infusion": "30 min", "days": [1, 8, 15],
        "cycle_length": "28 day", "cycles": 6}]
# blood counts weekly in cycle 1, cytokines on days 0, 3 (IL-1alpha) and weekly (G-CSF), baseline CT;
# the decision is taken on day 28, before cycle 2 and before the first restaging scan (day 56)
VISITS = {"ANC": [0, 8, 15, 22, 28], "lymphocytes": [0, 8, 15, 22, 28], "G_CSF": [0, 8, 15, 22, 28],
          "IL1a": [0, 3, 15], "SLD": [0]}


def main():
    out = ROOT / "src" / "chemohost" / "scenarios" / "patients"
    out.mkdir(parents=True, exist_ok=True)
    # a patient with little metastatic seeding (met_k_seed a fifth of the indication's typical 0.054), so the
    # next scans are not decided by new lesions alone and the actions can differ
    for name, truth, seed in (("patient_il1_high", {"il1r1_ec50": 2.0, "gcsf_il1_emax": 30.0, "met_k_seed": 0.01}, 1),
                              ("patient_il1_low", {"il1r1_ec50": 40.0, "gcsf_il1_emax": 1.0, "met_k_seed": 0.01}, 2)):
        data, tr = synthetic_record(truth, GEM, VISITS, now=28.0, seed=seed, indication="pancreatic_advanced",
                                    covariates={"BSA": "1.8 m2", "WT": "70 kg"}, patient=name)
        data["description"] = (f"Synthetic patient (scripts/make_synthetic_patients.py) simulated with "
                               f"{', '.join(f'{k} = {v:g}' for k, v in tr.items())}, gemcitabine d1,8,15 q28d; "
                               "decision at day 56 (after two cycles)")
        (out / f"{name}.yaml").write_text("# " + data["description"] + "\n" + yaml.safe_dump(data, sort_keys=False))
        (out / f"{name}.truth.json").write_text(json.dumps(tr, indent=2))
        print(f"wrote {out / name}.yaml")


if __name__ == "__main__":
    main()
