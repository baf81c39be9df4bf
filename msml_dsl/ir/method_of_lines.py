"""The method of lines: a PDE on a 1-D interval or 2-D rectangle becomes an ODE system.

``solver mol(points=101)`` puts each field on a uniform grid (one ODE state per grid
node), replaces every spatial derivative by a second-order central difference, and
hands the result to the foundation's ODE machinery (compiled solver with forward
sensitivities, compiled log density, NUTS). The same model file solved by ``pinn``
can so be cross-checked against a numerical solution, and small PDE inverse problems
get full NUTS posteriors.

Conditions, at a node on an edge:

* Dirichlet ``u(0, t) = g``: the node is a state that follows g exactly
  (``du/dt = dg/dt``, starting at ``g(t0)``), so interpolation stays linear in the states.
* Neumann/Robin ``der(u, x)(0, t) = g``: a ghost node beyond the edge, eliminated with the
  central difference of the condition (second order).
* periodic ``u(-1, t) = u(1, t)``: the grid wraps (the upper edge is the lower one).
* no condition: a ghost node by quadratic extrapolation, which makes the central stencil a
  one-sided second-order difference (outflow edges of advection problems).

Advection (``scheme=upwind1|upwind2``; the default ``central`` is the above). Where an
equation's rate R depends on a first derivative u_x, its local velocity is c = dR/du_x
(for ``der(u, t) + a * u * der(u, x) = ...``, c = -a u at each node). The upwind schemes
take u_x from the side the flow comes from, written as a central difference plus a
dissipation that vanishes where c = 0:

* ``upwind1``: R(u_x = D0 u) + |c| (u[i+1] - 2 u[i] + u[i-1]) / (2 h), which is
  c D+ u where c > 0 and c D- u where c < 0 (first order; its numerical viscosity
  |c| h / 2 damps the oscillations central differences make at unresolved fronts);
* ``upwind2``: the second-order one-sided (Beam-Warming) difference,
  R(u_x = (-u[i+2] + 4 u[i+1] - 4 u[i-1] + u[i-2]) / (4 h))
  + |c| (-u[i+2] + 4 u[i+1] - 6 u[i] + 4 u[i-1] - u[i-2]) / (4 h),
  falling back to ``upwind1`` at a node whose stencil would reach two nodes beyond an edge.

Second derivatives and mixed derivatives stay central in every scheme.

Steady problems (no ``time``) are relaxed in pseudo-time to their steady state with the
L-stable Rosenbrock method: ``du/dtau = sign(c) * residual`` where ``c`` multiplies the
highest second derivative, so that the relaxation is diffusive and converges.

Observations of a field at a data row's coordinates are linear (1-D) or bilinear (2-D)
interpolations of the grid states (``Observation.state_maps``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import sympy

from msml_dsl.errors import Diagnostic, MsmlError
from msml_dsl.ir.model_ir import ModelIR, Observation, OdeProblem
from msml_dsl.ir.pde import FieldCondition, PdeProblem

DEFAULT_POINTS = {1: 101, 2: 31}
SCHEMES = ("central", "upwind1", "upwind2")   # first derivatives; `solver mol(scheme=...)`
PSEUDO_TIME = sympy.Symbol("_pseudo_time", real=True)


def discretize(ir: ModelIR) -> ModelIR:
    """Replace the PDE of ``ir`` by its method-of-lines ODE system (the PDE stays in ``ir.pde``).

    >>> # ir = lower_to_ir(...)  # with 'solver mol(points=51)'; discretize(ir).ode.states[:2] -> (u[0], u[1])
    """
    return _Discretization(ir).run()


class _Discretization:
    def __init__(self, ir: ModelIR):
        self.ir = ir
        self.pde: PdeProblem = ir.pde
        self.problems: list[Diagnostic] = []
        pde = self.pde
        self.axes = [a.symbol for a in pde.space]
        points = tuple(pde.solver.get("points") or (DEFAULT_POINTS.get(len(pde.space), 31),))
        if len(points) == 1:
            points = points * len(pde.space)
        self.periodic = [any(c.kind == "periodic" and c.at[0][0] == a for c in pde.conditions) for a in self.axes]
        self.n = list(points)
        self.h = []
        self.nodes = []
        for axis, n, periodic in zip(pde.space, self.n, self.periodic):
            h = axis.length / (n if periodic else n - 1)
            self.h.append(h)
            self.nodes.append(axis.lower + h * np.arange(n))
        self.time = pde.time
        self.index_list = list(itertools.product(*[range(n) for n in self.n]))
        self.states: dict[tuple[str, tuple[int, ...]], sympy.Symbol] = {}
        for f in pde.fields:
            for idx in self.index_list:
                label = ",".join(str(i) for i in idx)
                self.states[(f.name, idx)] = sympy.Symbol(f"{f.name}[{label}]", real=True)
        self._ghosts: dict = {}
        self.scheme = str(pde.solver.get("scheme", "central"))
        if self.scheme not in SCHEMES:
            self.error("E262", f"unknown scheme '{self.scheme}' for the method of lines; use "
                       f"{', '.join(SCHEMES)}", None)

    # ----------------------------------------------------------------- errors
    def error(self, code: str, message: str, line: int | None = None, help: str | None = None) -> None:
        from msml_dsl.errors import Span

        span = Span(line, 1, line, 1) if line else None
        self.problems.append(Diagnostic(code, message, span, self.ir.file, help=help))

    # ------------------------------------------------------------------ nodes
    def coordinate_values(self, idx) -> dict:
        return {a: sympy.Float(self.nodes[k][i]) for k, (a, i) in enumerate(zip(self.axes, idx))}

    def condition_at(self, field: str, axis: int, side: int) -> FieldCondition | None:
        """The boundary condition of ``field`` on the lower (side 0) or upper (side 1) edge of an axis."""
        a = self.pde.space[axis]
        edge = a.lower if side == 0 else a.upper
        for c in self.pde.conditions:
            if c.term == "boundary" and c.field == field and c.kind != "periodic" and len(c.at) == 1 \
                    and c.at[0][0] == a.symbol and math.isclose(c.at[0][1], edge, abs_tol=1e-12):
                return c
        return None

    def value(self, field: str, idx: tuple[int, ...]) -> sympy.Expr:
        """The field at a grid index, which may lie one node beyond an edge (a ghost)."""
        idx = list(idx)
        for k, i in enumerate(idx):
            if self.periodic[k]:
                idx[k] = i % self.n[k]
        for k, i in enumerate(idx):
            if i < 0 or i >= self.n[k]:
                return self.ghost(field, tuple(idx), k, 0 if i < 0 else 1)
        return self.states[(field, tuple(idx))]

    def ghost(self, field: str, idx: tuple[int, ...], axis: int, side: int) -> sympy.Expr:
        key = (field, idx, axis, side)
        if key in self._ghosts:
            return self._ghosts[key]
        step = 1 if side == 0 else -1          # towards the inside
        edge = list(idx)
        edge[axis] = 0 if side == 0 else self.n[axis] - 1

        def shifted(k):
            j = list(edge)
            j[axis] += step * k
            return self.value(field, tuple(j))

        cond = self.condition_at(field, axis, side)
        if cond is None or cond.kind == "dirichlet":
            # quadratic extrapolation: the central stencil becomes a one-sided second-order one
            g = 3 * shifted(0) - 3 * shifted(1) + shifted(2)
        else:
            G = sympy.Symbol("_ghost", real=True)
            h = self.h[axis]
            first = (shifted(1) - G) / (2 * h) * (1 if side == 0 else -1)
            second = (shifted(1) - 2 * shifted(0) + G) / h ** 2
            expr = self.substitute(cond.expr, tuple(edge), {field: {axis: (first, second)}})
            solutions = sympy.solve(expr, G)
            if len(solutions) != 1:
                self.error("E293", f"the method of lines cannot use the {cond.kind} condition on line {cond.line}: "
                           "it must be linear in the derivative", cond.line, help="use solver pinn()")
                solutions = [shifted(0)]
            g = solutions[0]
        self._ghosts[key] = g
        return g

    def stencil(self, field: str, idx: tuple[int, ...], orders: dict[int, int]) -> sympy.Expr:
        """A mixed central difference of ``field`` at ``idx``; orders maps an axis to 1 or 2."""
        if not orders:
            return self.value(field, idx)
        axis = next(iter(orders))
        rest = {a: k for a, k in orders.items() if a != axis}
        h = self.h[axis]
        k = orders[axis]
        weights = {-1: -1 / (2 * h), 1: 1 / (2 * h)} if k == 1 else {-1: 1 / h ** 2, 0: -2 / h ** 2, 1: 1 / h ** 2}
        total = sympy.Integer(0)
        for off, w in weights.items():
            j = list(idx)
            j[axis] += off
            total += sympy.Float(w) * self.stencil(field, tuple(j), rest)
        return total

    def substitute(self, expr: sympy.Expr, idx: tuple[int, ...], override: dict | None = None) -> sympy.Expr:
        """Fields and their spatial derivatives at a node as grid expressions; coordinates as numbers.

        ``override`` gives ready-made first/second derivatives at an edge (for ghost elimination).
        """
        override = override or {}
        reps = {}
        for d in expr.atoms(sympy.Derivative):
            f = d.expr
            orders: dict[int, int] = {}
            for var, count in d.variable_count:
                if var == self.time:
                    continue
                orders[self.axes.index(var)] = orders.get(self.axes.index(var), 0) + count
            if f.func.__name__ in override and len(orders) == 1:
                (axis, k), = orders.items()
                given = override[f.func.__name__].get(axis)
                if given is not None and k <= 2:
                    reps[d] = given[k - 1]
                    continue
            reps[d] = self.stencil(f.func.__name__, idx, orders)
        for f in self.pde.fields:
            reps[f.applied] = self.value(f.name, idx)
        out = expr.xreplace(reps)
        return out.xreplace(self.coordinate_values(idx))

    def shifted(self, field: str, idx: tuple[int, ...], axis: int, offset: int) -> sympy.Expr:
        j = list(idx)
        j[axis] += offset
        return self.value(field, tuple(j))

    def _reaches_past_ghost(self, idx: tuple[int, ...], axis: int) -> bool:
        """Whether a stencil of half-width 2 at idx needs a node two beyond an edge (not periodic)."""
        return not self.periodic[axis] and (idx[axis] < 1 or idx[axis] > self.n[axis] - 2)

    def rate_at(self, rate: sympy.Expr, idx: tuple[int, ...]) -> sympy.Expr:
        """``rate`` (a field's du/dt, or its steady relaxation) at a grid node, in the solver's scheme.

        ``central`` is :meth:`substitute`; the upwind schemes treat each first spatial derivative
        with its local velocity c = d rate / d u_x (module docstring).
        """
        firsts = [d for d in rate.atoms(sympy.Derivative)
                  if len(d.variable_count) == 1 and d.variable_count[0][1] == 1 and d.variables[0] != self.time]
        if self.scheme == "central" or not firsts:
            return self.substitute(rate, idx)
        dummies = {d: sympy.Dummy(f"d{d.expr.func.__name__}_d{d.variables[0]}") for d in firsts}
        centre = self.substitute(rate.xreplace(dummies), idx)
        dissipation = sympy.Integer(0)
        for d in sorted(firsts, key=sympy.default_sort_key):
            name, axis = d.expr.func.__name__, self.axes.index(d.variables[0])
            h = sympy.Float(self.h[axis])

            def u(k):
                return self.shifted(name, idx, axis, k)

            c = self.substitute(sympy.diff(rate.xreplace(dummies), dummies[d]).xreplace(
                {v: k for k, v in dummies.items()}), idx)
            if self.scheme == "upwind2" and not self._reaches_past_ghost(idx, axis):
                first = (-u(2) + 4 * u(1) - 4 * u(-1) + u(-2)) / (4 * h)
                diss = (-u(2) + 4 * u(1) - 6 * u(0) + 4 * u(-1) - u(-2)) / (4 * h)
            else:
                first = (u(1) - u(-1)) / (2 * h)
                diss = (u(1) - 2 * u(0) + u(-1)) / (2 * h)
            centre = centre.xreplace({dummies[d]: first})
            if c != 0:
                dissipation += sympy.Abs(c) * diss
        return centre + dissipation

    # ------------------------------------------------------------------- run
    def check(self) -> None:
        for e in self.pde.equations:
            for d in e.expr.atoms(sympy.Derivative):
                for var, count in d.variable_count:
                    if var != self.time and count > 2:
                        self.error("E293", f"the method of lines takes spatial derivatives up to second order, "
                                   f"but line {e.line} has one of order {count}", e.line, help="use solver pinn()")
                    if var == self.time and count > 1:
                        self.error("E293", f"the method of lines needs first-order time derivatives (line {e.line})",
                                   e.line, help="write the equation as a first-order system in time")
        for f in self.pde.fields:
            if self.time is not None and self.time not in f.arguments:
                self.error("E291", f"the field '{f.name}' does not depend on time in a time-dependent model",
                           None, help=f"declare it as {f.name}({', '.join(map(str, self.axes))}, {self.time})")

    def run(self) -> ModelIR:
        self.check()
        if not self.problems:
            if self.time is not None:
                ode = self.evolution()
            else:
                ode = self.steady()
        if self.problems:
            raise MsmlError(self.problems, {})
        observations = tuple(self.observe(o, ode) for o in self.ir.observations)
        return replace(self.ir, ode=ode, observations=observations)

    def _time_derivatives(self) -> dict[str, sympy.Expr]:
        """Each field's du/dt, solved from the equation that holds it."""
        out: dict[str, sympy.Expr] = {}
        for e in self.pde.equations:
            ders = [d for d in e.expr.atoms(sympy.Derivative) if d.variables == (self.time,)]
            names = {d.expr.func.__name__ for d in ders}
            if len(names) != 1:
                self.error("E293", f"the method of lines needs each equation to hold the time derivative of one "
                           f"field (line {e.line} has {len(names) or 'none'})", e.line,
                           help="write it as der(u, t) = ...")
                continue
            name = names.pop()
            if name in out:
                self.error("E293", f"two equations give der({name}, {self.time}) (line {e.line})", e.line)
                continue
            D = ders[0]
            solutions = sympy.solve(e.expr, D)
            if len(solutions) != 1:
                self.error("E293", f"the equation on line {e.line} is not linear in der({name}, {self.time})",
                           e.line)
                continue
            out[name] = solutions[0]
        for f in self.pde.fields:
            if f.name not in out and not self.problems:
                self.error("E293", f"no equation gives der({f.name}, {self.time})", None)
        return out

    def _dirichlet_value(self, field: str, idx) -> tuple[sympy.Expr, int] | None:
        """The value a Dirichlet condition fixes at a boundary node, if one does."""
        for k, i in enumerate(idx):
            if self.periodic[k]:
                continue
            for side, at_edge in ((0, i == 0), (1, i == self.n[k] - 1)):
                if not at_edge:
                    continue
                c = self.condition_at(field, k, side)
                if c is not None and c.kind == "dirichlet":
                    U = sympy.Symbol("_boundary", real=True)
                    expr = c.expr.xreplace({f.applied: U for f in self.pde.fields if f.name == field})
                    expr = expr.xreplace(self.coordinate_values(idx))
                    solutions = sympy.solve(expr, U)
                    if len(solutions) != 1:
                        self.error("E293", f"the Dirichlet condition on line {c.line} must fix the field's value",
                                   c.line)
                        return None
                    return solutions[0], c.line
        return None

    def _initial_values(self, field: str) -> sympy.Expr | None:
        for c in self.pde.conditions:
            if c.kind == "initial" and c.field == field:
                U = sympy.Symbol("_initial", real=True)
                expr = c.expr.xreplace({f.applied: U for f in self.pde.fields if f.name == field})
                solutions = sympy.solve(expr, U)
                if len(solutions) == 1:
                    return solutions[0]
                self.error("E293", f"the initial condition on line {c.line} must give the field's value", c.line)
                return None
        self.error("E293", f"the field '{field}' has no initial condition", None,
                   help=f"add: initial {field}(..., {self.pde.time_range[0]:g}) = ...")
        return None

    def evolution(self) -> OdeProblem:
        rates = self._time_derivatives()
        t0 = float(self.pde.time_range[0])
        states, rhs, inits = [], [], []
        for f in self.pde.fields:
            if f.name not in rates:
                continue
            start = self._initial_values(f.name)
            if start is None:
                continue
            for idx in self.index_list:
                states.append(self.states[(f.name, idx)])
                fixed = self._dirichlet_value(f.name, idx)
                coords = self.coordinate_values(idx)
                if fixed is not None:
                    g = fixed[0]
                    rhs.append(sympy.diff(g, self.time))
                    inits.append(g.xreplace({self.time: sympy.Float(t0)}))
                else:
                    rhs.append(self.rate_at(rates[f.name], idx))
                    inits.append(start.xreplace(coords).xreplace({self.time: sympy.Float(t0)}))
        times = [np.array([t0])]
        for o in self.ir.observations:
            t = o.coordinates.get(str(self.time))
            if t is not None:
                times.append(np.asarray(t, dtype=float))
        return self._ode(self.time, t0, states, rhs, inits, np.unique(np.concatenate(times)))

    def steady(self) -> OdeProblem:
        positive = {}
        for p in self.ir.parameters:
            if p.support is not None and p.support[0] >= 0:
                for e in p.elements:
                    positive[e] = sympy.Symbol(e.name, positive=True)
        states, rhs, inits = [], [], []
        assigned: dict[str, sympy.Expr] = {}
        for e in self.pde.equations:
            for f in self.pde.fields:
                if f.name in assigned:
                    continue
                seconds = [d for d in e.expr.atoms(sympy.Derivative)
                           if d.expr == f.applied and sum(c for _, c in d.variable_count) == 2
                           and len(d.variable_count) == 1]
                if not seconds:
                    continue
                c = sympy.diff(e.expr, seconds[0]).xreplace(positive)
                if c.is_positive:
                    assigned[f.name] = e.expr
                elif c.is_negative:
                    assigned[f.name] = -e.expr
                else:
                    self.error("E294", f"cannot tell the sign of the diffusion term on line {e.line}, which the "
                               "steady method of lines needs", e.line,
                               help="give its coefficient a positive prior (e.g. LogNormal) or a [lower=0] bound")
                    assigned[f.name] = e.expr
                break
            else:
                self.error("E293", f"the steady equation on line {e.line} has no second derivative of a field "
                           "left to solve for", e.line, help="steady problems need an elliptic equation per field")
        for f in self.pde.fields:
            if f.name not in assigned:
                self.error("E293", f"no equation determines the field '{f.name}'", None)
                continue
            for idx in self.index_list:
                states.append(self.states[(f.name, idx)])
                fixed = self._dirichlet_value(f.name, idx)
                if fixed is not None:
                    rhs.append(sympy.Integer(0))
                    inits.append(fixed[0])
                else:
                    rhs.append(self.rate_at(assigned[f.name], idx))
                    inits.append(sympy.Integer(0))
        end = float(self.pde.solver.get("steady_time", 1e6))
        return self._ode(PSEUDO_TIME, 0.0, states, rhs, inits, np.array([end]))

    def _ode(self, time, t0, states, rhs, inits, output_times) -> OdeProblem:
        from msml_dsl.semantics.model import SolverSettings

        used = set()
        for r in list(rhs) + list(inits):
            used |= r.free_symbols
        elements = [e for p in self.ir.parameters for e in p.elements]
        o = self.pde.solver
        if self.time is None:
            # A steady relaxation is stiff by construction (it runs to pseudo-time 1e6). Its transient
            # need not be accurate: the L-stable method's fixed point is the discrete steady state
            # itself, whatever the tolerance, so loose tolerances only save steps.
            settings = SolverSettings("stiff", float(o.get("rtol", 1e-4)), float(o.get("atol", 1e-6)),
                                      int(o.get("max_steps", 100_000)))
        else:
            settings = SolverSettings(o.get("method", "auto"), float(o.get("rtol", 1e-6)),
                                      float(o.get("atol", 1e-8)), int(o.get("max_steps", 100_000)))
        return OdeProblem(time, t0, tuple(states), tuple(rhs), tuple(e for e in elements if e in used),
                          tuple(inits), output_times, settings)

    # ----------------------------------------------------------- observations
    def observe(self, o: Observation, ode: OdeProblem) -> Observation:
        fields = [f for f in self.pde.fields if any(a.has(f.applied) for a in o.args)]
        if not fields:
            return o
        rows = o.values.size
        position = {s: i for i, s in enumerate(ode.states)}
        cols_axes, weights_axes = [], []
        for k, axis in enumerate(self.pde.space):
            x = o.coordinates[str(axis.symbol)]
            u = (x - axis.lower) / self.h[k]
            limit = self.n[k] if self.periodic[k] else self.n[k] - 1
            i = np.clip(np.floor(u).astype(int), 0, limit - 1)
            w = u - i
            j = (i + 1) % self.n[k] if self.periodic[k] else i + 1
            cols_axes.append(np.stack([i, j], axis=1))
            weights_axes.append(np.stack([1 - w, w], axis=1))
        maps = {}
        args = list(o.args)
        for f in fields:
            cols, weights = [], []
            for corner in itertools.product(*[(0, 1)] * len(self.pde.space)):
                idx = np.stack([cols_axes[k][:, c] for k, c in enumerate(corner)], axis=1)
                cols.append([position[self.states[(f.name, tuple(int(v) for v in row))]] for row in idx])
                w = np.ones(rows)
                for k, c in enumerate(corner):
                    w = w * weights_axes[k][:, c]
                weights.append(w)
            symbol = sympy.Symbol(f"{f.name}@grid", real=True)
            maps[symbol] = (np.array(cols, dtype=np.int64).T.copy(), np.array(weights, dtype=float).T.copy())
            args = [a.xreplace({f.applied: symbol}) for a in args]
        if self.time is not None:
            t = o.coordinates[str(self.time)]
            index = np.searchsorted(ode.output_times, t)
        else:
            t = np.full(rows, ode.output_times[0])
            index = np.zeros(rows, dtype=np.int64)
        return replace(o, args=tuple(args), time_index=index, times=t, state_maps=maps)
