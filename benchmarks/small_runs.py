"""What a user waits for on small runs: the first compile of a model, and a 300-patient trial end to end.

1. First compile with an empty cache (a fresh ``CHEMOHOST_CACHE_DIR``, in a fresh process each): the sympy
   code generation, then the compile of the engine with the C back end (the system C compiler: ``c-simd``, the
   default lane engine, and ``c``, one patient per thread) and, as the peer, numba's, for ``host_response`` (the full model) and ``chemo_core`` (the chemotherapy core,
   5x fewer flows), then the load from the cache that every later run pays.
2. ``chemohost trial scenarios/trial_pancreatic_il1_blockade.yaml`` (300 patients x 3 arms, report included),
   warm cache, as a user runs it (a fresh process, wall clock, best of ``--repeats``), split with the run's own
   manifest timings and the cost of importing the CLI; the peer is the engine alone in this process on the same
   900 patient-arms (same patients, regimens and dose rules; no endpoints, second pass, statistics or report),
   on each back end, and the same runs with the report's figures drawn in the main process
   (``CHEMOHOST_REPORT_WORKERS=1``; by default forked workers draw them side by side).

Issue 13's targets: first compile <= 15 s, the 300-patient trial <= 4 s warm.

    python benchmarks/small_runs.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml"

_COMPILE = """
import time, json, numpy as np
t0 = time.perf_counter()
import chemohost as ch
from chemohost.api import parameter_vector
from chemohost.engine import codegen
t1 = time.perf_counter()
m = ch.get_model({model!r})
cm = codegen.compile_model(m, True)  # sympy code generation (or, cached, the index) and the module's import
t2 = time.perf_counter()
names, p, _ = parameter_vector(m, "human", {{}})
regs = [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1,), 21, 1)]
ch.simulate(cm, p[None], regs, np.arange(0, 7.0), cm.output_names[:1], options=ch.SolverOptions(backend={backend!r}))
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "generate": t2 - t1, "compile": t3 - t2}}))
"""


def first_compile(model: str, backend: str) -> dict:
    """Seconds of a first compile of ``model`` for ``backend`` in a fresh process with an empty cache, then of a
    cached load (another fresh process)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CHEMOHOST_CACHE_DIR": cache}
        out = []
        for _ in ("cold", "warm"):
            r = subprocess.run([sys.executable, "-c", _COMPILE.format(model=model, backend=backend)], env=env,
                               capture_output=True, text=True, check=True)
            out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    cold, warm = out
    return {"generate": cold["generate"], "compile": cold["compile"], "total": cold["generate"] + cold["compile"],
            "cached": warm["generate"] + warm["compile"]}


def cli_trial(repeats: int) -> dict:
    """Best wall clock of ``chemohost trial`` on the shipped 300-patient file (fresh process, warm cache), its
    manifest timings, and the wall clock of importing the CLI; ``serial_report``: the best wall clock of the same
    runs with the report's figures drawn one after the other in the main process (``CHEMOHOST_REPORT_WORKERS=1``),
    alternating with the default runs."""
    best, serial = None, float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            for workers in (None, "1"):
                out = Path(tmp) / f"run{k}-{workers}"
                env = {**os.environ, **({"CHEMOHOST_REPORT_WORKERS": workers} if workers else {})}
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "chemohost.cli", "trial", str(TRIAL), "--out", str(out)],
                               check=True, capture_output=True, env=env)
                wall = time.perf_counter() - t0
                if workers:
                    serial = min(serial, wall)
                    continue
                timings = json.loads((out / "manifest.json").read_text())["timings_s"]
                if best is None or wall < best["wall"]:
                    best = {"wall": wall, **timings}
    best["serial_report"] = serial
    imp = min(_wall([sys.executable, "-c", "import chemohost.cli"]) for _ in range(repeats))
    python = min(_wall([sys.executable, "-c", "pass"]) for _ in range(repeats))
    best["import_cli"] = imp - python
    best["python"] = python
    best["rest"] = best["wall"] - python - best["import_cli"] - sum(best[k] for k in ("compile_or_load",
                                                                                      "simulate_and_endpoints",
                                                                                      "statistics"))
    return best


def _wall(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def engine_alone(repeats: int, backend: str) -> tuple[float, int]:
    """Best seconds of the engine (``backend``) on the trial's 300 patients x 3 arms in this process (warm), and
    patient-arms."""
    import dataclasses

    import numpy as np
    import yaml

    import chemohost as ch
    from chemohost.studies.trial import Trial
    from chemohost.studies.trial_runner import sample_trial_patients, setup_trial

    trial = Trial.from_dict(yaml.safe_load(TRIAL.read_text()), str(TRIAL))
    st = setup_trial(trial, trial.spec.seed)
    opts = dataclasses.replace(st.opts, backend=backend)
    names, P, _, _ = sample_trial_patients(trial, trial.spec.patients, trial.spec.seed)
    times = np.arange(0.0, trial.follow_up_days + 1.0)
    ch.simulate(st.cm, P[:2], trial.arms[trial.spec.control], times, ["ANC"], options=opts)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for regs in trial.arms.values():
            ch.simulate(st.cm, P, regs, times, ["ANC", "NLR", "tumour_total"], options=opts)
        best = min(best, time.perf_counter() - t0)
    return best, P.shape[0] * len(trial.arms)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the warm runs (best is printed)")
    a = ap.parse_args()
    import numba

    import chemohost as ch

    print(f"chemohost {ch.__version__}, numba {numba.__version__}; {os.cpu_count()} CPUs; {sys.platform}")
    print("\nFirst compile, empty cache, fresh process (s); engine back ends: the C compiler (c-simd, the default; c)")
    print("and, as the peer, numba:")
    print("| model | back end | sympy code generation | compile + first call | total | later runs (cached load) |")
    print("|---|---|---|---|---|---|")
    comp = {(m, b): first_compile(m, b) for m in ("host_response", "chemo_core") for b in ("c-simd", "c", "numba")}
    for (m, b), c in comp.items():
        print(f"| {m} | {b} | {c['generate']:.1f} | {c['compile']:.1f} | {c['total']:.1f} | {c['cached']:.2f} |")
    hc, hn = comp[("host_response", "c-simd")]["total"], comp[("host_response", "numba")]["total"]
    print(f"host_response: C (c-simd) {hc:.1f} s vs numba {hn:.1f} s ({hn / hc:.1f}x); "
          f"target <= 15 s: {'met' if hc <= 15 else 'not met'} (C), {'met' if hn <= 15 else 'not met'} (numba)")
    run = cli_trial(a.repeats)
    eng, n = engine_alone(a.repeats, "c-simd")
    eng_c, _ = engine_alone(a.repeats, "c")
    eng_nb, _ = engine_alone(a.repeats, "numba")
    print(f"\n`chemohost trial {TRIAL.relative_to(ROOT)}` (300 patients x 3 arms, warm cache), best of {a.repeats} (s):")
    print("| wall | python start | import chemohost.cli | model load | simulate + endpoints | statistics | "
          "setup, report and writing |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {run['wall']:.2f} | {run['python']:.2f} | {run['import_cli']:.2f} | {run['compile_or_load']:.2f} | "
          f"{run['simulate_and_endpoints']:.2f} | {run['statistics']:.2f} | {run['rest']:.2f} |")
    print(f"peer, the engine alone on the same {n} patient-arms in this process: c-simd (the run's) {eng:.2f} s "
          f"({n / eng:.0f} patient-arms/s; c {eng_c:.2f} s, {n / eng_c:.0f}/s; numba {eng_nb:.2f} s, "
          f"{n / eng_nb:.0f}/s); the whole run takes "
          f"{run['wall'] / eng:.1f}x that; "
          f"target <= 4 s: {'met' if run['wall'] <= 4 else 'not met'}")
    print(f"peer, the same runs with the report's figures drawn one after the other in the main process "
          f"(CHEMOHOST_REPORT_WORKERS=1, alternating with the runs above): {run['serial_report']:.2f} s wall "
          f"(x{run['serial_report'] / run['wall']:.2f} the default's)")


if __name__ == "__main__":
    main()
