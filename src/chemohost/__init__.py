"""chemohost: the host response to chemotherapy, as a simulator and in-silico trial platform.

Public API (small and explicit)::

    load_scenario, Scenario, write_run         # scenarios -> runs -> files
    get_model, compose, parameter_set          # model declaration
    simulate, SolverOptions, Regimen           # engine and protocols
    to_sbml                                    # interoperability
"""

__version__ = "0.1.0"

import os as _os  # noqa: E402

# numpy advises the kernel to back every array of >= 4 MB with transparent huge pages; where THP defrag is "madvise"
# (Debian's default) the first touch of such an array then waits for memory compaction, and a trial's per-chunk arrays
# (engine snapshots, results) made the 2,000 x 3 trial ~10% slower end to end.  numpy reads this (its documented
# global state, NUMPY_MADVISE_HUGEPAGE) when it is first imported: so it applies to the CLI and Dask workers, not to a
# program that imported numpy before chemohost; a value the user set is kept.
_os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

from .api import RunResult, Scenario, load_scenario, parameter_vector, sample_patients, write_run  # noqa: E402
from .engine.sbml import to_sbml  # noqa: E402
from .engine.simulate import SimulationResult, SolverOptions, simulate  # noqa: E402
from .errors import ChemohostError  # noqa: E402
from .model.core import compose  # noqa: E402
from .model.params import parameter_set  # noqa: E402
from .model.registry import get_model  # noqa: E402
from .protocol.dosing import Regimen, dose_table  # noqa: E402

__all__ = [
    "ChemohostError", "Regimen", "RunResult", "Scenario", "SimulationResult", "SolverOptions", "compose",
    "dose_table", "get_model", "load_scenario", "parameter_set", "parameter_vector", "sample_patients",
    "simulate", "to_sbml", "write_run",
]
