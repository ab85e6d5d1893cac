"""One exception family for chemohost.

Every error raised on purpose by chemohost derives from :class:`ChemohostError`.  Messages name
*what* is wrong, *where* (file and field when known) and *how to fix it*.  The command line turns
these into a one-paragraph message and exit code 2; anything else is a bug.
"""

from __future__ import annotations


class ChemohostError(Exception):
    """Base class of all deliberate chemohost errors."""

    exit_code = 2


class ModelError(ChemohostError):
    """A model declaration is inconsistent (unknown symbol, cycle, missing parameter...)."""


class ParameterError(ChemohostError):
    """A parameter table row or override is invalid."""


class UnitError(ChemohostError):
    """A value's unit is missing, unknown or does not convert to what is required."""


class ProtocolError(ChemohostError):
    """A dose or regimen is impossible (negative dose, overlapping infusions, bad schedule)."""


class ScenarioError(ChemohostError):
    """A scenario file is invalid.  The message names the file and the field."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.file = file
        self.field = field
        where = []
        if file:
            where.append(str(file))
        if field:
            where.append(f"field '{field}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class SolverError(ChemohostError):
    """The engine could not integrate (for the whole batch; per-patient failures are flagged)."""


class ExportError(ChemohostError):
    """SBML (or other) export failed validation."""
