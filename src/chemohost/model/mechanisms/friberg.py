"""Friberg et al. 2002 (J Clin Oncol 20:4713) semi-mechanistic myelosuppression model.

Prol -> Tr1 -> Tr2 -> Tr3 -> Circ with ktr = 4/MTT; proliferation ktr·Prol·(Circ0/Circ)^gamma;
drug effect E = sum over drugs of SLOPE_d·driver_d (linear in the driving concentration) kills
proliferating cells at rate ktr·Prol·E·(Circ0/Circ)^gamma, i.e. the paper's
ktr·Prol·(1-E)·(Circ0/Circ)^gamma split into production and kill flows.  All compartments start at
Circ0.  Generic over drugs: :func:`friberg` takes ``{drug: driver expression}``.
"""

from __future__ import annotations

from ..core import Flow, Module, Output, ParameterSpec, Species


def friberg(prefix: str, drivers: dict[str, str], driver_units: dict[str, str], cell: str = "neutrophils",
            circ_output: str | None = None) -> Module:
    p = prefix
    ktr = f"(4/{p}_mtt)"
    fb = f"({p}_circ0/{p}_circ)**{p}_gamma"
    effect = " + ".join(f"{p}_slope_{d}*{expr}" for d, expr in drivers.items()) or "0"
    species = (
        Species(f"{p}_prol", "1e9/L", f"{p}_circ0", f"proliferating {cell} precursors"),
        Species(f"{p}_tr1", "1e9/L", f"{p}_circ0", "maturation transit 1"),
        Species(f"{p}_tr2", "1e9/L", f"{p}_circ0", "maturation transit 2"),
        Species(f"{p}_tr3", "1e9/L", f"{p}_circ0", "maturation transit 3"),
        Species(f"{p}_circ", "1e9/L", f"{p}_circ0", f"circulating {cell}"),
    )
    params = [
        ParameterSpec(f"{p}_circ0", "1e9/L", f"baseline circulating {cell}"),
        ParameterSpec(f"{p}_mtt", "day", "mean transit time through maturation"),
        ParameterSpec(f"{p}_gamma", "dimensionless", "feedback exponent of Circ0/Circ on proliferation"),
    ]
    for d in drivers:
        params.append(ParameterSpec(f"{p}_slope_{d}", f"1/({driver_units[d]})",
                                    f"linear drug effect of {d} on proliferating cells"))
    outputs = [Output(f"{p}_drug_effect", effect, "dimensionless", "fractional kill of proliferating cells")]
    if circ_output:
        outputs.append(Output(circ_output, f"{p}_circ", "1e9/L", f"circulating {cell}"))
    flows = (
        Flow(f"{p}_proliferation", None, f"{p}_prol", f"{ktr}*{p}_prol*{fb}", "self-renewal with feedback"),
        Flow(f"{p}_drug_kill", f"{p}_prol", None, f"{ktr}*{p}_prol*{p}_drug_effect*{fb}", "chemotherapy kill"),
        Flow(f"{p}_maturation1", f"{p}_prol", f"{p}_tr1", f"{ktr}*{p}_prol"),
        Flow(f"{p}_maturation2", f"{p}_tr1", f"{p}_tr2", f"{ktr}*{p}_tr1"),
        Flow(f"{p}_maturation3", f"{p}_tr2", f"{p}_tr3", f"{ktr}*{p}_tr2"),
        Flow(f"{p}_release", f"{p}_tr3", f"{p}_circ", f"{ktr}*{p}_tr3"),
        Flow(f"{p}_removal", f"{p}_circ", None, f"{ktr}*{p}_circ", "removal from blood (kcirc = ktr)"),
    )
    return Module(
        name=f"friberg_{p}",
        description=f"Friberg 2002 myelosuppression ({cell}) driven by {', '.join(drivers) or 'no drug'}",
        species=species, parameters=tuple(params), flows=flows, outputs=tuple(outputs),
        references=("Friberg LE et al. J Clin Oncol 2002;20:4713",),
    )
