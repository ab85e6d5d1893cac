"""A fuzz test that stays (issue 10): hypothesis mutates the shipped scenario, trial and calibration
problem files and the command-line arguments, and every outcome must be a clean one: exit 0, 2 or 3,
never an exception (a traceback at the command line), never a hang past a limit, nothing partial
left in --out, and every exit-2 message names the file (or the argument) and a field.

Bounded: 200 examples in all (file mutations are checked with `chemohost check`, which runs every
load-time check without simulating; argument mutations run real trials shrunk to 2 patients and one
cycle), well under 3 minutes.  Failures hypothesis finds are kept below as explicit regression
examples.  The committed stand-alone fuzzer (`scripts/fuzz_inputs.py`) runs the same kinds of
mutations as subprocesses and tabulates the outcomes (docs/fuzzing.md)."""

from __future__ import annotations

import copy
import signal
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from chemohost.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "scenario": ROOT / "scenarios" / "gemcitabine_d1_8_15_q28_human.yaml",
    "mouse": ROOT / "scenarios" / "mouse_g69_gemcis_interventions.yaml",
    "trial": ROOT / "scenarios" / "trial_pancreatic_il1_blockade.yaml",
    "problem": ROOT / "problems" / "pancreatic_gemcitabine_human.yaml",
}
LIMIT_S = 60  # a single example running longer than this is a hang

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["1000 kg/m2", "-5 day", "1e9 day", "0 day", "1 ms", "abc", "1,000 mg", "30 parsec", "",
                     "nan day", "inf mg/m2", "2 L/min", "-1 m2", "0 m2", "12 month", "true"]),
    st.lists(st.integers(-5, 40), max_size=4), st.dictionaries(st.text(max_size=6), st.integers(), max_size=3),
)


def _paths(d, prefix=()):
    """Every (path, value) in nested dicts/lists."""
    out = [(prefix, d)]
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _paths(v, prefix + (i,))
    return out


def _set(d, path, value, op):
    *head, last = path
    t = d
    for k in head:
        t = t[k]
    if op == "delete":
        del t[last]
    elif op == "rename" and isinstance(t, dict):
        t[f"{last}x"] = t.pop(last)
    else:
        t[last] = value


@st.composite
def file_mutation(draw):
    kind = draw(st.sampled_from(sorted(FILES)))
    data = yaml.safe_load(FILES[kind].read_text())
    paths = [p for p, _ in _paths(data) if p]
    n = draw(st.integers(1, 3))
    for _ in range(n):
        paths = [p for p, _ in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "rename"]))
        try:
            _set(data, path, draw(JUNK), op)
        except (KeyError, IndexError, TypeError):
            pass
    extra = draw(st.sampled_from(["", "", "dup", "alias", "deep"]))
    return kind, data, extra


def _text(data, extra: str) -> str:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True) if data is not None else ""
    if extra == "dup" and text:
        first = text.splitlines()[0]
        text += first + "\n"
    elif extra == "alias":
        text = "x: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
            f"x{i}: &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 9)}]\n" for i in range(8)) + text
    elif extra == "deep":
        text = "nest: " + "[" * 3000 + "]" * 3000 + "\n" + text
    return text


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"example ran past {LIMIT_S} s")


def _run(argv, capsys):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    try:
        rc = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    cap = capsys.readouterr()
    return rc, cap.err


def _assert_clean(rc, err, names, out: Path | None = None):
    assert rc in (0, 2, 3), (rc, err)
    assert "Traceback" not in err
    if rc == 2:
        assert err.count("chemohost: error: ") == 1, err
        assert any(n in err for n in names), (names, err)
        assert all(len(line) < 1200 for line in err.splitlines()), err
        if out is not None:
            assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")], \
                f"partial output in {out}"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          database=None)
@given(file_mutation())
@example(("trial", {**yaml.safe_load(FILES["trial"].read_text()), "seed": -1}, ""))
@example(("trial", {**yaml.safe_load(FILES["trial"].read_text()), "patients": True}, "dup"))
@example(("scenario", {**yaml.safe_load(FILES["scenario"].read_text()), "horizon": "1e7 day"}, "alias"))
@example(("scenario", {**yaml.safe_load(FILES["scenario"].read_text()), "patients": {"covariates": {"BSA": "-1 m2"}}},
          "deep"))
def test_mutated_files_are_checked_cleanly(tmp_path_factory, capsys, case):
    kind, data, extra = case
    d = tmp_path_factory.mktemp("fz")
    f = d / f"{kind}.yaml"
    f.write_text(_text(copy.deepcopy(data), extra), encoding="utf-8")
    rc, err = _run(["check", str(f), "--kind", "problem" if kind == "problem" else
                    ("trial" if kind == "trial" else "scenario")], capsys)
    _assert_clean(rc, err, [f.name])
    if rc == 2:
        assert "field" in err or "YAML" in err or "duplicate" in err or "nesting" in err or "expands" in err \
            or "mapping" in err, err


ARG_JUNK = st.one_of(st.sampled_from(["", ".", "0", "-1", "2", "abc", "1e9", "10000000", "/proc/x/y", "FILE",
                                      "FILE/sub", "nul\x00", "   "]), st.text(max_size=12))


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          database=None)
@given(patients=ARG_JUNK, seed=ARG_JUNK, out=ARG_JUNK, extra=st.sampled_from([[], ["--resume"], ["--force"],
                                                                                ["--draws", "3"], ["--design", "x"]]))
@example(patients="2", seed="-1", out="o", extra=[])
@example(patients="2", seed="1", out="FILE/sub", extra=[])
def test_mutated_arguments_run_cleanly(tmp_path_factory, capsys, monkeypatch, patients, seed, out, extra):
    d = tmp_path_factory.mktemp("fa")
    monkeypatch.chdir(d)
    (d / "FILE").write_text("a file")
    data = yaml.safe_load(FILES["trial"].read_text())
    data["arms"] = {k: v for k, v in list(data["arms"].items())[:2]}
    for regs in data["arms"].values():
        for r in regs:
            r["cycles"] = 1
    data.update(follow_up="2 month")
    f = d / "trial.yaml"
    f.write_text(yaml.safe_dump(data))
    try:
        p = int(patients)
    except ValueError:
        p = None
    if p is not None and p > 50:  # a valid large cohort is not an input error: keep the example short
        patients = "2"
    argv = ["trial", str(f), "--out", out, "--patients", patients, "--seed", seed, *extra]
    try:
        rc, err = _run(argv, capsys)
    except SystemExit as exc:  # argparse rejects non-integers itself, with exit 2 and a usage line
        assert exc.code == 2
        assert "invalid" in capsys.readouterr().err
        return
    _assert_clean(rc, err, ["--out", "--patients", "--seed", "--resume", "--draws", "trial.yaml", "FILE", "argument"],
                  d / out if out.strip() and "\x00" not in out else None)
