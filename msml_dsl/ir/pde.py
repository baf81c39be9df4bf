"""PDE problems in the IR: fields, residual equations, conditions, collocation and physics terms.

A PDE model is written once and solved two ways, chosen by ``solver``:

* ``pinn`` — each field is a network of its arguments; every residual is enforced at
  collocation points as a named likelihood term (``backends/pinn``);
* ``mol`` — the method of lines: finite differences in space turn the fields into
  ODE states on a grid, which the foundation's ODE machinery solves in time
  (``ir/method_of_lines.py``).

Expressions use SymPy's own vocabulary: a field is the applied undefined function
``u(x, t)`` and a partial derivative is ``Derivative(u(x, t), x, 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy


@dataclass(frozen=True)
class SpaceAxis:
    symbol: sympy.Symbol
    lower: float
    upper: float

    @property
    def length(self) -> float:
        return self.upper - self.lower


@dataclass(frozen=True)
class FieldSpec:
    """``field u(x, t) : mlp(hidden=[...], activation=tanh, fourier_features=0)``."""

    name: str
    arguments: tuple[sympy.Symbol, ...]      # the declared order, e.g. (x, t)
    hidden: tuple[int, ...] = (32, 32, 32)
    activation: str = "tanh"
    fourier_features: int = 0                # random Fourier features of the inputs (0: none)
    fourier_scale: float = 1.0

    @property
    def applied(self) -> sympy.Expr:
        """The field as SymPy sees it in equations: ``u(x, t)``."""
        return sympy.Function(self.name, real=True)(*self.arguments)


@dataclass(frozen=True)
class PdeResidual:
    """One ``equation``, as ``lhs - rhs``; its physics term is ``name``."""

    name: str                                # "pde" (one equation) or "pde1", "pde2", ...
    expr: sympy.Expr
    line: int


@dataclass(frozen=True)
class FieldCondition:
    """A boundary or initial condition, as a residual that vanishes at ``at``.

    ``kind`` is ``dirichlet`` (values), ``neumann`` (a derivative), ``robin`` (a derivative and
    values at the same point), ``periodic`` or ``initial``. For ``periodic``, ``expr`` is the
    quantity that must agree (``u(x, t)`` or a derivative of it) and the residual is
    ``expr`` at ``at`` (the lower edge) minus ``expr`` at ``partner`` (the upper edge).
    """

    term: str                                # "boundary" or "initial": the physics term it belongs to
    kind: str
    field: str
    expr: sympy.Expr                         # fields as u(x, t); evaluated with `at` substituted
    at: tuple[tuple[sympy.Symbol, float], ...]
    line: int
    derivative_order: int = 0                # order of the derivative on the left side (0: values)
    partner: tuple[tuple[sympy.Symbol, float], ...] = ()   # periodic: the opposite edge


@dataclass(frozen=True)
class CollocationSettings:
    """``collocation N method (boundary=..., initial=..., resample=..., adaptive=...)``."""

    interior: int = 2000
    boundary: int = 0                        # 0: chosen from the interior count
    initial: int = 0
    method: str = "sobol"
    resample_every: int = 0                  # optimiser steps between fresh interior points (0: never)
    adaptive: int = 0                        # points added per refinement round where the residual is largest
    adaptive_rounds: int = 0
    seed: int = 0


@dataclass(frozen=True)
class PhysicsTerm:
    """A residual group as a likelihood: residual ~ Normal(0, scale).

    ``scale`` is a number or a parameter symbol (then inferred). ``declared`` is False when the
    scale is the default, so that the report can say so.
    """

    name: str
    scale: sympy.Expr
    declared: bool
    line: int | None = None


@dataclass(frozen=True)
class PdeSolverSettings:
    """``solver pinn(...)`` or ``solver mol(...)``."""

    method: str = "pinn"                     # pinn | mol
    options: tuple[tuple[str, object], ...] = ()

    def get(self, key: str, default=None):
        return dict(self.options).get(key, default)


@dataclass(frozen=True)
class PdeProblem:
    space: tuple[SpaceAxis, ...]
    time: sympy.Symbol | None
    time_range: tuple[float, float] | None
    fields: tuple[FieldSpec, ...]
    equations: tuple[PdeResidual, ...]
    conditions: tuple[FieldCondition, ...]
    collocation: CollocationSettings
    physics: tuple[PhysicsTerm, ...]
    solver: PdeSolverSettings
    parameters: tuple[sympy.Symbol, ...] = field(default=())   # parameter elements the residuals use

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    def term(self, name: str) -> PhysicsTerm:
        return next(t for t in self.physics if t.name == name)

    @property
    def coordinates(self) -> tuple[sympy.Symbol, ...]:
        """Space variables then time: the inputs of the domain."""
        return tuple(a.symbol for a in self.space) + ((self.time,) if self.time is not None else ())


# ----------------------------------------------------------------------------- lowering
_DEFAULT_SCALE = 0.01


def lower_pde(symbolic, numeric, parameter_elements) -> tuple[PdeProblem, list]:
    """The PDE part of a symbolic model as a PdeProblem; returns it with a list of Diagnostics.

    ``numeric`` substitutes the constants' values; ``parameter_elements`` are all parameter symbols.
    """
    from msml_dsl.errors import Diagnostic

    model = symbolic.checked
    info = model.pde
    diagnostics: list = []
    symbols = symbolic.symbols
    space = tuple(SpaceAxis(symbols[name], float(lo), float(hi)) for name, (lo, hi) in model.space.items())
    time = symbolic.time
    fields = []
    for f in info.fields:
        o = dict(f.options)
        fields.append(FieldSpec(f.name, tuple(symbols[a] for a in f.arguments),
                                tuple(o.get("hidden", (32, 32, 32))), o.get("activation", "tanh"),
                                int(o.get("fourier_features", 0)), float(o.get("fourier_scale", 1.0))))
    several = len(symbolic.pde_equations) > 1
    equations = tuple(PdeResidual(f"pde{i + 1}" if several else "pde", numeric(e), line)
                      for i, (e, line) in enumerate(symbolic.pde_equations))

    edges = {a.symbol: (a.lower, a.upper) for a in space}
    conditions = []
    for decl, lhs, rhs, lhs_points, rhs_points in symbolic.conditions:
        line = decl.span.line
        initial = type(decl).__name__ == "InitialDecl"
        field_name, at = lhs_points[0]
        at = {k: float(numeric(v)) for k, v in at.items()}
        order = max((c for _, c in lhs.variable_count), default=0) if isinstance(lhs, sympy.Derivative) else 0
        rhs_fixed = [{k: float(numeric(v)) for k, v in p.items()} for _, p in rhs_points]
        if initial:
            conditions.append(FieldCondition("initial", "initial", field_name, numeric(lhs - rhs),
                                             tuple(at.items()), line, order))
            continue
        if rhs_points and all(p == at for p in rhs_fixed):
            kind = "robin"
        elif rhs_points:
            periodic = (len(at) == 1 and len(rhs_fixed) == 1 and len(rhs_fixed[0]) == 1
                        and next(iter(at)) == next(iter(rhs_fixed[0])) and sympy.simplify(lhs - rhs) == 0)
            var = next(iter(at))
            if not periodic or var not in edges or {at[var], rhs_fixed[0][var]} != set(edges[var]):
                diagnostics.append(Diagnostic(
                    "E292", "this condition relates a field at two different points; the only such condition "
                            "supported is periodicity between opposite edges, e.g. u(-1, t) = u(1, t)",
                    decl.span, model.file))
                continue
            lower, upper = edges[var]
            conditions.append(FieldCondition("boundary", "periodic", field_name, numeric(lhs), ((var, lower),),
                                             line, order, ((var, upper),)))
            continue
        else:
            kind = "neumann" if order else "dirichlet"
        conditions.append(FieldCondition("boundary", kind, field_name, numeric(lhs - rhs), tuple(at.items()),
                                         line, order))

    c = dict(info.collocation)
    collocation = CollocationSettings(
        interior=int(c.get("count", 2000)), boundary=int(c.get("boundary", 0)), initial=int(c.get("initial", 0)),
        method=str(c.get("method", "sobol")), resample_every=int(c.get("resample", 0)),
        adaptive=int(c.get("adaptive", 0)), adaptive_rounds=int(c.get("rounds", 3 if c.get("adaptive") else 0)),
        seed=int(c.get("seed", 0)))

    declared = {ph.name: ph for ph in info.physics}
    names = [e.name for e in equations] + ["boundary"] * any(k.term == "boundary" for k in conditions) \
        + ["initial"] * any(k.term == "initial" for k in conditions)
    physics = []
    for name in names:
        # "pde" sets every equation's scale when there are several, unless pdeN overrides it
        ph = declared.get(name) or (declared.get("pde") if name.startswith("pde") else None)
        if ph is not None:
            physics.append(PhysicsTerm(name, numeric(symbolic.physics_scales[ph.name]), True, ph.span.line))
        else:
            physics.append(PhysicsTerm(name, sympy.Float(_DEFAULT_SCALE), False))

    used = set()
    for e in equations:
        used |= e.expr.free_symbols
    for k in conditions:
        used |= k.expr.free_symbols
    parameters = tuple(p for p in parameter_elements if p in used)
    solver = PdeSolverSettings(info.solver, info.solver_options)
    return PdeProblem(space, time, model.time_range, tuple(fields), equations, tuple(conditions), collocation,
                      tuple(physics), solver, parameters), diagnostics
