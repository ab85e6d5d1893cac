"""Twin-guided arms of a trial: each virtual patient's monitoring is simulated with measurement noise,
the patient twin (:mod:`chemohost.studies.twin`) is run on it, and its recommendation is applied.

For every patient of a twin-guided arm, in the paired design (same patients, same streams as the other
arms):

1. The patient's true course under the arm's regimens is simulated to the decision day; the protocol's
   monitoring is read off it with the record's noise model (ANC, lymphocytes and G-CSF on the visit days,
   serum IL-1alpha on its days, reported censored below 3.9 pg/mL, the baseline sum of
   diameters), from a per-patient random stream, so a patient's measurements do not depend on the chunk.
2. The twin's prior (the indication's population, couplings over their ranges) is conditioned on what a
   clinician knows exactly (BSA, weight, creatinine clearance); the doses the patient actually received
   (after any hold or delay by the arm's dose-modification rule) are the twin's dosing history.
3. The twin filters the visits, forecasts each allowed action and recommends one (objective, constraint
   and treatment threshold ``min_gain`` from the trial file).
4. The patient is simulated from day 0 with the arm's regimens plus what the recommended action adds
   from the decision day to the end of the chemotherapy course; endpoints as in any arm.

Only actions that add a drug (or continue) are allowed here: they leave the arm's schedule up to the
decision day untouched, so the course the twin saw is the course the patient had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ScenarioError

#: actions a twin-guided arm may take (each keeps the schedule before the decision day)
TRIAL_ACTIONS = ("continue", "add_il1a_antibody", "add_caspase1_inhibitor")
#: parameters a clinician knows exactly at the decision (the twin's prior is conditioned on them)
KNOWN = ("BSA", "WT", "CRCL")


@dataclass(frozen=True)
class TwinPolicy:
    decision_day: float
    visit_days: tuple[float, ...]
    il1a_days: tuple[float, ...]
    actions: tuple[str, ...]
    particles: int
    moves: int
    objective: str
    constraint_max: float
    min_gain: float


def end_of_course(regs) -> float:
    """Day the last cycle of the arm's chemotherapy ends (the added drug runs to here)."""
    return max(r.start + r.cycles * r.cycle_length for r in regs)


def added_regimens(action: str, start: float, until: float) -> list:
    """What ``action`` adds to an arm from day ``start`` to day ``until``: the IL-1alpha antibody
    (bermekimab 7.5 mg/kg i.v. over 1 h every 2 weeks) or the caspase-1 inhibitor (belnacasan 900 mg
    orally three times a day), the schedules of the twin's forecasts."""
    from ..protocol.dosing import Regimen, parse_dose

    if action == "continue":
        return []
    span = max(until - start, 1.0)
    if action == "add_il1a_antibody":
        v, basis = parse_dose("7.5 mg/kg")
        return [Regimen(drug="bermekimab", dose=v, basis=basis, route="iv", infusion=1 / 24, days=(1,),
                        cycle_length=14.0, cycles=max(1, math.ceil(span / 14.0)), start=start,
                        label="bermekimab (twin)")]
    if action == "add_caspase1_inhibitor":
        v, basis = parse_dose("900 mg")
        return [Regimen(drug="belnacasan", dose=v, basis=basis, route="oral", days=(1,), cycle_length=1.0,
                        cycles=max(1, math.ceil(span)), start=start, times_of_day=(0.0, 1 / 3, 2 / 3),
                        label="belnacasan (twin)")]
    raise ScenarioError(f"twin-guided arms take one of {', '.join(TRIAL_ACTIONS)}; got '{action}'")


def base_twin(trial, arm: str, policy: TwinPolicy):
    """The arm's twin template: its prior is built once and conditioned per patient."""
    from .patient_record import PatientRecord, PatientSpec
    from .twin import Twin, TwinOptions

    spec = trial.spec
    ps = PatientSpec.model_construct(patient=f"{spec.name}: {arm}", description="", model=spec.model,
                                     species=spec.species, indication=spec.indication, covariates={},
                                     regimens=list(spec.arms[arm]), given=None, now=None, visits=[])
    rec = PatientRecord(ps, trial.source, trial.sha256, trial.model, list(trial.arms[arm]), None,
                        policy.decision_day, [])
    opts = TwinOptions(particles=policy.particles, moves=policy.moves, seed=0, objective=policy.objective,
                       constraint_max=policy.constraint_max, actions=policy.actions, min_gain=policy.min_gain)
    return Twin(rec, opts)


def _given_events(res, i: int, now: float) -> list:
    """The doses patient ``i`` actually received before ``now`` (rule holds/reductions/delays applied)."""
    from ..protocol.dosing import Regimen

    tab = res.doses
    out = []
    for d in range(tab.n):
        t = res.dose_times[i, d]
        if not (np.isfinite(t) and t < now - 1e-9 and res.dose_status[i, d] == 1):
            continue
        r = tab.regimens[tab.regimen[d]]
        out.append(Regimen(drug=r.drug, dose=r.dose * float(res.dose_factors[i, d]), basis=r.basis, route=r.route,
                           infusion=(float(tab.duration[d]) if tab.duration[d] > 0 else None), days=(1,),
                           cycle_length=1.0, cycles=1, start=float(t), label=r.label))
    return out


def decide(st, base, P: np.ndarray, names: list[str], regs, ids, policy: TwinPolicy) -> pd.DataFrame:
    """Run the twin for patients ``ids`` (rows of ``P``); one row per patient: the recommended action,
    P(IL-1-driven host response), the expected objective of the action and of continuing."""
    from dataclasses import replace

    from ..engine.simulate import simulate
    from .endpoints import sum_of_diameters
    from .twin import simulated_measurements

    now = policy.decision_day
    days = sorted(set(policy.visit_days) | set(policy.il1a_days) | {0.0, now})
    res = simulate(st.cm, P, regs, np.array(days, dtype=float), ["ANC", "lymph", "gcsf", "il1a_pgml",
                                                                  "tumour_total"], options=st.opts)
    sld = sum_of_diameters(res.output("tumour_total"))
    rows = []
    for i, pid in enumerate(np.asarray(ids)):
        row = {"patient": int(pid), "twin_action": "continue", "twin_p_il1_driven": np.nan,
               "twin_objective_action": np.nan, "twin_objective_continue": np.nan}
        if res.status[i] != 0:  # the true course failed: nothing to measure, the protocol continues
            rows.append(row)
            continue
        rng = np.random.default_rng([int(st.seed), 12, int(pid)])
        obs = simulated_measurements(res, i, days, policy.visit_days, policy.il1a_days, sld, rng)
        rec = replace(base.rec, observations=obs, now=now)
        known = {k: float(P[i, names.index(k)]) for k in KNOWN if k in names}
        tw = base.for_patient(rec, known, seed=int(rng.integers(2 ** 31)), given_events=_given_events(res, i, now))
        X, w = tw._filter()
        fc, _ = tw._forecasts(X, w, False)
        r = tw._recommend(fc)
        by = r["by_action"]
        row.update(twin_action=r["action"], twin_p_il1_driven=float(np.sum(w * tw._il1_high(tw.params(X)))),
                   twin_objective_action=by[r["action"]]["objective"],
                   twin_objective_continue=by["continue"]["objective"])
        rows.append(row)
    return pd.DataFrame(rows)


class GroupedOutputs:
    """Time courses of a chunk assembled from its action groups (patients in chunk order)."""

    def __init__(self, n: int, t: int, outputs):
        self.values = {o: np.full((n, t), np.nan) for o in outputs}

    def output(self, name: str) -> np.ndarray:
        return self.values[name]
