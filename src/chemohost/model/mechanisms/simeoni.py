"""Simeoni et al. 2004 (Cancer Res 64:1094) tumour growth inhibition model.

Cycling cells x1 grow exponentially (lambda0) then linearly (lambda1) through
lambda0·x1 / (1 + (lambda0·w/lambda1)^psi)^(1/psi), w = x1+x2+x3+x4; drugs damage cycling cells at
k2_d·driver_d·x1 into a three-compartment damage transit (k1) ending in death.
Generic over drugs: :func:`simeoni` takes ``{drug: driver expression}``.
"""

from __future__ import annotations

from ..core import Flow, Module, Output, ParameterSpec, Species


def simeoni(prefix: str, drivers: dict[str, str], driver_units: dict[str, str], unit: str = "cm**3") -> Module:
    p = prefix
    kill = " + ".join(f"{p}_k2_{d}*{expr}" for d, expr in drivers.items()) or "0"
    params = [
        ParameterSpec(f"{p}_w0", unit, "initial tumour size"),
        ParameterSpec(f"{p}_lambda0", "1/day", "exponential growth rate"),
        ParameterSpec(f"{p}_lambda1", f"{unit}/day", "linear growth rate"),
        ParameterSpec(f"{p}_psi", "dimensionless", "switch sharpness (fixed 20)"),
        ParameterSpec(f"{p}_k1", "1/day", "damage transit rate (mean time to death 3/k1)"),
    ]
    for d in drivers:
        params.append(ParameterSpec(f"{p}_k2_{d}", f"1/({driver_units[d]})/day", f"potency of {d}"))
    return Module(
        name=f"simeoni_{p}",
        description=f"Simeoni 2004 tumour growth inhibition driven by {', '.join(drivers) or 'no drug'}",
        species=(
            Species(f"{p}_x1", unit, f"{p}_w0", "proliferating tumour cells"),
            Species(f"{p}_x2", unit, 0, "damaged cells, stage 1"),
            Species(f"{p}_x3", unit, 0, "damaged cells, stage 2"),
            Species(f"{p}_x4", unit, 0, "damaged cells, stage 3"),
        ),
        parameters=tuple(params),
        outputs=(
            Output(f"{p}_size", f"{p}_x1 + {p}_x2 + {p}_x3 + {p}_x4", unit, "total tumour size"),
            Output(f"{p}_kill_rate", kill, "1/day", "drug kill rate constant of cycling cells"),
            Output(f"{p}_growth_sat", f"1/(1 + ({p}_lambda0*({p}_size + 1e-12)/{p}_lambda1)**{p}_psi)**(1/{p}_psi)",
                   "dimensionless", "exponential-to-linear growth switch (1 while small)"),
            Output(f"{p}_death_flux", f"{p}_k1*{p}_x4", f"{unit}/day", "rate of death of drug-damaged cells"),
        ),
        flows=(
            Flow(f"{p}_growth", None, f"{p}_x1", f"{p}_lambda0*{p}_x1*{p}_growth_sat",
                 "exponential-then-linear growth"),
            Flow(f"{p}_damage", f"{p}_x1", f"{p}_x2", f"{p}_kill_rate*{p}_x1", "drug damage"),
            Flow(f"{p}_transit1", f"{p}_x2", f"{p}_x3", f"{p}_k1*{p}_x2"),
            Flow(f"{p}_transit2", f"{p}_x3", f"{p}_x4", f"{p}_k1*{p}_x3"),
            Flow(f"{p}_death", f"{p}_x4", None, f"{p}_k1*{p}_x4", "death of damaged cells"),
        ),
        references=("Simeoni M et al. Cancer Res 2004;64:1094",),
    )
