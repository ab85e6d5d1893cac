"""Doses and regimens, kept outside the model (as in mrgsolve/NONMEM event records).

Internal units: time in days, amounts in mg.  A :class:`Regimen` expands into :class:`Dose`
records for given covariates: mg/m2 doses are multiplied by body-surface area, mg/kg doses by
weight.  Routes: ``iv`` (bolus, or zero-order infusion when ``infusion`` is given), ``ip``, ``sc``,
``oral`` (first-order absorption from the drug's depot).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ProtocolError, UnitError
from ..units import conversion_factor, parse_quantity

ROUTES = ("iv", "ip", "sc", "oral")
DOSE_BASES = ("flat", "bsa", "weight")


def parse_dose(text: str | float) -> tuple[float, str]:
    """'1000 mg/m2' -> (1000.0, 'bsa'); '120 mg/kg' -> (120.0, 'weight'); '50 mg' -> (50.0, 'flat').

    The returned value is in mg (per m2, per kg, or flat)."""
    value, unit = parse_quantity(text)
    unit = unit.replace(" ", "")
    num, _, den = unit.partition("/")
    try:
        f = conversion_factor(num, "mg")
    except UnitError:
        raise UnitError(f"dose '{text}': amount unit '{num}' is not a mass; use mg, g, ug") from None
    if not den:
        return value * f, "flat"
    try:
        return value * f / conversion_factor(den, "m**2"), "bsa"
    except UnitError:
        pass
    try:
        return value * f / conversion_factor(den, "kg"), "weight"
    except UnitError:
        raise UnitError(
            f"dose '{text}': per-unit '{den}' is neither an area (m2) nor a body mass (kg); "
            "write e.g. '1000 mg/m2', '120 mg/kg' or '50 mg'"
        ) from None


@dataclass(frozen=True)
class Regimen:
    """A repeated schedule of one drug.

    ``days``: 1-based treatment days within each cycle (day 1 = cycle start).  ``start``: offset of
    the first cycle from time 0 (days), so drugs can be sequenced.  ``infusion``: duration in days
    for zero-order i.v. infusion (None = bolus / depot).
    """

    drug: str
    dose: float  # mg, mg/m2 or mg/kg according to basis
    basis: str
    route: str = "iv"
    infusion: float | None = None
    days: tuple[int, ...] = (1,)
    cycle_length: float = 21.0
    cycles: int = 1
    start: float = 0.0
    rule: str | None = None
    label: str = ""

    def __post_init__(self):
        if self.basis not in DOSE_BASES:
            raise ProtocolError(f"regimen '{self.drug}': dose basis '{self.basis}' not one of {DOSE_BASES}")
        if not np.isfinite(self.dose) or self.dose < 0:
            raise ProtocolError(f"regimen '{self.drug}': dose must be a number >= 0, got {self.dose}")
        if self.route not in ROUTES:
            raise ProtocolError(f"regimen '{self.drug}': route '{self.route}' not one of {', '.join(ROUTES)}")
        if self.infusion is not None:
            if self.route != "iv":
                raise ProtocolError(f"regimen '{self.drug}': an infusion duration needs route 'iv', not '{self.route}'")
            if not self.infusion > 0:
                raise ProtocolError(f"regimen '{self.drug}': infusion duration must be > 0")
        if self.cycles < 1:
            raise ProtocolError(f"regimen '{self.drug}': cycles must be >= 1, got {self.cycles}")
        if not self.cycle_length > 0:
            raise ProtocolError(f"regimen '{self.drug}': cycle length must be > 0")
        if not self.days:
            raise ProtocolError(f"regimen '{self.drug}': give at least one treatment day")
        d = list(self.days)
        if any(int(x) != x or x < 1 for x in d):
            raise ProtocolError(f"regimen '{self.drug}': treatment days are whole numbers >= 1 (day 1 = cycle start), got {d}")
        if d != sorted(set(d)):
            raise ProtocolError(f"regimen '{self.drug}': treatment days must be strictly increasing, got {d}")
        if d[-1] - 1 >= self.cycle_length:
            raise ProtocolError(
                f"regimen '{self.drug}': day {d[-1]} does not fit in a {self.cycle_length:g}-day cycle; "
                "lengthen the cycle or drop the day"
            )
        if self.start < 0:
            raise ProtocolError(f"regimen '{self.drug}': start offset must be >= 0, got {self.start}")
        if self.infusion is not None:
            times = self.nominal_times()
            gaps = np.diff(times)
            if gaps.size and self.infusion > gaps.min() + 1e-12:
                raise ProtocolError(
                    f"regimen '{self.drug}': a {self.infusion * 24:g}-h infusion overlaps the next dose "
                    f"({gaps.min():g} days later); shorten the infusion or space the doses"
                )

    def nominal_times(self) -> np.ndarray:
        per_cycle = np.array(self.days, dtype=float) - 1.0
        return np.concatenate([self.start + c * self.cycle_length + per_cycle for c in range(self.cycles)])

    def amounts(self, bsa: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Amount (mg) per patient for one administration."""
        if self.basis == "flat":
            return np.full(np.shape(bsa), self.dose, dtype=float)
        if self.basis == "bsa":
            return self.dose * np.asarray(bsa, dtype=float)
        return self.dose * np.asarray(weight, dtype=float)


@dataclass
class DoseTable:
    """All administrations of an arm in time order (same schedule for every patient)."""

    time: np.ndarray  # (D,)
    drug: list[str]
    route: list[str]
    duration: np.ndarray  # (D,) 0 = bolus
    regimen: np.ndarray  # (D,) index into regimens
    rule: list[str | None]
    cycle: np.ndarray  # (D,) 1-based
    regimens: list[Regimen] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.time)


def dose_table(regimens: list[Regimen]) -> DoseTable:
    rows = []
    for ri, r in enumerate(regimens):
        per_cycle = len(r.days)
        for k, t in enumerate(r.nominal_times()):
            rows.append((float(t), ri, k // per_cycle + 1))
    rows.sort(key=lambda x: (x[0], x[1]))
    return DoseTable(
        time=np.array([x[0] for x in rows], dtype=float),
        drug=[regimens[x[1]].drug for x in rows],
        route=[regimens[x[1]].route for x in rows],
        duration=np.array([regimens[x[1]].infusion or 0.0 for x in rows], dtype=float),
        regimen=np.array([x[1] for x in rows], dtype=np.int64),
        rule=[regimens[x[1]].rule for x in rows],
        cycle=np.array([x[2] for x in rows], dtype=np.int64),
        regimens=list(regimens),
    )
