"""Per-patient results kept for reuse, row by row (bottom layer: numpy only).

A paired trial asks for the same patients' PK decomposition and random streams in every arm and again in its
second pass, for all of a block's patients or a subset of them.  :class:`RowCache` keeps arrays whose first axis
is patients, finds each row by a key, computes only the rows it lacks, and drops the least recently used
results beyond a byte bound.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import numpy as np


class RowCache:
    """Arrays whose first axis is rows (patients), each row found by its key; least recently used results are
    dropped first beyond ``max_bytes`` (a result larger than that is not kept).  Thread-safe; the arrays it
    returns are read-only."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict = OrderedDict()  # id -> (arrays, row keys)
        self.rows: dict = {}  # row key -> (entry id, row)
        self.bytes = 0
        self._next = 0
        self._lock = threading.Lock()

    def get(self, keys: list, compute: Callable[[list[int]], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        """The arrays for rows ``keys``: rows kept from earlier calls, and ``compute(positions)`` (the positions in
        ``keys`` of the rows not kept; arrays with one row each, in that order) for the others."""
        if not keys:
            return tuple(compute([]))
        with self._lock:  # (an entry found here stays usable if another thread drops it meanwhile)
            found = []
            for k in keys:
                f = self.rows.get(k)
                if f is not None:
                    self.entries.move_to_end(f[0])
                    f = (self.entries[f[0]][0], f[1])
                found.append(f)
        missing = [j for j, f in enumerate(found) if f is None]
        if missing:
            new = tuple(compute(missing))
            for a in new:
                a.flags.writeable = False
            with self._lock:
                i = self._next
                self._next += 1
                self.entries[i] = (new, [keys[j] for j in missing])
                self.bytes += sum(a.nbytes for a in new)
                for r, j in enumerate(missing):
                    self.rows[keys[j]] = (i, r)
                    found[j] = (new, r)
                self._trim()
            if len(missing) == len(keys):
                return new
        groups: dict = {}  # id(arrays) -> (arrays, positions in keys, rows of the arrays)
        for j, (arrays, r) in enumerate(found):
            g = groups.setdefault(id(arrays), (arrays, [], []))
            g[1].append(j)
            g[2].append(r)
        if len(groups) == 1:
            arrays, _, rs = next(iter(groups.values()))
            if rs == list(range(arrays[0].shape[0])):  # the rows of one earlier call, in its order
                return arrays
        out = []
        for k, first in enumerate(next(iter(groups.values()))[0]):
            o = np.empty((len(keys), *first.shape[1:]), dtype=first.dtype)
            for arrays, js, rs in groups.values():
                o[js] = arrays[k][rs]
            o.flags.writeable = False
            out.append(o)
        return tuple(out)

    def _trim(self) -> None:
        while self.bytes > self.max_bytes and self.entries:
            i, (arrays, keys) = self.entries.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in arrays)
            for k in keys:
                if self.rows.get(k, (None,))[0] == i:
                    del self.rows[k]

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.rows.clear()
            self.bytes = 0
