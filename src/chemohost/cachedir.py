"""Where chemohost keeps what it builds once and reuses (bottom layer: no chemohost imports).

``CHEMOHOST_CACHE_DIR`` if set (a path every Dask worker sees, on a cluster), else ``$XDG_CACHE_HOME/chemohost``
or ``~/.cache/chemohost``.  Under it: ``models/`` (generated engine modules and their C libraries,
:mod:`chemohost.engine.codegen`) and ``pint/`` (pint's parsed unit definitions, :mod:`chemohost.units`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    d = os.environ.get("CHEMOHOST_CACHE_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chemohost"
