"""A safe arithmetic evaluator: parses with ``ast`` and allows only numbers and operators."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e15
MAX_LENGTH = 200


class CalcError(ValueError):
    """The expression is malformed, uses a forbidden construct, or its value is out of range."""


def evaluate(expression: str) -> float:
    """Evaluate ``expression`` using only numeric literals, + - * / // % ** and parentheses."""
    if len(expression) > MAX_LENGTH:
        raise CalcError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalcError(f"cannot parse {expression.strip()[:40]!r}") from exc
    return _check(_eval(tree.body))


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check(float(node.value) if isinstance(node.value, float) else int(node.value))  # type: ignore[arg-type]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalcError(f"exponent {right} exceeds {MAX_EXPONENT}")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError as exc:
            raise CalcError("division by zero") from exc
        except OverflowError as exc:
            raise CalcError("result out of range") from exc
    raise CalcError(f"unsupported syntax: {type(node).__name__}")


def _check(value: float) -> float:
    if isinstance(value, complex) or not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise CalcError("result out of range")
    return value


def format_number(value: float) -> str:
    """Integers print without a decimal point; other values with up to 6 significant decimals."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"
