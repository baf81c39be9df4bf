"""A network's convergence is judged on its function, not on its weights (which swap and flip sign)."""

from dataclasses import dataclass

import numpy as np
import sympy

from msml_dsl.diagnostics import build_inference_data, check_convergence
from msml_dsl.diagnostics.function_checks import function_diagnostics, input_grid


@dataclass(frozen=True)
class _Param:
    name: str
    shape: tuple
    elements: tuple


@dataclass(frozen=True)
class _Term:
    name: str
    inputs: tuple
    expression: sympy.Expr
    parameters: tuple
    input_ranges: tuple
    kind: str = "mlp"


def _sign_flipped_chains(seed=0, n=400):
    """f(x) = w2 tanh(w1 x): chain 1 near w = (1, 2), chain 2 near (-1, -2) — the same function."""
    x = sympy.Symbol("x", real=True)
    w = (sympy.Symbol("f_w[1]", real=True), sympy.Symbol("f_w[2]", real=True))
    term = _Term("f", (x,), w[1] * sympy.tanh(w[0] * x), (_Param("f_w", (2,), w),), ((-1.0, 1.0),))
    rng = np.random.default_rng(seed)
    draws = np.array([1.0, 2.0]) + 0.05 * rng.standard_normal((2, n, 2))
    draws[1] *= -1
    return term, {"f_w": draws, "sigma": 1 + 0.1 * rng.standard_normal((2, n))}


def test_function_rhat_is_invariant_to_sign_flips_where_the_weights_rhat_is_not():
    term, posterior = _sign_flipped_chains()
    stats = function_diagnostics(term, posterior)
    assert np.allclose(stats.points[:, 0], np.linspace(-1, 1, 5))
    assert stats.max_rhat < 1.01 and stats.min_ess_bulk > 300
    data = build_inference_data(posterior=posterior, dims={"f_w": ["f_w_dim"]}, coords={"f_w_dim": [1, 2]})
    plain = {w.code: w for w in check_convergence(data, max_tree_depth=10)}
    assert "W101" in plain and "f_w" in plain["W101"].message             # the weights "disagree"
    judged = {w.code: w for w in check_convergence(data, max_tree_depth=10, functions=[stats])}
    assert "W101" not in judged and "W102" not in judged
    assert "I103" in judged and "f_w" in judged["I103"].message and "max R-hat" in judged["I103"].message


def test_function_rhat_flags_chains_that_learned_different_functions():
    term, posterior = _sign_flipped_chains()
    posterior["f_w"][1, :, 1] *= 0.5                                          # chain 2: half the output
    stats = function_diagnostics(term, posterior)
    assert stats.max_rhat > 1.1
    data = build_inference_data(posterior=posterior, dims={"f_w": ["f_w_dim"]}, coords={"f_w_dim": [1, 2]})
    found = {w.code: w for w in check_convergence(data, max_tree_depth=10, functions=[stats])}
    assert "W101" in found and "f(point" in found["W101"].message and "f_w" not in found["W101"].message


def test_input_grid_spans_every_input_and_caps_the_points():
    term = _Term("g", (), sympy.Integer(0), (), ((0.0, 1.0), (10.0, 20.0), (-1.0, 1.0)))
    grid = input_grid(term)
    assert grid.shape == (25, 3)
    assert grid[0].tolist() == [0.0, 10.0, -1.0] and grid[-1].tolist() == [1.0, 20.0, 1.0]
