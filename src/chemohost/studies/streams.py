"""Per-patient random streams of the paired (counterfactual) trial design.

Every stochastic draw of a virtual patient (OS event noise, scan visit windows, scan measurement
error, new-lesion detection) comes from a stream keyed by ``(seed, endpoint, patient)``, never by
the arm or its position, so each patient lives the same "luck" in every arm, whatever the arm
order, chunking or number of patients.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

#: endpoint codes of the per-patient random streams (never the arm or its position)
STREAMS = {"os": 1, "scan_window": 2, "scan_error": 3, "new_lesion": 4}


def patient_stream(seed: int, endpoint: str, patient_ids, size: int = 1) -> np.ndarray:
    """(n, size) standard-uniform draws, one independent numpy stream per (seed, endpoint, patient).

    Keyed by the patient and the endpoint only, so a virtual patient lives the same "luck" in every
    arm (counterfactual / paired design), whatever the arm order, chunking or number of patients.
    Streams come from ``numpy.random.SeedSequence(seed, spawn_key=(endpoint code, patient))``.  The
    draws of recent calls are kept (:data:`RECENT_BYTES`): a trial asks for the same patients' streams
    in every arm and again after a second pass.
    """
    global _recent_bytes
    code = STREAMS[endpoint]
    ids = np.asarray(patient_ids, dtype=np.int64).ravel()
    key = (int(seed), code, int(size), ids.tobytes())
    with _lock:
        hit = _recent.get(key)
        if hit is not None:
            _recent.move_to_end(key)
            return hit.copy()
    out = np.empty((ids.size, size))
    for k, pid in enumerate(ids):
        out[k] = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            int(seed), spawn_key=(code, int(pid))))).random(size)
    with _lock:
        _recent[key] = out.copy()
        _recent_bytes += out.nbytes
        while _recent_bytes > RECENT_BYTES and _recent:
            _recent_bytes -= _recent.popitem(last=False)[1].nbytes
    return out


#: bytes of recent draws kept (~15 us per patient and stream to derive)
RECENT_BYTES = 64 * 2**20
_recent: OrderedDict = OrderedDict()
_recent_bytes = 0
_lock = threading.Lock()


def os_exponentials(seed: int, n: int, patient_ids=None) -> np.ndarray:
    """The unit-exponential draws behind the OS times of patients ``patient_ids`` (default 0..n-1).

    The same for every arm: patient i's OS noise does not depend on the arm it is simulated in.
    """
    ids = np.arange(n) if patient_ids is None else np.asarray(patient_ids)
    return -np.log1p(-patient_stream(seed, "os", ids, 1)[:, 0])
