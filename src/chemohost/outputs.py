"""Atomic output folders: results appear in ``--out`` only when every file was written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ScenarioError


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
