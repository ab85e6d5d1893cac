"""The lane engine (``backend="c-simd"``: 8 patients side by side in each thread's AVX-512 lanes) against the scalar C
engine (``backend="c"``, bit-identical to numba; the peer), in the same process, on the same virtual patients.

Each arm of scenarios/trial_pancreatic_il1_blockade.yaml (host_response, 6 gemcitabine cycles, daily outputs, the
trial's tolerances) for N patients of its population: seconds in the engine alone (the C call) and in ``simulate``,
patients/s, Rosenbrock steps per patient and microseconds per step and patient, on 1 and 2 threads, best of R
alternating repeats; and each engine's largest error against a tight reference (the scalar engine at rtol 1e-9,
atol 1e-14) on the first --reference patients of each arm, relative to the reference value floored at 1e-6 of the
patient's peak of that output (caspase-1 inhibition, a drug-driven state the solver resolves to rtol of its own
peak: relative to that peak).

    python benchmarks/lanes.py [--patients 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np

from chemohost.engine import cbackend
from chemohost.engine.simulate import SolverOptions, simulate
from chemohost.studies.trial import Trial
from chemohost.studies.trial_runner import sample_trial_patients, setup_trial

OUTS = ["ANC", "NLR", "tumour_total", "il1a_pgml", "casp1_inhibition"]
OF_PEAK = {"casp1_inhibition"}  # drug-driven (starts at zero): compared relative to the patient's peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference", type=int, default=100)
    args = ap.parse_args()
    trial = Trial.load("scenarios/trial_pancreatic_il1_blockade.yaml")
    st = setup_trial(trial, 1)
    _, P, _, _ = sample_trial_patients(trial, args.patients, 1)
    engine = {"t": 0.0}
    inner = cbackend.simulate_batch_c

    def timed_batch(*a, **k):  # the C call alone
        t0 = time.perf_counter()
        inner(*a, **k)
        engine["t"] += time.perf_counter() - t0

    cbackend.simulate_batch_c = timed_batch
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    gcc = subprocess.run([cbackend.compiler(), "-dumpversion"], capture_output=True, text=True).stdout.strip()
    print(f"{os.cpu_count()} CPUs ({cpu}), gcc {gcc}; host_response, {args.patients} patients per arm, "
          f"rtol {st.opts.rtol:g}, atol {st.opts.atol:g}, {st.times.size} daily outputs; best of {args.repeats}")

    def run(regs, backend, threads):
        opts = SolverOptions(rtol=st.opts.rtol, atol=st.opts.atol, max_steps=st.opts.max_steps, backend=backend,
                             threads=threads)
        engine["t"] = 0.0
        t0 = time.perf_counter()
        r = simulate(st.cm, P, regs, st.times, OUTS, options=opts)
        return r, time.perf_counter() - t0, engine["t"]

    for arm, regs in trial.arms.items():  # compile / load both engines, warm
        for b in ("c", "c-simd"):
            run(regs, b, 2)
        break
    print("\n| arm | threads | engine | engine s | patients/s | simulate s | steps/patient | us per step-patient-thread "
          "| lanes vs scalar |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, regs in trial.arms.items():
        for threads in (1, 2):
            best = {}
            for _ in range(args.repeats):
                for b in ("c", "c-simd"):
                    r, wall, eng = run(regs, b, threads)
                    if b not in best or eng < best[b][2]:
                        best[b] = (r, wall, eng)
            for b in ("c", "c-simd"):
                r, wall, eng = best[b]
                steps = r.steps[:, 0].mean()
                ratio = f"x{best['c'][2] / eng:.2f}" if b == "c-simd" else ""
                print(f"| {arm} | {threads} | {b} | {eng:.2f} | {args.patients / eng:.0f} | {wall:.2f} | {steps:.0f} | "
                      f"{eng * threads / args.patients / steps * 1e6:.2f} | {ratio} |")
        a, s = best["c"][0], best["c-simd"][0]
        k = min(args.reference, args.patients)
        ref = simulate(st.cm, P[:k], regs, st.times, OUTS,
                       options=SolverOptions(rtol=1e-9, atol=1e-14, max_steps=10 ** 7, backend="c"))
        peak = np.abs(ref.values).max(axis=1, keepdims=True)
        floor = np.maximum(np.abs(ref.values), 1e-6 * np.where(peak > 0, peak, 1.0))
        # a drug-driven state is resolved to rtol of its own peak (the solver's error floor): error relative to it
        of_peak = np.array([o in OF_PEAK for o in OUTS])
        floor[..., of_peak] = np.broadcast_to(np.where(peak > 0, peak, 1.0), floor.shape)[..., of_peak]
        err = {b: (np.abs(r.values[:k] - ref.values) / floor).max(axis=(0, 1)) for b, r in (("c", a), ("c-simd", s))}
        names = ", ".join(f"{o} (of its peak)" if o in OF_PEAK else o for o in OUTS)
        print(f"| {arm}: vs tight reference ({k} patients; {names}) | | | | | | "
              f"c {' / '.join(f'{e:.1e}' for e in err['c'])} | c-simd {' / '.join(f'{e:.1e}' for e in err['c-simd'])} | "
              f"same steps in {(a.steps[:, 0] == s.steps[:, 0]).mean():.0%}, status equal: "
              f"{np.array_equal(a.status, s.status)} |")


if __name__ == "__main__":
    main()
