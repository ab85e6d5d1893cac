"""How deep the model drives the marrow: the lowest marrow progenitor compartment (HSPC, GMP, MDP, CLP; relative
to baseline) of each virtual patient of the pancreatic trial's gemcitabine arm, without a dose rule (as
benchmarks/throughput.py runs it) and with the label's ANC rules, at a tight tolerance on an hourly grid.

A marrow below ~1e-9 of baseline holds far less than one cell; the continuous model regrows it anyway (a
known gap, docs/calibration.md), and below a simulator's absolute tolerance (1e-12 by default in
libRoadRunner and COPASI) its states cross zero.

    python benchmarks/marrow_depth.py [--patients 300]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import yaml

import chemohost as ch
from chemohost.studies.trial import Trial
from chemohost.studies.trial_runner import sample_trial_patients, setup_trial

TRIAL = Path(__file__).resolve().parents[1] / "scenarios" / "trial_pancreatic_il1_blockade.yaml"
MARROW = ["hspc", "gmp", "mdp", "clp"]
LEVELS = (1e-3, 1e-6, 1e-9, 1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=300)
    a = ap.parse_args()
    trial = Trial.from_dict(yaml.safe_load(TRIAL.read_text()), str(TRIAL))
    st = setup_trial(trial, trial.spec.seed)
    _, P, _, _ = sample_trial_patients(trial, a.patients, trial.spec.seed)
    hourly = np.linspace(0.0, 168.0, 168 * 24 + 1)
    tight = ch.SolverOptions(rtol=1e-10, atol=1e-14, max_steps=5_000_000)
    print(f"{a.patients} patients of {TRIAL.name} (seed {trial.spec.seed}), gemcitabine arm, 168 days, hourly; "
          f"share of patients whose lowest marrow progenitor compartment falls below each level of baseline:")
    print("| dose rule | " + " | ".join(f"< {x:g}" for x in LEVELS) + " | deepest |")
    print("|---|" + "---|" * (len(LEVELS) + 1))
    for rule in (None, "gemcitabine_label_anc", "gemcitabine_label_anc_delay"):
        regs = [dataclasses.replace(r, rule=rule) for r in trial.arms[trial.spec.control]]
        depth = ch.simulate(st.cm, P, regs, hourly, MARROW, options=tight).values.min(axis=(1, 2))
        print(f"| {rule or 'none'} | " + " | ".join(f"{(depth < x).mean():.1%}" for x in LEVELS)
              + f" | {depth.min():.1e} |")


if __name__ == "__main__":
    main()
