"""Which ``gp`` terms are exact Gaussian processes, and where their values enter the model.

A GP term called only at inputs known before any parameter is drawn — data columns and the
time in an ``observe`` (a sensor response to a recorded temperature, a drift over the
observation times), numbers and per-experiment covariates in a ``derive`` feeding the dynamics
(a rate as an unknown function of each run's dose) — is evaluated at a finite set of points.
There the GP is exact: its values at the P distinct points, ``NAME_z``, have the GP's
multivariate normal prior (centred; ``parametrisation=noncentred`` writes them as
``amplitude * chol(K) z``; symbolic/unknown_terms.py, ``ExactGaussianProcess``). Each call is
replaced here by symbols the backend fills with those values: ``NAME_at[i]`` where the inputs
are numbers (a scalar per draw, which may enter the ODE as a parameter), and one per-row
symbol per call in an observation, gathered from the values by a row -> point index.

``gp(method=...)``: ``auto`` (the default) is exact when every call qualifies and there are at
most EXACT_AUTO_MAX_POINTS points, else the Hilbert-space basis; ``exact`` insists (E316 when
a call's inputs change with the parameters or states — inside an ODE right-hand side the term
is evaluated along the trajectory, at infinitely many points — or above EXACT_MAX_POINTS);
``basis`` always uses the basis.

>>> # plan = plan_exact_gps(symbolic, terms, fixed, observations); plan.terms["f"].exact
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import sympy

from msml_dsl.errors import Diagnostic
from msml_dsl.symbolic.unknown_terms import ExpandedTerm, exact_gp_term

#: auto: an exact GP up to this many distinct points (a Cholesky of P x P per draw and gradient)
EXACT_AUTO_MAX_POINTS = 300
#: method=exact: the largest P accepted (E316 above; the basis costs O(P M) instead of O(P^3))
EXACT_MAX_POINTS = 2000


@dataclass(frozen=True)
class ObservationCalls:
    """An observation's arguments before unknown terms are expanded, and the columns they may read."""

    name: str
    args: tuple[sympy.Expr, ...]
    columns: dict[str, np.ndarray]      # covariate symbol name -> per-row values (NaN where missing)
    rows: int


@dataclass(frozen=True)
class ExactGpPlan:
    terms: dict[str, ExpandedTerm]                          # every term; the exact ones replaced
    point_index: dict[str, dict[tuple[float, ...], int]]    # exact term -> point -> index
    errors: tuple[Diagnostic, ...] = ()
    # (observation, call) -> the call's inputs at every row, as the planning read them
    row_points: dict = field(default_factory=dict)

    def replace_fixed(self, expr: sympy.Expr) -> sympy.Expr:
        """Calls at numeric inputs (dynamics, initial values, derived quantities) -> ``NAME_at[i]``."""
        if not self.point_index:
            return expr
        from sympy.core.function import AppliedUndef

        def value(call):
            term = self.terms[call.func.__name__]
            return term.exact.value_symbols[self.point_index[term.name][tuple(float(a) for a in call.args)]]

        return expr.replace(lambda e: isinstance(e, AppliedUndef) and e.func.__name__ in self.point_index, value)

    def replace_observation(self, obs: ObservationCalls) -> tuple[tuple[sympy.Expr, ...], dict]:
        """An observation's arguments with each exact call replaced by a per-row symbol, and those symbols'
        (term, row -> point index)."""
        if not self.point_index:
            return obs.args, {}
        gathers: dict = {}
        mapping = {}
        for call in _calls(obs.args, self.point_index):
            name = call.func.__name__
            # no '.' in the name: that marks a data column
            symbol = sympy.Symbol(f"_{name}_at_rows_of_{obs.name.replace('.', '_')}_{len(mapping) + 1}", real=True)
            rows = self.row_points[obs.name, call]
            index = np.full(obs.rows, -1, dtype=np.int64)    # -1: an input is missing there (the row is masked)
            lookup = self.point_index[name]
            for r in np.flatnonzero(np.isfinite(rows).all(axis=1)):
                index[r] = lookup[tuple(float(v) for v in rows[r])]
            mapping[call] = symbol
            gathers[symbol] = (name, index)
        return tuple(a.xreplace(mapping) for a in obs.args), gathers


def plan_exact_gps(symbolic, terms: dict[str, ExpandedTerm], fixed: list[sympy.Expr],
                   observations: list[ObservationCalls]) -> ExactGpPlan:
    """Decide, per ``gp`` term, exact or basis, and collect the exact terms' points."""
    model = symbolic.checked
    infos = {u.name: u for u in model.unknowns if u.representation == "gp" and u.name in terms}
    wanted = {n: dict(u.options).get("method", "auto") for n, u in infos.items()}
    wanted = {n: m for n, m in wanted.items() if m != "basis"}
    if not wanted:
        return ExactGpPlan(terms, {})
    points: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    blockers: dict[str, list[str]] = {n: [] for n in wanted}
    row_points: dict = {}
    for e in fixed:
        for call in _calls((e,), wanted):
            if all(a.is_number for a in call.args):
                points[call.func.__name__].append(np.array([[float(a) for a in call.args]]))
            else:
                moving = sorted(s.name for a in call.args for s in a.free_symbols)
                blockers[call.func.__name__].append(
                    f"{_text(call)} in the dynamics or a derived quantity, where its input{'s' if len(moving) > 1 else ''} "
                    f"{', '.join(repr(m) for m in moving)} change{'s' if len(moving) == 1 else ''} with the "
                    "parameters or along the solution")
    for obs in observations:
        for call in _calls(obs.args, wanted):
            unknown = sorted(s.name for a in call.args for s in a.free_symbols if s.name not in obs.columns)
            if unknown:
                blockers[call.func.__name__].append(
                    f"{_text(call)} in the observation of {obs.name}, where {', '.join(repr(m) for m in unknown)} "
                    f"{'is' if len(unknown) == 1 else 'are'} not read from the data")
                continue
            rows = row_points[obs.name, call] = _row_points(call, obs)
            points[call.func.__name__].append(rows[np.isfinite(rows).all(axis=1)])

    out = dict(terms)
    index: dict[str, dict[tuple[float, ...], int]] = {}
    errors = []
    for name, method in wanted.items():
        info = infos[name]
        found = [p for p in points[name] if p.size]
        unique = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, len(info.inputs)))
        P = len(unique)
        if blockers[name]:
            if method == "exact":
                errors.append(Diagnostic(
                    "E316", f"gp(method=exact): '{name}' must be evaluated only at inputs known from the data, but "
                            f"it is called as {blockers[name][0]}", info.option_span("method"), model.file,
                    help="an exact GP is defined by its values at finitely many inputs; inside an ODE right-hand "
                         "side the term is evaluated along the solution, so use gp(method=basis) (the "
                         "Hilbert-space approximation) or method=auto, which chooses"))
            continue
        if P == 0:
            continue
        if P > EXACT_MAX_POINTS and method == "exact":
            errors.append(Diagnostic(
                "E316", f"gp(method=exact): '{name}' is evaluated at {P} distinct inputs; an exact GP costs P^3 per "
                        f"gradient and is limited to {EXACT_MAX_POINTS}", info.option_span("method"), model.file,
                help="use gp(method=basis, basis=...) (the Hilbert-space approximation) for large data"))
            continue
        if method == "auto" and P > EXACT_AUTO_MAX_POINTS:
            term = out[name]
            out[name] = replace(term, notes=term.notes + (
                f"'{name}' is evaluated at {P} distinct inputs, more than the {EXACT_AUTO_MAX_POINTS} of an exact GP "
                "under method=auto: it uses the Hilbert-space basis (gp(method=exact) insists)",))
            continue
        out[name] = exact_gp_term(info, terms[name].inputs, unique, symbolic)
        index[name] = {tuple(float(v) for v in row): i for i, row in enumerate(unique)}
    return ExactGpPlan(out, index, tuple(errors), row_points)


def _calls(exprs, names) -> list:
    """Calls of the named terms in expressions, innermost first, each once."""
    from sympy.core.function import AppliedUndef

    seen: dict = {}
    for e in exprs:
        for node in sympy.postorder_traversal(e):
            if isinstance(node, AppliedUndef) and node.func.__name__ in names:
                seen.setdefault(node, None)
    return list(seen)


def _row_points(call, obs: ObservationCalls) -> np.ndarray:
    """A call's inputs at every row of an observation: (rows, inputs), NaN where a column is missing."""
    symbols = sorted({s for a in call.args for s in a.free_symbols}, key=lambda s: s.name)
    fn = sympy.lambdify(symbols, list(call.args), "numpy")
    with np.errstate(all="ignore"):
        values = fn(*[np.asarray(obs.columns[s.name], dtype=float) for s in symbols])
    return np.stack([np.asarray(v, dtype=float) * np.ones(obs.rows) for v in values], axis=1)


def _text(call) -> str:
    args = ", ".join(sympy.sstr(a).replace("**", "^") for a in call.args)
    return f"{call.func.__name__}({args})"
