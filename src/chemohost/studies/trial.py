"""In-silico trials: arms x virtual patients -> endpoints, survival analysis, report.

``chemohost trial SCENARIO.yaml --out DIR`` runs every arm on the *same* virtual patients (common
random numbers), streams them through the engine in chunks, computes per-patient endpoints as a
clinician measures them (RECIST 1.1 at scans with visit windows and measurement error, PFS at
scans, OS from a tumour/NLR-linked hazard, CTCAE neutropenia, dose intensity, NLR) and per-arm and
paired statistics, and writes patients.parquet, summary.json, report.html and manifest.json
atomically.  ``--design randomized`` runs replicate randomised trials instead (``randomized.py``).

The pieces live in their own modules; this one keeps the public names in one place:

* ``trial_spec``   -- the file's schema and load-time checks (:class:`Trial`);
* ``streams``      -- per-patient random streams of the paired design;
* ``scans``        -- scan schedule, measurement error, new-lesion detection;
* ``endpoints``    -- per-patient RECIST, neutropenia, dose intensity;
* ``survival``     -- linked OS, arm summaries, paired effects;
* ``trial_runner`` -- patients through the engine (:func:`run_trial`);
* ``trial_stats``  -- per-arm summaries and paired effects;
* ``trial_writer`` -- the output folder.
"""

from __future__ import annotations

from .streams import STREAMS, os_exponentials, patient_stream
from .trial_runner import (TrialResult, TrialSetup, run_trial, sample_trial_patients, setup_trial, simulate_arm_chunk,
                           simulate_patients)
from .trial_spec import DAYS_PER_MONTH, OUTPUTS, Trial, TrialSpec, control_arm_data
from .trial_writer import _json_safe, _report_extras, write_trial

__all__ = ["DAYS_PER_MONTH", "OUTPUTS", "STREAMS", "Trial", "TrialResult", "TrialSetup", "TrialSpec", "control_arm_data",
           "os_exponentials", "patient_stream", "run_trial", "sample_trial_patients", "setup_trial",
           "simulate_arm_chunk", "simulate_patients", "write_trial", "_json_safe", "_report_extras"]
