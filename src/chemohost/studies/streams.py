"""Per-patient random streams of the paired (counterfactual) trial design.

Every stochastic draw of a virtual patient (OS event noise, scan visit windows, scan measurement
error, new-lesion detection) comes from a stream keyed by ``(seed, endpoint, patient)``, never by
the arm or its position, so each patient lives the same "luck" in every arm, whatever the arm
order, chunking or number of patients.
"""

from __future__ import annotations

import numpy as np

from ..rowcache import RowCache

#: endpoint codes of the per-patient random streams (never the arm or its position)
STREAMS = {"os": 1, "scan_window": 2, "scan_error": 3, "new_lesion": 4}


def patient_stream(seed: int, endpoint: str, patient_ids, size: int = 1) -> np.ndarray:
    """(n, size) standard-uniform draws, one independent numpy stream per (seed, endpoint, patient).

    Keyed by the patient and the endpoint only, so a virtual patient lives the same "luck" in every
    arm (counterfactual / paired design), whatever the arm order, chunking or number of patients.
    Streams come from ``numpy.random.SeedSequence(seed, spawn_key=(endpoint code, patient))``.  Recent
    patients' draws are kept (:class:`chemohost.rowcache.RowCache`): a trial asks for the same patients'
    streams in every arm and again after a second pass.
    """
    code = STREAMS[endpoint]
    ids = np.asarray(patient_ids, dtype=np.int64).ravel()

    def derive(rows):
        return (np.array([np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            int(seed), spawn_key=(code, int(ids[j]))))).random(size) for j in rows]).reshape(len(rows), size),)

    return _recent.get([(int(seed), code, int(size), int(pid)) for pid in ids], derive)[0].copy()


#: recent draws kept, least recently used dropped first beyond 64 MB (~15 us per patient and stream to derive)
_recent = RowCache(64 * 2**20)


def os_exponentials(seed: int, n: int, patient_ids=None) -> np.ndarray:
    """The unit-exponential draws behind the OS times of patients ``patient_ids`` (default 0..n-1).

    The same for every arm: patient i's OS noise does not depend on the arm it is simulated in.
    """
    ids = np.arange(n) if patient_ids is None else np.asarray(patient_ids)
    return -np.log1p(-patient_stream(seed, "os", ids, 1)[:, 0])
