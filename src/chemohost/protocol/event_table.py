"""Per-patient dose records (an event table, as in NONMEM/mrgsolve data sets), kept engine-free.

File format: UTF-8 CSV with a header row.  Every quantity carries its unit **in the value** and is
read by the strict quantity parser (no unit columns, no header comments, no bare numbers):

=========  ========  =====================================================================
column     required  value
=========  ========  =====================================================================
patient    yes       whole number >= 0 (the patient's id)
time       yes       time after time 0 with a unit: ``0 h``, ``8 h``, ``2.5 day``, ``1 week``
drug       yes       a drug of the model (checked against the names given to the reader)
amount     yes       ``900 mg``, ``1 g``, ``1000 mg/m2`` (x BSA later), ``7.5 mg/kg`` (x weight)
route      yes       one of iv, ip, sc, oral
duration   no        iv infusion length, e.g. ``30 min``; empty = bolus
rate       no        iv infusion rate with the amount's basis: ``2000 mg/h``, ``2000 mg/m2/h``;
                     duration = amount / rate; empty = bolus
=========  ========  =====================================================================

Example::

    patient,time,drug,amount,route,duration
    0,0 h,gemcitabine,1000 mg/m2,iv,30 min
    0,0 h,belnacasan,900 mg,oral,
    0,8 h,belnacasan,900 mg,oral,
    1,1 day,gemcitabine,1000 mg/m2,iv,30 min

Rows may come in any order; each patient's doses are sorted by time (ties keep file order).
Errors are :class:`~chemohost.errors.ProtocolError` naming the file, the row (1-based as in a
spreadsheet: the header is row 1), the column, the value given and what is allowed.

Internal units: time and duration in days; amounts in mg, mg/m2 or mg/kg according to ``basis``
(codes index :data:`~chemohost.protocol.dosing.DOSE_BASES`; use :meth:`PatientDoses.amounts_mg`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ChemohostError, ProtocolError
from ..units import conversion_factor, parse_quantity
from .dosing import DOSE_BASES, MAX_ADMINISTRATIONS, ROUTES, DoseTable, Regimen, dose_table, parse_dose

REQUIRED = ("patient", "time", "drug", "amount", "route")
OPTIONAL = ("duration", "rate")
COLUMNS = REQUIRED + OPTIONAL
MAX_ROWS = 2_000_000
_TOL = 1e-9  # days
_RATE_UNIT = {"flat": "mg/day", "bsa": "mg/m**2/day", "weight": "mg/kg/day"}
_RATE_EXAMPLE = {"flat": "2000 mg/h", "bsa": "2000 mg/m2/h", "weight": "10 mg/kg/h"}


class EventTableError(ProtocolError):
    """A bad event-table file or row; ``file``, ``row``, ``column`` say where."""

    def __init__(self, message: str, *, file: str, row: int | None = None, column: str | None = None):
        self.file, self.row, self.column = file, row, column
        where = [file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(", ".join(where) + ": " + message)


@dataclass
class PatientDoses:
    """Doses per patient, padded to D = max doses of any patient.

    Float arrays are NaN-padded, integer codes -1-padded; slot ``j < n_doses[i]`` is real.
    ``regimen``/``cycle``: index into ``regimens`` and 1-based cycle for doses expanded from
    regimens; -1 / 0 for doses read from an event table (no regimen, no cycle, no rule).
    """

    patients: np.ndarray  # (N,) int64 ids
    time: np.ndarray  # (N, D) days
    drug_index: np.ndarray  # (N, D) int64 index into ``drugs``
    route: np.ndarray  # (N, D) int64 index into ROUTES
    amount: np.ndarray  # (N, D) mg, mg/m2 or mg/kg per ``basis``
    basis: np.ndarray  # (N, D) int64 index into DOSE_BASES
    duration: np.ndarray  # (N, D) days, 0 = bolus / depot
    n_doses: np.ndarray  # (N,) int64
    drugs: list[str]
    regimen: np.ndarray = None  # (N, D) int64, -1 = event-table row
    cycle: np.ndarray = None  # (N, D) int64, 0 = no cycle
    regimens: list[Regimen] = field(default_factory=list)

    def __post_init__(self):
        shape = self.time.shape
        if self.regimen is None:
            self.regimen = np.full(shape, -1, dtype=np.int64)
        if self.cycle is None:
            self.cycle = np.zeros(shape, dtype=np.int64)

    @property
    def n_patients(self) -> int:
        return len(self.patients)

    @property
    def max_doses(self) -> int:
        return self.time.shape[1]

    def amounts_mg(self, bsa, weight) -> np.ndarray:
        """(N, D) mg per administration: mg/m2 x BSA (m2), mg/kg x weight (kg), flat as is; NaN pads."""
        bsa = np.asarray(bsa, dtype=float).reshape(-1, 1)
        weight = np.asarray(weight, dtype=float).reshape(-1, 1)
        f = np.where(self.basis == 1, bsa, np.where(self.basis == 2, weight, 1.0))
        return np.where(self.basis >= 0, self.amount * f, np.nan)

    def dose_table(self, i: int) -> DoseTable:
        """Patient ``i`` (row index, not id) as a :class:`DoseTable` (time order)."""
        n = int(self.n_doses[i])
        reg = self.regimen[i, :n].astype(np.int64)
        return DoseTable(
            time=self.time[i, :n].astype(float),
            drug=[self.drugs[k] for k in self.drug_index[i, :n]],
            route=[ROUTES[k] for k in self.route[i, :n]],
            duration=self.duration[i, :n].astype(float),
            regimen=reg,
            rule=[self.regimens[k].rule if k >= 0 else None for k in reg],
            cycle=self.cycle[i, :n].astype(np.int64),
            regimens=list(self.regimens),
        )

    def single_dose_regimens(self, i: int) -> list[Regimen]:
        """Patient ``i``'s doses as one single-administration :class:`Regimen` each (no rule), e.g. for
        exporters that read amount and basis from a dose's regimen; ``dose_table(...)`` of the result
        is the patient's schedule in time order."""
        out = []
        for j in range(int(self.n_doses[i])):
            dur = float(self.duration[i, j])
            out.append(Regimen(drug=self.drugs[self.drug_index[i, j]], dose=float(self.amount[i, j]),
                               basis=DOSE_BASES[self.basis[i, j]], route=ROUTES[self.route[i, j]],
                               infusion=dur if dur > 0 else None, days=(1,), cycle_length=1.0, cycles=1,
                               start=float(self.time[i, j]), label=f"event {j + 1}"))
        return out

    def to_dose_tables(self) -> list[DoseTable]:
        return [self.dose_table(i) for i in range(self.n_patients)]

    @classmethod
    def from_regimens(cls, regimens: Sequence[Regimen], n_patients: int,
                      drugs: Sequence[str] | None = None) -> "PatientDoses":
        """The shared schedule of ``regimens`` for ``n_patients`` patients (ids 0..n-1)."""
        if not isinstance(n_patients, (int, np.integer)) or isinstance(n_patients, bool) or n_patients < 1:
            raise ProtocolError(f"n_patients must be a whole number >= 1, got {n_patients!r}")
        table = dose_table(list(regimens))
        drugs = list(drugs) if drugs is not None else sorted({r.drug for r in regimens})
        missing = sorted({r.drug for r in regimens} - set(drugs))
        if missing:
            raise ProtocolError(f"regimen drug(s) {', '.join(missing)} not in the drug list {drugs}")
        regs = list(regimens)
        rows = lambda a, dt: np.tile(np.asarray(a, dtype=dt), (n_patients, 1))  # noqa: E731
        return cls(
            patients=np.arange(n_patients, dtype=np.int64),
            time=rows(table.time, float),
            drug_index=rows([drugs.index(d) for d in table.drug], np.int64),
            route=rows([ROUTES.index(r) for r in table.route], np.int64),
            amount=rows([regs[k].dose for k in table.regimen], float),
            basis=rows([DOSE_BASES.index(regs[k].basis) for k in table.regimen], np.int64),
            duration=rows(table.duration, float),
            n_doses=np.full(n_patients, table.n, dtype=np.int64),
            drugs=drugs,
            regimen=rows(table.regimen, np.int64),
            cycle=rows(table.cycle, np.int64),
            regimens=regs,
        )

    @classmethod
    def read_csv(cls, path: str | Path, drugs: Iterable[str]) -> "PatientDoses":
        return read_event_table(path, drugs)


_INT = re.compile(r"^\d+$")


def _time_days(text: str) -> float:
    value, unit = parse_quantity(text)  # strict: a unit is required
    return value * conversion_factor(unit, "day")


def read_event_table(path: str | Path, drugs: Iterable[str]) -> PatientDoses:
    """Read and validate an event-table CSV (format in the module docstring)."""
    file = str(path)
    drug_list = list(drugs) if isinstance(drugs, (list, tuple)) else sorted(drugs)
    if not drug_list:
        raise ProtocolError("read_event_table needs the model's drug names, got none")
    p = Path(path)
    if not p.is_file():
        raise EventTableError("event-table file not found (or not a file); give a CSV file", file=file)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EventTableError(f"cannot read the file ({exc}); it must be UTF-8 CSV text", file=file) from None
    try:
        records = list(csv.reader(text.splitlines(), strict=True))
    except csv.Error as exc:
        raise EventTableError(f"not valid CSV ({exc})", file=file) from None
    if not records or not any(c.strip() for c in records[0]):
        raise EventTableError(f"empty file; the first row must be the header: {', '.join(REQUIRED)}"
                              f" (optional: {', '.join(OPTIONAL)})", file=file, row=1)
    header = [c.strip() for c in records[0]]
    for k, name in enumerate(header):
        if name not in COLUMNS:
            raise EventTableError(
                f"unknown column {name!r}; allowed: {', '.join(COLUMNS)} (units go in the values, e.g. '8 h', "
                "'1000 mg/m2', so there are no unit columns)", file=file, row=1, column=name or f"#{k + 1}")
        if header.count(name) > 1:
            raise EventTableError(f"column {name!r} appears {header.count(name)} times; give it once",
                                  file=file, row=1, column=name)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise EventTableError(f"missing required column(s) {', '.join(missing)}; the header needs "
                              f"{', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})", file=file, row=1)
    if len(records) - 1 > MAX_ROWS:
        raise EventTableError(f"{len(records) - 1} rows; at most {MAX_ROWS} are allowed", file=file)

    per_patient: dict[int, list[tuple]] = {}
    for ri, rec in enumerate(records[1:], start=2):
        if not any(c.strip() for c in rec):
            continue  # blank line
        if len(rec) != len(header):
            raise EventTableError(f"{len(rec)} values but the header has {len(header)} columns "
                                  f"({', '.join(header)}); got {','.join(rec)!r}", file=file, row=ri)
        row = {h: v.strip() for h, v in zip(header, rec)}

        def bad(col: str, what: str, allowed: str):
            raise EventTableError(f"{what}: got {row.get(col, '')!r}; allowed: {allowed}", file=file, row=ri,
                                  column=col)

        def qty(col: str, conv, allowed: str):
            try:
                return conv(row[col])
            except ChemohostError as exc:
                bad(col, f"cannot read the value ({exc})", allowed)

        if not _INT.match(row["patient"]) or len(row["patient"]) > 18:
            bad("patient", "not a patient id", "a whole number >= 0 (at most 18 digits), e.g. 0, 1, 17")
        pid = int(row["patient"])
        t_allowed = "a time >= 0 with a unit, e.g. '0 h', '8 h', '2.5 day', '1 week'"
        t = qty("time", _time_days, t_allowed)
        if not (math.isfinite(t) and t >= 0):
            bad("time", "time must be finite and >= 0", t_allowed)
        if row["drug"] not in drug_list:
            bad("drug", "unknown drug", ", ".join(drug_list))
        a_allowed = "an amount >= 0 with a unit: mg, g, ug, or per body size mg/m2, mg/kg (e.g. '900 mg')"
        amount, basis = qty("amount", parse_dose, a_allowed)
        if not (math.isfinite(amount) and amount >= 0):
            bad("amount", "amount must be finite and >= 0", a_allowed)
        if row["route"] not in ROUTES:
            bad("route", "unknown route", ", ".join(ROUTES))
        dur_txt, rate_txt = row.get("duration", ""), row.get("rate", "")
        duration = 0.0
        if dur_txt and rate_txt:
            bad("rate", "give either 'duration' or 'rate' for an infusion, not both",
                "one of them (the other cell empty)")
        if (dur_txt or rate_txt) and row["route"] != "iv":
            col = "duration" if dur_txt else "rate"
            bad(col, f"an infusion needs route 'iv', not '{row['route']}'",
                "an empty cell for routes ip, sc, oral (bolus / depot)")
        if dur_txt:
            d_allowed = "an infusion length > 0 with a unit, e.g. '30 min', '1 h'; empty = bolus"
            duration = qty("duration", _time_days, d_allowed)
            if not (math.isfinite(duration) and duration > 0):
                bad("duration", "infusion duration must be finite and > 0", d_allowed)
        elif rate_txt:
            r_allowed = (f"a rate > 0 in the amount's basis ({basis}), e.g. '{_RATE_EXAMPLE[basis]}'; "
                         "empty = bolus")

            def rate_conv(txt):
                value, unit = parse_quantity(txt)
                return value * conversion_factor(unit, _RATE_UNIT[basis])

            rate = qty("rate", rate_conv, r_allowed)
            if not (math.isfinite(rate) and rate > 0):
                bad("rate", "infusion rate must be finite and > 0", r_allowed)
            duration = amount / rate
            if not math.isfinite(duration):
                bad("rate", "the rate gives an infinite infusion length", r_allowed)
        per_patient.setdefault(pid, []).append(
            (t, drug_list.index(row["drug"]), ROUTES.index(row["route"]), amount, DOSE_BASES.index(basis),
             duration, ri, row["time"]))

    if not per_patient:
        raise EventTableError("no dose rows after the header; give at least one dose", file=file)
    pids = sorted(per_patient)
    for pid in pids:
        rows = per_patient[pid]
        if len(rows) > MAX_ADMINISTRATIONS:
            raise EventTableError(f"patient {pid} has {len(rows)} doses; at most {MAX_ADMINISTRATIONS} per patient "
                                  "are allowed", file=file)
        rows.sort(key=lambda x: x[0])  # stable: ties keep file order
        last_end: dict[int, tuple[float, int]] = {}
        for t, di, _, _, _, dur, ri, t_txt in rows:
            if dur <= 0:
                continue
            prev = last_end.get(di)
            if prev is not None and t < prev[0] - _TOL:
                raise EventTableError(
                    f"patient {pid}: this {drug_list[di]} infusion starts at {t_txt!r} ({t:g} days), before the "
                    "infusion of "
                    f"row {prev[1]} ends at {prev[0]:g} days; allowed: infusions of one drug for one patient "
                    "must not overlap (start this one later or shorten the earlier one)",
                    file=file, row=ri, column="time")
            last_end[di] = (t + dur, ri)

    N, D = len(pids), max(len(per_patient[p]) for p in pids)
    time = np.full((N, D), np.nan)
    amount = np.full((N, D), np.nan)
    duration = np.full((N, D), np.nan)
    drug_index = np.full((N, D), -1, dtype=np.int64)
    route = np.full((N, D), -1, dtype=np.int64)
    basis = np.full((N, D), -1, dtype=np.int64)
    n_doses = np.zeros(N, dtype=np.int64)
    for i, pid in enumerate(pids):
        rows = per_patient[pid]
        n = len(rows)
        n_doses[i] = n
        time[i, :n] = [x[0] for x in rows]
        drug_index[i, :n] = [x[1] for x in rows]
        route[i, :n] = [x[2] for x in rows]
        amount[i, :n] = [x[3] for x in rows]
        basis[i, :n] = [x[4] for x in rows]
        duration[i, :n] = [x[5] for x in rows]
    return PatientDoses(patients=np.array(pids, dtype=np.int64), time=time, drug_index=drug_index, route=route,
                        amount=amount, basis=basis, duration=duration, n_doses=n_doses, drugs=drug_list,
                        regimen=np.full((N, D), -1, dtype=np.int64), cycle=np.zeros((N, D), dtype=np.int64))


__all__ = ["PatientDoses", "read_event_table", "EventTableError", "COLUMNS", "REQUIRED", "OPTIONAL"]
