"""calculator: arithmetic done by arithmetic, not by a language model.

The expression is parsed with `ast` and evaluated by walking a whitelist of nodes (numbers, + - * / // %
**, unary minus, a few math functions and constants); anything else (names, attributes, subscripts,
lambdas, strings) is refused. Nothing is ever passed to eval(). Sizes are bounded before they are
computed: integer results may not exceed MAX_BITS, so `9**9**9` or `factorial(10**6)` is refused at once
instead of eating the CPU, and float overflow, NaN and division by zero are errors, not answers.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from aigrid.agents.tool import ToolContext, ToolError, require_str
from aigrid.security.firewall.texts import Source

MAX_LEN = 300
MAX_NODES = 200
MAX_DEPTH = 40
MAX_BITS = 10_000
"""Largest integer result (about 3,000 decimal digits)."""

Number = int | float

CONSTANTS: Mapping[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _factorial(n: Number) -> int:
    if not isinstance(n, int) or n < 0:
        raise ToolError("factorial needs a non-negative integer")
    if n > 1000:
        raise ToolError("factorial argument is larger than 1000")
    return math.factorial(n)


def _round(x: Number, ndigits: Number = 0) -> Number:
    if not isinstance(ndigits, int) or abs(ndigits) > 15:
        raise ToolError("round's digits must be an integer between -15 and 15")
    return round(x, ndigits) if ndigits else round(x)


FUNCTIONS: Mapping[str, Callable[..., Number]] = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "hypot": math.hypot, "floor": math.floor, "ceil": math.ceil, "abs": abs,
    "min": min, "max": max, "round": _round, "factorial": _factorial,
}


def _check_int(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ToolError(f"the result is larger than {MAX_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is not a finite number (overflow)")
    return value


def _pow(base: Number, exp: Number) -> Number:
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        if exp > MAX_BITS or (abs(base).bit_length() - 1) * exp > MAX_BITS:
            raise ToolError(f"the result is larger than {MAX_BITS} bits")
        result: int = base**exp
        return result
    if isinstance(base, int) and isinstance(exp, int) and exp >= 0:
        small: int = base**exp  # |base| <= 1: 0, 1 or +-1
        return small
    try:
        power = math.pow(base, exp)
    except OverflowError as e:
        raise ToolError("the result is too large") from e
    return power


def _mul(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_BITS + 1:
        raise ToolError(f"the result is larger than {MAX_BITS} bits")
    return a * b


BINARY: Mapping[type[ast.operator], Callable[[Any, Any], Number]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _pow,
}
UNARY: Mapping[type[ast.unaryop], Callable[[Any], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate(expression: str) -> Number:
    """The value of `expression`, or ToolError naming what is not allowed."""
    if len(expression) > MAX_LEN:
        raise ToolError(f"the expression is longer than {MAX_LEN} characters")
    try:
        tree = ast.parse(expression.strip().replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from e
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"the expression has more than {MAX_NODES} parts")
    try:
        return _check_int(_eval(tree.body, 0))
    except ZeroDivisionError as e:
        raise ToolError("division by zero") from e
    except (OverflowError, ValueError, TypeError) as e:  # math domain errors, float overflow
        raise ToolError(f"cannot evaluate: {e}") from e


def _eval(node: ast.expr, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise ToolError(f"the expression is nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        return _check_int(BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand, depth + 1))
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
            and not node.keywords and len(node.args) <= 4):
        args = [_eval(a, depth + 1) for a in node.args]
        return _check_int(FUNCTIONS[node.func.id](*args))
    raise ToolError(f"not allowed in an arithmetic expression: {ast.unparse(node)[:60]!r}")


def format_number(value: Number) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


class Calculator:
    name = "calculator"
    source = Source.TOOL_RESULT
    description = ("Evaluate an arithmetic expression exactly, e.g. 1234 * 5678 or sqrt(2) * (3 + 4). "
                   "Operators + - * / // % **; functions " + ", ".join(FUNCTIONS) + "; constants pi, e.")
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {"expression": {"type": "string", "pattern": r"^[-0-9(.a-z][-+*/%^0-9a-z(). ,]{0,119}$"}},
        "required": ["expression"],
        "additionalProperties": False,
    }

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        return format_number(evaluate(require_str(arguments, "expression", max_len=MAX_LEN)))
