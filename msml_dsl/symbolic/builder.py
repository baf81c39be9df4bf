"""Checked model → SymPy (the ``symbolic`` stage).

SymPy expressions are built node by node from the AST through an explicit
table; user text is never handed to ``sympify``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import sympy

from msml_dsl.errors import InternalError
from msml_dsl.semantics.model import CheckedModel
from msml_dsl.syntax import ast


def _sigmoid(x):
    return 1 / (1 + sympy.exp(-x))


#: Language function → SymPy constructor.
SYMPY_FUNCTIONS = {
    "exp": sympy.exp, "log": sympy.log, "sqrt": sympy.sqrt, "sin": sympy.sin, "cos": sympy.cos,
    "tan": sympy.tan, "tanh": sympy.tanh, "abs": sympy.Abs, "min": sympy.Min, "max": sympy.Max,
    "sigmoid": _sigmoid,
}


def element_name(vector: str, index: int) -> str:
    """The symbol name of a vector parameter's element (1-based): ``k[2]``."""
    return f"{vector}[{index}]"


@dataclass(frozen=True)
class SymbolicModel:
    """Symbols and expressions of a checked model; constants stay symbolic."""

    checked: CheckedModel
    symbols: dict[str, sympy.Symbol]
    constants: dict[sympy.Symbol, float]
    time: sympy.Symbol | None
    states: tuple[sympy.Symbol, ...]
    rhs: tuple[sympy.Expr, ...]                 # d state / dt, in state order
    inits: tuple[sympy.Expr, ...]
    prior_args: dict[str, tuple[sympy.Expr, ...]]
    observation_args: dict[str, tuple[sympy.Expr, ...]]
    derived: tuple[tuple[str, sympy.Expr], ...]
    parameter_elements: dict[str, tuple[sympy.Symbol, ...]] = field(default_factory=dict)
    fields: dict[str, sympy.Expr] = field(default_factory=dict)          # name -> u(x, t)
    pde_equations: tuple[tuple[sympy.Expr, int], ...] = ()               # (lhs - rhs, line)
    # (condition statement, lhs, rhs, points on the lhs, points on the rhs); a point is
    # (field name, {coordinate symbol: value expression}) for every field evaluated at fixed coordinates.
    conditions: tuple[tuple[object, sympy.Expr, sympy.Expr, tuple, tuple], ...] = ()
    physics_scales: dict[str, sympy.Expr] = field(default_factory=dict)

    @property
    def residuals(self) -> tuple[sympy.Expr, ...]:
        """Each ODE in residual form, ``der(x) - f(t, x, p)``, with ``der(x)`` as a Derivative."""
        f = [sympy.Function(s.name)(self.time) for s in self.states]
        sub = dict(zip(self.states, f))
        return tuple(sympy.Derivative(fi, self.time) - r.subs(sub) for fi, r in zip(f, self.rhs))

    def numeric(self, expr: sympy.Expr) -> sympy.Expr:
        """Substitute the constants' values."""
        return expr.xreplace(self.constants)

    @cached_property
    def jacobian(self) -> sympy.Matrix:
        """d rhs / d states, with constants substituted."""
        rhs = sympy.Matrix([self.numeric(r) for r in self.rhs])
        return rhs.jacobian(sympy.Matrix(self.states)) if self.states else sympy.zeros(0, 0)


def build_symbolic(model: CheckedModel) -> SymbolicModel:
    """Build SymPy expressions for a checked model.

    >>> from msml_dsl.syntax.parser import parse
    >>> from msml_dsl.semantics.checker import check
    >>> src = 'model m\\ntime t in [0, 1]\\nstate x\\nparam k ~ Normal(0, 1)\\n'
    >>> src += 'equation der(x) = -k * x\\ninit x = 1\\n'
    >>> build_symbolic(check(parse(src))).rhs
    (-k*x,)
    """
    symbols: dict[str, sympy.Symbol] = {}
    elements: dict[str, tuple[sympy.Symbol, ...]] = {}
    for name in model.constants:
        symbols[name] = sympy.Symbol(name, real=True)
    if model.time:
        symbols[model.time] = sympy.Symbol(model.time, real=True)
    for s in model.states:
        symbols[s] = sympy.Symbol(s, real=True)
    for p in model.parameters:
        if p.size is None:
            symbols[p.name] = sympy.Symbol(p.name, real=True)
        else:
            elements[p.name] = tuple(sympy.Symbol(element_name(p.name, i + 1), real=True) for i in range(p.size))
    for v in model.space:
        symbols[v] = sympy.Symbol(v, real=True)
    builder = _ExprBuilder(symbols, elements)
    builder.other_names = {n for n, _ in model.unsupported_names}
    builder.space = set(model.space)
    if model.pde is not None:
        for f in model.pde.fields:
            args = tuple(symbols[a] for a in f.arguments)
            builder.fields[f.name] = (sympy.Function(f.name, real=True)(*args), args)
    constants = {symbols[n]: sympy.Float(v) for n, v in model.constants.items()}
    derived = []
    for name, e in model.derived:  # first: equations, initial values and observations may use them
        value = builder.build(e)
        derived.append((name, value))
        builder.derived[name] = value  # later derived quantities may use this one
    derived = tuple(derived)
    rhs = tuple(builder.build(model.equations[s]) for s in model.states)
    inits = tuple(builder.build(model.inits[s]) for s in model.states)
    prior_args = {p.name: tuple(builder.build(a) for a in p.args) for p in model.parameters}
    observation_args = {o.name: tuple(builder.build(a) for a in o.args) for o in model.observations}
    pde_equations, conditions, physics = (), (), {}
    if model.pde is not None:
        pde_equations = tuple((builder.build(e.lhs) - builder.build(e.rhs), e.span.line) for e in model.pde.equations)
        built = []
        for c in model.pde.conditions:
            builder.points = []
            lhs = builder.build(c.lhs)
            lhs_points, builder.points = tuple(builder.points), []
            rhs = builder.build(c.rhs)
            built.append((c, lhs, rhs, lhs_points, tuple(builder.points)))
            builder.points = None
        conditions = tuple(built)
        physics = {ph.name: builder.build(ph.scale) for ph in model.pde.physics}
    return SymbolicModel(model, symbols, constants, symbols.get(model.time) if model.time else None,
                         tuple(symbols[s] for s in model.states), rhs, inits, prior_args, observation_args,
                         derived, elements, {k: v for k, (v, _) in builder.fields.items()}, pde_equations,
                         conditions, physics)


class _ExprBuilder:
    def __init__(self, symbols, elements):
        self.symbols = symbols
        self.elements = elements
        self.columns: dict[str, sympy.Symbol] = {}
        self.derived: dict[str, sympy.Expr] = {}
        self.other_names: set[str] = set()  # unknown terms, fidelity levels (later backends)
        self.fields: dict[str, tuple[sympy.Expr, tuple[sympy.Symbol, ...]]] = {}
        self.points: list | None = None     # while building a condition: fields met at fixed coordinates
        self.space: set[str] = set()

    def build(self, e: ast.Expr) -> sympy.Expr:
        if isinstance(e, ast.Number):
            return sympy.Integer(int(e.value)) if float(e.value).is_integer() and "e" not in e.text.lower() \
                and "." not in e.text else sympy.Float(e.value)
        if isinstance(e, ast.Name):
            if e.id in self.symbols:
                return self.symbols[e.id]
            if e.id in self.derived:
                return self.derived[e.id]
            if e.id == "pi":
                return sympy.pi
            if e.id in self.fields:  # a bare field means its value at the current coordinates
                return self.fields[e.id][0]
            if e.id in self.other_names:
                return sympy.Symbol(e.id, real=True)
            raise InternalError(f"unresolved name '{e.id}' reached the symbolic stage")
        if isinstance(e, ast.Index):
            return self.elements[e.target.id][int(e.index.value) - 1]
        if isinstance(e, ast.Attribute):
            key = f"{e.source.id}.{e.column.id}"
            return self.columns.setdefault(key, sympy.Symbol(key, real=True))
        if isinstance(e, ast.UnaryOp):
            v = self.build(e.operand)
            return -v if e.op == "-" else v
        if isinstance(e, ast.BinOp):
            a, b = self.build(e.left), self.build(e.right)
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: a / b, "^": lambda: a ** b}[e.op]()
        if isinstance(e, ast.Call) and e.func.id == "der" and self.fields:
            applied, _ = self.fields[e.args[0].id]
            return sympy.Derivative(applied, *[self.symbols[a.id] for a in e.args[1:]])
        if isinstance(e, ast.Call) and e.func.id == "laplacian":
            applied, args = self.fields[e.args[0].id]
            space = [a for a in args if a.name in self.space]
            return sympy.Add(*[sympy.Derivative(applied, (a, 2)) for a in space])
        if isinstance(e, ast.Evaluated):
            value = self.build(e.target)
            self._record_point(e.target.args[0].id, e.args)
            return value
        if isinstance(e, ast.Call) and e.func.id in self.fields:
            applied, args = self.fields[e.func.id]
            if self.points is None and any(not (isinstance(p, ast.Name) and p.id == a.name)
                                           for a, p in zip(args, e.args)):
                # outside a condition (a derived quantity): the field at that point, u(0.5, 1)
                return applied.func(*[self.build(p) for p in e.args])
            self._record_point(e.func.id, e.args)
            return applied
        if isinstance(e, ast.Call) and e.func.id in SYMPY_FUNCTIONS:
            return SYMPY_FUNCTIONS[e.func.id](*[self.build(a) for a in e.args])
        if isinstance(e, ast.Call):
            # An unknown term or a field: an undefined SymPy function its backend will supply.
            return sympy.Function(e.func.id, real=True)(*[self.build(a) for a in e.args])
        raise InternalError(f"cannot build a SymPy expression from {type(e).__name__}")

    def _record_point(self, field_name: str, point: tuple) -> None:
        """Note the fixed coordinates of a field evaluated at a point (``u(0, t)``: x = 0)."""
        _, args = self.fields[field_name]
        fixed = {a: self.build(p) for a, p in zip(args, point)
                 if not (isinstance(p, ast.Name) and p.id == a.name)}
        if self.points is not None:
            self.points.append((field_name, fixed))
        elif fixed:
            raise InternalError("a field at a point outside a boundary or initial condition")
