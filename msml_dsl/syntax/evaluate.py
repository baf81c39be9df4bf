"""Numeric evaluation of AST expressions (constants, bounds, data bindings).

Works on floats and numpy arrays alike; names are looked up in ``env``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from msml_dsl.syntax import ast


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


#: Elementary functions of the language and their arities.
FUNCTIONS: dict[str, tuple[Callable, int]] = {
    "exp": (np.exp, 1), "log": (np.log, 1), "sqrt": (np.sqrt, 1), "sin": (np.sin, 1),
    "cos": (np.cos, 1), "tan": (np.tan, 1), "tanh": (np.tanh, 1), "abs": (np.abs, 1),
    "min": (np.minimum, 2), "max": (np.maximum, 2), "sigmoid": (_sigmoid, 1),
}

#: Names every model knows.
BUILTIN_CONSTANTS = {"pi": math.pi}


class EvaluationError(Exception):
    def __init__(self, message: str, node):
        super().__init__(message)
        self.node = node


def evaluate(expr: ast.Expr, env: Mapping[str, object]):
    """Evaluate an expression numerically.

    >>> from msml_dsl.syntax.parser import parse
    >>> e = parse('model m\\nconst c = 2 * pi\\n').statements[1].value
    >>> round(float(evaluate(e, {})), 4)
    6.2832
    """
    if isinstance(expr, ast.Number):
        return expr.value
    if isinstance(expr, ast.Name):
        if expr.id in env:
            return env[expr.id]
        if expr.id in BUILTIN_CONSTANTS:
            return BUILTIN_CONSTANTS[expr.id]
        raise EvaluationError(f"'{expr.id}' has no value here", expr)
    if isinstance(expr, ast.UnaryOp):
        v = evaluate(expr.operand, env)
        return -v if expr.op == "-" else v
    if isinstance(expr, ast.BinOp):
        a, b = evaluate(expr.left, env), evaluate(expr.right, env)
        with np.errstate(all="ignore"):
            if expr.op == "+":
                return a + b
            if expr.op == "-":
                return a - b
            if expr.op == "*":
                return a * b
            if expr.op == "/":
                return np.divide(a, b) if not (np.isscalar(b) and b == 0) else np.divide(np.asarray(a, float), b)
            if expr.op == "^":
                return np.power(np.asarray(a, float), b) if not np.isscalar(a) else float(a) ** b
    if isinstance(expr, ast.Call) and expr.func.id in FUNCTIONS:
        fn, arity = FUNCTIONS[expr.func.id]
        if len(expr.args) != arity or expr.keywords:
            raise EvaluationError(f"{expr.func.id}() takes {arity} argument{'s' if arity > 1 else ''}", expr)
        with np.errstate(all="ignore"):
            return fn(*[evaluate(a, env) for a in expr.args])
    if isinstance(expr, ast.Attribute):
        key = f"{expr.source.id}.{expr.column.id}"
        if key in env:
            return env[key]
        raise EvaluationError(f"'{key}' has no value here", expr)
    raise EvaluationError("this expression cannot be computed to a number here", expr)
