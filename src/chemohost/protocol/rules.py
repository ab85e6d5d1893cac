"""Dose-modification rules evaluated on the simulated state at each scheduled dose.

A rule is data, so the engine can evaluate it inside its compiled loop: an output of the model
(e.g. ``ANC``) is compared with descending thresholds; the first threshold met gives the dose
factor, and values below all thresholds give ``below_factor`` (0 = hold the dose; held doses are
omitted, not delayed).
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def __post_init__(self):
        if len(self.thresholds) != len(self.factors) or not self.thresholds:
            raise ProtocolError(f"rule '{self.name}': give one factor per threshold")
        if list(self.thresholds) != sorted(self.thresholds, reverse=True):
            raise ProtocolError(f"rule '{self.name}': thresholds must be in descending order")
        if any(f < 0 for f in (*self.factors, self.below_factor)):
            raise ProtocolError(f"rule '{self.name}': dose factors must be >= 0")

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


def get_rule(name: str) -> ThresholdRule:
    if name not in RULES:
        raise ProtocolError(f"unknown dose-modification rule '{name}'; available: {', '.join(sorted(RULES))}")
    return RULES[name]
