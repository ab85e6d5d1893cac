"""Named models: compositions of mechanism modules."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ModelError
from .core import Model, compose
from .mechanisms import (cisplatin_pk, covariates, cytokines, death_modes, docetaxel_pk, gemcitabine_pk,
                         heterogeneity, immune, marrow, metastasis)
from .mechanisms.friberg import friberg
from .mechanisms.simeoni import simeoni


def _gemcitabine_pk() -> Model:
    return compose("gemcitabine_pk", "Gemcitabine, dFdU and dFdCTP PK (Jiang 2008)",
                   [covariates.MODULE, gemcitabine_pk.MODULE])


def _cisplatin_pk() -> Model:
    return compose("cisplatin_pk", "Cisplatin unbound and bound platinum PK (Urien 2004)",
                   [covariates.MODULE, cisplatin_pk.MODULE])


def _chemo_core() -> Model:
    drivers = {"gem": "dfdctp", "cis": "C_cis_uM"}
    units = {"gem": "umol/L", "cis": "umol/L"}
    return compose(
        "chemo_core",
        "Gemcitabine + cisplatin PK, Friberg neutrophils, Simeoni tumour (foundation model)",
        [covariates.MODULE, gemcitabine_pk.MODULE, cisplatin_pk.MODULE,
         friberg("neut", drivers, units, "neutrophils", circ_output="ANC"),
         simeoni("tumour", drivers, units)],
    )


def _friberg_docetaxel() -> Model:
    return compose(
        "friberg_docetaxel", "Friberg 2002 docetaxel myelosuppression driven by Bruno 1996 PK",
        [docetaxel_pk.MODULE, friberg("dtxn", {"dtx": "C_dtx_uM"}, {"dtx": "umol/L"}, "neutrophils",
                                      circ_output="ANC")],
    )


def _host_response() -> Model:
    from .mechanisms import interventions

    drivers = {"gem": "dfdctp", "cis": "C_cis_uM"}
    units = {"gem": "umol/L", "cis": "umol/L"}
    return compose(
        "host_response",
        "Chemotherapy host response: PK, death modes, IL-1/IL-6/G-CSF/PGE2, marrow skew, immunity, "
        "stem-like repopulation, metastasis, interventions",
        [covariates.MODULE, gemcitabine_pk.MODULE, cisplatin_pk.MODULE, *interventions.ALL,
         simeoni("tumour", drivers, units), death_modes.MODULE, cytokines.MODULE, marrow.MODULE,
         immune.MODULE, heterogeneity.MODULE, metastasis.MODULE],
    )


MODELS: dict[str, Callable[[], Model]] = {
    "gemcitabine_pk": _gemcitabine_pk,
    "cisplatin_pk": _cisplatin_pk,
    "chemo_core": _chemo_core,
    "friberg_docetaxel": _friberg_docetaxel,
    "host_response": _host_response,
}

_cache: dict[str, Model] = {}


def get_model(name: str) -> Model:
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}'; available: {', '.join(sorted(MODELS))}")
    if name not in _cache:
        _cache[name] = MODELS[name]()
    return _cache[name]


def register(name: str, factory: Callable[[], Model]) -> None:
    MODELS[name] = factory
    _cache.pop(name, None)
