"""Physiology and schedule guards: values a schema cannot judge without the model.

* **Covariates** (``patients.covariates`` of a scenario): a value outside hard physical limits (BSA
  <= 0 or > 4 m2, weight <= 0 or > 400 kg, ...) is rejected; a value outside the parameter table's
  plausible range for the species is accepted with a warning (a study may need an extreme patient).
* **Doses**: a single dose above the highest published dose of the drug (``protocol/data/
  dose_limits.csv``, with sources) is accepted with a warning; above 10x that it is rejected as a
  likely unit or typing error (``1000 kg/m2``).  Drugs without a row are not guarded.
* **Schedules**: a regimen whose first dose falls after the end of the simulation would leave its
  arm untreated without a word: rejected.

Every function returns ``(errors, warnings)``: lists of ``(field, message)``.
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .model.params import parameter_set, strip_comments

#: hard limits per (covariate, species), in the parameter's internal unit: outside them a value is
#: not a living patient or animal (the parameter table's bounds give the plausible range)
HARD_LIMITS = {
    ("BSA", "human"): (0.0, 4.0, "m2"), ("BSA", "mouse"): (0.0, 0.05, "m2"),
    ("WT", "human"): (0.0, 400.0, "kg"), ("WT", "mouse"): (0.0, 0.2, "kg"),
    ("CRCL", "human"): (0.0, 400.0, "mL/min"), ("CRCL", "mouse"): (0.0, 10.0, "mL/min"),
    ("AGE", "human"): (0.0, 120.0, "year"),
}
DOSE_FACTOR = 10.0  #: rejection threshold: this many times the highest published dose


@lru_cache(maxsize=1)
def dose_limits() -> dict[tuple[str, str], tuple[float, str, str]]:
    """``{(drug, species): (max_dose, unit, source)}`` from ``protocol/data/dose_limits.csv``."""
    path = Path(str(resources.files("chemohost.protocol") / "data" / "dose_limits.csv"))
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(list(strip_comments(fh))))
    return {(r["drug"], r["species"]): (float(r["max_dose"]), r["unit"], r["source"]) for r in rows}


def physiology_problems(model, species: str, covariates: dict) -> tuple[list, list]:
    """Covariate overrides (already parsed by :func:`chemohost.api.parameter_vector`) against hard
    limits (error) and the table's plausible range (warning)."""
    from .api import parameter_vector

    errors, warnings = [], []
    if not covariates:
        return errors, warnings
    ps = parameter_set(model, species)
    names, values, _ = parameter_vector(model, species, covariates, where="patients.covariates")
    for k in covariates:
        v = float(values[names.index(k)])
        fld = f"patients.covariates.{k}"
        lim = HARD_LIMITS.get((k, species))
        unit = ps[k].unit
        if lim is not None and not (lim[0] < v <= lim[1]):
            errors.append((fld, f"{v:g} {unit} is not possible for a {species} (allowed: > {lim[0]:g} and <= "
                                f"{lim[1]:g} {lim[2]}; plausible {ps[k].lower:g}-{ps[k].upper:g} {unit})"))
        elif not (ps[k].lower <= v <= ps[k].upper):
            warnings.append((fld, f"{v:g} {unit} lies outside the plausible range {ps[k].lower:g}-{ps[k].upper:g} "
                                  f"{unit} of the parameter table ({species})"))
    return errors, warnings


_BASIS_UNIT = {"bsa": "mg/m2", "weight": "mg/kg", "flat": "mg"}


def _typical_mg(dose: float, basis: str, model, species: str) -> float:
    """A dose in mg for the typical patient/animal of the species (basis 'bsa', 'weight' or 'flat')."""
    ps = parameter_set(model, species)
    if basis == "bsa":
        return dose * (ps["BSA"].value if "BSA" in ps else 1.8)
    if basis == "weight":
        return dose * (ps["WT"].value if "WT" in ps else 70.0)
    return dose


def schedule_problems(regimens, model, species: str, horizon_days: float, prefix: str,
                      horizon_field: str) -> tuple[list, list]:
    """Regimens (``protocol.dosing.Regimen``) of one arm: first dose after the horizon (error), doses
    above the drug's highest published dose (warning) or 10x it (error)."""
    errors, warnings = [], []
    limits = dose_limits()
    for i, r in enumerate(regimens):
        fld = f"{prefix}[{i}]"
        if r.start >= horizon_days:
            errors.append((f"{fld}.start", f"the first dose (day {r.start:g}) falls after the end of the simulation "
                                           f"({horizon_field} = {horizon_days:g} days): the arm would be untreated; "
                                           f"shorten 'start' or lengthen '{horizon_field}'"))
        lim = limits.get((r.drug, species))
        if lim is None or not math.isfinite(r.dose):
            continue
        max_dose, unit, source = lim
        basis = {"mg/m**2": "bsa", "mg/kg": "weight", "mg": "flat"}.get(unit.replace(" ", ""), "flat")
        given = _typical_mg(r.dose, r.basis, model, species)
        ceiling = _typical_mg(max_dose, basis, model, species)
        shown = f"{r.dose:.4g} {_BASIS_UNIT.get(r.basis, 'mg')}"
        if given > DOSE_FACTOR * ceiling:
            errors.append((f"{fld}.dose", f"{shown} of {r.drug} is {given / ceiling:.3g}x the highest "
                                          f"published single dose ({max_dose:g} {unit}: {source}); a dose above "
                                          f"{DOSE_FACTOR:g}x that is refused as a likely unit or typing error"))
        elif given > ceiling * (1 + 1e-9):
            warnings.append((f"{fld}.dose", f"{shown} of {r.drug} is above the highest published single "
                                            f"dose ({max_dose:g} {unit}: {source})"))
    return errors, warnings
