"""Atomic output folders: results appear in ``--out`` only when every file was written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ScenarioError


def json_safe(x):
    """``x`` with numpy scalars as Python numbers, non-finite floats as None and keys as strings
    (what ``json.dumps`` can write as standard JSON)."""
    import math

    import numpy as np

    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return json_safe(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_atomically(out: str | Path, write: Callable[[Path], None]) -> dict[str, Path]:
    """Call ``write(tmp_dir)``, then move the files it made into ``out`` (created if needed).

    On any error nothing is moved and the temporary folder is removed, so ``out`` never holds a
    half-written result; files already in ``out`` with other names are left alone."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ScenarioError(f"--out {out} exists and is not a folder; choose a folder path")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        write(tmp)
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
            written[f.name] = out / f.name
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
