"""Safe parsing of the small expression language used in mechanism declarations.

Expressions are ordinary infix maths over declared names: ``+ - * / **`` (``^`` also means power),
``exp log sqrt abs min max`` and numbers.  Every identifier must be declared (species, parameter,
output); anything else is a :class:`~chemohost.errors.ModelError` naming the expression.
"""

from __future__ import annotations

import keyword
import re
from typing import TYPE_CHECKING

from ..errors import ModelError

if TYPE_CHECKING:
    import sympy as sp

#: the functions expressions may use (sympy is imported only to parse: a run whose compiled model is
#: cached does not pay its 0.3 s import)
FUNCTION_NAMES = ("exp", "log", "sqrt", "abs", "min", "max")


def _functions() -> dict:
    import sympy as sp

    return {"exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "abs": sp.Abs, "min": sp.Min, "max": sp.Max}


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_OK = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_name(name: str, what: str) -> None:
    if not _NAME_OK.match(name) or keyword.iskeyword(name) or name in FUNCTION_NAMES or name == "time":
        raise ModelError(
            f"{what} name '{name}' is not allowed: use letters, digits and '_', starting with a "
            f"letter, and not a Python keyword or one of {sorted(FUNCTION_NAMES)}"
        )


def identifiers(text: str) -> set[str]:
    # strip numbers in scientific notation before looking for names (1e-3 is not the name 'e')
    stripped = re.sub(r"(?<![A-Za-z_0-9.])\d+\.?\d*(?:[eE][-+]?\d+)?", " ", text)
    return {m.group(0) for m in _IDENT.finditer(stripped)} - set(FUNCTION_NAMES)


def parse(text: str | float | int, known: dict[str, sp.Symbol], where: str) -> sp.Expr:
    """Parse ``text`` using only the symbols in ``known``."""
    import sympy as sp
    from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

    if isinstance(text, (int, float)):
        return sp.Float(text) if isinstance(text, float) else sp.Integer(text)
    unknown = sorted(identifiers(text) - set(known))
    if unknown:
        raise ModelError(
            f"{where}: expression '{text}' uses undeclared name(s) {unknown}; declare them as "
            "species, parameters or outputs of a module in the model"
        )
    local = dict(known)
    local.update(_functions())
    try:
        expr = parse_expr(
            text,
            local_dict=local,
            global_dict={"Integer": sp.Integer, "Float": sp.Float, "Rational": sp.Rational},
            transformations=standard_transformations + (convert_xor,),
            evaluate=True,
        )
    except Exception as exc:  # sympy raises many types for syntax errors
        raise ModelError(f"{where}: cannot parse expression '{text}' ({exc})") from None
    if not isinstance(expr, sp.Expr):
        raise ModelError(f"{where}: expression '{text}' is not a number-valued expression")
    return expr
