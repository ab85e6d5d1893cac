"""Patient covariates used by several mechanisms (body size, renal function)."""

from ..core import Module, ParameterSpec

MODULE = Module(
    name="covariates",
    description="Patient covariates: body-surface area, body weight, creatinine clearance",
    parameters=(
        ParameterSpec("BSA", "m**2", "body-surface area"),
        ParameterSpec("WT", "kg", "body weight"),
        ParameterSpec("CRCL", "mL/min", "creatinine clearance"),
    ),
)
