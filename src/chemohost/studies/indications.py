"""Indication layers: disease-specific parameter values, variability and OS-link constants.

A drug's pharmacology and the host's marrow are the same in every patient population, but tumour
growth, tumour sensitivity and the baseline hazard of death are properties of the disease.  An
*indication* (``studies/data/indications.csv``) overrides those, with a unit and a source per row:

* model parameters (``name`` is a parameter of the trial's model): typical value (``value`` +
  ``unit``) and/or log-normal IIV (``cv_percent``; empty keeps the table's CV);
* OS-link constants (``name`` starts with ``os.``: ``os.median_os_months``, ``os.weibull_shape``,
  ``os.b_tsr``, ``os.b_base``, ``os.b_nlr``, ``os.sld_ref_mm``, ``os.nlr_ref``; see
  :class:`chemohost.studies.survival.OSLinkParams`).

A trial YAML picks one with ``indication: NAME``; its own ``parameters:`` still apply on top.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import ChemohostError
from ..model.params import strip_comments
from .survival import OSLinkParams

_COLUMNS = ["indication", "name", "value", "unit", "cv_percent", "source"]
_OS_FIELDS = {f.name for f in dataclasses.fields(OSLinkParams) if f.name != "sources"}


class IndicationError(ChemohostError):
    pass


@dataclass
class Indication:
    name: str
    parameters: dict[str, str] = field(default_factory=dict)  # model parameter -> "value unit"
    cvs: dict[str, float] = field(default_factory=dict)  # model parameter -> CV (fraction)
    os_link: OSLinkParams = field(default_factory=OSLinkParams)
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "parameters": dict(self.parameters),
                "cv_percent": {k: 100 * v for k, v in self.cvs.items()},
                "os_link": {k: getattr(self.os_link, k) for k in sorted(_OS_FIELDS)},
                "sources": dict(self.sources)}


def table_path() -> Path:
    return Path(str(resources.files("chemohost.studies") / "data" / "indications.csv"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(list(strip_comments(fh))))
    if rows and set(_COLUMNS) - set(rows[0]):
        raise IndicationError(f"{path}: missing columns {sorted(set(_COLUMNS) - set(rows[0]))}")
    return rows


def available(path: str | Path | None = None) -> list[str]:
    return sorted({r["indication"] for r in _rows(Path(path) if path else table_path())})


def load_indication(name: str, model_parameters, path: str | Path | None = None) -> Indication:
    """The indication ``name`` checked against ``model_parameters`` (names of the trial model)."""
    path = Path(path) if path else table_path()
    rows = [r for r in _rows(path) if r["indication"] == name]
    if not rows:
        raise IndicationError(f"unknown indication '{name}'; available: {', '.join(available(path))} "
                              f"(defined in {path.name})")
    ind = Indication(name)
    os_values = {}
    for i, r in enumerate(rows, start=1):
        key, where = r["name"].strip(), f"{path.name} ({name}, '{r['name']}')"
        if not r["source"].strip():
            raise IndicationError(f"{where}: no source; cite one or write 'calibrated: <target>'")
        ind.sources[key] = r["source"].strip()
        if key.startswith("os."):
            f = key[3:]
            if f not in _OS_FIELDS:
                raise IndicationError(f"{where}: unknown OS-link constant; allowed: "
                                      f"{', '.join('os.' + x for x in sorted(_OS_FIELDS))}")
            try:
                os_values[f] = float(r["value"])
            except ValueError:
                raise IndicationError(f"{where}: value must be a number, got {r['value']!r}") from None
            continue
        if key not in model_parameters:
            raise IndicationError(f"{where}: not a parameter of the trial's model")
        if r["value"].strip():
            ind.parameters[key] = f"{r['value'].strip()} {r['unit'].strip()}".strip()
        if r["cv_percent"].strip():
            try:
                ind.cvs[key] = float(r["cv_percent"]) / 100.0
            except ValueError:
                raise IndicationError(f"{where}: cv_percent must be a number, got {r['cv_percent']!r}") from None
    srcs = dict(OSLinkParams().sources)
    srcs.update({k[3:]: v for k, v in ind.sources.items() if k.startswith("os.")})
    ind.os_link = dataclasses.replace(OSLinkParams(), **os_values, sources=srcs)
    return ind
