"""Scaling curve (issue 13 item 5): patients/s and peak memory against N for one 6-cycle gemcitabine
arm of the pancreatic trial (host_response, daily outputs, scans, endpoints, statistics), in-process and
on a Dask LocalCluster of 2 worker processes (chemohost trial --workers 2), each N in a fresh process.

    python benchmarks/scaling.py [--ns 100,1000,10000,100000] [--workers 2] [--chunk 2000]

The same chunking (at most --chunk, at least 4 chunks per worker) in both modes.

Memory: the peak resident set of the main process, and for the cluster the largest worker's peak
(``ru_maxrss`` read on each worker).  Prints memory per patient from the slope between the two largest N,
and whether time is linear in N (patients/s of the largest N within 20% of the second largest).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r'''
import json, resource, sys, time, yaml
from pathlib import Path
from chemohost.studies.trial import Trial, run_trial
from chemohost.studies.cluster import executor
n, workers, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
d = yaml.safe_load(Path(sys.argv[4]).read_text())
d["arms"] = {k: v for k, v in d["arms"].items() if k == d["control"]}
d.update(patients=n, chunk_size=chunk, keep_timecourses=min(200, n))
t = Trial.from_dict(d, sys.argv[4])
run_trial(t, patients=2)  # load the compiled model (excluded)
with executor(workers if workers else None) as ex:
    if workers:
        run_trial(t, patients=2 * workers, chunk_size=1, executor=ex)  # warm the workers (excluded)
    t0 = time.perf_counter()
    r = run_trial(t, executor=ex)
    wall = time.perf_counter() - t0
    wpeak = 0
    if workers:
        wpeak = max(ex.client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values())
print("RESULT" + json.dumps({"n": n, "wall": wall, "failed": int((r.patients["status"] != "ok").sum()),
                             "main_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                             "worker_peak_kb": wpeak}))
'''


def run(n: int, workers: int, chunk: int) -> dict:
    env = {**os.environ, "CHEMOHOST_CACHE_DIR": os.environ.get("CHEMOHOST_CACHE_DIR", str(ROOT / ".chemohost-cache"))}
    f = ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml"
    r = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(workers), str(chunk), str(f)], capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.split("RESULT", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="100,1000,10000,100000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=2000)
    a = ap.parse_args()
    ns = [int(x) for x in a.ns.split(",")]
    print(f"benchmarks/scaling.py on {os.cpu_count()} cores: one 6-cycle gemcitabine arm (host_response), "
          f"chunks of min({a.chunk}, N / {4 * a.workers})")
    print("| N | in-process patients/s | peak RSS (MB) | LocalCluster x{w} patients/s | main / largest worker peak (MB) |"
          .format(w=a.workers))
    print("|---|---|---|---|---|")
    rows = []
    for n in ns:
        chunk = min(a.chunk, max(25, n // (4 * a.workers)))  # enough chunks to keep every worker busy
        ip = run(n, 0, chunk)
        cl = run(n, a.workers, chunk)
        rows.append((n, ip, cl))
        print(f"| {n:,} | {n / ip['wall']:,.0f} | {ip['main_peak_kb'] / 1024:,.0f} | {n / cl['wall']:,.0f} | "
              f"{cl['main_peak_kb'] / 1024:,.0f} / {cl['worker_peak_kb'] / 1024:,.0f} |", flush=True)
    if len(rows) >= 2:
        (n1, a1, c1), (n2, a2, c2) = rows[-2], rows[-1]
        per = (a2["main_peak_kb"] - a1["main_peak_kb"]) * 1024 / (n2 - n1)
        lin = (n2 / a2["wall"]) / (n1 / a1["wall"])
        print(f"in-process memory per patient (slope N={n1:,}..{n2:,}): {per / 1024:,.1f} KB; patients/s at "
              f"N={n2:,} / N={n1:,}: {lin:.2f} ({'linear' if 0.8 <= lin <= 1.25 else 'not linear'} in N)")
        print(f"cluster patients/s at N={n2:,} / N={n1:,}: {(n2 / c2['wall']) / (n1 / c1['wall']):.2f}; "
              f"cluster vs in-process at N={n2:,}: {a2['wall'] / c2['wall']:.2f}x")
    print(json.dumps([{"n": n, "in_process": ip, "cluster": cl} for n, ip, cl in rows]))


if __name__ == "__main__":
    main()
