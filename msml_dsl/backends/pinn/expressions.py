"""SymPy expressions with fields and their partial derivatives, as torch functions.

``Derivative(u(x, t), x, 2)`` and ``u(x, t)`` are replaced by placeholders; the expression is
printed once as a torch function of the placeholders, the coordinates, the parameters and any
covariates, all looked up by name.  ``FieldExpression.needs`` says which derivatives of which
field the caller must supply, as multi-indices over the field's own arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy
import torch
from sympy.core.function import AppliedUndef


def _unary(fn, fallback):
    return lambda x: fn(x) if torch.is_tensor(x) else fallback(float(x))


def _minmax(op, fallback):
    def f(*args):
        if not any(torch.is_tensor(a) for a in args):
            return fallback(float(a) for a in args)
        like = next(a for a in args if torch.is_tensor(a))
        out = torch.as_tensor(args[0], dtype=like.dtype, device=like.device)
        for a in args[1:]:
            out = op(out, torch.as_tensor(a, dtype=like.dtype, device=like.device))
        return out
    return f


TORCH_FUNCTIONS = {
    "exp": _unary(torch.exp, math.exp), "log": _unary(torch.log, math.log), "sqrt": _unary(torch.sqrt, math.sqrt),
    "sin": _unary(torch.sin, math.sin), "cos": _unary(torch.cos, math.cos), "tan": _unary(torch.tan, math.tan),
    "tanh": _unary(torch.tanh, math.tanh), "sinh": _unary(torch.sinh, math.sinh),
    "cosh": _unary(torch.cosh, math.cosh), "atan": _unary(torch.atan, math.atan),
    "erf": _unary(torch.erf, math.erf), "Abs": _unary(torch.abs, abs),
    "sign": _unary(torch.sign, lambda v: float((v > 0) - (v < 0))),
    "Min": _minmax(torch.minimum, min), "Max": _minmax(torch.maximum, max), "pi": math.pi, "E": math.e,
}


@dataclass
class FieldExpression:
    """A compiled expression: call it with field derivatives, coordinates, parameters by name."""

    expr: sympy.Expr
    needs: dict[str, set[tuple[int, ...]]]        # field -> multi-indices
    slots: list[tuple[str, tuple[int, ...]]]      # placeholder order: (field, multi-index)
    names: list[str]                              # other free symbols, by name
    fn: object

    def __call__(self, derivs: dict[tuple[str, tuple[int, ...]], torch.Tensor],
                 env: dict[str, torch.Tensor], like: torch.Tensor | None = None) -> torch.Tensor:
        missing = [n for n in self.names if n not in env]
        if missing:
            raise KeyError(f"no value for {', '.join(missing)} in {sympy.sstr(self.expr)}")
        out = self.fn(*[derivs[s] for s in self.slots], *[env[n] for n in self.names])
        if not torch.is_tensor(out):  # a constant expression
            ref = like if like is not None else next(iter(derivs.values()))
            out = torch.full_like(ref, float(out))
        return out


def compile_expression(expr: sympy.Expr, fields: dict) -> FieldExpression:
    """Compile ``expr``; ``fields`` maps field names to their ``FieldSpec`` (argument order)."""
    expr = sympy.sympify(expr)
    replace: dict = {}
    dummies: dict[tuple[str, tuple[int, ...]], sympy.Dummy] = {}   # in slot order
    needs: dict[str, set] = {}

    def slot(app, counts):
        name = type(app).__name__
        spec = fields.get(name)
        if spec is None:
            raise ValueError(f"'{name}' is not a field of this model (fields: {', '.join(fields) or 'none'})")
        if tuple(app.args) != tuple(spec.arguments):
            raise ValueError(f"field {name} appears as {app}; the PINN backend expects it written at its own "
                             f"arguments {name}({', '.join(map(str, spec.arguments))}) (conditions fix the "
                             "coordinates through their points)")
        alpha = tuple(int(counts.get(a, 0)) for a in spec.arguments)
        key = (name, alpha)
        if key not in dummies:
            dummies[key] = sympy.Dummy(f"{name}_{'_'.join(map(str, alpha))}")
            needs.setdefault(name, set()).add(alpha)
        return dummies[key]

    for d in sorted(expr.atoms(sympy.Derivative), key=sympy.default_sort_key):
        counts: dict = {}
        for v, k in d.variable_count:
            counts[v] = counts.get(v, 0) + int(k)
        if not isinstance(d.expr, AppliedUndef):
            raise ValueError(f"cannot differentiate {d.expr}: only fields can be differentiated here")
        replace[d] = slot(d.expr, counts)
    reduced = expr.xreplace(replace)
    for app in sorted(reduced.atoms(AppliedUndef), key=sympy.default_sort_key):
        replace[app] = slot(app, {})
    reduced = expr.xreplace(replace)
    others = sorted((s for s in reduced.free_symbols if s not in set(dummies.values())), key=lambda s: s.name)
    fn = sympy.lambdify([*dummies.values(), *others], reduced, modules=[TORCH_FUNCTIONS], dummify=True)
    return FieldExpression(expr, needs, list(dummies), [s.name for s in others], fn)

