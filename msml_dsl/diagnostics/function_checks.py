"""Convergence of a learned term judged on what the user reads, not on its latent parameters.

A network's weights are not identified: permuting hidden units, or flipping the signs of a tanh
unit's incoming and outgoing weights, leaves the function unchanged, so two chains can sit in
equivalent modes and disagree on every weight (R-hat 2 over weights) while they agree on the
function. R-hat and ESS are therefore judged on invariants: the term's values at a fixed grid of
inputs spanning the data (5 points per input, at most 25 points), per (chain, draw).

A horseshoe library's scales are weakly identified by design: a spurious candidate's coefficient
stays near zero whether its local scale lambda_k is small or large (the prior is a HalfCauchy with
no data to pin it), tau trades off against the lambda_k, and a kept candidate's z_k and lambda_k
move along the ridge where their product with tau is the coefficient the data pin. Chains
can agree on every coefficient and on the function while their R-hat over tau and lambda stays
above 1.01 (Lotka-Volterra, 4 x 400 draws: z_1 1.013, lambda_1 1.012, coefficients <= 1.005,
function 1.003). So for a horseshoe library the coefficients c_k (``name[candidate]``) and the term's
values on the grid are judged instead of tau, lambda_k, the slab and z_k.

>>> # stats = function_diagnostics(term, fit.posterior); stats.max_rhat, stats.min_ess_bulk
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import sympy

#: unknown-term kinds whose parameters are not identified (their R-hat and ESS are not judged)
UNIDENTIFIED_KINDS = ("mlp",)


def weakly_identified(term) -> bool:
    """A network, or a library with a horseshoe (its scales): judged on coefficients and function."""
    if term.kind in UNIDENTIFIED_KINDS:
        return True
    return term.kind == "library" and any(p.name == f"{term.name}_tau" for p in term.parameters)


@dataclass(frozen=True)
class FunctionDiagnostics:
    name: str
    points: np.ndarray           # (P, inputs) the grid
    rhat: np.ndarray             # (P,)
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    parameters: tuple[str, ...]  # the parameters not judged (the weights; a horseshoe's scales and z_k)
    kind: str = "mlp"
    labels: tuple[str, ...] = ()  # a name per judged column; default name(point k)

    @property
    def column_labels(self) -> tuple[str, ...]:
        return self.labels or tuple(f"{self.name}(point {i + 1})" for i in range(len(self.rhat)))

    @property
    def n_coefficients(self) -> int:
        return len(self.rhat) - len(self.points)

    @property
    def max_rhat(self) -> float:
        return float(np.nanmax(self.rhat))

    @property
    def min_ess_bulk(self) -> float:
        return float(np.nanmin(self.ess_bulk))

    @property
    def min_ess_tail(self) -> float:
        return float(np.nanmin(self.ess_tail))


def input_grid(term, per_input: int = 5, max_points: int = 25) -> np.ndarray:
    """Points spanning the inputs' data ranges: a full grid, or ``max_points`` of it chosen evenly."""
    axes = [np.linspace(lo, hi, per_input) for lo, hi in term.input_ranges]
    grid = np.array(list(itertools.product(*axes)), dtype=float)
    if len(grid) > max_points:
        grid = grid[np.linspace(0, len(grid) - 1, max_points).round().astype(int)]
    return grid


def function_values(term, posterior: dict[str, np.ndarray], points: np.ndarray) -> np.ndarray:
    """The term at ``points`` for every draw: (chain, draw, P)."""
    if getattr(term, "exact", None) is not None:   # an exact GP: its conditional mean given the values at the data
        from msml_dsl.symbolic.unknown_terms import exact_gp_values

        C, N = np.asarray(posterior[term.exact.amplitude]).shape[:2]
        return exact_gp_values(term, posterior, points).reshape(C, N, len(points))
    symbols = [e for p in term.parameters for e in p.elements]
    fn = sympy.lambdify(list(term.inputs) + symbols, term.expression, "numpy")
    columns = []
    for p in term.parameters:
        v = np.asarray(posterior[p.name], dtype=float)
        C, N = v.shape[:2]
        columns.append(v.reshape(C, N, -1))
    values = np.concatenate(columns, axis=2)                    # (C, N, E)
    C, N, E = values.shape
    flat = values.reshape(C * N, E)
    args = [points[:, i][None, :] for i in range(points.shape[1])] + [flat[:, j][:, None] for j in range(E)]
    with np.errstate(all="ignore"):
        out = np.asarray(fn(*args), dtype=float) * np.ones((C * N, len(points)))
    return out.reshape(C, N, len(points))


def coefficient_values(term, posterior: dict[str, np.ndarray]) -> np.ndarray:
    """A library's coefficients c_k (in the candidates' own units) for every draw: (chain, draw, K)."""
    symbols = [e for p in term.parameters for e in p.elements]
    columns = [np.asarray(posterior[p.name], dtype=float) for p in term.parameters]
    C, N = columns[0].shape[:2]
    flat = np.concatenate([c.reshape(C * N, -1) for c in columns], axis=1)
    out = np.empty((C * N, len(term.candidates)))
    for k, cand in enumerate(term.candidates):
        fn = sympy.lambdify(symbols, cand.coefficient, "numpy")
        with np.errstate(all="ignore"):
            out[:, k] = np.asarray(fn(*flat.T), dtype=float) * np.ones(C * N)
    return out.reshape(C, N, -1)


def function_diagnostics(term, posterior: dict[str, np.ndarray]) -> FunctionDiagnostics:
    """R-hat and ESS of a term's values on its input grid (draws grouped by chain); for a library
    also of its coefficients, first (labelled ``name[candidate]``)."""
    from .arviz_adapter import array_diagnostics

    points = input_grid(term)
    values = function_values(term, posterior, points)
    labels: tuple[str, ...] = ()
    if term.kind == "library" and term.candidates:
        values = np.concatenate([coefficient_values(term, posterior), values], axis=2)
        labels = tuple(f"{term.name}[{c.label}]" for c in term.candidates) + tuple(
            f"{term.name}(point {i + 1})" for i in range(len(points)))
    stats = array_diagnostics(values)
    return FunctionDiagnostics(term.name, points, stats["rhat"], stats["ess_bulk"], stats["ess_tail"],
                               tuple(p.name for p in term.parameters), term.kind, labels)


def unidentified_functions(ir, posterior: dict[str, np.ndarray]) -> list[FunctionDiagnostics]:
    """Function diagnostics for every network term and horseshoe library of a model (else none)."""
    return [function_diagnostics(t, posterior) for t in getattr(ir, "unknowns", ())
            if weakly_identified(t)]
