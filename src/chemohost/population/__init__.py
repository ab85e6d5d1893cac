"""Virtual patient populations (covariates, IIV, plausible-patient selection)."""

from .virtual import (COVARIATE_PARAMETERS, PopulationError, PopulationSpec, TargetDistribution, cockcroft_gault,
                      mosteller_bsa, plausible, sample_population, select_virtual_population)

__all__ = ["COVARIATE_PARAMETERS", "PopulationError", "PopulationSpec", "TargetDistribution", "cockcroft_gault",
           "mosteller_bsa", "plausible", "sample_population", "select_virtual_population"]
