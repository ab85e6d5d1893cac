"""Calibration: problem files (measurements + model + what to estimate) and their PEtab export.

    >>> from chemohost.calibration import load_problem, export_petab
    >>> prob = load_problem("problems/pancreatic_gemcitabine_human.yaml")
    >>> export_petab(prob, "out/petab_pdac")           # a PEtab v1 problem (petablint-clean)

Layering: this package sits at the studies level.  It reads the model declaration, the protocol,
the engine (SBML export), the API (parameter vectors), the unit layer and ``chemohost.data``
(measurement tables and conditions); it never imports the command line.
"""

from .petab_export import export_petab
from .problem import Problem, ProblemError, load_problem

__all__ = ["Problem", "ProblemError", "export_petab", "load_problem"]
