"""Published facts as executable checks (``chemohost validate``).

A *check* is a function without arguments that simulates (or otherwise computes) something and
compares it with a published statement.  It is registered with the :func:`check` decorator::

    from chemohost.evidence.framework import CheckResult, check

    @check("gem_half_life", "Gemcitabine plasma half-life is 8-17 min after a 30-min infusion",
           "Jiang X et al. 2008", kind="validation")
    def _gem_half_life() -> CheckResult:
        t_half = ...                                    # minutes
        return CheckResult(observed=t_half, expected="8-17 min", passed=8 <= t_half <= 17,
                           details="log-linear fit of the terminal phase",
                           figure=lambda fig: fig.add_subplot().plot(t, c))

:func:`run_checks` runs them (one failing or raising check never hides the others) and can write
``validation.json`` plus one evidence figure per check; :func:`format_table` renders the
results for a terminal.  The checks themselves live in ``chemohost.evidence.checks`` and are
imported by :func:`load_checks`.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import ChemohostError

#: the module holding the project's checks (imported by :func:`load_checks` when present)
CHECKS_MODULE = "chemohost.evidence.checks"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

RESULT_KEYS = ("id", "kind", "statement", "source", "observed", "expected", "passed", "known_gap", "details",
               "seconds")

#: what a check's agreement proves.  ``calibration``: parameters were tuned to (or set from) the data the
#: check compares with, so it guards the calibration against drift and proves nothing about prediction.
#: ``validation``: the data were not used to set any parameter, so agreement is evidence of prediction.
KINDS = ("calibration", "validation")


@dataclass
class CheckResult:
    """What a check returns.

    ``observed``: the value found (number, string, list or dict; numpy values are converted);
    ``expected``: the published value or range, as text; ``passed``: whether they agree;
    ``figure``: optional callable drawing the evidence plot into a given matplotlib Figure.
    ``gap``: why the model is known not to meet this evidence (a documented limitation).  A failed
    check with a gap is reported as GAP (``passed`` stays false, ``known_gap`` holds the text) and
    does not make ``chemohost validate`` exit 1; a passing check ignores it."""

    observed: object
    expected: str
    passed: bool
    details: str = ""
    figure: Callable[[Figure], None] | None = None
    gap: str = ""


@dataclass
class Check:
    id: str
    statement: str
    source: str
    func: Callable[[], CheckResult]
    kind: str = "calibration"


#: id -> Check, in registration order
REGISTRY: dict[str, Check] = {}


def check(id: str, statement: str, source: str, *,
          kind: str) -> Callable[[Callable[[], CheckResult]], Callable[[], CheckResult]]:
    """Decorator registering a function ``() -> CheckResult`` as check ``id``.

    ``kind`` (required): ``"calibration"`` or ``"validation"`` (see :data:`KINDS`).

    ``id`` names the figure file too, so it may use letters, digits, '_', '.' and '-' only.
    Registering the same id twice is an error.  Returns the function unchanged."""
    if not isinstance(id, str) or not _ID_RE.match(id):
        raise ChemohostError(f"check id {id!r} is invalid: use letters, digits, '_', '.' and '-' "
                             "(it names the figure file)")
    if not statement or not source:
        raise ChemohostError(f"check '{id}': give a non-empty statement and source")
    if kind not in KINDS:
        raise ChemohostError(f"check '{id}': kind {kind!r} is not allowed; use one of {', '.join(KINDS)}")

    def register(func: Callable[[], CheckResult]) -> Callable[[], CheckResult]:
        if id in REGISTRY:
            raise ChemohostError(f"check id '{id}' is registered twice "
                                 f"({REGISTRY[id].func.__module__}.{REGISTRY[id].func.__qualname__} and "
                                 f"{func.__module__}.{func.__qualname__}); ids must be unique")
        REGISTRY[id] = Check(id=id, statement=statement, source=source, func=func, kind=kind)
        return func

    return register


def load_checks() -> None:
    """Import :data:`CHECKS_MODULE` (which registers the project's checks), if it exists.

    A missing module is fine (no checks yet); an error *inside* the module is raised."""
    try:
        importlib.import_module(CHECKS_MODULE)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (CHECKS_MODULE == missing or CHECKS_MODULE.startswith(missing + ".")):
            raise


# -- running ---------------------------------------------------------------------------------------
def to_jsonable(value: object) -> object:
    """Convert ``value`` to plain JSON types (numpy scalars/arrays, tuples, sets, paths...).

    Non-finite floats become the strings 'nan', 'inf', '-inf' so the file stays strict JSON;
    anything unknown becomes its ``str``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None:
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return to_jsonable(float(value))
        if isinstance(value, np.ndarray):
            return to_jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(value, key=str)]
    if hasattr(value, "tolist") and callable(value.tolist):  # pandas Series / Index
        try:
            return to_jsonable(value.tolist())
        except Exception:  # noqa: BLE001 - fall back to text
            pass
    if hasattr(value, "item") and callable(value.item):  # 0-d arrays and friends
        try:
            return to_jsonable(value.item())
        except Exception:  # noqa: BLE001
            pass
    return str(value)


def _run_one(c: Check) -> tuple[dict, Callable[[Figure], None] | None]:
    t0 = time.perf_counter()
    figure = None
    try:
        res = c.func()
        if not isinstance(res, CheckResult):
            raise TypeError(f"check function returned {type(res).__name__}, expected CheckResult")
        row = {"observed": to_jsonable(res.observed), "expected": str(res.expected),
               "passed": bool(res.passed), "known_gap": "" if res.passed else str(res.gap or ""),
               "details": str(res.details or "")}
        figure = res.figure
    except Exception as exc:  # noqa: BLE001 - a broken check is a failed check, never a crash
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
        row = {"observed": None, "expected": "(not evaluated: the check raised an error)", "passed": False,
               "known_gap": "", "details": f"error: {type(exc).__name__}: {exc}{where}\n"
                          + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()}
    seconds = time.perf_counter() - t0
    result = {"id": c.id, "kind": c.kind, "statement": c.statement, "source": c.source, **row,
              "seconds": round(seconds, 4)}
    return {k: result[k] for k in RESULT_KEYS}, figure


def select_checks(ids: list[str] | None = None) -> list[Check]:
    if ids is None:
        return list(REGISTRY.values())
    unknown = [i for i in ids if i not in REGISTRY]
    if unknown:
        known = ", ".join(REGISTRY) if REGISTRY else "(none registered)"
        raise ChemohostError(f"unknown check id(s): {', '.join(unknown)}; known checks: {known}")
    return [REGISTRY[i] for i in dict.fromkeys(ids)]


def run_checks(ids: list[str] | None = None, out: str | Path | None = None) -> list[dict]:
    """Run the registered checks (all, or those in ``ids``, in that order) and return one dict
    per check with keys ``id, kind, statement, source, observed, expected, passed, details, seconds``.

    With ``out``: write ``out/validation.json`` and ``out/figures/<id>.png`` atomically (into a
    temporary folder first; nothing is changed in ``out`` if writing fails)."""
    load_checks()
    checks = select_checks(ids)
    if out is not None:
        from ..outputs import check_out_path

        out = Path(out)
        check_out_path(out)  # before the checks run, not after
    results, figures = [], []
    for c in checks:
        row, fig = _run_one(c)
        results.append(row)
        figures.append(fig)
    if out is not None:
        write_results(results, figures, out)
    return results


# -- writing ---------------------------------------------------------------------------------------
def _rounded(value: object) -> object:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _short(value: object, width: int) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(_rounded(value), separators=(",", ":"), default=str)
    elif value is None:
        text = "-"
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def _text_panel(fig: Figure, row: dict, note: str = "") -> None:
    """Fallback evidence figure: the statement, observed and expected values as text."""
    fig.clear()
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    verdict = "PASS" if row["passed"] else "FAIL"
    lines = [f"{row['id']}   [{verdict}]", ""]
    lines += textwrap.wrap(row["statement"], 70)
    lines += ["", *textwrap.wrap(f"source: {row['source']}", 70), ""]
    lines += textwrap.wrap(f"observed: {_short(row['observed'], 400)}", 70)
    lines += textwrap.wrap(f"expected: {row['expected']}", 70)
    extra = note or (row["details"].splitlines()[0] if row["details"] else "")
    if extra:
        lines += ["", *textwrap.wrap(extra, 70)[:6]]
    ax.text(0.04, 0.95, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9,
            transform=ax.transAxes)
    ax.add_patch(Rectangle((0, 0), 0.015, 1, transform=ax.transAxes,
                           color="#2e7d32" if row["passed"] else "#c62828"))


def _save_figure(row: dict, draw: Callable[[Figure], None] | None, path: Path) -> str:
    """Draw one check's figure to ``path``; returns a note when the check's own drawing failed."""
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    note = ""
    if draw is not None:
        try:
            draw(fig)
        except Exception as exc:  # noqa: BLE001 - a broken plot falls back to the text panel
            note = f"figure error: {type(exc).__name__}: {exc}"
            fig = Figure(figsize=(6.4, 4.4))
            FigureCanvasAgg(fig)
            _text_panel(fig, row, note)
    else:
        _text_panel(fig, row)
    fig.savefig(path, dpi=100)
    return note


def write_results(results: list[dict], figures: list[Callable[[Figure], None] | None], out: Path) -> None:
    """Write ``validation.json`` and ``figures/<id>.png`` into ``out`` (staged inside it, published with
    a completion marker by :func:`chemohost.outputs.write_atomically`)."""
    from ..outputs import write_atomically

    def write(tmp: Path) -> None:
        figdir = tmp / "figures"
        figdir.mkdir()
        for row, draw in zip(results, figures):
            note = _save_figure(row, draw, figdir / f"{row['id']}.png")
            if note:
                row["details"] = f"{row['details']}\n{note}".strip()
        (tmp / "validation.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")

    write_atomically(out, write)


def format_table(results: list[dict]) -> str:
    """A fixed-width table of results and a last line 'N passed, M failed'."""
    headers = ("id", "result", "kind", "observed", "expected", "source")
    rows = [(r["id"], status(r), r.get("kind", "-"), _short(r["observed"], 28),
             _short(r["expected"], 28), _short(r["source"], 32)) for r in results]
    widths = [max([len(h)] + [len(row[k]) for row in rows]) for k, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines = [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
    failed = [r for r in results if status(r) == "FAIL"]
    gaps = [r for r in results if status(r) == "GAP"]
    if failed or gaps:
        lines.append("")
        for r in failed:
            first = r["details"].splitlines()[0] if r["details"] else "(no details)"
            lines.append(f"FAIL {r['id']}: {_short(first, 200)}")
        for r in gaps:
            lines.append(f"GAP  {r['id']}: {_short(r['known_gap'], 200)}")
    by_kind = [f"{k}: {sum(r['passed'] for r in results if r.get('kind') == k)}/"
               f"{sum(r.get('kind') == k for r in results)} passed" for k in KINDS
               if any(r.get("kind") == k for r in results)]
    if by_kind:
        lines.append("; ".join(by_kind))
    passed = sum(status(r) == "PASS" for r in results)
    lines.append(f"{passed} passed, {len(failed)} failed" + (f", {len(gaps)} known gaps" if gaps else ""))
    return "\n".join(lines)


def status(row: dict) -> str:
    """PASS, FAIL, or GAP (failed, with a documented known gap)."""
    if row["passed"]:
        return "PASS"
    return "GAP" if row.get("known_gap") else "FAIL"


def exit_code(results: list[dict]) -> int:
    """0 when every check passed or failed only where a known gap is declared, else 1."""
    return 0 if all(status(r) != "FAIL" for r in results) else 1
