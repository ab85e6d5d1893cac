"""Doses and regimens, kept outside the model (as in mrgsolve/NONMEM event records).

Internal units: time in days, amounts in mg.  A :class:`Regimen` expands into :class:`Dose`
records for given covariates: mg/m2 doses are multiplied by body-surface area, mg/kg doses by
weight.  Routes: ``iv`` (bolus, or zero-order infusion when ``infusion`` is given), ``ip``, ``sc``,
``oral`` (first-order absorption from the drug's depot).

Sub-daily schedules (all times in days): each *treatment day* ``d`` of cycle ``c`` has the base
time ``start + c * cycle_length + (d - 1)``.  At most one of three spellings adds doses to it:

* ``times_of_day=(o1, o2, ...)``: doses at base + each offset; offsets in [0, 1] day inclusive,
  strictly increasing (8 h, 16 h, 24 h -> 1/3, 2/3, 1).  Default (None) is ``(0,)``.
* ``every=e, doses=n``: the same as ``times_of_day=(0, e, 2e, ..., (n-1)e)``; ``(n-1)e`` may
  exceed one day (see the block rule below).
* ``ii=i, addl=k`` (NONMEM): the dose at base is followed by ``k`` more at ``i`` spacing, i.e.
  offsets ``0, i, ..., k*i`` from each treatment day.  ``days=[1], cycle_length=28 day, ii=8 h,
  addl=83`` is 84 doses three times daily for 28 days per cycle.

Block rule: the doses of one treatment day (its *block*) must all come strictly before the first
dose of the next treatment day (also across cycles), so blocks never interleave or coincide.  A
dose belongs to the cycle of its treatment day (``DoseTable.cycle``), even when an ``addl`` chain
runs past the cycle's nominal end.  At most :data:`MAX_ADMINISTRATIONS` per regimen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ProtocolError, UnitError
from ..units import conversion_factor, parse_quantity

ROUTES = ("iv", "ip", "sc", "oral")
DOSE_BASES = ("flat", "bsa", "weight")
MAX_ADMINISTRATIONS = 20_000  # per regimen (and per patient in an event table)
_TOL = 1e-9  # days (~0.1 ms): two doses closer than this are the same dose


def _protocol_error(msg: str, field: str | None = None) -> ProtocolError:
    """A ProtocolError that remembers which Regimen field is at fault (scenario code names it)."""
    exc = ProtocolError(msg)
    exc.field = field
    return exc


def _hours(x) -> str:
    return f"{x * 24:g} h" if _is_num(x) else repr(x)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


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
    times_of_day: tuple[float, ...] | None = None  # day fractions in [0, 1]; None = (0,)
    every: float | None = None  # days between doses within a treatment day (with ``doses``)
    doses: int | None = None  # doses per treatment day (with ``every``)
    ii: float | None = None  # NONMEM interdose interval (days) for the ``addl`` doses
    addl: int | None = None  # NONMEM number of additional doses after each treatment day's dose

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
        self._check_sub_daily()
        if self.infusion is not None:
            times = self.nominal_times()
            gaps = np.diff(times)
            if gaps.size and self.infusion > gaps.min() + 1e-12:
                raise ProtocolError(
                    f"regimen '{self.drug}': a {self.infusion * 24:g}-h infusion overlaps the next dose "
                    f"({gaps.min():g} days later); shorten the infusion or space the doses"
                )

    def _check_sub_daily(self) -> None:
        who = f"regimen '{self.drug}'"
        tod, every, doses, ii, addl = self.times_of_day, self.every, self.doses, self.ii, self.addl
        given = [n for n, v in (("times_of_day", tod), ("every", every), ("doses", doses), ("ii", ii),
                                ("addl", addl)) if v is not None]
        spellings = {"times_of_day" if n == "times_of_day" else "every+doses" if n in ("every", "doses")
                     else "ii+addl" for n in given}
        if len(spellings) > 1:
            order = ("times_of_day", "every+doses", "ii+addl")
            later = [sp for sp in order if sp in spellings][1]
            second = next(n for n in given if n in later.split("+"))
            raise _protocol_error(
                f"{who}: give only one of times_of_day, every+doses, ii+addl (they all place the doses of a "
                f"treatment day), got {', '.join(given)}", second)
        if tod is not None:
            if isinstance(tod, (str, bytes)) or not hasattr(tod, "__len__"):
                raise _protocol_error(f"{who}: times_of_day is a list of day fractions, got {tod!r}", "times_of_day")
            tod = tuple(tod)
            if not tod:
                raise _protocol_error(f"{who}: times_of_day needs at least one time, e.g. [0 h, 8 h, 16 h]",
                                      "times_of_day")
            clean = []
            for k, o in enumerate(tod):
                if not _is_num(o) or not np.isfinite(o) or o < -_TOL or o > 1 + _TOL:
                    raise _protocol_error(
                        f"{who}: times_of_day[{k}] = {_hours(o)} is outside one day; allowed: 0 to 24 h "
                        "(0 to 1 day) after the start of the treatment day", f"times_of_day[{k}]")
                clean.append(min(max(float(o), 0.0), 1.0))
            for k in range(1, len(clean)):
                if clean[k] <= clean[k - 1] + _TOL:
                    raise _protocol_error(
                        f"{who}: times_of_day must be strictly increasing, but [{k}] = {clean[k] * 24:g} h "
                        f"does not come after [{k - 1}] = {clean[k - 1] * 24:g} h", f"times_of_day[{k}]")
            object.__setattr__(self, "times_of_day", tuple(clean))
        if (every is None) != (doses is None):
            missing = "doses" if doses is None else "every"
            raise _protocol_error(f"{who}: 'every' and 'doses' go together (e.g. every 8 h, doses 3); "
                                  f"'{missing}' is missing", missing)
        if every is not None:
            if not _is_num(every) or not (np.isfinite(every) and every > 0):
                raise _protocol_error(f"{who}: 'every' must be a time > 0, e.g. 8 h; got {every!r} days", "every")
            if not _is_int(doses) or doses < 1:
                raise _protocol_error(f"{who}: 'doses' must be a whole number >= 1, got {doses!r}", "doses")
        if addl is not None and (not _is_int(addl) or addl < 0):
            raise _protocol_error(f"{who}: 'addl' must be a whole number >= 0, got {addl!r}", "addl")
        if ii is not None and (not _is_num(ii) or not (np.isfinite(ii) and ii > 0)):
            raise _protocol_error(f"{who}: 'ii' (interdose interval) must be a time > 0, e.g. 8 h; got {ii!r} days",
                                  "ii")
        if addl and ii is None:
            raise _protocol_error(f"{who}: addl = {addl} additional doses need 'ii' (the interval between them, "
                                  "e.g. 8 h)", "ii")
        if ii is not None and not addl:
            raise _protocol_error(f"{who}: 'ii' has no effect without 'addl' >= 1 (the number of additional "
                                  "doses); give addl or drop ii", "addl")
        per_day = (len(self.times_of_day) if self.times_of_day is not None else doses if every is not None
                   else addl + 1 if addl else 1)  # counted before any array is made (addl may be huge)
        n = len(self.days) * self.cycles * per_day
        if n > MAX_ADMINISTRATIONS:
            raise _protocol_error(
                f"{who}: {n} administrations ({self.cycles} cycle(s) x {len(self.days)} treatment day(s) x "
                f"{per_day} per treatment day); at most {MAX_ADMINISTRATIONS} per regimen are allowed",
                self._schedule_field())
        off = self._offsets_unchecked()
        bases = self._bases()
        span = off[-1] - off[0]
        gaps = np.diff(bases)
        if gaps.size and span >= gaps.min() - _TOL:
            k = int(np.argmin(gaps))
            raise _protocol_error(
                f"{who}: the last dose of the treatment day starting at {bases[k]:g} days comes at "
                f"{bases[k] + off[-1]:g} days ({off[-1] * 24:g} h after its start), not before the next treatment "
                f"day's first dose at {bases[k + 1] + off[0]:g} days; a treatment day's doses must end before the "
                "next one's begin: "
                "use fewer doses, a shorter interval, or fewer treatment days", self._schedule_field())

    def _schedule_field(self) -> str:
        if self.times_of_day is not None:
            return "times_of_day"
        if self.every is not None:
            return "doses"
        if self.addl:
            return "addl"
        return "days"

    def _offsets_unchecked(self) -> np.ndarray:
        if self.times_of_day is not None:
            return np.asarray(self.times_of_day, dtype=float)
        if self.every is not None:
            return self.every * np.arange(self.doses, dtype=float)
        if self.addl:
            return self.ii * np.arange(self.addl + 1, dtype=float)
        return np.zeros(1)

    def offsets(self) -> np.ndarray:
        """Dose times (days) relative to the start of each treatment day, increasing."""
        return self._offsets_unchecked()

    def _bases(self) -> np.ndarray:
        per_cycle = np.array(self.days, dtype=float) - 1.0
        return np.concatenate([self.start + c * self.cycle_length + per_cycle for c in range(self.cycles)])

    def schedule(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, cycles): every administration time (days, increasing) and its 1-based cycle."""
        off = self.offsets()
        times = (self._bases()[:, None] + off[None, :]).ravel()
        cycles = np.repeat(np.arange(1, self.cycles + 1), len(self.days) * len(off))
        return times, cycles

    def nominal_times(self) -> np.ndarray:
        return self.schedule()[0]

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
        times, cycles = r.schedule()
        for t, c in zip(times, cycles):
            rows.append((float(t), ri, int(c)))
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
