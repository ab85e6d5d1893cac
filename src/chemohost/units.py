"""Unit handling at the boundary.

Internal units (fixed, see docs/architecture.md): time in **days**, drug amounts in **mg**,
volumes in **L**, concentrations in mg/L (or umol/L where a species says so), cell counts in the
unit each species declares.  User-facing values carry units and are converted here with pint.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from functools import lru_cache

from .cachedir import cache_dir
from .errors import UnitError

# "m2" -> "m**2", "cm3" -> "cm**3" (clinical shorthand); keep numbers in "1e9" etc. intact.
_SHORTHAND = re.compile(r"(?<=[A-Za-zµ])([23])\b")

_registry = None
_registry_lock = threading.Lock()


def ureg():
    """The one pint ``UnitRegistry`` (with ``cells``), built on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = _build_registry()
                _registry.define("cells = [cell_count]")
    return _registry


def _build_registry():
    """pint's registry from its parsed definitions cached under ``cache_dir()/pint/<pint version>`` (pint's own
    ``cache_folder``: 0.02 s instead of 0.3 s to parse its definition files in every process and Dask worker).

    The first process writes the cache in a private folder and renames it into place, so no process reads a
    half-written one (pint writes its files in place); a cache that does not load is removed and rebuilt, and
    where the cache directory is not writable the registry is built without it."""
    import pint

    root = cache_dir() / "pint"
    shared = root / pint.__version__
    if shared.is_dir():
        try:
            return pint.UnitRegistry(cache_folder=shared)
        except Exception:  # damaged (pickle, permissions): parsed anew below
            shutil.rmtree(shared, ignore_errors=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".build-", dir=root)
        os.chmod(tmp, 0o755)  # (mkdtemp: 0700; the cache may be shared)
    except OSError:
        return pint.UnitRegistry()
    try:
        reg = pint.UnitRegistry(cache_folder=tmp)
    except Exception:
        reg = pint.UnitRegistry()
    try:
        os.rename(tmp, shared)
    except OSError:  # another process published first: its cache is as good, this registry is built already
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return reg


def normalise_unit(text: str) -> str:
    text = text.strip().replace("µ", "u").replace("μ", "u").replace("^", "**")
    return _SHORTHAND.sub(r"**\1", text)


@lru_cache(maxsize=4096)
def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Factor f such that value[from_unit] * f = value[to_unit]."""
    if normalise_unit(from_unit) == normalise_unit(to_unit):
        return 1.0
    reg = ureg()
    import pint  # (imported by ureg())

    try:
        ratio = reg.parse_expression(normalise_unit(from_unit)) / reg.parse_expression(normalise_unit(to_unit))
        if not hasattr(ratio, "to"):
            return float(ratio)
        return float(ratio.to("dimensionless").magnitude)
    except pint.errors.DimensionalityError:
        raise UnitError(
            f"unit '{from_unit}' does not convert to '{to_unit}' (different dimensions); "
            f"give the value in a unit compatible with {to_unit}"
        ) from None
    except (pint.errors.UndefinedUnitError, AttributeError, TypeError, ValueError, SyntaxError) as exc:
        raise UnitError(
            f"unknown unit in '{from_unit}' or '{to_unit}' ({exc}); use units such as mg, mg/m2, "
            "mg/kg, L/min, 1/day, h, min"
        ) from None


def convert(value: float, from_unit: str, to_unit: str) -> float:
    return float(value) * conversion_factor(from_unit, to_unit)


_QTY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")
# a unit may open with an explicit numeric factor only in these forms: "1/day", "1e9/L", "10**9/L"
_UNIT_FACTOR = re.compile(r"^(?:1|1[eE][-+]?\d+|10\*\*[-+]?\d+|10\^[-+]?\d+)\s*[/*]")
_UNIT_CHARS = re.compile(r"^[A-Za-z\u00b5\u03bc%/*^()._\s\d-]*$")
_DIGIT_GROUPS = re.compile(r"^\s*[-+]?\d{1,3}(?:([.,\s\u00a0\u202f'_])\d{3})+(?!\d)")
_ACCEPTED = "a number then a unit, e.g. '1000 mg/m2', '1.5 h', '30 min', '0.5 1/day' (no thousands separators)"


def _reject(text, why: str):
    raise UnitError(f"cannot read the quantity {text!r}: {why}; write {_ACCEPTED}")


def _check_strict(text: str, unit: str) -> None:
    """Refuse strings that pint would read as something other than what a person meant.

    ``1,000 mg/m2`` (pint: 1 x ',000 mg/m2' = 0), ``1 000 mg/m2`` (1 x 000 = 0), ``1,5 h`` (5 h),
    ``1.000.000`` and ``1.000 mg`` (1 or 1000?), ``mg 2`` (2 mg): every digit of the unit must
    belong to an exponent (``m2``, ``m**2``) or an explicit leading factor (``1e9/L``, ``1/day``),
    and the unit alone must parse to magnitude 1 (apart from that factor).
    """
    m = _DIGIT_GROUPS.match(text)
    if m and (m.group(1) != "." or re.match(r"^\s*[-+]?\d{1,3}\.000(?!\d)", text)
              or text.count(".") > 1):
        _reject(text, "it looks like a number with digit-group (thousands) separators or a decimal comma")
    if "," in unit or ";" in unit:
        _reject(text, "a comma is neither a decimal point nor part of a unit")
    if not _UNIT_CHARS.match(unit):
        _reject(text, f"'{unit}' holds characters that are not part of a unit")
    rest = unit
    f = _UNIT_FACTOR.match(unit)
    if f:
        rest = unit[f.end() - 1:].lstrip("*")
    elif unit and (unit[0].isdigit() or unit[0] in "._-"):
        _reject(text, f"the unit '{unit}' starts with a number (a space or separator inside the number?)")
    for k in re.finditer(r"\d+", rest):
        before = rest[:k.start()]
        if not (before and (before[-1].isalpha() or before[-1] in "\u00b5\u03bc^" or before.endswith("**")
                            or (before[-1] in "-+" and (before[:-1].endswith("**") or before[:-1].endswith("^"))))):
            _reject(text, f"the number {k.group()!r} inside the unit '{unit}' is not an exponent")
    if rest.strip() in ("", "/", "*"):
        return
    try:
        q = ureg().parse_expression(normalise_unit(rest.lstrip("/*") if not rest.startswith("/") else "1" + rest))
    except Exception as exc:  # pint raises several types
        raise UnitError(f"unknown unit '{unit}' in {text!r} ({exc}); use units such as mg, mg/m2, mg/kg, "
                        "L/min, 1/day, h, min") from None
    mag = getattr(q, "magnitude", q)
    if not (isinstance(mag, (int, float)) and abs(float(mag) - 1.0) < 1e-12):
        _reject(text, f"the unit '{unit}' carries a number ({mag!r})")


def parse_quantity(text: str | float | int, default_unit: str | None = None) -> tuple[float, str]:
    """Split "1000 mg/m2" into (1000.0, "mg/m2").  A bare number takes ``default_unit``.

    Strict: digit-group separators (``1,000``, ``1 000``, ``1.000.000``), decimal commas (``1,5``)
    and numbers hidden in the unit are errors, never silently read (see :func:`_check_strict`).
    """
    if isinstance(text, bool):
        raise UnitError(f"expected a number with a unit, got {text!r}")
    if isinstance(text, (int, float)):
        if default_unit is None:
            raise UnitError(f"value {text!r} has no unit; write it with a unit, e.g. '{text} mg'")
        return float(text), default_unit
    if not isinstance(text, str):
        raise UnitError(f"expected a number with a unit as text, got {type(text).__name__} {str(text)[:60]!r}")
    if len(text) > 200:
        raise UnitError(f"a quantity is at most 200 characters, got {len(text)}")
    m = _QTY.match(text)
    if not m:
        _reject(text, "it does not start with a number")
    value, unit = float(m.group(1)), m.group(2)
    _check_strict(text, unit)
    if not unit:
        if default_unit is None:
            raise UnitError(f"value {text!r} has no unit; write it with a unit, e.g. '{text} mg'")
        unit = default_unit
    return value, unit


def to_internal(text: str | float | int, to_unit: str, default_unit: str | None = None) -> float:
    value, unit = parse_quantity(text, default_unit)
    return convert(value, unit, to_unit)


def check_unit(unit: str) -> None:
    try:
        ureg().Quantity(1.0, normalise_unit(unit))
    except Exception as exc:  # pint raises several types
        raise UnitError(f"unknown unit '{unit}' ({exc})") from None
