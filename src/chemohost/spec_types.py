"""Shared field types and limits of every input file (scenario, trial, calibration problem, ...).

One place defines what a quantity, a count, a seed, a duration or a solver setting may be, so a file
is judged the same way wherever a field appears, and every message says what was given and what is
allowed.  Types keep the user's value (a quantity stays ``"28 day"``) after checking it; the loaders
convert with :mod:`chemohost.units` where they need numbers.

Limits (named in the messages, so a user knows which limit was hit):

=========================  =====================================================================
``MAX_HORIZON_DAYS``        36,525 days (100 years): simulated time of a scenario or trial
``MIN_OUTPUT_INTERVAL``     1 min: output grid of a scenario
``MAX_OUTPUT_POINTS``       1,000,000 output times per patient
``MAX_RESULT_BYTES``        2 GiB of time courses held in memory (patients x times x outputs x 8 B)
``MIN_LAB_INTERVAL``        1 h: blood counts of a trial
``MAX_PATIENTS``            1,000,000 virtual patients per arm
``MAX_SEED``                2**63 - 1
=========================  =====================================================================

:func:`format_validation` turns a pydantic ``ValidationError`` into one line per error (file, field
path, what was given -- truncated -- and what is allowed), merging the branches of union types.
"""

from __future__ import annotations

import difflib
import math
import typing
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StrictInt, ValidationError

from .errors import ChemohostError, ScenarioError

MAX_HORIZON_DAYS = 36_525.0
MIN_OUTPUT_INTERVAL_DAYS = 1.0 / 1440.0
MAX_OUTPUT_POINTS = 1_000_000
MAX_RESULT_BYTES = 2 * 1024 ** 3
MIN_LAB_INTERVAL_DAYS = 1.0 / 24.0
MAX_PATIENTS = 1_000_000
MAX_SEED = 2 ** 63 - 1
MAX_GOT = 60  # characters of a given value shown in a message


def short(x: Any, n: int = MAX_GOT) -> str:
    """``repr(x)`` cut to ``n`` characters (never builds the repr of a huge value in full)."""
    if isinstance(x, (dict, list, tuple)) and len(x) > 20:
        return f"<{type(x).__name__} of {len(x)} items>"
    try:
        s = repr(x)
    except RecursionError:
        return f"<{type(x).__name__}>"
    return s if len(s) <= n else s[: n - 3] + "..."


# -- quantities ------------------------------------------------------------------------------------
def _quantity(v):
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError("expected a quantity: a number or a string with a unit, e.g. '28 day' or '1000 mg/m2'")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("expected a finite quantity")
    if isinstance(v, str) and len(v) > 200:
        raise ValueError("a quantity is a short string such as '28 day'")
    return v


#: a quantity as written by the user: ``"28 day"``, ``"1000 mg/m2"`` or a bare number
Quantity = Annotated[str | float | int, BeforeValidator(_quantity)]


def _in_days(v, what: str) -> float:
    from .units import to_internal

    try:  # a bare number is in days (the internal time unit)
        return to_internal(v, "day", "day")
    except ChemohostError as exc:
        raise ValueError(str(exc)) from None


def duration(what: str, lo_days: float, hi_days: float, lo_inclusive: bool = False, limit: str = ""):
    """A time quantity with a unit whose value in days lies in (lo, hi] (or [lo, hi])."""
    def check(v):
        d = _in_days(v, what)
        ok_lo = d >= lo_days if lo_inclusive else d > lo_days
        if not (math.isfinite(d) and ok_lo and d <= hi_days):
            rel = ">=" if lo_inclusive else ">"
            raise ValueError(f"{what} must be {rel} {_days(lo_days)} and <= {_days(hi_days)}"
                             + (f" ({limit})" if limit else "") + f"; this is {d:g} days")
        return v

    return Annotated[Quantity, AfterValidator(check)]


def _days(d: float) -> str:
    if d == 0:
        return "0"
    if d < 1 / 24:
        return f"{d * 1440:g} min"
    if d < 1:
        return f"{d * 24:g} h"
    return f"{d:g} days"


# -- counts ----------------------------------------------------------------------------------------
def count(lo: int, hi: int, limit: str = ""):
    """A whole number in [lo, hi] (``true``, ``1.5`` and ``"3"`` are refused)."""
    def check(v):
        if not lo <= v <= hi:
            raise ValueError(f"must be a whole number >= {lo:,} and <= {hi:,}" + (f" ({limit})" if limit else ""))
        return v

    return Annotated[StrictInt, AfterValidator(check)]


Seed = count(0, MAX_SEED, "random seed")
Patients = count(1, MAX_PATIENTS, "MAX_PATIENTS")


def _finite(lo: float | None = None, hi: float | None = None, lo_open: bool = False, what: str = "value"):
    def check(v):
        if isinstance(v, bool):
            raise ValueError(f"{what} must be a number, not true/false")
        v = float(v)
        bad = not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or \
            (hi is not None and v > hi)
        if bad:
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]" if lo is not None and hi is not None else ""
            raise ValueError(f"{what} must be a finite number in {rng}")
        return v

    return Annotated[float, BeforeValidator(lambda v: _no_bool(v, what)), AfterValidator(check)]


def _no_bool(v, what):
    if isinstance(v, bool):
        raise ValueError(f"{what} must be a number, not true/false")
    return v


class SolverFields(BaseModel):
    """Integrator settings shared by scenarios and trials."""

    model_config = {"extra": "forbid"}
    rtol: _finite(1e-12, 0.1, what="rtol") = 1e-5
    atol: _finite(0.0, 1.0, lo_open=True, what="atol") = 1e-9
    closed_form: bool = True
    max_steps: count(1, 100_000_000) = 200_000
    device: Literal["cpu", "gpu"] = Field("cpu", description="gpu: the CUDA kernel generated from the same model "
                                                           "(one patient per thread; needs an NVIDIA GPU and numba-cuda)")
    backend: Literal["auto", "c", "c-simd", "numba"] = Field(
        "auto", description="CPU engine: c-simd (compiled by the system C compiler, 8 patients side by side in SIMD "
        "lanes; results within round-off of c, or within the tolerance where round-off changes a step), c (one "
        "patient at a time) or numba (c and numba: bit-identical); auto: c-simd when a C compiler is found, else "
        "numba")


# -- messages --------------------------------------------------------------------------------------
_TYPE_PARTS = {"str", "float", "int", "bool", "list", "dict", "none", "tuple", "set"}


def _is_branch(part) -> bool:
    return isinstance(part, str) and (part in _TYPE_PARTS or part.startswith(("function-", "lax-", "constrained-",
                                                                             "json-or-python", "nullable")) or
                                      "[" in part)


def loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        if _is_branch(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)
            name = name if len(name) <= 40 else f"{name[:20]}...<{len(name):,} characters>"
            out += ("." if out else "") + name
    return out


def model_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of ``loc``."""
    cls: Any = root
    for part in [p for p in loc[:-1] if not _is_branch(p)]:
        while True:
            origin = typing.get_origin(cls)
            if origin is Annotated:
                cls = typing.get_args(cls)[0]
                continue
            if origin in (list, dict) or origin is typing.Union or str(origin) == "types.UnionType":
                args = [a for a in typing.get_args(cls) if a is not type(None)]
                models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
                if origin in (list, dict):
                    cls = args[-1]
                    if isinstance(part, int) or origin is dict:
                        break
                    continue
                cls = models[0] if models else args[0]
                continue
            break
        if isinstance(cls, type) and issubclass(cls, BaseModel) and isinstance(part, str) and part in cls.model_fields:
            cls = cls.model_fields[part].annotation
    while True:
        origin = typing.get_origin(cls)
        if origin is None:
            break
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        cls = models[0] if models else args[0] if origin is Annotated else args[-1]
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def validation_lines(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """``[(field path, message)]``, one per distinct error, union branches merged."""
    out: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = err["loc"]
        field = loc_text(loc)
        if err["type"] == "extra_forbid" or err["type"] == "extra_forbidden":
            owner = model_at(loc, root)
            allowed = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1])[:100], allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            shown = ", ".join(allowed[:12]) + (f", ... ({len(allowed)} in all; `chemohost schema` lists them)"
                                               if len(allowed) > 12 else "")
            msg = f"is not a known field{hint}; allowed here: {shown}"
        elif err["type"] == "missing":
            owner = model_at(loc, root)
            info = owner.model_fields.get(str(loc[-1])) if owner else None
            hint = f" ({info.description})" if info is not None and info.description else ""
            msg = f"is required{hint}"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            msg = f"{msg} (got {short(err.get('input'))})"
        msgs = out.setdefault(field, [])
        if any(_is_branch(p) for p in loc):  # a union branch: keep one message per field
            if not msgs or "expected a quantity" in msg:
                msgs[:] = [msg] if "expected a quantity" in msg or not msgs else msgs
            continue
        if msg not in msgs:
            msgs.append(msg)
    return [(f, m) for f, ms in out.items() for m in ms]


def errors_to_exception(lines: list[tuple[str, str]], file: str) -> ScenarioError:
    """One ScenarioError whose message lists every error on its own line: ``file: field 'x': msg``."""
    text = "\n".join((f"{file}: field '{f}'{' ' if m.startswith('is ') else ': '}{m}" if f else f"{file}: {m}")
                     for f, m in lines)
    if len(lines) > 1:
        text = f"{len(lines)} errors:\n" + text
    err = ScenarioError(text)
    err.file = file
    err.field = lines[0][0] if lines else None
    return err


def format_validation(exc: ValidationError, file: str, root: type[BaseModel]) -> ScenarioError:
    return errors_to_exception(validation_lines(exc, root), file)


class Collector:
    """Collects the errors of independent checks so a file's problems are all reported at once::

        col = Collector(file)
        with col.check("outputs[2]"):
            ...  # raises ChemohostError
        col.raise_if_any()
    """

    def __init__(self, file: str):
        self.file = file
        self.lines: list[tuple[str, str]] = []

    def add(self, field: str | None, message: str) -> None:
        self.lines.append((field or "", message))

    def check(self, field: str | None = None):
        col = self

        class _Ctx:
            def __enter__(self):
                return self

            def __exit__(self, et, ev, tb):
                if ev is not None and isinstance(ev, ChemohostError):
                    col.add_error(ev, field)
                    return True
                return False

        return _Ctx()

    def add_error(self, exc: ChemohostError, field: str | None = None) -> None:
        text = str(exc)
        f = getattr(exc, "field", None) or field
        file = getattr(exc, "file", None)
        if isinstance(exc, ScenarioError) and "\n" in text and text.split(":", 1)[0].strip().endswith("errors"):
            for line in text.splitlines()[1:]:  # an already-collected list: keep its lines
                self.lines.append(("", line.removeprefix(f"{self.file}: ")))
            return
        for prefix in (f"{file}: " if file else None, f"field '{f}': " if f else None):
            if prefix and text.startswith(prefix):
                text = text[len(prefix):]
        self.lines.append((f or "", text))

    def raise_if_any(self) -> None:
        if self.lines:
            raise errors_to_exception(self.lines, self.file)


__all__ = ["Quantity", "duration", "count", "Seed", "Patients", "SolverFields", "Collector", "format_validation",
           "validation_lines", "errors_to_exception", "short", "Field", "MAX_HORIZON_DAYS", "MAX_PATIENTS",
           "MAX_SEED", "MAX_OUTPUT_POINTS", "MAX_RESULT_BYTES", "MIN_LAB_INTERVAL_DAYS", "MIN_OUTPUT_INTERVAL_DAYS"]
