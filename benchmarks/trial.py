"""End-to-end trial benchmark: 10,000 virtual patients x 3 arms x 6 gemcitabine cycles.

Runs scenarios/trial_pancreatic_il1_blockade.yaml (host_response model, daily outputs, endpoints,
survival statistics) in chunks and prints seconds and patients/second, plus peak memory.

Peer, in the same process: the same trial on a subsample (--reference-patients per arm) with the
engine's reference solver settings -- ``SolverOptions(dense_output=False, sparse_lu=False)``: a
step ends at every output time and the iteration matrix is factorised by dense LU with partial
pivoting, as chemohost 0.1 did -- timed against the default (fast) settings on the same patients,
with the differences in the patient endpoints.

Second peer: the same subsample with ``stop_treatment_at_progression: false`` (one engine pass; the
default re-simulates patients who progressed while doses were due, so that no dose follows the
progression scan), to show what the second pass costs.

Randomised-replicate mode (``--replicates R --per-arm N``): R replicate trials x 3 arms x N
different patients (``chemohost trial --design randomized``), seconds and peak memory, against the
paired design on the same number of patient simulations in the same process.

Engine peer: the same subsample on ``--peer-backend`` (default ``c``, the scalar C engine; the trial itself runs on
``--backend``, default ``auto``, the lane engine), timed in the same process, with the differences in the patient
endpoints.

    python benchmarks/trial.py [--patients 10000] [--chunk 2000] [--reference-patients 200] [--backend auto]
    python benchmarks/trial.py --replicates 200 --per-arm 150
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import resource
import time

import chemohost  # noqa: F401  (first, as the CLI: it sets numpy's huge-page advice before numpy is imported)
import numpy as np

from chemohost.engine.simulate import BACKENDS, SolverOptions
from chemohost.studies.randomized import run_randomized
from chemohost.studies.trial import Trial, run_trial

CONTINUOUS = ["os_months", "pfs_months", "tsr_w8", "nlr_day28", "best_tumour_change_pct"]
DISCRETE = ["best_response", "neutropenia_grade_max", "os_event", "pfs_event", "pd_day", "dose_intensity"]


@contextlib.contextmanager
def reference_settings():
    """run_trial with the reference solver settings (it builds SolverOptions from the trial spec's fields)."""
    saved = SolverOptions.__dict__["from_fields"]  # (the classmethod itself, restored as it was)
    default = SolverOptions.from_fields

    def reference(fields) -> SolverOptions:
        return dataclasses.replace(default(fields), dense_output=False, sparse_lu=False)

    SolverOptions.from_fields = staticmethod(reference)
    try:
        yield
    finally:
        SolverOptions.from_fields = saved


def timed_run(trial, n, chunk):
    t0 = time.perf_counter()
    res = run_trial(trial, patients=n, chunk_size=chunk)
    return res, time.perf_counter() - t0


def compare(fast, ref) -> list[str]:
    a, b = ref.patients, fast.patients
    lines = []
    for c in CONTINUOUS:
        x, y = a[c].to_numpy(float), b[c].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        d = np.abs(x[ok] - y[ok])
        lines.append(f"{c} max |diff| {d.max():.3g} (median {np.median(d):.2g})")
    flips = {c: int((a[c].astype(str).to_numpy() != b[c].astype(str).to_numpy()).sum()) for c in DISCRETE}
    lines.append("patients (of %d) with a different " % len(a) + ", ".join(f"{c} {v}" for c, v in flips.items()))
    return lines


def with_backend(trial: Trial, backend: str) -> Trial:
    spec = trial.spec.model_dump(mode="json")
    return Trial.from_dict({**spec, "solver": {**spec.get("solver", {}), "backend": backend}}, trial.source)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=10000)
    ap.add_argument("--chunk", type=int, default=2000)
    ap.add_argument("--reference-patients", type=int, default=200,
                    help="patients per arm for the in-process comparison with the reference solver settings (0: skip)")
    ap.add_argument("--replicates", type=int, default=0, help="randomised-replicate mode: number of replicates")
    ap.add_argument("--per-arm", type=int, default=150, help="randomised-replicate mode: patients per arm")
    ap.add_argument("--backend", choices=BACKENDS, default="auto", help="the trial's solver.backend")
    ap.add_argument("--peer-backend", choices=BACKENDS, default="c", help="the engine peer's solver.backend")
    args = ap.parse_args()
    base = Trial.load("scenarios/trial_pancreatic_il1_blockade.yaml")
    trial, peer = (with_backend(base, b) for b in (args.backend, args.peer_backend))
    run_trial(trial, patients=4, chunk_size=4)  # compile / load the cached model once
    if args.replicates:
        return randomized_mode(trial, args)
    res, dt = timed_run(trial, args.patients, args.chunk)
    total = args.patients * len(trial.arms)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.patients} patients x {len(trial.arms)} arms = {total} simulated patients, 6 cycles, "
          f"{trial.follow_up_days:.0f} days follow-up")
    print(f"end to end: {dt:.1f} s = {total / dt:.0f} patients/s, solver.backend {trial.spec.solver.backend} "
          f"(simulate+endpoints {res.timings['simulate_and_endpoints']:.1f} s, statistics {res.timings['statistics']:.1f} s); "
          f"chunk {args.chunk}; peak RSS {rss:.0f} MB")
    for arm, s in res.summary["arms"].items():
        print(f"  {arm}: median OS {s['median_os_months']:.2f} mo, HR {s['hr_os_vs_control'][0]:.2f}")
    n_ref = min(args.reference_patients, args.patients)
    if n_ref > 0:
        tot = n_ref * len(trial.arms)
        fast, t_fast = timed_run(trial, n_ref, args.chunk)

        def peer_report(label: str, other, t_other: float, name: str, short: str | None = None) -> None:
            print(f"peer (same process, {n_ref} patients x {len(trial.arms)} arms): {label} {t_other:.1f} s = "
                  f"{tot / t_other:.0f} patients/s; {name} {t_fast:.1f} s = {tot / t_fast:.0f} patients/s; "
                  f"x{t_other / t_fast:.2f}")
            for line in compare(fast, other):
                print(f"  {name} vs {short or label}: {line}")

        with reference_settings():
            ref, t_ref = timed_run(trial, n_ref, args.chunk)
        peer_report("reference solver settings (dense_output=False, sparse_lu=False)", ref, t_ref, "default",
                    "reference")
        if args.peer_backend != args.backend:
            run_trial(peer, patients=4, chunk_size=4)
            other, t_other = timed_run(peer, n_ref, args.chunk)
            peer_report(f"solver.backend {args.peer_backend}", other, t_other, args.backend)
        one = Trial.from_dict({**trial.spec.model_dump(mode="json"), "stop_treatment_at_progression": False},
                              trial.source)
        nostop, t_nostop = timed_run(one, n_ref, args.chunk)
        print(f"peer (same process, {n_ref} patients x {len(trial.arms)} arms): one pass, treatment not stopped at "
              f"progression {t_nostop:.1f} s = {tot / t_nostop:.0f} patients/s; default (second pass for "
              f"{fast.summary['patient_arms_resimulated_after_progression']} patient-arms) x{t_fast / t_nostop:.2f} the time")


def randomized_mode(trial, args):
    R, N, A = args.replicates, args.per_arm, len(trial.arms)
    t0 = time.perf_counter()
    res = run_randomized(trial, R, N, chunk_size=args.chunk)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = R * A * N
    print(f"randomized: {R} replicates x {A} arms x {N} patients = {total} simulated patients")
    print(f"end to end: {dt:.1f} s = {total / dt:.0f} patients/s (simulate+endpoints "
          f"{res.timings['simulate_and_endpoints']:.1f} s, statistics {res.timings['statistics']:.1f} s); "
          f"peak RSS {rss:.0f} MB")
    for arm, a in res.summary["randomized"]["arms"].items():
        print(f"  {arm}: OS power {100 * a['power']:.1f}% ({100 * a['power_ci'][0]:.1f}-{100 * a['power_ci'][1]:.1f}), "
              f"median HR {a['hr_quantiles'].get('p50', float('nan')):.3f}, Schoenfeld N {a['schoenfeld_n']}")
    n_peer = R * N
    peer, t_peer = timed_run(trial, n_peer, args.chunk)
    print(f"peer (same process): paired design on the same {n_peer * A} patient simulations ({n_peer} per arm) "
          f"{t_peer:.1f} s = {n_peer * A / t_peer:.0f} patients/s; randomized x{dt / t_peer:.2f} the time")


if __name__ == "__main__":
    main()
