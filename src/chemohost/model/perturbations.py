"""Genetic perturbations (knockouts) and tumour-free hosts, as parameter overrides.

Expression parameters are 1 in wild type and 0 in a knockout; a tumour-free host has no tumour
(initial tumour and stem-like cells 0)."""

from __future__ import annotations

from ..errors import ModelError

PERTURBATIONS: dict[str, dict[str, float]] = {
    "casp1_ko": {"ko_casp1": 0.0, "ko_casp1_host": 0.0},   # germline Casp1-/- host with a Casp1-/- tumour
    "casp1_ko_tumour": {"ko_casp1": 0.0},                 # caspase-1-deleted cancer cells in a wild-type host
    "casp1_ko_host": {"ko_casp1_host": 0.0},              # Casp1-/- host, wild-type tumour (Bruchard 2013)
    "gsdmd_ko": {"ko_gsdmd": 0.0},
    "gsdme_ko": {"ko_gsdme": 0.0},
    "il1a_ko": {"ko_il1a": 0.0},
    "il1r1_ko": {"ko_il1r1": 0.0},
    "tumour_free": {"tumour_w0": 0.0, "csc_f0": 0.0},
}


def perturbation_overrides(names: list[str], model_parameters) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        if name not in PERTURBATIONS:
            raise ModelError(f"unknown perturbation '{name}'; allowed: {', '.join(PERTURBATIONS)}")
        for p, v in PERTURBATIONS[name].items():
            if p not in model_parameters:
                raise ModelError(f"perturbation '{name}' needs parameter '{p}', which this model does not have "
                                 "(use model host_response)")
            out[p] = v
    return out
