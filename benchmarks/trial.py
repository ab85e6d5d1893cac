"""End-to-end trial benchmark: 10,000 virtual patients x 3 arms x 6 gemcitabine cycles.

Runs scenarios/trial_pancreatic_il1_blockade.yaml (host_response model, daily outputs, endpoints,
survival statistics) in chunks and prints seconds and patients/second, plus peak memory.

    python benchmarks/trial.py [--patients 10000] [--chunk 2000]
"""

from __future__ import annotations

import argparse
import resource
import time

from chemohost.studies.trial import Trial, run_trial


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=10000)
    ap.add_argument("--chunk", type=int, default=2000)
    args = ap.parse_args()
    trial = Trial.load("scenarios/trial_pancreatic_il1_blockade.yaml")
    run_trial(trial, patients=4, chunk_size=4)  # compile / load the cached model once
    t0 = time.perf_counter()
    res = run_trial(trial, patients=args.patients, chunk_size=args.chunk)
    dt = time.perf_counter() - t0
    total = args.patients * len(trial.arms)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.patients} patients x {len(trial.arms)} arms = {total} simulated patients, 6 cycles, "
          f"{trial.follow_up_days:.0f} days follow-up")
    print(f"end to end: {dt:.1f} s = {total / dt:.0f} patients/s "
          f"(simulate+endpoints {res.timings['simulate_and_endpoints']:.1f} s, statistics {res.timings['statistics']:.1f} s); "
          f"chunk {args.chunk}; peak RSS {rss:.0f} MB")
    for arm, s in res.summary["arms"].items():
        print(f"  {arm}: median OS {s['median_os_months']:.2f} mo, HR {s['hr_os_vs_control'][0]:.2f}")


if __name__ == "__main__":
    main()
