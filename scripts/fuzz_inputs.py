"""Input fuzzer for the ``chemohost`` command line: how does it handle bad input?

Builds deterministic, mutated copies of the shipped input files (``scenarios/*.yaml``,
``scenarios/trial_*.yaml``, ``problems/*.yaml``), of CLI argument lists and of ``--out`` paths, runs
each case as ``python -m chemohost.cli ...`` in a subprocess (fresh temporary folder, per-case
timeout, memory cap) and classifies the outcome:

  clean_rejection         exit 2, no traceback, stderr names the input file or the mutated field/flag
  unclear_rejection       exit 2, but the message names neither, is > 600 characters, or repeats pydantic
                          union branches (``field 'horizon.str'`` / ``.float`` / ``.int``)
  accepted                exit 0, or 3 (results written, some patients failed; flag some_patients_failed)
  accepted_should_reject  exit 0 for a mutation the generator marks must-reject (duplicate keys, BSA <= 0,
                          negative seed, absurd dose, NaN/inf, wrong types, size bombs, ...)
  traceback               'Traceback (most recent call last)' in the output, or an exit code not in {0, 2, 3}
  hang                    the per-case timeout was hit (the process group is killed)
  partial_output          non-zero exit, but --out exists and holds new/changed files, or a temporary
                          folder/file (``.NAME.tmp-*``, ``NAME.tmp``) was left behind

A case the fuzzer itself fails to run is recorded as ``fuzzer_error`` (a bug here, not in chemohost).

Secondary observations are recorded as ``flags`` (counted in the summary, never change the outcome):
``leftover_tmp`` (temporary files left even on exit 0), ``partial_output`` (also on a hang/traceback),
``no_file_named`` (exit 2 for a mutated file, but the message does not name that file),
``overwrote_existing`` (files of an earlier result in --out were replaced), ``only_first_error`` (a case
with several injected faults whose message names only some of them), ``late_rejection`` (exit 2 after
more than ``--late-threshold`` seconds, or after the "compiling model ..." progress line: the fault was
found after compiling/loading the model or simulating rather than when the file was read; a
heuristic), ``memory_error`` (a MemoryError, e.g. on the ``--mem-limit-gb`` address-space cap: without
the cap some of these would exhaust the machine or hang instead).

Cases are reproducible from (seed, case id): case ``i`` uses ``random.Random(f"{seed}:{i}")``; ids
0..len(TARGETED)-1 are the fixed targeted cases (the known bad inputs, in order), later ids draw a
generic mutation (weighted operator x shipped file).  The case list depends only on the seed, the id
and the shipped input files of the ``--inputs`` checkout, not on the chemohost under test: for a
before/after comparison give both runs the same ``--seed``, ``--cases`` and ``--inputs`` (e.g. a pristine
worktree of the old commit), and change only ``--src``.  ``--list`` prints the cases without running them.

Usage (from the repository root, with the project's venv)::

    export CHEMOHOST_CACHE_DIR=$PWD/.chemohost-cache
    .venv/bin/python scripts/fuzz_inputs.py --cases 400 --seed 1 --out /tmp/fuzz_report
    # before/after: a pristine worktree of the old commit vs the working tree, same cases
    git worktree add /work/fuzz_before HEAD
    .venv/bin/python scripts/fuzz_inputs.py --src /work/fuzz_before/src --inputs /work/fuzz_before \
        --seed 1 --out /tmp/fuzz_before
    .venv/bin/python scripts/fuzz_inputs.py --src src --inputs /work/fuzz_before --seed 1 --out /tmp/fuzz_after
    # list the cases without running them, or rerun a few (keeping their folders):
    .venv/bin/python scripts/fuzz_inputs.py --seed 1 --list | less
    .venv/bin/python scripts/fuzz_inputs.py --seed 1 --only 5,17 --keep --out /tmp/fz

Writes ``REPORT_DIR/cases.jsonl`` (one JSON line per case), ``REPORT_DIR/summary.md`` (counts per
outcome and category, every non-clean case with its reproduction command) and, for every non-clean
case, its input files under ``REPORT_DIR/inputs/<id>/`` (so the printed ``cd ... && python -m
chemohost.cli ...`` command reruns it; cases whose setup needs more than files -- read-only mounts,
FIFOs, symlinks, existing results -- rerun exactly with ``--only ID``).

Each run is kept small: trials get ``--patients 2`` unless the mutation is about patients; scenarios
are cut to <= 3 patients, <= 56 days and <= 2 cycles unless the mutation is about those fields; fits
run 1 start, 2 iterations, 20 MCMC steps, no profiles.  Runs are single-threaded (OMP/BLAS/numba
threads = 1).  Root ignores chmod, so the "read-only parent" fault uses a read-only bind mount inside a
private mount namespace (``unshare -m``); where that is unavailable the case falls back to a parent
that is a regular file.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUTCOMES = ("clean_rejection", "unclear_rejection", "accepted", "accepted_should_reject", "traceback", "hang",
            "partial_output")
NON_CLEAN = ("unclear_rejection", "accepted_should_reject", "traceback", "hang", "partial_output")
MAX_MESSAGE = 600
UNION_BRANCH = re.compile(r"[\w\]]\.(str|float|int|bool)\b['\s:]")
TRACEBACK = "Traceback (most recent call last)"


# ----------------------------------------------------------------------------------------------------
# cases
@dataclass
class Case:
    id: int
    category: str
    mutation: str
    must_reject: bool
    argv: list                      # arguments after `chemohost` (paths relative to the case folder)
    files: dict = field(default_factory=dict)     # name -> bytes, written into the case folder
    setup: list = field(default_factory=list)     # extra actions, see _apply_setup
    out: str | None = "out"         # the --out value (relative: inspected for partial output)
    names: list = field(default_factory=list)     # strings that count as naming the file / field / flag
    fields: list = field(default_factory=list)    # injected faults (several: "only first error" check)
    base: str | None = None         # shipped file the case derives from
    input_file: str | None = None   # the mutated file, for file-mutation cases (no_file_named flag)


class Bases:
    """The shipped input files, parsed, with their reduced ("small run") variants."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[str, dict] = {}
        for p in sorted((root / "scenarios").glob("*.yaml")):
            kind = "trial" if p.name.startswith("trial_") else "scenario"
            self._add(p, kind)
        for p in sorted((root / "problems").glob("*.yaml")):
            self._add(p, "problem")
        if not self.files:
            raise SystemExit(f"no input files under {root}/scenarios or {root}/problems")

    def _add(self, path: Path, kind: str):
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        self.files[path.stem] = {"path": path, "kind": kind, "text": text, "data": data,
                                 "small": reduce_data(data, kind)}

    def of_kind(self, kind: str) -> list[str]:
        return [k for k, v in self.files.items() if v["kind"] == kind]

    def first(self, kind: str, prefer: str | None = None) -> str:
        names = self.of_kind(kind)
        if prefer:
            for n in names:
                if prefer in n:
                    return n
        return names[0]


def _qty(value) -> tuple[float, str] | None:
    """('168 day') -> (168.0, 'day'); None if not a simple number + unit string."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*(.*?)\s*", value)
    if not m:
        return None
    try:
        return float(m.group(1)), m.group(2)
    except ValueError:
        return None


def reduce_data(data, kind: str):
    """A copy of a shipped file that runs fast: <= 3 patients, <= 56-day horizon, <= 2 cycles,
    output every >= 6 h (scenarios); trials and problems are unchanged (trials get --patients 2)."""
    d = copy.deepcopy(data)
    if kind != "scenario" or not isinstance(d, dict):
        return d
    pats = d.get("patients")
    if isinstance(pats, dict) and isinstance(pats.get("n"), int) and pats["n"] > 3:
        pats["n"] = 3
    hz = _qty(d.get("horizon"))
    if hz and hz[1] in ("day", "days", "d") and hz[0] > 56:
        d["horizon"] = "56 day"
    oi = _qty(d.get("output_interval"))
    if oi and oi[1] in ("h", "hour") and oi[0] < 6:
        d["output_interval"] = "6 h"
    regsets = [d.get("regimens") or []] + list((d.get("arms") or {}).values())
    for regs in regsets:
        for r in regs or []:
            if isinstance(r, dict) and isinstance(r.get("cycles"), int) and r["cycles"] > 2:
                r["cycles"] = 2
    return d


def dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100000)


# ---- data-path helpers -----------------------------------------------------------------------------
def walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def get_at(data, path):
    for p in path:
        data = data[p]
    return data


def set_at(data, path, value):
    get_at(data, path[:-1])[path[-1]] = value


def del_at(data, path):
    del get_at(data, path[:-1])[path[-1]]


def fmt_path(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out


def leaf_name(path) -> str:
    for p in reversed(path):
        if isinstance(p, str):
            return p
    return ""


# ---- field semantics (which mutated values must be rejected) ---------------------------------------
TIME_POS = {"horizon", "output_interval", "cycle_length", "infusion", "follow_up", "assessment_interval",
            "lab_interval", "every", "ii"}
TIME_NONNEG = {"start", "scan_window"}
COUNT_POS = {"cycles", "n", "patients", "chunk_size", "max_steps", "doses", "starts"}
COUNT_NONNEG = {"seed", "keep_timecourses", "addl"}
TOL = {"rtol", "atol"}
BOUND = {"lower", "upper", "nominal", "sigma"}
COVARIATE_PARENTS = {"covariates", "parameters"}
SIZE_BOUNDED = {"horizon", "follow_up", "n", "patients", "cycles", "dose"}


def kind_of(path) -> str | None:
    name = leaf_name(path)
    if "prior" in path:  # prior parameters (means, sds on any scale) have no fixed sign or range
        return None
    if path and isinstance(path[-1], int) and name == "days":
        return "day"
    if name in TIME_POS:
        return "time_pos"
    if name in TIME_NONNEG:
        return "time_nonneg"
    if name == "dose":
        return "dose"
    if name in COUNT_POS:
        return "count_pos"
    if name in COUNT_NONNEG:
        return "count_nonneg"
    if name in TOL:
        return "tol"
    if name in BOUND:
        return "bound"
    if len(path) >= 2 and path[-2] in COVARIATE_PARENTS:
        return "covariate"
    return None


def numeric_leaves(data):
    out = []
    for path, v in walk(data):
        if not path or isinstance(v, (dict, list)) or isinstance(v, bool):
            continue
        k = kind_of(path)
        if k and (isinstance(v, (int, float)) or _qty(v)):
            out.append((path, v, k))
    return out


def number_variants(value, kind: str, name: str):
    """(new value, description, must_reject) for a numeric leaf."""
    q = _qty(value)
    unit = q[1] if q else ""
    is_int = isinstance(value, int) and not q

    def w(x):  # keep the unit of a quantity
        if q:
            return f"{x} {unit}".strip()
        return x

    v = []
    neg_ok = False
    v.append((w(-1 if is_int else -abs(q[0] if q else float(value)) or -1), "negative", not neg_ok))
    zero_bad = kind in ("time_pos", "count_pos", "tol", "day", "covariate") or (kind == "bound" and name != "nominal")
    v.append((w(0), "zero", zero_bad))
    v.append((w(10 ** 7 if is_int else "1e7"), "huge (1e7)",
              kind in ("dose", "day") or name in SIZE_BOUNDED or kind in ("time_pos", "covariate", "tol")
              and name not in ("lab_interval", "assessment_interval", "infusion", "every", "ii")))
    v.append((w("1e308" if q else 1e308) if not is_int else 2 ** 70, "overflow (1e308 / 2**70)",
              (name != "seed" and kind not in ("count_nonneg", "bound")) or name == "keep_timecourses"))
    if q:
        v.append((w("nan"), "NaN quantity", True))
        v.append((w("inf"), "inf quantity", True))
        v.append((w("-inf"), "-inf quantity", True))
    else:
        v.append((float("nan"), "NaN (.nan)", True))
        v.append((float("inf"), "inf (.inf)", True))
    if is_int:
        v.append((1.5, "fraction for a whole number", True))
        v.append((True, "boolean for a number", True))
        v.append(("12abc", "non-numeric string", True))
    else:
        v.append((w("1e-300"), "tiny (1e-300)", kind in ("tol",) or name in ("output_interval", "lab_interval",
                                                                              "assessment_interval")))
        v.append((w("abc"), "non-numeric magnitude", True))
    return v


# ---- raw-text helpers ------------------------------------------------------------------------------
KEY_LINE = re.compile(r"^(?P<ind>\s*)(?P<dash>- )?(?P<key>[^\s:#'\"{}\[\],&*!|>%@`-][^:#{}\[\]]*?):(?P<rest>\s.*)?$")


def key_lines(text: str):
    """(line index, indent of the key, key, rest) for block-style mapping keys of a dumped YAML text."""
    out = []
    for i, line in enumerate(text.splitlines()):
        m = KEY_LINE.match(line)
        if m:
            ind = len(m.group("ind")) + (2 if m.group("dash") else 0)
            out.append((i, ind, m.group("key"), (m.group("rest") or "").strip()))
    return out


def dup_key_text(text: str, rng: random.Random, new_value: str | None = None, key: str | None = None):
    """Duplicate one mapping key (with its block, if any) right after it; returns (text, key, value)."""
    lines = text.splitlines()
    cands = [c for c in key_lines(text) if key is None or c[2] == key]
    if not cands:
        return None
    i, ind, k, rest = rng.choice(cands)
    j = i + 1
    while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > ind
                              or (lines[j][ind:ind + 2] == "- " and rest == "")):
        j += 1
    block = lines[i + 1:j]
    head = " " * ind + f"{k}:"
    if rest and new_value is not None:
        dup = [f"{head} {new_value}"]
    elif rest:
        dup = [f"{head} {rest}"]
    else:
        dup = [head] + block
    return "\n".join(lines[:j] + dup + lines[j:]) + "\n", k, rest


# ----------------------------------------------------------------------------------------------------
class Builder:
    """Turns (base file, mutation) into a Case; the command and size reductions depend on the kind."""

    def __init__(self, bases: Bases):
        self.b = bases

    def argv_for(self, base: str, fname: str, patients: bool = True, fit: bool = False, out: str = "out"):
        kind = self.b.files[base]["kind"]
        if kind == "scenario":
            return ["simulate", fname, "--out", out]
        if kind == "trial":
            return ["trial", fname, "--out", out] + (["--patients", "2"] if patients else [])
        if fit:
            return ["fit", fname, "--out", out, "--starts", "1", "--max-iterations", "2", "--no-profile",
                    "--steps", "20"]
        return ["export", "petab", "--problem", fname, "--out", out]

    def file_case(self, base: str, category: str, mutation: str, must_reject: bool, *, data=None, text=None,
                  raw: bytes | None = None, fields=(), patients=True, fit=False, extra_args=(), names=(),
                  setup=(), files=None) -> Case:
        fname = self.b.files[base]["path"].name
        if raw is None:
            if text is None:
                text = dump(self.b.files[base]["small"] if data is None else data)
            raw = text.encode("utf-8", "surrogatepass")
        fl = [f if isinstance(f, str) else fmt_path(f) for f in fields]
        nm = [fname] + [n for f in fields for n in ([f] if isinstance(f, str) else [leaf_name(f)]) if n] + list(names)
        allfiles = {fname: raw, **(files or {})}
        return Case(-1, category, f"{fname}: {mutation}", must_reject,
                    self.argv_for(base, fname, patients, fit) + list(extra_args), allfiles, list(setup), "out",
                    nm, fl, base, fname)

    def cli_case(self, base: str | None, category: str, mutation: str, must_reject: bool, argv: list,
                 names=(), setup=(), out: str | None = "out", files=None, fields=()) -> Case:
        allfiles = dict(files or {})
        nm = list(names)
        if base is not None:
            fname = self.b.files[base]["path"].name
            allfiles.setdefault(fname, dump(self.b.files[base]["small"]).encode())
        return Case(-1, category, mutation, must_reject, list(argv), allfiles, list(setup), out, nm, list(fields), base)


# ---- targeted cases: the known bad inputs (fixed ids 0..len-1) --------------------------------------
def targeted_cases(bd: Builder) -> list:
    B = bd.b
    sc = B.first("scenario", "d1_8_15")             # typical patient, regimens
    sc_arms = B.first("scenario", "g69")            # several arms
    tr = B.first("trial", "pancreatic")
    tr2 = B.first("trial", "bladder")
    pb = B.first("problem")
    S = lambda k: copy.deepcopy(B.files[k]["small"])  # noqa: E731
    out = []

    def T(fn):
        out.append(fn)
        return fn

    def mod(base, **changes):
        d = S(base)
        for k, v in changes.items():
            d[k] = v
        return d

    # --- duplicate keys (YAML "last wins") ---
    def dup_arm(rng):
        t, k, _ = dup_key_text(dump(S(tr)), rng, key=next(iter(B.files[tr]["data"]["arms"])))
        return bd.file_case(tr, "duplicate_key", f"arm '{k}' given twice (second copy replaces the first)", True,
                            text=t, fields=["arms"], names=[k])
    T(dup_arm)
    T(lambda rng: bd.file_case(tr, "duplicate_key", "duplicate 'patients:' (300 then 3)", True,
                               text=dump(S(tr)).replace("patients: ", "patients: 3\npatients: ", 1),
                               fields=["patients"]))
    T(lambda rng: bd.file_case(sc, "duplicate_key", "duplicate 'seed:'", True,
                               text=dump(S(sc)).replace("seed: ", "seed: 1\nseed: ", 1), fields=["seed"]))
    T(lambda rng: bd.file_case(tr, "duplicate_key", "duplicate 'seed:'", True,
                               text=dump(S(tr)).replace("seed: ", "seed: 1\nseed: ", 1), fields=["seed"]))
    T(lambda rng: bd.file_case(sc_arms, "duplicate_key", "duplicate key inside a flow mapping {dose: .., dose: ..}",
                               True, text=B.files[sc_arms]["text"].replace("dose: 120 mg/kg,", "dose: 120 mg/kg, dose: 1 mg/kg,", 1),
                               fields=["dose"]))

    # --- --out path faults ---
    def out_case(base, mutation, out_value, must_reject, setup=(), extra=()):
        def fn(rng):
            fname = B.files[base]["path"].name
            argv = bd.argv_for(base, fname, out=out_value) + list(extra)
            return bd.cli_case(base, "out_path", f"{fname}: {mutation}", must_reject, argv,
                               names=["--out", out_value] if out_value else ["--out"], setup=setup, out=out_value)
        return fn
    for base in (sc, tr):
        T(out_case(base, "--out under a read-only parent (ro bind mount)", "ro/out", True,
                   setup=[("ro_dir", "ro")]))
        T(out_case(base, "--out whose parent is a regular file", "afile/out", True,
                   setup=[("file", "afile", b"not a folder\n")]))
        T(out_case(base, "--out ''", "", True))
        T(out_case(base, "--out is an existing regular file", "existing.txt", True,
                   setup=[("file", "existing.txt", b"keep me\n")]))
    T(out_case(pb, "--out is an existing regular file", "existing.txt", True,
               setup=[("file", "existing.txt", b"keep me\n")]))
    T(out_case(sc, "--out '.' (the case folder, which holds the input)", ".", False))
    T(out_case(sc, "--out /proc/fuzz_out (procfs root)", "/proc/fuzz_out", True))
    T(out_case(sc, "--out /proc/version/out (parent is a proc file)", "/proc/version/out", True))
    T(out_case(sc, "--out folder that already holds results", "prev", False, setup=[("results", "prev")]))
    T(out_case(tr, "--out folder that already holds results", "prev", False, setup=[("results", "prev")]))

    # --- covariates, seeds, counts ---
    for bsa in ("-1 m2", "0 m2"):
        def bsa_case(rng, bsa=bsa):
            d = S(sc)
            d.setdefault("patients", {}).setdefault("covariates", {})["BSA"] = bsa
            return bd.file_case(sc, "covariate", f"covariates: {{BSA: {bsa}}}", True, data=d,
                                fields=[("patients", "covariates", "BSA")])
        T(bsa_case)
    T(lambda rng: bd.file_case(sc, "number", "seed: -1", True, data=mod(sc, seed=-1), fields=["seed"]))
    T(lambda rng: bd.file_case(tr, "number", "seed: -1", True, data=mod(tr, seed=-1), fields=["seed"]))
    T(lambda rng: bd.cli_case(sc, "cli_args", "simulate --seed -1", True,
                              ["simulate", B.files[sc]["path"].name, "--out", "out", "--seed", "-1"], names=["--seed", "seed"]))
    T(lambda rng: bd.file_case(tr, "number", "keep_timecourses: -1", True, data=mod(tr, keep_timecourses=-1),
                               fields=["keep_timecourses"]))
    T(lambda rng: bd.file_case(tr, "population", "population: {candidates_per_patient: abc}", True,
                               data=mod(tr, population={"candidates_per_patient": "abc"}),
                               fields=["population", "candidates_per_patient"]))
    T(lambda rng: bd.file_case(tr, "population", "population: {targets: 5}", True,
                               data=mod(tr, population={"targets": 5}), fields=["population", "targets"]))
    T(lambda rng: bd.file_case(tr, "population", "population: {candidates_per_patient: 0, targets: {BSA: {normal: "
                               "{mean: 1.8, sd: 0.2}}}}", True,
                               data=mod(tr, population={"candidates_per_patient": 0,
                                                        "targets": {"BSA": {"normal": {"mean": 1.8, "sd": 0.2}}}}),
                               fields=["population", "candidates_per_patient"]))
    T(lambda rng: bd.file_case(tr, "wrong_type", "patients: true", True, data=mod(tr, patients=True),
                               fields=["patients"], patients=False))
    T(lambda rng: bd.file_case(sc, "solver", "solver: {rtol: 0}", True, data=mod(sc, solver={"rtol": 0}),
                               fields=[("solver", "rtol")]))
    T(lambda rng: bd.file_case(tr, "solver", "solver: {rtol: 0}", True, data=mod(tr, solver={"rtol": 0}),
                               fields=[("solver", "rtol")]))

    # --- size bounds ---
    T(lambda rng: bd.file_case(sc, "size", "horizon: 1e7 day", True, data=mod(sc, horizon="1e7 day"),
                               fields=["horizon"]))
    T(lambda rng: bd.file_case(sc, "size", "output_interval: 1 ms", True, data=mod(sc, output_interval="1 ms"),
                               fields=["output_interval"]))
    T(lambda rng: bd.file_case(tr, "size", "lab_interval: 1 s", True, data=mod(tr, lab_interval="1 s"),
                               fields=["lab_interval"]))
    T(lambda rng: bd.file_case(tr, "size", "follow_up: 300 year", True, data=mod(tr, follow_up="300 year"),
                               fields=["follow_up"]))
    T(lambda rng: bd.cli_case(tr, "size", "trial --patients 10000000", True,
                              ["trial", B.files[tr]["path"].name, "--out", "out", "--patients", "10000000"],
                              names=["--patients", "patients"]))
    T(lambda rng: bd.cli_case(sc, "size", "simulate --patients 10000000", True,
                              ["simulate", B.files[sc]["path"].name, "--out", "out", "--patients", "10000000"],
                              names=["--patients", "patients"]))

    # --- YAML bombs ---
    T(lambda rng: bd.file_case(sc, "nesting", "5,000 nested brackets in 'outputs'", True,
                               text=dump(S(sc)).replace("outputs: ", "outputs: " + "[" * 5000 + "]" * 5000 + "\nx_: ", 1),
                               fields=["outputs"]))
    T(lambda rng: bd.file_case(sc, "alias_bomb", "billion laughs (9 levels of 9 aliases) as top-level keys", True,
                               text=dump(S(sc)) + billion_laughs(9, 9, top_level=True), fields=["lol"]))
    T(lambda rng: bd.file_case(tr, "alias_bomb", "billion laughs inside 'population'", True,
                               text=dump(mod(tr, population="BOMB")).replace("population: BOMB",
                                                                             "population: " + billion_laughs(9, 9)),
                               fields=["population"]))

    # --- runs that fail or do nothing ---
    T(lambda rng: bd.file_case(sc, "all_failed", "solver: {max_steps: 1} (every patient fails)", True,
                               data=mod(sc, solver={"max_steps": 1}), fields=[("solver", "max_steps")]))
    T(lambda rng: bd.file_case(tr, "all_failed", "solver: {max_steps: 1} (every patient fails)", True,
                               data=mod(tr, solver={"max_steps": 1}), fields=[("solver", "max_steps")]))

    def regimen_mod(base, key, value, what, must=True, category="semantic"):
        def fn(rng):
            d = S(base)
            regs = d["regimens"] if d.get("regimens") else next(iter(d["arms"].values()))
            if not regs:
                regs = next(r for r in d["arms"].values() if r)
            regs[0][key] = value
            path = ("regimens", 0, key) if d.get("regimens") else ("arms", "?", 0, key)
            return bd.file_case(base, category, what, must, data=d, fields=[path])
        return fn
    T(regimen_mod(sc, "dose", "1000 kg/m2", "absurd dose 1000 kg/m2", category="absurd_dose"))
    T(regimen_mod(tr, "dose", "1e9 mg/m2", "absurd dose 1e9 mg/m2", category="absurd_dose"))
    T(regimen_mod(sc_arms, "dose", "1000 g/kg", "absurd dose 1000 g/kg (mouse)", category="absurd_dose"))
    T(regimen_mod(sc, "start", "5000 day", "start: 5000 day (after the horizon: silently untreated)"))
    T(regimen_mod(tr, "start", "5000 day", "start: 5000 day (after the follow-up)"))

    # --- message quality ---
    T(lambda rng: bd.file_case(sc, "wrong_type", "horizon: [1, 2] (pydantic union branches)", True,
                               data=mod(sc, horizon=[1, 2]), fields=["horizon"]))
    T(regimen_mod(tr, "dose", {"amount": 1000}, "dose: {amount: 1000} (union branches)", category="wrong_type"))
    T(lambda rng: bd.file_case(sc, "message_length", "unknown output name (lists every output)", True,
                               data=mod(sc, outputs=["no_such_output"]), fields=["outputs"]))
    T(regimen_mod(tr, "drgu", "gemcitabine", "misspelt regimen key 'drgu'", category="rename_key"))

    def multi(rng):
        d = S(sc)
        d["horizon"] = "12 parsecs"
        d["seed"] = "abc"
        d["regimens"][0]["route"] = "nasal"
        return bd.file_case(sc, "multi_error", "three independent faults (horizon unit, seed type, route)", True,
                            data=d, fields=["horizon", "seed", ("regimens", 0, "route")])
    T(multi)

    def multi_trial(rng):
        d = S(tr)
        d["follow_up"] = "-3 month"
        d["control"] = "nobody"
        d["patients"] = 0
        return bd.file_case(tr, "multi_error", "three independent faults (follow_up, control, patients)", True,
                            data=d, fields=["follow_up", "control", "patients"], patients=False)
    T(multi_trial)

    # --- other commands ---
    pbn = B.files[pb]["path"].name
    for argv, what, must, names in (
            (["fit", pbn, "--out", "out", "--starts", "1", "--max-iterations", "2", "--no-profile", "--no-sample"],
             "fit --no-sample", False, ["--no-sample"]),
            (["fit", pbn, "--out", "out", "--starts", "0"], "fit --starts 0", True, ["--starts"]),
            (["fit", pbn, "--out", "out", "--starts", "-3"], "fit --starts -3", True, ["--starts"]),
            (["fit", pbn, "--out", "out", "--starts", "1", "--walkers", "1", "--steps", "20", "--no-profile"],
             "fit --walkers 1", True, ["--walkers"]),
            (["export", "sbml", "--model", "no_such_model", "--out", "m.xml"], "export sbml --model unknown", True,
             ["--model", "no_such_model"]),
            (["diagram", "--model", "host_response", "--out", "/proc/fuzz.svg"], "diagram --out /proc/fuzz.svg", True,
             ["--out", "/proc/fuzz.svg"]),
            (["validate", "--only", "no_such_check"], "validate --only unknown id", True, ["no_such_check"]),
    ):
        T(lambda rng, argv=argv, what=what, must=must, names=names: bd.cli_case(
            pb, "cli_args", what, must, argv, names=names, out="out" if "out" in argv else None))
    return out


def billion_laughs(depth: int, width: int, top_level: bool = False) -> str:
    names = [f"lol{i}" for i in range(depth)]
    if top_level:
        lines = [f'{names[0]}: &{names[0]} [{", ".join(["lol"] * width)}]']
        for i in range(1, depth):
            lines.append(f"{names[i]}: &{names[i]} [{', '.join(['*' + names[i - 1]] * width)}]")
        return "\n".join(lines) + "\n"
    items = [f'&{names[0]} [{", ".join(["1"] * width)}]']
    for i in range(1, depth):
        items.append(f"&{names[i]} [{', '.join(['*' + names[i - 1]] * width)}]")
    return "{" + ", ".join(f"k{i}: {it}" for i, it in enumerate(items)) + "}"


# ---- generic mutations (ids >= len(TARGETED)) ------------------------------------------------------
def gen_number(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    leaves = numeric_leaves(d)
    if not leaves:
        return None
    path, v, kind = rng.choice(leaves)
    new, what, must = rng.choice(number_variants(v, kind, leaf_name(path)))
    set_at(d, path, new)
    about_patients = leaf_name(path) == "patients"
    return bd.file_case(base, "number", f"{fmt_path(path)}: {v!r} -> {new!r} ({what})", must, data=d,
                        fields=[path], patients=not about_patients)


UNIT_SWAPS = {"time": ["5 mg", "5 mg/m2", "5 kg", "3 m2"], "dose": ["1000 day", "1000 mL", "1000 m2", "1000 mol/s"],
              "area": ["1.8 day", "1.8 kg/m2"]}


def gen_unit(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    leaves = [(p, v, k) for p, v, k in numeric_leaves(d) if _qty(v) and _qty(v)[1]]
    if not leaves:
        return None
    path, v, kind = rng.choice(leaves)
    num, unit = _qty(v)
    dim = "time" if kind in ("time_pos", "time_nonneg") else "dose" if kind == "dose" else "area"
    choices = [
        (rng.choice(UNIT_SWAPS[dim]), "wrong dimension", True),
        (num, "bare number (no unit)", False),
        (f"{num:g}", "number as string, no unit", False),
        (f"{num:g} blorps", "unknown unit", True),
        (unit, "unit without a number", True),
        (f"{num:g}{unit}", "no space between number and unit", False),
        (f"{num:g} {unit.upper()}", "unit in upper case", False),
        (f"{num:g} {unit} {unit}", "unit given twice", True),
        (f"{num:g} {unit}^2", "unit squared", True),
        (f"{num:g},5 {unit}", "decimal comma", True),
        (f"{num:g} +- 3 {unit}", "plus-minus", True),
        (f"{unit} {num:g}", "unit before number", True),
        (f"{num:g} % ", "percent", True),
        (f"{num:g} {unit}; rm -rf /", "shell metacharacters", True),
        (f"__import__('os').system('true') {unit}", "python expression", True),
    ]
    new, what, must = rng.choice(choices)
    set_at(d, path, new)
    return bd.file_case(base, "unit", f"{fmt_path(path)}: {v!r} -> {new!r} ({what})", must, data=d, fields=[path])


def gen_wrong_type(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    cands = [(p, v) for p, v in walk(d) if p and isinstance(p[-1], str)]
    path, v = rng.choice(cands)
    if isinstance(v, dict):
        opts = [([1, 2], "list for a mapping", True), ("text", "string for a mapping", True),
                (5, "number for a mapping", True), (True, "boolean for a mapping", True)]
    elif isinstance(v, list):
        opts = [({"a": 1}, "mapping for a list", True), (5, "number for a list", True),
                ("a, b", "string for a list", True), ([[]], "nested empty list", True)]
    else:
        opts = [([v, v], "list for a scalar", True), ({"value": v}, "mapping for a scalar", True),
                (True, "boolean for a scalar", not isinstance(v, bool)),
                (None, "null", False), ("", "empty string", False),
                ("2024-01-01", "date string", True)]
        if isinstance(v, str) and not _qty(v):
            opts.append((12345, "number for a name", True))
    new, what, must = rng.choice(opts)
    set_at(d, path, new)
    text = dump(d)
    if what == "date string":  # an unquoted date: YAML timestamp
        text = text.replace(f"{path[-1]}: '2024-01-01'", f"{path[-1]}: 2024-01-01")
    return bd.file_case(base, "wrong_type", f"{fmt_path(path)}: {what} ({new!r})", must, text=text, fields=[path],
                        patients=leaf_name(path) != "patients")


def gen_drop_key(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    cands = [p for p, _ in walk(d) if p and isinstance(p[-1], str)]
    path = rng.choice(cands)
    required = {"name", "model", "horizon", "control", "arms", "drug", "dose", "problem", "measurements"}
    del_at(d, path)
    must = path[-1] in required and (len(path) == 1 or path[-1] in ("drug", "dose"))
    return bd.file_case(base, "drop_key", f"drop '{fmt_path(path)}'", must, data=d, fields=[path])


def gen_rename_key(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    cands = [p for p, _ in walk(d) if p and isinstance(p[-1], str)]
    path = rng.choice(cands)
    k = path[-1]
    parent = get_at(d, path[:-1])
    is_free_key = len(path) >= 2 and path[-2] in ("arms", "observables", "estimate", "parameters", "covariates")
    variants = [(k + "s", "plural"), (k.upper(), "upper case"), (k[:-1] if len(k) > 1 else k + "_", "truncated"),
                (k.replace("_", "-") if "_" in k else k + "-", "dash"), (k + " x", "suffix"),
                (k[0] + "\u200b" + k[1:], "zero-width space"), ("\u0430" + k[1:] if k[:1] == "a" else k + "\u0301",
                                                                "homoglyph/combining mark")]
    new, what = rng.choice(variants)
    if new == k or new in parent:
        new = k + "_x"
    items = list(parent.items())
    parent.clear()
    for kk, vv in items:
        parent[new if kk == k else kk] = vv
    must = not is_free_key or path[-2] in ("estimate",)
    return bd.file_case(base, "rename_key", f"rename '{fmt_path(path)}' -> {new!r} ({what})", must, data=d,
                        fields=[path], names=[new.strip()])


def gen_dup_key(bd, rng, base):
    text = dump(bd.b.files[base]["small"])
    r = dup_key_text(text, rng, new_value=None)
    if r is None:
        return None
    t, k, rest = r
    if rest and rng.random() < 0.5:  # duplicate with a different value
        q = _qty(rest.strip("'\""))
        alt = f"{q[0] * 2:g} {q[1]}".strip() if q else ("2" if rest.isdigit() else rest)
        t, k, rest = dup_key_text(text, random.Random(0), new_value=alt, key=k) or (t, k, rest)
    return bd.file_case(base, "duplicate_key", f"duplicate key '{k}'", True, text=t, fields=[k])


UNICODE = ["\u00e9t\u00e9", "\U0001F48A", "\u202eevil", "\u200b", "\u0000", "\uFEFF", "\u0661\u0660\u0660\u0660",
           "\uff11\uff10\uff10\uff10", "\u03bcg", "\ud800", "a\nb", "\x1b[31mred"]


def gen_unicode(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    cands = [(p, v) for p, v in walk(d) if p and isinstance(v, str)]
    path, v = rng.choice(cands)
    u = rng.choice(UNICODE)
    q = _qty(v)
    if q and rng.random() < 0.5:
        new = f"{u} {q[1]}" if rng.random() < 0.5 else f"{q[0]:g} {u}"
    else:
        new = rng.choice([u, v + u, u + v])
    name = leaf_name(path)
    free = name in ("name", "description") or (len(path) >= 2 and path[-2] == "arms")
    must = not free or "\u0000" in new or "\ud800" in new
    set_at(d, path, new)
    try:
        text = dump(d)
        raw = text.encode("utf-8", "surrogatepass")
    except yaml.YAMLError:  # NUL etc. cannot be dumped: write the raw characters
        raw = dump(bd.b.files[base]["small"]).replace(str(v), new, 1).encode("utf-8", "surrogatepass")
    return bd.file_case(base, "unicode", f"{fmt_path(path)}: {v!r} -> {new!r}", must, raw=raw, fields=[path])


def gen_long_string(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    n = rng.choice([10_000, 100_000, 1_000_000])
    mode = rng.choice(["name", "value", "key", "description"])
    long = "x" * n
    if mode == "name" and "name" in d:
        d["name"] = long
        return bd.file_case(base, "long_string", f"name of {n:,} characters", False, data=d, fields=["name"])
    if mode == "description":
        d["description"] = long
        return bd.file_case(base, "long_string", f"description of {n:,} characters", False, data=d,
                            fields=["description"])
    if mode == "key":
        d[long] = 1
        return bd.file_case(base, "long_string", f"unknown top-level key of {n:,} characters", True, data=d,
                            fields=["x" * 20])
    leaves = [(p, v) for p, v in walk(d) if p and isinstance(v, str) and leaf_name(p) not in ("name", "description")]
    path, v = rng.choice(leaves)
    q = _qty(v)
    new = f"{q[0]:g} {long}" if q else long
    set_at(d, path, new)
    return bd.file_case(base, "long_string", f"{fmt_path(path)}: {n:,}-character value", True, data=d, fields=[path])


def gen_structure(bd, rng, base):
    text = dump(bd.b.files[base]["small"])
    orig = bd.b.files[base]["text"]
    opts = [
        (b"", "empty file", True),
        (b"# only a comment\n", "only a comment", True),
        (b"---\n...\n", "empty document", True),
        (b"- a\n- b\n", "top-level list", True),
        (b"42\n", "top-level scalar", True),
        (b"null\n", "top-level null", True),
        (text.encode() + b"---\nname: second\n", "two YAML documents", True),
        (bytes(random.Random(rng.random()).getrandbits(8) for _ in range(2048)), "2 KiB of random bytes", True),
        (b"\x00" * 64 + text.encode(), "NUL bytes before the content", True),
        (text.encode("utf-16"), "UTF-16 encoded", True),
        (text.encode("latin-1", "replace") + "\nnote: caf\u00e9\n".encode("latin-1"), "latin-1 bytes (not UTF-8)", True),
        (b"\xef\xbb\xbf" + text.encode(), "UTF-8 byte-order mark", False),
        (text.replace("  ", "\t").encode(), "tabs for indentation", True),
        (text.replace("\n", "\r\n").encode(), "CRLF line ends", False),
        (text.replace("\n", "\r").encode(), "old-Mac CR line ends", False),
        (text[: rng.randrange(1, max(2, len(text)))].encode(), "truncated at a random point", False),
        (orig.encode() + b"\n  bad_indent: 1\n", "stray indented line at the end", True),
        (text.encode() + b"\n!!python/object/apply:os.system ['echo pwned']\n", "python tag", True),
        (f"name: !!python/object/apply:os.getcwd []\n{text}".encode(), "python object tag on a field", True),
        (text.replace("name:", "name: !!binary aGVsbG8=\nx_name:", 1).encode(), "!!binary tag", True),
        (text.encode() + b"\n? [complex, key]\n: 1\n", "complex (list) mapping key", True),
        (text.encode() + b"\n1: numeric key\n", "integer key", True),
        (text.encode() + b"\nnull: null key\n", "null key", True),
        (text.encode() + b"\n<<: {extra_merged: 1}\n", "merge key with an unknown field", True),
        ("\n".join(orig.splitlines()[:3]).encode() + b"\n\x7f\x80\xff\n", "invalid UTF-8 bytes", True),
    ]
    raw, what, must = rng.choice(opts)
    return bd.file_case(base, "structure", what, must, raw=raw)


def gen_nesting(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    depth = rng.choice([50, 500, 2000, 5000, 20000])
    key = rng.choice([k for k in d if isinstance(k, str)])
    style = rng.choice(["[", "{", "block"])
    text = dump({k: v for k, v in d.items() if k != key})
    if style == "[":
        nested = "[" * depth + "]" * depth
    elif style == "{":
        nested = "{a: " * depth + "1" + "}" * depth
    else:
        nested = "\n" + "".join(" " * i + "a:\n" for i in range(min(depth, 2000))) + " " * min(depth, 2000) + "b: 1"
    text += f"{key}: {nested}\n"
    return bd.file_case(base, "nesting", f"'{key}' nested {depth if style != 'block' else min(depth, 2000)} deep "
                                         f"({style})", True, text=text, fields=[key])


def gen_alias(bd, rng, base):
    d = copy.deepcopy(bd.b.files[base]["small"])
    mode = rng.choice(["harmless", "bomb_small", "bomb", "recursive", "undefined"])
    text = dump(d)
    if mode == "harmless":  # reuse a mapping through an anchor: valid YAML, same content
        lines = text.splitlines()
        i = next((j for j, l in enumerate(lines) if l.startswith("description:")), None)
        if i is None:
            return bd.file_case(base, "alias", "anchor on 'name' (no alias use)", False,
                                text=text.replace("name: ", "name: &nm ", 1))
        lines[i] = "description: &d " + lines[i].split(":", 1)[1].strip()
        return bd.file_case(base, "alias", "anchor + alias: x_copy: *d (unknown field holding an alias)", True,
                            text="\n".join(lines) + "\nx_copy: *d\n", fields=["x_copy"])
    if mode == "recursive":
        return bd.file_case(base, "alias", "self-referencing anchor in 'parameters'", True,
                            text=text + "parameters: &r {a: *r}\n" if "parameters" not in d else
                            text.replace("parameters:", "x_unused:", 1) + "parameters: &r {a: *r}\n",
                            fields=["parameters"])
    if mode == "undefined":
        return bd.file_case(base, "alias", "alias to an undefined anchor", True, text=text + "extra: *nowhere\n",
                            fields=["extra"])
    depth, width = (4, 4) if mode == "bomb_small" else (rng.choice([8, 9, 10]), rng.choice([8, 9, 10]))
    key = rng.choice([k for k in ("description", "outputs", "parameters", "population", "perturbations",
                                  "x_lol") if k in d or k == "x_lol"])
    body = {k: v for k, v in d.items() if k != key}
    return bd.file_case(base, "alias_bomb", f"alias bomb {width}^{depth} in '{key}'", True,
                        text=dump(body) + f"{key}: {billion_laughs(depth, width)}\n", fields=[key])


def gen_semantic(bd, rng, base):
    kind = bd.b.files[base]["kind"]
    d = copy.deepcopy(bd.b.files[base]["small"])
    regs = None
    rpath = None
    if d.get("regimens"):
        regs, rpath = d["regimens"], ("regimens",)
    elif isinstance(d.get("arms"), dict):
        for name, rr in d["arms"].items():
            if rr:
                regs, rpath = rr, ("arms", name)
                break
    opts = []
    if regs:
        r0 = regs[0]
        p = rpath + (0,)
        opts += [
            (lambda: r0.__setitem__("drug", "gemcitabin"), "unknown drug 'gemcitabin'", True, p + ("drug",)),
            (lambda: r0.__setitem__("route", "im"), "unknown route 'im'", True, p + ("route",)),
            (lambda: r0.__setitem__("dose_modification", "nope"), "unknown dose_modification", True,
             p + ("dose_modification",)),
            (lambda: r0.__setitem__("days", [0, 1]), "day 0", True, p + ("days",)),
            (lambda: r0.__setitem__("days", [8, 1]), "days not increasing", True, p + ("days",)),
            (lambda: r0.__setitem__("days", []), "no treatment days", True, p + ("days",)),
            (lambda: r0.__setitem__("days", [1, 400]), "day beyond the cycle", True, p + ("days",)),
            (lambda: r0.__setitem__("times_of_day", ["25 h"]), "time of day 25 h", True, p + ("times_of_day",)),
            (lambda: r0.__setitem__("times_of_day", ["8 h", "8 h"]), "duplicate times of day", True,
             p + ("times_of_day",)),
            (lambda: r0.update(every="8 h"), "'every' without 'doses'", True, p + ("every",)),
            (lambda: r0.update(doses=3), "'doses' without 'every'", True, p + ("doses",)),
            (lambda: r0.update(addl=2), "'addl' without 'ii'", True, p + ("addl",)),
            (lambda: r0.update(infusion="30 day"), "infusion longer than the dose gap", True, p + ("infusion",)),
            (lambda: r0.update(route="oral", infusion="30 min"), "oral route with an infusion", True,
             p + ("infusion",)),
            (lambda: r0.update(start="5000 day"), "start after the horizon/follow-up", True, p + ("start",)),
            (lambda: r0.update(cycle_length="1 h", days=[1]), "cycle_length 1 h", False, p + ("cycle_length",)),
            (lambda: regs.append(copy.deepcopy(r0)), "the same regimen twice (double dose)", False, rpath),
        ]
    if kind in ("scenario", "trial", "problem"):
        opts += [
            (lambda: d.__setitem__("model", "no_such_model"), "unknown model", True, ("model",)),
            (lambda: d.__setitem__("species", "rat"), "unknown species", True, ("species",)),
            (lambda: d.__setitem__("perturbations", ["no_such_ko"]), "unknown perturbation", True,
             ("perturbations",)),
            (lambda: d.__setitem__("parameters", {"no_such_param": 1}), "unknown parameter", True, ("parameters",)),
            (lambda: d.__setitem__("parameters", {"BSA": "1.8 mg"}), "parameter with a wrong unit", True,
             ("parameters",)),
        ]
    if kind == "scenario":
        opts += [
            (lambda: d.__setitem__("outputs", ["ANC", "ANC"]), "duplicate output", True, ("outputs",)),
            (lambda: d.__setitem__("outputs", []), "empty outputs list", False, ("outputs",)),
            (lambda: d.__setitem__("event_table", "missing.csv"), "event_table file missing", True,
             ("event_table",)),
            (lambda: (d.pop("regimens", None), d.pop("arms", None), d.__setitem__("event_table", ".")),
             "event_table is a folder", True, ("event_table",)),
            (lambda: (d.pop("regimens", None), d.pop("arms", None),
                      d.__setitem__("event_table", bd.b.files[base]["path"].name)),
             "event_table is the scenario YAML itself", True, ("event_table",)),
            (lambda: (d.pop("regimens", None), d.pop("arms", None), d.__setitem__("event_table", "/dev/zero")),
             "event_table is /dev/zero", True, ("event_table",)),
            (lambda: (d.pop("regimens", None), d.pop("arms", None)), "no regimens and no arms", False, ("regimens",)),
            (lambda: d.__setitem__("arms", {"a": regs or []}), "both regimens and arms" if d.get("regimens") else
             "arms replaced by one arm 'a'", bool(d.get("regimens")), ("arms",)),
            (lambda: d.__setitem__("patients", {"n": 2, "covariates": {"no_such_cov": 1}}), "unknown covariate",
             True, ("patients", "covariates")),
            (lambda: d.__setitem__("species", "mouse"), "species mouse (doses and parameters of the other species)",
             False, ("species",)),
        ]
    if kind == "trial":
        opts += [
            (lambda: d.__setitem__("control", "nobody"), "control not among the arms", True, ("control",)),
            (lambda: d.__setitem__("arms", {}), "no arms", True, ("arms",)),
            (lambda: d["arms"].__setitem__(d["control"], []), "control arm without treatment", False, ("arms",)),
            (lambda: d.__setitem__("indication", "no_such_indication"), "unknown indication", True, ("indication",)),
            (lambda: d.__setitem__("scan_window", "60 day"), "scan window wider than the assessment interval", True,
             ("scan_window",)),
            (lambda: d.__setitem__("follow_up", "1 day"), "follow-up shorter than a cycle", True, ("follow_up",)),
            (lambda: d.__setitem__("population", {"frac_female": 2}), "population.frac_female 2", True,
             ("population",)),
            (lambda: d.__setitem__("population", {"age_min": 90}), "population age_min > age_max", True,
             ("population",)),
            (lambda: d.__setitem__("population", {"no_such_field": 1}), "unknown population field", True,
             ("population",)),
            (lambda: d.__setitem__("population", {"targets": {"BSA": {"weird": {}}}}), "target of unknown kind", True,
             ("population",)),
            (lambda: d.__setitem__("population", {"targets": {"no_col": {"normal": {"mean": 1, "sd": 1}}}}),
             "target on an unknown column", True, ("population",)),
            (lambda: d.__setitem__("species", "mouse"), "mouse species with a human indication", True,
             ("species",)),
        ]
    if kind == "problem":
        m0 = (d.get("measurements") or [{}])[0]
        est = d.get("estimate") or {}
        e0 = next(iter(est), None)
        opts += [
            (lambda: m0.__setitem__("table", "no_such_table"), "unknown measurement table", True,
             ("measurements", 0, "table")),
            (lambda: (m0.pop("table", None), m0.__setitem__("file", "missing.csv")), "measurement file missing", True,
             ("measurements", 0, "file")),
            (lambda: d.__setitem__("measurements", []), "no measurements", True, ("measurements",)),
            (lambda: est.__setitem__("no_such_param", {"scale": "log10"}), "estimate an unknown parameter", True,
             ("estimate",)),
            (lambda: est.__setitem__(e0, {"scale": "log10", "lower": 10, "upper": 1}), "lower > upper", True,
             ("estimate", e0)),
            (lambda: est.__setitem__(e0, {"scale": "log10", "lower": -1, "upper": 1}), "log scale with lower < 0",
             True, ("estimate", e0)),
            (lambda: est.__setitem__(e0, {"scale": "ln"}), "unknown scale", True, ("estimate", e0)),
            (lambda: est.__setitem__(e0, {"scale": "log10", "prior": {"type": "cauchy", "parameters": [0, 1]}}),
             "unknown prior type", True, ("estimate", e0)),
            (lambda: est.__setitem__(e0, {"scale": "log10", "prior": {"type": "normal", "parameters": [0]}}),
             "prior with one parameter", True, ("estimate", e0)),
            (lambda: est.__setitem__(e0, {"scale": "log10", "prior": {"type": "normal", "parameters": [0, -1]}}),
             "prior with negative sd", True, ("estimate", e0)),
            (lambda: d.__setitem__("estimate", {}), "nothing to estimate", False, ("estimate",)),
            (lambda: [o.__setitem__("noise", "poisson") for o in (d.get("observables") or {}).values()],
             "unknown noise model", True, ("observables",)),
            (lambda: [o.__setitem__("formula", "no_such_symbol * 2") for o in (d.get("observables") or {}).values()],
             "formula with an unknown symbol", True, ("observables",)),
            (lambda: [o.__setitem__("formula", "ANC +* 2") for o in (d.get("observables") or {}).values()],
             "formula that does not parse", True, ("observables",)),
            (lambda: [o.__setitem__("sigma", -0.3) for o in (d.get("observables") or {}).values()],
             "negative sigma", True, ("observables",)),
            (lambda: d.__setitem__("observables", {}), "no observables for the measured rows", True,
             ("observables",)),
        ]
    fn, what, must, path = rng.choice(opts)
    fn()
    return bd.file_case(base, "semantic", what, must, data=d, fields=[path], fit=kind == "problem" and rng.random() < 0.15)


def gen_size(bd, rng, base):
    kind = bd.b.files[base]["kind"]
    d = copy.deepcopy(bd.b.files[base]["small"])
    regs = d.get("regimens") or next((r for r in (d.get("arms") or {}).values() if r), None)
    opts = []
    if kind == "scenario":
        opts += [
            (lambda: d.__setitem__("patients", {"n": 10 ** 7}), "patients.n 1e7", True, ("patients", "n")),
            (lambda: d.__setitem__("horizon", "300 year"), "horizon 300 year", True, ("horizon",)),
            (lambda: d.__setitem__("output_interval", "1 s"), "output_interval 1 s", True, ("output_interval",)),
            (lambda: d.__setitem__("outputs", (d.get("outputs") or ["ANC"]) * 5000), "outputs list x5000", True,
             ("outputs",)),
            (lambda: d.__setitem__("arms", {f"arm{i}": regs for i in range(300)}) or d.pop("regimens", None),
             "300 identical arms", False, ("arms",)),
        ]
    if kind == "trial":
        opts += [
            (lambda: d.__setitem__("patients", 10 ** 7), "patients 1e7 (file)", True, ("patients",)),
            (lambda: d.__setitem__("assessment_interval", "1 s"), "assessment_interval 1 s", True,
             ("assessment_interval",)),
            (lambda: d.__setitem__("keep_timecourses", 10 ** 9), "keep_timecourses 1e9", False,
             ("keep_timecourses",)),
            (lambda: d.__setitem__("chunk_size", 1), "chunk_size 1", False, ("chunk_size",)),
            (lambda: d.__setitem__("arms", {**d["arms"], **{f"copy{i}": d["arms"][d["control"]] for i in range(100)}}),
             "100 extra arms", False, ("arms",)),
        ]
    if regs:
        opts += [
            (lambda: regs[0].update(cycles=10 ** 6), "cycles 1e6", True, ("cycles",)),
            (lambda: regs[0].update(days=list(range(1, 10001)), cycle_length="10000 day"), "10,000 treatment days",
             True, ("days",)),
            (lambda: regs[0].update(times_of_day=[f"{i / 100:.2f} h" for i in range(2400)]),
             "2,400 doses a day", True, ("times_of_day",)),
        ]
    if kind == "problem":
        opts += [(lambda: d.__setitem__("measurements", (d.get("measurements") or []) * 2000),
                  "measurement sources x2000", True, ("measurements",))]
    if not opts:
        return None
    fn, what, must, path = rng.choice(opts)
    fn()
    return bd.file_case(base, "size", what, must, data=d, fields=[path], patients=path[0] != "patients")


def gen_cli_args(bd, rng, base):
    kind = bd.b.files[base]["kind"]
    fname = bd.b.files[base]["path"].name
    if kind == "scenario":
        head = ["simulate", fname, "--out", "out"]
    elif kind == "trial":
        head = ["trial", fname, "--out", "out", "--patients", "2"]
    else:
        head = ["export", "petab", "--problem", fname, "--out", "out"]
    common = [
        (head[:1] + head[2:], "missing positional/input", True, ["required", "argument"]),
        (head + ["--bogus-flag"], "unknown option", True, ["--bogus-flag"]),
        ([a for a in head if a not in ("--out", "out")], "missing --out", True, ["--out"]),
        ([fname if a == fname else a for a in head[:1]] + ["missing.yaml"] + head[2:] if kind != "problem" else
         [a if a != fname else "missing.yaml" for a in head], "input file does not exist", True, ["missing.yaml"]),
        ([a if a != fname else "." for a in head], "input is a folder", True, ["."]),
        ([a if a != fname else "/dev/null" for a in head], "input is /dev/null", True, ["/dev/null"]),
        ([a if a != fname else "/dev/zero" for a in head], "input is /dev/zero", True, ["/dev/zero"]),
        ([a if a != fname else "fifo.yaml" for a in head], "input is a FIFO (nobody writes)", True, ["fifo.yaml"]),
        ([a if a != fname else "loop.yaml" for a in head], "input is a symlink loop", True, ["loop.yaml"]),
        ([a if a != fname else "dangling.yaml" for a in head], "input is a dangling symlink", True, ["dangling.yaml"]),
        ([a if a != fname else "/proc/self/environ" for a in head], "input is /proc/self/environ", True,
         ["environ"]),
        ([a if a != fname else "" for a in head], "input ''", True, ["''", "not found", "input"]),
        ([a if a != fname else "x" * 300 + ".yaml" for a in head], "input name of 300 characters", True,
         ["x" * 40]),
    ]
    if kind in ("scenario", "trial"):
        for val, must in (("0", True), ("-1", True), ("abc", True), ("1.5", True), ("1e3", True), ("", True),
                          (str(2 ** 64), True), ("٣", False)):
            common.append(([a for a in head if a not in ("--patients", "2")] + ["--patients", val],
                           f"--patients {val!r}", must, ["--patients"]))
        for val, must in (("-5", True), ("abc", True), (str(2 ** 64), False), ("0x10", True)):
            common.append((head + ["--seed", val], f"--seed {val!r}", must, ["--seed"]))
    if kind == "trial":
        common += [
            (head + ["--design", "crossover"], "--design unknown", True, ["--design"]),
            ([a for a in head if a not in ("--patients", "2")] + ["--design", "randomized", "--replicates", "0",
                                                                   "--per-arm", "2"],
             "--replicates 0", True, ["--replicates"]),
            ([a for a in head if a not in ("--patients", "2")] + ["--design", "randomized", "--replicates", "2",
                                                                   "--per-arm", "-1"],
             "--per-arm -1", True, ["--per-arm"]),
            ([a for a in head if a not in ("--patients", "2")] + ["--design", "randomized", "--replicates", "2",
                                                                   "--per-arm", "2", "--ns", "a,b"],
             "--ns a,b", True, ["--ns"]),
            ([a for a in head if a not in ("--patients", "2")] + ["--design", "randomized", "--replicates", "2",
                                                                   "--per-arm", "2", "--ns", "0,5"],
             "--ns 0,5", True, ["--ns"]),
            ([a for a in head if a not in ("--patients", "2")] + ["--design", "randomized", "--replicates", "2",
                                                                   "--per-arm", "2", "--ns", "50"],
             "--ns larger than --per-arm", True, ["--ns"]),
            (head + ["--draws", "3"], "--draws without --posterior", True, ["--draws"]),
            (head + ["--posterior", "nofit", "--draws", "2"], "--posterior folder missing", True, ["nofit", "--posterior"]),
            (head + ["--posterior", fname, "--draws", "2"], "--posterior is a file", True, [fname, "--posterior"]),
            (head + ["--posterior", ".", "--draws", "2"], "--posterior folder without a fit", True, ["--posterior", "."]),
            (head + ["--posterior", ".", "--draws", "-1"], "--draws -1", True, ["--draws"]),
        ]
    if kind == "scenario":
        common += [
            (["export", "sbml", "--scenario", fname, "--arm", "no_such_arm", "--out", "m.xml"],
             "export sbml --arm unknown", True, ["--arm", "no_such_arm"]),
            (["export", "sbml", "--scenario", fname, "--model", "host_response", "--out", "m.xml"],
             "export sbml --model differs from the scenario", "host_response" not in
             str(bd.b.files[base]["data"].get("model")), ["--model"]),
            (["export", "sbml", "--scenario", fname, "--out", "."], "export sbml --out is a folder", True, ["--out"]),
            (["export", "sbml", "--species", "rat", "--model", "chemo_core", "--out", "m.xml"],
             "export sbml --species rat", True, ["--species"]),
        ]
    if kind == "problem":
        common += [
            (["export", "petab", "--problem", fname, "--out", "out", "--force", "--force"], "--force twice", False,
             ["--force"]),
            (["fit", fname, "--out", "out", "--starts", "1", "--max-iterations", "-1", "--no-profile", "--no-sample"],
             "fit --max-iterations -1", True, ["--max-iterations"]),
            (["fit", fname, "--out", "out", "--starts", "1", "--max-iterations", "2", "--no-profile", "--steps", "0"],
             "fit --steps 0", True, ["--steps"]),
            (["fit", fname, "--out", "out", "--starts", "1", "--max-iterations", "2", "--no-profile", "--steps", "20",
              "--walkers", "0"], "fit --walkers 0", True, ["--walkers"]),
            (["fit", fname, "--out", "out", "--starts", "1000000", "--max-iterations", "2", "--no-profile",
              "--no-sample"], "fit --starts 1e6", True, ["--starts"]),
        ]
    common += [
        (["diagram", "--model", "nope", "--out", "d.svg"], "diagram --model unknown", True, ["--model", "nope"]),
        (["diagram", "--model", "host_response", "--out", "."], "diagram --out is a folder", True, ["--out"]),
        (["params", "--model", "nope"], "params --model unknown", True, ["--model", "nope"]),
        (["outputs", "--model", ""], "outputs --model ''", True, ["--model"]),
        ([], "no arguments at all", True, ["command", "required"]),
        (["frobnicate"], "unknown sub-command", True, ["frobnicate"]),
    ]
    argv, what, must, names = rng.choice(common)
    setup = [("fifo", "fifo.yaml"), ("symlink", "loop.yaml", "loop.yaml"), ("symlink", "nowhere.yaml", "dangling.yaml")]
    out = "out" if "out" in argv else ("m.xml" if "m.xml" in argv else None)
    return bd.cli_case(base, "cli_args", f"{' '.join(argv[:1])} {fname if fname in argv else ''}: {what}".replace("  ", " "),
                       must, argv, names=names, setup=setup if any(x in argv for x in ("fifo.yaml", "loop.yaml", "dangling.yaml")) else (),
                       out=out)


def gen_path(bd, rng, base):
    kind = bd.b.files[base]["kind"]
    fname = bd.b.files[base]["path"].name
    opts = [
        ("ro/out", "--out under a read-only parent", True, [("ro_dir", "ro")]),
        ("ro/a/b/out", "--out nested under a read-only parent", True, [("ro_dir", "ro")]),
        ("afile/out", "--out whose parent is a file", True, [("file", "afile", b"x\n")]),
        ("afile/deeper/out", "--out two levels under a file", True, [("file", "afile", b"x\n")]),
        ("", "--out ''", True, []),
        (".", "--out '.'", False, []),
        ("..", "--out '..'", False, []),
        ("/", "--out /", True, []),
        ("/proc/fuzz_out", "--out in /proc", True, []),
        ("/proc/self/fd/1", "--out /proc/self/fd/1 (stdout)", True, []),
        ("/dev/null", "--out /dev/null", True, []),
        ("existing.txt", "--out is an existing file", True, [("file", "existing.txt", b"keep\n")]),
        ("prev", "--out already holds results", False, [("results", "prev")]),
        ("a/b/c/out", "--out with missing parents", False, []),
        ("out/", "--out with a trailing slash", False, []),
        ("x" * 300, "--out name of 300 characters", True, []),
        ("new\nline", "--out with a newline in its name", False, []),
        ("sp ace/é ü/out", "--out with spaces and non-ASCII", False, []),
        ("dangling_out", "--out is a dangling symlink", True, [("symlink", "nowhere", "dangling_out")]),
        ("link_to_file", "--out is a symlink to a file", True, [("file", "target.txt", b"x\n"),
                                                                ("symlink", "target.txt", "link_to_file")]),
        (fname, "--out is the input file itself", True, []),
        ("fifo_out", "--out is a FIFO", True, [("fifo", "fifo_out")]),
    ]
    out, what, must, setup = rng.choice(opts)
    argv = bd.argv_for(base, fname, out=out)
    return bd.cli_case(base, "out_path", f"{fname}: {what}", must, argv, names=["--out", out] if out else ["--out"],
                       setup=setup, out=out)


GENERIC = [  # (weight, generator)
    (24, gen_number), (10, gen_unit), (11, gen_wrong_type), (7, gen_drop_key), (7, gen_rename_key),
    (7, gen_dup_key), (6, gen_unicode), (3, gen_long_string), (7, gen_structure), (3, gen_nesting),
    (4, gen_alias), (12, gen_semantic), (3, gen_size), (9, gen_cli_args), (8, gen_path),
]
KIND_WEIGHTS = {"scenario": 45, "trial": 35, "problem": 20}


def build_case(bd: Builder, targeted: list, seed: int, cid: int) -> Case:
    rng = random.Random(f"{seed}:{cid}")
    if cid < len(targeted):
        c = targeted[cid](rng)
    else:
        c = None
        for _ in range(50):
            gen = rng.choices([g for _, g in GENERIC], weights=[w for w, _ in GENERIC])[0]
            kinds = [k for k in KIND_WEIGHTS if bd.b.of_kind(k)]
            kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
            base = rng.choice(bd.b.of_kind(kind))
            try:
                c = gen(bd, rng, base)
            except (IndexError, KeyError, StopIteration, TypeError, AttributeError, ValueError):
                c = None
            if c is not None:
                break
        if c is None:
            raise RuntimeError(f"could not build case {cid}")
    c.id = cid
    return c


# ----------------------------------------------------------------------------------------------------
# running
def _apply_setup(case: Case, folder: Path) -> list[str]:
    """Create the case's files and setup; returns a command prefix (e.g. a read-only mount wrapper)."""
    for name, data in case.files.items():
        (folder / name).write_bytes(data)
    prefix: list[str] = []
    for act in case.setup:
        op = act[0]
        if op == "file":
            p = folder / act[1]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(act[2])
        elif op == "dir":
            (folder / act[1]).mkdir(parents=True, exist_ok=True)
        elif op == "symlink":
            os.symlink(act[1], folder / act[2])
        elif op == "fifo":
            os.mkfifo(folder / act[1])
        elif op == "results":  # a folder holding an earlier result
            d = folder / act[1]
            d.mkdir()
            for n in ("manifest.json", "summary.json", "timecourses.parquet", "patients.parquet", "notes.txt"):
                (d / n).write_text(f"earlier result: {n}\n")
        elif op == "ro_dir":
            d = folder / act[1]
            d.mkdir()
            if os.geteuid() != 0:
                d.chmod(0o555)
            elif _UNSHARE_OK:
                prefix = ["unshare", "-m", "sh", "-c",
                          'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
                          "sh", str(d)]
            else:  # root without mount namespaces: the parent is a regular file instead
                d.rmdir()
                d.write_text("fallback: parent is a file\n")
    return prefix


def _unshare_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as t:
        r = subprocess.run(["unshare", "-m", "sh", "-c",
                            'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && ! touch "$1/x" 2>/dev/null',
                            "sh", t], capture_output=True, timeout=20)
        return r.returncode == 0 and not Path(t, "x").exists()


_UNSHARE_OK = False


def _isdir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name too long for the file system
        return False


def _snapshot(path: Path) -> dict:
    out = {}
    if not _isdir(path):
        return out
    try:
        for p in path.rglob("*"):
            try:
                if p.is_file():
                    st = p.stat()
                    out[str(p.relative_to(path))] = (st.st_size, st.st_mtime_ns)
            except OSError:
                pass
    except OSError:
        pass
    return out


def _leftovers(folder: Path) -> list[str]:
    found = []
    try:
        for p in folder.rglob("*"):
            if not p.is_symlink() and re.search(r"\.tmp(-|$)", p.name) and len(p.relative_to(folder).parts) <= 4:
                found.append(str(p.relative_to(folder)))
    except OSError:
        pass
    return sorted(found)


def _limits(mem_gb: float):
    def fn():
        os.setsid()
        if mem_gb > 0:
            lim = int(mem_gb * 2 ** 30)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    return fn


def run_case(case: Case, opts, workdir: Path) -> dict:
    folder = workdir / f"case-{case.id:04d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    prefix = _apply_setup(case, folder)
    out_path = (folder / case.out) if case.out and not os.path.isabs(case.out) else None
    before = _snapshot(out_path) if out_path is not None and case.out not in ("", ".", "..") else {}
    cmd = prefix + [opts.python, "-m", "chemohost.cli"] + list(case.argv)
    t0 = time.monotonic()
    timed_out = False
    proc = subprocess.Popen(cmd, cwd=folder, env=opts.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_limits(opts.mem_limit_gb))
    try:
        stdout, stderr = proc.communicate(timeout=opts.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this case started (setsid above)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
    secs = time.monotonic() - t0
    rc = proc.returncode
    so = stdout.decode("utf-8", "replace")
    se = stderr.decode("utf-8", "replace")
    outcome, reasons, flags = classify(case, rc, timed_out, so, se, secs, folder, out_path, before, opts)
    rec = {
        "id": case.id, "category": case.category, "mutation": case.mutation, "must_reject": case.must_reject,
        "command": _shell(case.argv), "exit_code": None if timed_out else rc, "outcome": outcome,
        "reasons": reasons, "flags": flags, "stderr": _clip(se, 300), "stderr_chars": len(se.strip()),
        "stderr_last": _clip(([l for l in se.strip().splitlines() if l.strip()] or [""])[-1], 300),
        "stdout_tail": _clip(so[-300:], 300), "seconds": round(secs, 2), "base": case.base,
        "fields": case.fields,
    }
    if outcome in NON_CLEAN or flags:
        keep = opts.report / "inputs" / f"{case.id:04d}"
        keep.mkdir(parents=True, exist_ok=True)
        for name, data in case.files.items():
            if len(data) <= 2 ** 20:
                (keep / name).write_bytes(data)
            else:
                (keep / (name + ".TOO_LARGE")).write_text(f"{len(data)} bytes; rebuild with --only {case.id}\n")
        for act in case.setup:  # plain files of the setup (e.g. a parent that is a file); the rest: --only ID
            if act[0] == "file":
                (keep / act[1]).parent.mkdir(parents=True, exist_ok=True)
                (keep / act[1]).write_bytes(act[2])
        (keep / "stderr.txt").write_text(se[-20000:])
        rec["inputs"] = str(keep)
    if not opts.keep:
        _rmtree(folder)
    return rec


def _rmtree(folder: Path):
    for p in folder.rglob("*"):  # undo read-only bits (non-root runs)
        try:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        except OSError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


def _clip(s: str, n: int) -> str:
    return s.strip()[:n]


def _shell(argv) -> str:
    return "chemohost " + " ".join(shlex.quote(a) for a in argv)


def classify(case: Case, rc, timed_out, so, se, secs, folder, out_path, before, opts):
    reasons, flags = [], []
    both = so + "\n" + se
    if "MemoryError" in both:
        flags.append("memory_error")
    # partial output / leftovers
    partial = False
    left = _leftovers(folder)
    if left:
        flags.append("leftover_tmp")
        partial = True
        reasons.append("left behind: " + ", ".join(left[:3]))
    if out_path is not None and case.out not in ("", ".", "..") and _isdir(out_path):
        after = _snapshot(out_path)
        changed = [k for k, v in after.items() if before.get(k) != v]
        if before and any(k in before for k in changed):
            flags.append("overwrote_existing")
        if changed and (timed_out or rc not in (0, 3)):
            partial = True
            reasons.append(f"--out holds {len(changed)} new/changed file(s) after a failure")
    if partial and (timed_out or rc not in (0, 3)):
        flags.append("partial_output")
    if timed_out:
        return "hang", reasons + [f"no exit within {opts.timeout:g} s"], sorted(set(flags))
    if TRACEBACK in both or rc not in (0, 2, 3):
        last = [l for l in se.strip().splitlines() if l.strip()][-1:] or [""]
        return "traceback", reasons + [f"exit {rc}: {last[0][:200]}"], sorted(set(flags))
    if rc not in (0, 3) and partial:
        return "partial_output", reasons, sorted(set(flags) - {"partial_output"})
    if rc == 3:  # results written, some patient simulations failed (chemohost >= the issue-10 input layer)
        flags.append("some_patients_failed")
    if rc in (0, 3):
        return ("accepted_should_reject" if case.must_reject else "accepted"), reasons, sorted(set(flags))
    # exit 2: how clear is the message?
    msg = se.strip()
    low = msg.lower()
    named = [n for n in case.names if n and n.lower() in low]
    if not named:
        reasons.append("names neither the file nor the field")
    longest = max((len(line) for line in msg.splitlines()), default=0)
    if longest > MAX_MESSAGE:  # one error per line: judge each line
        reasons.append(f"a message line is {longest} characters")
    if UNION_BRANCH.search(msg):
        reasons.append("repeats pydantic union branches (.str/.float/.int)")
    if len(case.fields) > 1:
        leaves = {f.split(".")[-1].split("[")[0] for f in case.fields}
        missing = [f for f in leaves if f.lower() not in low]
        if missing:
            flags.append("only_first_error")
            reasons.append("does not name: " + ", ".join(sorted(missing)))
    if case.input_file and case.input_file.lower() not in low:
        flags.append("no_file_named")
    head = se[: se.rfind("chemohost: error")] if "chemohost: error" in se else ""
    if secs > opts.late_threshold or "compiling model" in head:
        flags.append("late_rejection")
    bad = [r for r in reasons if not r.startswith("does not name")]
    return ("unclear_rejection" if bad else "clean_rejection"), reasons, sorted(set(flags))


# ----------------------------------------------------------------------------------------------------
# report
def write_summary(records: list, opts, wall: float, src_file: str):
    lines = ["# chemohost input fuzzer: summary", ""]
    lines.append(f"- seed {opts.seed}, {len(records)} case(s), timeout {opts.timeout:g} s per case, jobs {opts.jobs}, "
                 f"wall time {wall / 60:.1f} min")
    lines.append(f"- chemohost under test: `{src_file}`" + (f" (--src {opts.src})" if opts.src else ""))
    lines.append(f"- inputs mutated: `{opts.inputs}`; python `{opts.python}`")
    lines.append(f"- rerun: `{_repro_cmd(opts)}`")
    lines.append("")
    counts = {o: 0 for o in OUTCOMES}
    for r in records:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    lines += ["## Outcomes", "", "| outcome | cases |", "|---|---:|"]
    lines += [f"| {o} | {n} |" for o, n in counts.items()]
    lines += [f"| **total** | {len(records)} |", ""]
    fl: dict[str, int] = {}
    for r in records:
        for f in r["flags"]:
            fl[f] = fl.get(f, 0) + 1
    if fl:
        lines += ["## Flags (secondary observations)", "", "| flag | cases |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(fl.items())]
        lines.append("")
    cats = sorted({r["category"] for r in records})
    lines += ["## Outcomes per category", "", "| category | " + " | ".join(OUTCOMES) + " | total |",
              "|---|" + "---:|" * (len(OUTCOMES) + 1)]
    for c in cats:
        rs = [r for r in records if r["category"] == c]
        lines.append(f"| {c} | " + " | ".join(str(sum(r["outcome"] == o for r in rs) or "") for o in OUTCOMES)
                     + f" | {len(rs)} |")
    lines.append("")
    lines += ["## Non-clean cases", "",
              "Each: `id` outcome [category] mutation; exit code, seconds; stderr (first 300 chars); reproduction "
              "(the fuzzer's `--only ID`, or the CLI command in the saved input folder).", ""]
    for o in NON_CLEAN + ("fuzzer_error",):
        rs = [r for r in records if r["outcome"] == o]
        if not rs:
            continue
        lines += [f"### {o} ({len(rs)})", ""]
        for r in rs:
            lines.append(f"- `{r['id']}` [{r['category']}] {r['mutation']} -- exit {r['exit_code']}, {r['seconds']} s"
                         + (f"; flags: {', '.join(r['flags'])}" if r["flags"] else ""))
            if r["reasons"]:
                lines.append(f"  - why: {'; '.join(r['reasons'])}")
            if r["stderr"]:
                lines.append(f"  - stderr: `{_md(r['stderr'][:300])}`")
                if r.get("stderr_last") and r["stderr_last"] not in r["stderr"]:
                    lines.append(f"  - stderr (last line): `{_md(r['stderr_last'])}`")
            lines.append(f"  - repro: `{_repro_cmd(opts, r['id'])}`")
            if r.get("inputs"):
                lines.append(f"  - or: `cd {r['inputs']} && {_env_prefix(opts)}{opts.python} -m chemohost.cli "
                             f"{_md(r['command'].removeprefix('chemohost '))}`")
        lines.append("")
    flagged = [r for r in records if r["flags"] and r["outcome"] not in NON_CLEAN]
    if flagged:
        lines += ["## Clean or accepted cases with flags", ""]
        for r in flagged:
            lines.append(f"- `{r['id']}` {r['outcome']} [{r['category']}] {r['mutation']} -- flags: "
                         f"{', '.join(r['flags'])}; {r['seconds']} s" + (f"; {'; '.join(r['reasons'])}" if r['reasons'] else ""))
        lines.append("")
    acc = [r for r in records if r["outcome"] == "accepted"]
    if acc:
        lines += ["## Accepted (exit 0, not marked must-reject)", ""]
        lines += [f"- `{r['id']}` [{r['category']}] {_md(r['mutation'][:160])} ({r['seconds']} s)" for r in acc]
        lines.append("")
    (opts.report / "summary.md").write_text("\n".join(lines) + "\n")


def _md(s: str) -> str:
    return s.replace("`", "'").replace("\n", " | ")


def _env_prefix(opts) -> str:
    parts = [f"CHEMOHOST_CACHE_DIR={shlex.quote(opts.env['CHEMOHOST_CACHE_DIR'])}"]
    if opts.src:
        parts.append(f"PYTHONPATH={shlex.quote(str(opts.src))}")
    return " ".join(parts) + " "


def _repro_cmd(opts, cid=None) -> str:
    s = f"{_env_prefix(opts)}{opts.python} {Path(__file__).resolve()} --seed {opts.seed}"
    if opts.src:
        s += f" --src {opts.src}"
    if Path(opts.inputs).resolve() != REPO:
        s += f" --inputs {opts.inputs}"
    s += f" --timeout {opts.timeout:g}"
    if cid is None:
        return s + f" --cases {opts.cases} --jobs {opts.jobs} --out {opts.report}"
    return s + f" --only {cid} --keep --out /tmp/chemohost-fuzz-{cid}"


# ----------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=400, help="number of cases (ids 0..N-1; default 400)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generic mutations (default 1)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang (60)")
    ap.add_argument("--jobs", type=int, default=1, help="cases run in parallel (default 1)")
    ap.add_argument("--out", type=Path, help="report folder (cases.jsonl, summary.md, inputs/)")
    ap.add_argument("--src", type=Path, help="chemohost source tree to test (put on PYTHONPATH), e.g. "
                                             "/work/fuzz_before/src; default: the installed package")
    ap.add_argument("--inputs", type=Path, default=REPO, help="checkout whose scenarios/ and problems/ are mutated "
                                                              "(default: this repository)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs `-m chemohost.cli`")
    ap.add_argument("--cache-dir", help="CHEMOHOST_CACHE_DIR for the runs (default: $CHEMOHOST_CACHE_DIR or "
                                        "<repo>/.chemohost-cache)")
    ap.add_argument("--mem-limit-gb", type=float, default=8.0, help="address-space cap per case (0: none; default 8)")
    ap.add_argument("--late-threshold", type=float, default=6.0,
                    help="exit-2 cases slower than this many seconds get the late_rejection flag (default 6)")
    ap.add_argument("--only", help="comma-separated case ids to run (others skipped)")
    ap.add_argument("--list", action="store_true", help="print the cases as JSON lines and exit")
    ap.add_argument("--keep", action="store_true", help="keep each case's folder (under the report folder's work/)")
    opts = ap.parse_args(argv)

    bases = Bases(opts.inputs.resolve())
    bd = Builder(bases)
    targeted = targeted_cases(bd)
    ids = [int(x) for x in opts.only.split(",")] if opts.only else list(range(opts.cases))
    cases = [build_case(bd, targeted, opts.seed, i) for i in ids]
    if opts.list:
        for c in cases:
            d = asdict(c)
            d["files"] = {k: f"{len(v)} bytes" for k, v in d["files"].items()}
            d["setup"] = [[a if not isinstance(a, bytes) else f"{len(a)} bytes" for a in s] for s in d["setup"]]
            d["command"] = _shell(c.argv)
            print(json.dumps(d, ensure_ascii=False, default=str))
        return 0
    if opts.out is None:
        ap.error("--out REPORT_DIR is required (unless --list)")
    opts.report = opts.out.resolve()
    opts.report.mkdir(parents=True, exist_ok=True)
    cache = opts.cache_dir or os.environ.get("CHEMOHOST_CACHE_DIR") or str(REPO / ".chemohost-cache")
    env = dict(os.environ)
    env.update(CHEMOHOST_CACHE_DIR=cache, MPLBACKEND="Agg", PYTHONHASHSEED="0", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1", TQDM_DISABLE="1",
               PYTHONDONTWRITEBYTECODE="1", LC_ALL="C.UTF-8")
    env.pop("PYTHONPATH", None)
    if opts.src:
        opts.src = opts.src.resolve()
        env["PYTHONPATH"] = str(opts.src)
    opts.env = env
    r = subprocess.run([opts.python, "-c", "import chemohost; print(chemohost.__file__)"], env=env,
                       capture_output=True, text=True, timeout=120)
    src_file = r.stdout.strip()
    if r.returncode != 0 or (opts.src and not Path(src_file).resolve().is_relative_to(opts.src)):
        raise SystemExit(f"chemohost under test is not from {opts.src or 'the installed package'}: "
                         f"{src_file or r.stderr.strip()}")
    print(f"chemohost under test: {src_file}", flush=True)
    global _UNSHARE_OK
    _UNSHARE_OK = _unshare_available()
    if os.geteuid() == 0 and not _UNSHARE_OK:
        print("note: running as root without `unshare -m`: read-only-parent cases use a parent that is a file",
              flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="chemohost-fuzz-")) if not opts.keep else opts.report / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    records: list = []
    jsonl = (opts.report / "cases.jsonl").open("w")
    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as ex:
            futs = {ex.submit(run_case, c, opts, workdir): c for c in cases}
            for k, fut in enumerate(cf.as_completed(futs), 1):
                try:
                    rec = fut.result()
                except Exception as exc:  # a bug of the fuzzer itself: record it, keep going
                    c = futs[fut]
                    rec = {"id": c.id, "category": c.category, "mutation": c.mutation, "must_reject": c.must_reject,
                           "command": _shell(c.argv), "exit_code": None, "outcome": "fuzzer_error",
                           "reasons": [f"{type(exc).__name__}: {exc}"[:300]], "flags": [], "stderr": "",
                           "stderr_chars": 0, "stderr_last": "", "stdout_tail": "", "seconds": 0.0,
                           "base": c.base, "fields": c.fields}
                records.append(rec)
                jsonl.write(json.dumps(rec, ensure_ascii=False) + "\n")
                jsonl.flush()
                print(f"[{k}/{len(cases)}] #{rec['id']} {rec['outcome']:<22} {rec['seconds']:6.1f}s "
                      f"{rec['category']}: {rec['mutation'][:90]!r}", flush=True)
    finally:
        jsonl.close()
    records.sort(key=lambda r: r["id"])
    with (opts.report / "cases.jsonl").open("w") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    wall = time.monotonic() - t0
    write_summary(records, opts, wall, src_file)
    if not opts.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    counts = {o: sum(r["outcome"] == o for r in records) for o in OUTCOMES + ("fuzzer_error",)}
    print(f"{len(records)} cases in {wall / 60:.1f} min: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"wrote {opts.report / 'cases.jsonl'} and {opts.report / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
