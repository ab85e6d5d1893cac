"""Chunk checkpoints of long batch runs: ``--resume`` after a kill continues from the last finished chunk.

A run that has an output folder records each finished chunk in ``OUT/.partial/``: the chunk's
endpoint rows (Parquet) and its arrays (kept time courses, counters; ``.npz``), each written to a
temporary name and renamed, so a chunk file either exists whole or not at all.  ``run.json`` holds
the run's fingerprint (file hash, seed, patients, chunk size, model code hash, chemohost version,
...): a resumed run must match it exactly, so chunks of another run are never mixed in.  Results
do not depend on the chunking (tested), and a resumed run reads back exactly the rows it wrote, so a
resumed patients.parquet equals an uninterrupted one.  The folder is removed when the run's results
are published.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ScenarioError


class Checkpoint:
    """Chunk store for one run; ``folder=None`` keeps nothing (in-memory runs, API use)."""

    def __init__(self, folder: str | Path | None, fingerprint: dict, resume: bool = False, discard: bool = False):
        self.folder = Path(folder) if folder is not None else None
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.resumed = 0
        if self.folder is None:
            return
        run = self.folder / "run.json"
        done = sorted(self.folder.glob("*.parquet")) if self.folder.is_dir() else []
        if self.folder.is_dir() and not resume:
            if done and not discard:
                raise ScenarioError(f"{self.folder.parent} holds the checkpoints of an interrupted run ({len(done)} "
                                    "finished chunk(s)): give --resume to continue it, or --force to discard them")
            shutil.rmtree(self.folder, ignore_errors=True)
        if resume and self.folder.is_dir() and run.is_file():
            try:
                old = json.loads(run.read_text())
            except ValueError:
                old = None
            if old != self.fingerprint:
                diff = sorted(k for k in set(old or {}) | set(self.fingerprint)
                              if (old or {}).get(k) != self.fingerprint.get(k))
                raise ScenarioError(f"--resume: the checkpoints in {self.folder} belong to another run (differs in: "
                                    f"{', '.join(diff) or 'unreadable run.json'}); run without --resume and with "
                                    "--force to discard them, or use another --out")
        elif resume and not (self.folder.is_dir() and any(self.folder.glob("*.parquet"))):
            raise ScenarioError(f"--resume: no checkpoints of an interrupted run in {self.folder.parent}")
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(run, json.dumps(self.fingerprint, indent=2).encode())

    def load(self, key: str):
        """``(frame, arrays)`` of a finished chunk, or None."""
        if self.folder is None:
            return None
        f = self.folder / f"{key}.parquet"
        if not f.is_file():
            return None
        frame = pd.read_parquet(f)
        a = self.folder / f"{key}.npz"
        arrays = dict(np.load(a, allow_pickle=False)) if a.is_file() else {}
        self.resumed += 1
        return frame, arrays

    def save(self, key: str, frame: pd.DataFrame, arrays: dict | None = None) -> pd.DataFrame:
        """Record a finished chunk; returns the frame as read back (so fresh and resumed chunks are
        the same bytes, dtypes included)."""
        if self.folder is None:
            return frame
        if arrays:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=self.folder)
            os.close(fd)
            np.savez(tmp, **arrays)
            os.replace(tmp, self.folder / f"{key}.npz")
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=self.folder)
        os.close(fd)
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.folder / f"{key}.parquet")  # last: the chunk counts as finished from here
        return pd.read_parquet(self.folder / f"{key}.parquet")

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
