"""The evidence framework (checks registry, runner, output files, ``chemohost validate``).

Every test runs against a temporary registry of dummy checks, never the project's real checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chemohost.cli import main
from chemohost.errors import ChemohostError
from chemohost.evidence import framework
from chemohost.evidence.framework import CheckResult, check, format_table, run_checks

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def registry(monkeypatch):
    """A fresh registry with no project checks loaded into it."""
    reg: dict = {}
    monkeypatch.setattr(framework, "REGISTRY", reg)
    monkeypatch.setattr(framework, "load_checks", lambda: None)
    return reg


@pytest.fixture
def dummies(registry):
    @check("good", "Two plus two is four", "Peano 1889", kind="validation")
    def _good():
        def draw(fig):
            ax = fig.add_subplot()
            ax.plot([0, 1], [0, 1])
        return CheckResult(observed=np.float64(4.0), expected="4", passed=np.bool_(True), details="exact",
                           figure=draw)

    @check("bad", "The moon is made of cheese", "Folklore", kind="calibration")
    def _bad():
        return CheckResult(observed={"rock": np.int64(1), "values": np.array([1.5, 2.5])}, expected="cheese",
                           passed=False, details="it is rock")

    @check("broken", "A check with a bug", "Nobody", kind="validation")
    def _broken():
        raise ZeroDivisionError("division by zero in the check")

    return registry


def test_decorator_registers_and_rejects_duplicates(registry):
    @check("a.b-c_1", "s", "src", kind="calibration")
    def f():
        return CheckResult(1, "1", True)

    assert list(registry) == ["a.b-c_1"]
    assert registry["a.b-c_1"].func is f and registry["a.b-c_1"].statement == "s"
    assert f().passed  # the decorator returns the function unchanged
    with pytest.raises(ChemohostError, match="a.b-c_1.*twice"):
        check("a.b-c_1", "other", "src", kind="calibration")(lambda: CheckResult(1, "1", True))
    with pytest.raises(ChemohostError, match="invalid"):
        check("bad id/with slash", "s", "src", kind="calibration")
    with pytest.raises(ChemohostError, match="kind 'fitted' is not allowed"):
        check("k", "s", "src", kind="fitted")
    with pytest.raises(TypeError):
        check("k2", "s", "src")  # the kind must be stated


def test_result_schema_and_types(dummies):
    results = run_checks()
    assert [r["id"] for r in results] == ["good", "bad", "broken"]
    for r in results:
        assert set(r) == {"id", "kind", "statement", "source", "observed", "expected", "passed", "known_gap", "details",
                          "seconds"}
        assert isinstance(r["passed"], bool) and isinstance(r["expected"], str)
        assert isinstance(r["details"], str) and isinstance(r["seconds"], float) and r["seconds"] >= 0
        json.dumps(r, allow_nan=False)  # plain JSON types only
    good, bad, broken = results
    assert good["observed"] == 4.0 and type(good["observed"]) is float and good["passed"] is True
    assert good["statement"] == "Two plus two is four" and good["source"] == "Peano 1889"
    assert bad["observed"] == {"rock": 1, "values": [1.5, 2.5]} and bad["passed"] is False
    assert bad["details"] == "it is rock"


def test_exception_in_check_is_a_failed_result(dummies):
    results = run_checks()
    broken = results[2]
    assert broken["passed"] is False and broken["observed"] is None
    assert "ZeroDivisionError" in broken["details"] and "division by zero in the check" in broken["details"]
    # the checks around it still ran
    assert results[0]["passed"] and results[1]["details"] == "it is rock"


def test_non_result_return_and_odd_values(registry):
    @check("returns_none", "s", "src", kind="validation")
    def _none():
        return None

    @check("odd", "s", "src", kind="validation")
    def _odd():
        return CheckResult(observed=[np.nan, np.inf, (1, 2), {3}], expected=2.5, passed=1)

    r_none, r_odd = run_checks()
    assert r_none["passed"] is False and "CheckResult" in r_none["details"]
    assert r_odd["observed"] == ["nan", "inf", [1, 2], [3]] and r_odd["expected"] == "2.5"
    assert r_odd["passed"] is True


def test_only_and_unknown_ids(dummies):
    assert [r["id"] for r in run_checks(["bad", "good"])] == ["bad", "good"]
    with pytest.raises(ChemohostError) as exc:
        run_checks(["good", "nope"])
    msg = str(exc.value)
    assert "nope" in msg and all(k in msg for k in ("good", "bad", "broken"))


def test_writes_json_and_figures(dummies, tmp_path):
    out = tmp_path / "val"
    results = run_checks(out=out)
    data = json.loads((out / "validation.json").read_text())
    assert data == results
    assert [d["id"] for d in data] == ["good", "bad", "broken"]
    for cid in ("good", "bad", "broken"):  # a figure per check, text panels for those without one
        png = out / "figures" / f"{cid}.png"
        assert png.read_bytes()[:8] == PNG
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a second run with --only replaces the figures folder
    run_checks(["bad"], out=out)
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["bad.png"]
    assert [d["id"] for d in json.loads((out / "validation.json").read_text())] == ["bad"]


def test_broken_figure_falls_back_to_text_panel(registry, tmp_path):
    @check("badfig", "s", "src", kind="validation")
    def _badfig():
        def draw(fig):
            raise RuntimeError("plot bug")
        return CheckResult(1, "1", True, figure=draw)

    (r,) = run_checks(out=tmp_path / "o")
    assert r["passed"] is True and "figure error" in r["details"] and "plot bug" in r["details"]
    assert (tmp_path / "o" / "figures" / "badfig.png").read_bytes()[:8] == PNG


def test_output_is_atomic(dummies, tmp_path, monkeypatch):
    calls = []
    real = framework._save_figure

    def flaky(row, draw, path):
        calls.append(row["id"])
        if len(calls) == 2:
            raise OSError("disk full")
        return real(row, draw, path)

    monkeypatch.setattr(framework, "_save_figure", flaky)
    out = tmp_path / "val"
    with pytest.raises(OSError, match="disk full"):
        run_checks(out=out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind
    # an existing output folder is left untouched
    monkeypatch.setattr(framework, "_save_figure", real)
    run_checks(["good"], out=out)
    before = (out / "validation.json").read_text()
    calls.clear()
    monkeypatch.setattr(framework, "_save_figure", flaky)
    with pytest.raises(OSError):
        run_checks(out=out)
    assert (out / "validation.json").read_text() == before
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["good.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["val"]


def test_out_must_be_a_folder(dummies, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ChemohostError, match="not a folder"):
        run_checks(out=f)


def test_format_table(dummies):
    text = format_table(run_checks())
    lines = text.splitlines()
    assert lines[-1] == "1 passed, 2 failed"
    assert lines[0].split()[:2] == ["id", "result"]
    good = next(line for line in lines if line.startswith("good "))
    assert "PASS" in good and "4" in good and "Peano 1889" in good
    assert any(line.startswith("bad ") and "FAIL" in line and "cheese" in line for line in lines)
    assert any("ZeroDivisionError" in line for line in lines)
    assert "calibration: 0/1 passed; validation: 1/2 passed" in lines
    assert format_table([]).splitlines()[-1] == "0 passed, 0 failed"


def test_load_checks_tolerates_a_missing_module(monkeypatch):
    monkeypatch.setattr(framework, "CHECKS_MODULE", "chemohost.evidence._no_such_checks_module")
    framework.load_checks()  # no error
    monkeypatch.setattr(framework, "CHECKS_MODULE", "chemohost_no_such_package.checks")
    framework.load_checks()


# -- command line ----------------------------------------------------------------------------------
def test_cli_exit_codes(dummies, capsys):
    assert main(["validate", "--only", "good"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "1 passed, 0 failed"
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "2 failed" in out and "broken" in out
    assert main(["validate", "--only", "good", "--only", "bad"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 1 failed"
    assert main(["validate", "--only", "good", "bad"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 1 failed"


def test_cli_unknown_id(dummies, capsys, tmp_path):
    rc = main(["validate", "--only", "nope", "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope" in err and "good" in err and "Traceback" not in err
    assert not (tmp_path / "v").exists()


def test_cli_out(dummies, capsys, tmp_path):
    out = tmp_path / "v"
    assert main(["validate", "--out", str(out), "--only", "good", "broken"]) == 1
    assert "validation.json" in capsys.readouterr().out
    data = json.loads((out / "validation.json").read_text())
    assert [d["id"] for d in data] == ["good", "broken"] and [d["passed"] for d in data] == [True, False]
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["broken.png", "good.png"]


def test_known_gap_is_reported_and_does_not_fail_validate(registry, capsys):
    """A failed check that declares a known gap shows as GAP (passed stays false, the reason is kept);
    validate exits 0 for gaps and 1 for any plain failure; a passing check drops its gap text."""
    @check("gap", "Model misses this", "Someone 2020", kind="validation")
    def _gap():
        return CheckResult(observed=1.0, expected="2", passed=False, gap="structure cannot reach 2")

    @check("fine", "Model meets this", "Someone 2021", kind="validation")
    def _fine():
        return CheckResult(observed=2.0, expected="2", passed=True, gap="irrelevant when passing")

    results = run_checks()
    assert [r["passed"] for r in results] == [False, True]
    assert results[0]["known_gap"] == "structure cannot reach 2" and results[1]["known_gap"] == ""
    text = format_table(results)
    assert "GAP  gap: structure cannot reach 2" in text
    assert text.splitlines()[-1] == "1 passed, 0 failed, 1 known gaps"
    assert framework.exit_code(results) == 0
    assert main(["validate"]) == 0
    capsys.readouterr()

    @check("plain_fail", "Model misses this too", "Someone 2022", kind="calibration")
    def _plain():
        return CheckResult(observed=1.0, expected="2", passed=False)

    assert main(["validate"]) == 1
    assert "FAIL plain_fail" in capsys.readouterr().out
