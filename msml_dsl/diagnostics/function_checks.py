"""Convergence of a network's learned function, not of its weights.

A network's weights are not identified: permuting hidden units, or flipping the signs of a tanh
unit's incoming and outgoing weights, leaves the function unchanged, so two chains can sit in
equivalent modes and disagree on every weight (R-hat 2 over weights) while they agree on the
function. R-hat and ESS are therefore judged on invariants: the term's values at a fixed grid of
inputs spanning the data (5 points per input, at most 25 points), per (chain, draw).

>>> # stats = function_diagnostics(term, fit.posterior); stats.max_rhat, stats.min_ess_bulk
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import sympy

#: unknown-term kinds whose parameters are not identified (their R-hat and ESS are not judged)
UNIDENTIFIED_KINDS = ("mlp",)


@dataclass(frozen=True)
class FunctionDiagnostics:
    name: str
    points: np.ndarray           # (P, inputs) the grid
    rhat: np.ndarray             # (P,)
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    parameters: tuple[str, ...]  # the parameters not judged (the weights)

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


def function_diagnostics(term, posterior: dict[str, np.ndarray]) -> FunctionDiagnostics:
    """R-hat and ESS of a term's values on its input grid (draws grouped by chain)."""
    from .arviz_adapter import array_diagnostics

    points = input_grid(term)
    stats = array_diagnostics(function_values(term, posterior, points))
    return FunctionDiagnostics(term.name, points, stats["rhat"], stats["ess_bulk"], stats["ess_tail"],
                               tuple(p.name for p in term.parameters))


def unidentified_functions(ir, posterior: dict[str, np.ndarray]) -> list[FunctionDiagnostics]:
    """Function diagnostics for every network term of a model (none without networks)."""
    return [function_diagnostics(t, posterior) for t in getattr(ir, "unknowns", ())
            if t.kind in UNIDENTIFIED_KINDS]
