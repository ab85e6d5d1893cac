"""Benchmark of the patient twin (issue 12 speed target: one update -- posterior + forecasts for the next
actions -- for a patient with 6 visits in <= 60 s on 2 cores).

    python benchmarks/twin.py [--particles 1000] [--trial-patients 200]

and the twin-guided trial (issue 12: e.g. 200 patients x 3 arms: gemcitabine, NLR-triggered and
twin-guided bermekimab), against the same trial without its twin-guided arm.

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


def twin_guided_trial(n: int) -> None:
    """The shipped fixed / NLR-triggered / twin-guided trial at n patients per arm: wall time per arm,
    against the same trial without the twin-guided arm (peer, same process)."""
    import yaml

    from chemohost.studies.trial import Trial, run_trial

    d = yaml.safe_load((ROOT / "scenarios" / "trial_pancreatic_adaptive_blockade.yaml").read_text())
    d.update(patients=n)
    d["arms"].pop("gemcitabine + bermekimab fixed")
    t = Trial.from_dict(d, str(ROOT / "scenarios" / "trial_pancreatic_adaptive_blockade.yaml"))
    d2 = {**d, "arms": {k: v for k, v in d["arms"].items() if k not in d["twin_guided"]}, "twin_guided": {}}
    t2 = Trial.from_dict(d2, "<peer>")
    run_trial(Trial.from_dict({**d2, "patients": 2}, "<warm>"))  # load the compiled model
    t0 = time.perf_counter()
    run_trial(t2)
    peer = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = run_trial(t)
    wall = time.perf_counter() - t0
    tg = r.summary["twin_guided"]
    arm = next(iter(tg))
    twin_arm = wall - peer
    print(f"twin-guided trial: {n} patients x {len(t.arms)} arms ({', '.join(t.arms)}), "
          f"{tg[arm]['policy']['particles']} particles: {wall:.1f} s")
    print(f"  peer (same trial without the twin-guided arm, {len(t2.arms)} arms): {peer:.1f} s; the twin-guided arm "
          f"{twin_arm:.1f} s = {1e3 * twin_arm / n:.0f} ms per patient ({twin_arm / max(peer / len(t2.arms), 1e-9):.0f}x "
          f"a plain arm)")
    print(f"  decisions: {tg[arm]['actions']}; mean P(IL-1-driven) {tg[arm]['p_il1_driven_mean']:.2f}")
    for a_, s_ in r.summary["arms"].items():
        print(f"  {a_}: median OS {s_['median_os_months']:.2f} mo, doses given {r.patients[r.patients['arm'] == a_]['doses_given'].mean():.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--trial-patients", type=int, default=200,
                    help="patients per arm of the twin-guided trial benchmark (0: skip)")
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
    if a.trial_patients:
        twin_guided_trial(a.trial_patients)


if __name__ == "__main__":
    main()
