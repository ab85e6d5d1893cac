"""Dose-modification rules evaluated on the simulated state at each scheduled dose.

A rule is data, so the engine can evaluate it inside its compiled loop: an output of the model
(e.g. ``ANC``) is compared with descending thresholds; the first threshold met gives the dose
factor, and values below all thresholds give ``below_factor`` (0 = hold the dose: a held dose
within a cycle is omitted, as the label says "hold").  A rule may also carry a cycle-start
threshold (``cycle_start_below``): at the first dose of a cycle, a count below it delays the whole
cycle, and the rest of that regimen, by ``delay_days`` and re-checks then (the label's "delay
treatment cycle"); after ``max_delays`` consecutive delays the regimen is discontinued.  A rule may have hysteresis
(``resume_at``, adaptive therapy): once the output falls below the lowest threshold the regimen pauses
(every scheduled dose held) until the output is back at or above ``resume_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ProtocolError


@dataclass(frozen=True)
class ThresholdRule:
    name: str
    output: str
    unit: str
    thresholds: tuple[float, ...]  # descending
    factors: tuple[float, ...]  # factor when output >= thresholds[i]
    below_factor: float
    description: str
    source: str
    #: at a dose that opens a cycle: output below this -> delay the cycle (None = never delay)
    cycle_start_below: float | None = None
    delay_days: float = 7.0  # recheck interval of a delayed cycle (days)
    max_delays: int = 3  # consecutive delays before the regimen is discontinued
    delay_source: str = ""
    #: hysteresis: a regimen paused by this rule resumes only when the output is >= resume_at (None = none)
    resume_at: float | None = None

    def __post_init__(self):
        if len(self.thresholds) != len(self.factors) or not self.thresholds:
            raise ProtocolError(f"rule '{self.name}': give one factor per threshold")
        if list(self.thresholds) != sorted(self.thresholds, reverse=True):
            raise ProtocolError(f"rule '{self.name}': thresholds must be in descending order")
        if any(f < 0 for f in (*self.factors, self.below_factor)):
            raise ProtocolError(f"rule '{self.name}': dose factors must be >= 0")
        if self.cycle_start_below is not None and not (self.delay_days > 0 and self.max_delays >= 0):
            raise ProtocolError(f"rule '{self.name}': a cycle delay needs delay_days > 0 and max_delays >= 0")
        if self.resume_at is not None and not self.resume_at >= self.thresholds[-1]:
            raise ProtocolError(f"rule '{self.name}': resume_at ({self.resume_at}) must be >= the lowest threshold "
                                f"({self.thresholds[-1]}), or the regimen could never pause and resume")

    def factor(self, value: float) -> float:
        for th, f in zip(self.thresholds, self.factors):
            if value >= th:
                return f
        return self.below_factor


RULES: dict[str, ThresholdRule] = {
    "gemcitabine_label_anc": ThresholdRule(
        name="gemcitabine_label_anc",
        output="ANC",
        unit="1e9/L",
        thresholds=(1.0, 0.5),
        factors=(1.0, 0.75),
        below_factor=0.0,
        description="Gemcitabine label, pancreatic/NSCLC: ANC >= 1000/uL full dose; 500-999/uL 75%; "
        "< 500/uL hold (platelet criteria not modelled)",
        source="Gemcitabine USPI dose modification (pancreatic/NSCLC table), as paraphrased by drugs.com "
        "gemcitabine dosage and droracle.ai (notes/research: verbatim label table not retrieved)",
    ),
    "gemcitabine_label_anc_day8_ovarian": ThresholdRule(
        name="gemcitabine_label_anc_day8_ovarian",
        output="ANC",
        unit="1e9/L",
        thresholds=(1.5, 1.0),
        factors=(1.0, 0.5),
        below_factor=0.0,
        description="Gemcitabine label, ovarian day 8: ANC >= 1500/uL full; 1000-1499/uL 50%; < 1000/uL hold",
        source="Gemcitabine USPI section 2 (pfizermedicalinformation.com/gemcitabine-0/dosage-admin)",
    ),
}
#: the pancreatic within-cycle table plus the label's day-1 rule: a cycle is delayed, not skipped
RULES["gemcitabine_label_anc_delay"] = replace(
    RULES["gemcitabine_label_anc"],
    name="gemcitabine_label_anc_delay",
    description="Gemcitabine label within a cycle (ANC >= 1000/uL full dose; 500-999/uL 75%; < 500/uL hold, "
    "the dose omitted) and at the start of a cycle ANC < 1500/uL: delay the cycle one week and re-check; "
    "after 3 consecutive delays the patient comes off treatment (platelet criteria not modelled)",
    cycle_start_below=1.5,
    delay_days=7.0,
    max_delays=3,
    delay_source="Day-1 criterion 'ANC < 1500/uL: delay treatment cycle': gemcitabine USPI section 2 "
    "(pfizermedicalinformation.com/gemcitabine-0/dosage-admin, ovarian/breast tables) and the "
    "nab-paclitaxel USPI pancreatic table (gemcitabine + nab-paclitaxel, MPACT: 'Day 1 ANC < 1500: delay "
    "doses until recovery'). Weekly re-check and discontinuation after 3 weeks of delay: assumption "
    "(common protocol practice; neither label gives a limit)",
)


#: adaptive blockade: a scheduled blocker dose is given only while NLR is >= 30% above the patient's
#: pre-treatment value at the time it falls due (monitoring-driven, issue 12); otherwise it is skipped
RULES["give_if_nlr_rise_30pct"] = ThresholdRule(
    name="give_if_nlr_rise_30pct",
    output="nlr_rel",
    unit="dimensionless",
    thresholds=(1.3,),
    factors=(1.0,),
    below_factor=0.0,
    description="Adaptive (monitoring-driven) blockade: each scheduled dose of the blocker is given only if NLR has "
    "risen >= 30% above the patient's pre-treatment value when it falls due; otherwise it is skipped",
    source="protocol choice (issue 12 example: 'start bermekimab when NLR rises > 30% above baseline'); NLR rise "
    "after chemotherapy is prognostic in PDAC (PubMed 25155401; Sci Rep 2017 s41598-017-00859-5)",
)


#: adaptive chemotherapy (Zhang 2017): treatment pauses once the tumour burden has fallen by half and resumes
#: when it is back at its pre-treatment size
RULES["adaptive_pause_at_half_burden"] = ThresholdRule(
    name="adaptive_pause_at_half_burden",
    output="tumour_rel",
    unit="dimensionless",
    thresholds=(0.5,),
    factors=(1.0,),
    below_factor=0.0,
    resume_at=1.0,
    description="Adaptive therapy: a scheduled dose is given while the tumour burden is >= 50% of its pre-treatment "
    "value; once it has fallen below 50% the regimen pauses (doses held) until the burden is back at its "
    "pre-treatment value, then resumes. Evaluated on the true burden at each scheduled dose (monthly PSA played "
    "this role in the prostate trial; here the burden is the modelled tumour volume, not a scan)",
    source="Zhang J, Cunningham JJ, Brown JS, Gatenby RA. Nat Commun 2017;8:1816 (abiraterone held when PSA fell "
    "below 50% of the pre-treatment value, resumed when it returned to it)",
)


def get_rule(name: str) -> ThresholdRule:
    if name not in RULES:
        raise ProtocolError(f"unknown dose-modification rule '{name}'; available: {', '.join(sorted(RULES))}")
    return RULES[name]
