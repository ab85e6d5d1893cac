"""Benchmark of the patient twin (issue 12 speed target: one update -- posterior + forecasts for the next
actions -- for a patient with 6 visits in <= 60 s on 2 cores).

    python benchmarks/twin.py [--particles 1000]

Peer (same process): the likelihood of the same particles evaluated one particle per engine call
(what an MCMC or a per-particle loop would pay), timed on 50 particles and scaled.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--particles", type=int, default=1000)
    a = ap.parse_args()
    os.environ.setdefault("CHEMOHOST_CACHE_DIR", str(ROOT / ".chemohost-cache"))
    from chemohost.studies.patient_record import load_patient
    from chemohost.studies.twin import Twin, TwinOptions

    rec = load_patient(ROOT / "scenarios" / "patients" / "patient_il1_high.yaml")
    tw = Twin(rec, TwinOptions(particles=a.particles, seed=0))
    tw.simulate(tw.mu[None, :], tw.history_events(), np.array([0.0, 1.0]), ["ANC"])  # load the compiled model
    t0 = time.perf_counter()
    res = tw.run()
    wall = time.perf_counter() - t0
    print(f"benchmarks/twin.py on {os.cpu_count()} cores")
    print(f"twin update: {len(rec.visit_days)} visits, {len(rec.observations)} measurements, {a.particles} particles, "
          f"{len(res.options.actions)} actions: {wall:.1f} s (filter {res.timings['update']:.1f} s, forecasts "
          f"{res.timings['forecast']:.1f} s, value of information {res.timings['value_of_information']:.1f} s)")
    X = tw.mu + np.random.default_rng(1).standard_normal((50, tw.mu.size)) @ np.linalg.cholesky(tw.cov).T
    t0 = time.perf_counter()
    tw.loglik(X, rec.observations)
    batch = (time.perf_counter() - t0) / 50
    t0 = time.perf_counter()
    for i in range(50):
        tw.loglik(X[i:i + 1], rec.observations)
    single = (time.perf_counter() - t0) / 50
    print(f"  likelihood per particle: batched {1e3 * batch:.2f} ms, one particle per engine call (peer) "
          f"{1e3 * single:.2f} ms; ratio {single / batch:.1f}x")


if __name__ == "__main__":
    main()
