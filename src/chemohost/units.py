"""Unit handling at the boundary.

Internal units (fixed, see docs/architecture.md): time in **days**, drug amounts in **mg**,
volumes in **L**, concentrations in mg/L (or umol/L where a species says so), cell counts in the
unit each species declares.  User-facing values carry units and are converted here with pint.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pint

from .errors import UnitError

_ureg = pint.UnitRegistry()
_ureg.define("cells = [cell_count]")

Q_ = _ureg.Quantity

# "m2" -> "m**2", "cm3" -> "cm**3" (clinical shorthand); keep numbers in "1e9" etc. intact.
_SHORTHAND = re.compile(r"(?<=[A-Za-zµ])([23])\b")


def ureg() -> pint.UnitRegistry:
    return _ureg


def normalise_unit(text: str) -> str:
    text = text.strip().replace("µ", "u").replace("μ", "u").replace("^", "**")
    return _SHORTHAND.sub(r"**\1", text)


@lru_cache(maxsize=4096)
def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Factor f such that value[from_unit] * f = value[to_unit]."""
    if normalise_unit(from_unit) == normalise_unit(to_unit):
        return 1.0
    try:
        ratio = _ureg.parse_expression(normalise_unit(from_unit)) / _ureg.parse_expression(normalise_unit(to_unit))
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


def parse_quantity(text: str | float | int, default_unit: str | None = None) -> tuple[float, str]:
    """Split "1000 mg/m2" into (1000.0, "mg/m2").  A bare number takes ``default_unit``."""
    if isinstance(text, bool):
        raise UnitError(f"expected a number with a unit, got {text!r}")
    if isinstance(text, (int, float)):
        if default_unit is None:
            raise UnitError(f"value {text!r} has no unit; write it with a unit, e.g. '{text} mg'")
        return float(text), default_unit
    m = _QTY.match(str(text))
    if not m:
        raise UnitError(f"cannot read a quantity from {text!r}; write a number then a unit, e.g. '30 min'")
    value, unit = float(m.group(1)), m.group(2)
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
        Q_(1.0, normalise_unit(unit))
    except Exception as exc:  # pint raises several types
        raise UnitError(f"unknown unit '{unit}' ({exc})") from None
