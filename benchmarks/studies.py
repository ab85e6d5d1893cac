"""Benchmark of the studies (issue 11 speed targets, 2 cores), each against a named peer in the same process.

    python benchmarks/studies.py [--quick]

1. Sobol sensitivity: 20 parameters, N = 512 (N (D + 2) = 11,264 parameter sets x 2 arms = 22,528
   runs of the 6-cycle pancreatic typical patient; target <= 5 min).  Peer: the same runs one
   parameter set per engine call (a Python loop over samples), timed on 200 sets and scaled.
2. Optimisation: 100 candidates x 300 paired patients (the shipped bladder timing study; target
   <= 10 min).  Peer: evaluating a candidate through `run_trial` (control and candidate arms both
   simulated, full statistics), timed on 3 candidates and scaled.
3. Phase I: 1,000 simulated trials per design (3+3 and BOIN) in model mode, with 1,000 virtual
   patients per dose (the shipped bermekimab study; target <= 2 min).  Peer: none needed at this size;
   the design-only part is reported separately.
Prints wall times, throughput, the peer's time and the ratio.  ``--quick`` shrinks every size 8x.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def sobol(quick: bool) -> None:
    import yaml

    from chemohost.engine.simulate import SolverOptions, simulate
    from chemohost.studies.sensitivity import SensitivityStudy

    base = yaml.safe_load((ROOT / "scenarios" / "study_sensitivity_pancreatic_il1.yaml").read_text())
    params = ["il1r1_ec50", "gcsf_il1_emax", "bm_pol_max", "il1a_per_cm3", "dm_f_gsdmd", "pge2_a", "imm_sup",
              "ber_kd_nM", "bm_slope_gem", "CL_gem", "V1_gem", "Q_gem", "V2_gem", "bm_anc0", "bm_lymph0",
              "il1a_tumour_basal", "dm_k_casp1_on", "dm_k_casp1_off", "gcsf_base", "il6_base"]
    base["parameters"] = {p: {} for p in params}
    for p in ("il1a_tumour_basal",):
        base["parameters"][p] = {"lower": 0.1, "upper": 10}
    base["samples"] = 64 if quick else 512
    base["readouts"] = base["readouts"][:2]
    base["base"] = str(ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml")
    st = SensitivityStudy.from_dict(base, str(ROOT / "benchmarks" / "studies.py"))
    t0 = time.perf_counter()
    res = st.run()
    wall = time.perf_counter() - t0
    runs = res.summary["runs"] * len(res.summary["arms_simulated"])
    print(f"sobol: {len(params)} parameters, N = {base['samples']}: {res.summary['runs']:,} parameter sets x "
          f"{len(res.summary['arms_simulated'])} arms = {runs:,} runs in {wall:.1f} s ({runs / wall:.0f} runs/s; "
          f"simulate {res.timings['simulate']:.1f} s, analyse {res.timings['analyse']:.1f} s)")
    # peer: one parameter set per engine call
    trial = st.base.trial
    sv = trial.spec.solver
    opts = SolverOptions(rtol=sv.rtol, atol=sv.atol, max_steps=sv.max_steps)
    X = st.values(st.sample())[:200]
    cols = [st.base.names.index(n) for n in st.ranges]
    grid = st.base.grid()
    t0 = time.perf_counter()
    for row in X:
        P = st.base.typical.copy()[None, :]
        P[0, cols] = row
        for arm in res.summary["arms_simulated"]:
            simulate(trial.model, P, trial.arms[arm], grid, ["tumour_total", "NLR"], options=opts)
    peer = (time.perf_counter() - t0) / (200 * len(res.summary["arms_simulated"]))
    print(f"  peer (one parameter set per engine call): {1 / peer:.0f} runs/s -> {peer * runs:.1f} s for the same "
          f"runs; ratio {peer * runs / res.timings['simulate']:.1f}x")


def optimise(quick: bool) -> None:
    import yaml

    from chemohost.studies.optimize import OptimizeStudy
    from chemohost.studies.trial import Trial, run_trial

    d = yaml.safe_load((ROOT / "scenarios" / "study_optimize_bladder_blocker_timing.yaml").read_text())
    d["base"] = str(ROOT / "scenarios" / "trial_bladder_gc_il1_timing.yaml")
    if quick:
        d.update(trials=12, patients=40)
    st = OptimizeStudy.from_dict(d, str(ROOT / "benchmarks" / "studies.py"))
    t0 = time.perf_counter()
    res = st.run()
    wall = time.perf_counter() - t0
    n = d["trials"] * d["patients"]
    print(f"optimize: {d['trials']} candidates x {d['patients']} paired patients in {wall:.1f} s "
          f"({n / res.timings['optimise']:.0f} candidate-patients/s; setup {res.timings['setup']:.1f} s incl. control "
          f"and {len(st.compare)} shipped arms)")
    # peer: each candidate as a full paired trial (control + candidate arm, statistics)
    tr = Trial.load(d["base"])
    spec = copy.deepcopy(tr.spec.model_dump(mode="json"))
    c = res.summary["best"]
    regs = st.candidate_regimens({k: c[k] for k in ("dose", "interval", "offset", "duration", "schedule")})
    t0 = time.perf_counter()
    k = 3
    for _ in range(k):
        t = Trial.from_dict({**spec, "arms": {spec["control"]: spec["arms"][spec["control"]]}}, "peer")
        t.arms["candidate"] = regs
        run_trial(t, patients=d["patients"])
    peer = (time.perf_counter() - t0) / k
    print(f"  peer (run_trial per candidate): {peer:.1f} s per candidate -> {peer * d['trials']:.0f} s for the "
          f"study; ratio {peer * d['trials'] / wall:.1f}x")


def phase1(quick: bool) -> None:
    import yaml

    from chemohost.studies.phase1 import Phase1Study

    d = yaml.safe_load((ROOT / "scenarios" / "study_phase1_pancreatic_bermekimab.yaml").read_text())
    d["base"] = str(ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml")
    if quick:
        d.update(trials=125, pool=125)
    st = Phase1Study.from_dict(d, str(ROOT / "benchmarks" / "studies.py"))
    t0 = time.perf_counter()
    res = st.run()
    wall = time.perf_counter() - t0
    print(f"phase1: {d['trials']:,} trials x {len(d['designs'])} designs, {d['pool']:,} virtual patients x "
          f"{len(d['doses'])} doses in {wall:.1f} s (DLT pools {res.timings['dlt_rates']:.1f} s, trials "
          f"{res.timings['simulate_trials']:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["sobol", "optimize", "phase1"])
    a = ap.parse_args()
    os.environ.setdefault("CHEMOHOST_CACHE_DIR", str(ROOT / ".chemohost-cache"))
    print(f"benchmarks/studies.py on {os.cpu_count()} cores")
    for name, fn in (("sobol", sobol), ("optimize", optimise), ("phase1", phase1)):
        if a.only in (None, name):
            fn(a.quick)


if __name__ == "__main__":
    main()
