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


@dataclass(frozen=True)
class _Candidate:
    label: str
    coefficient: sympy.Expr


@dataclass(frozen=True)
class _Library(_Term):
    candidates: tuple = ()
    kind: str = "library"


def _horseshoe_chains(seed=0, n=400):
    """f(x) = c1 x + c2 x^2, c_k = tau lambda_k z_k: the chains agree on c_k, not on tau and lambda."""
    x = sympy.Symbol("x", real=True)
    tau, lam = sympy.Symbol("f_tau", real=True), (sympy.Symbol("f_lambda[1]", real=True), sympy.Symbol("f_lambda[2]", real=True))
    z = (sympy.Symbol("f_z1", real=True), sympy.Symbol("f_z2", real=True))
    c = [tau * lam[k] * z[k] for k in range(2)]
    term = _Library("f", (x,), c[0] * x + c[1] * x ** 2,
                    (_Param("f_tau", (), (tau,)), _Param("f_lambda", (2,), lam), _Param("f_z1", (), (z[0],)),
                     _Param("f_z2", (), (z[1],))), ((0.0, 1.0),),
                    candidates=(_Candidate("x", c[0]), _Candidate("x^2", c[1])))
    rng = np.random.default_rng(seed)
    t = np.array([[0.5], [0.05]]) * np.ones((2, n))                     # chain 2: tau ten times smaller ...
    lam_ = np.stack([np.full((n, 2), 2.0), np.full((n, 2), 20.0)])     # ... and the local scales ten times larger
    coef = np.array([1.0, 0.01]) + 0.05 * rng.standard_normal((2, n, 2))
    posterior = {"f_tau": t * np.exp(0.01 * rng.standard_normal((2, n))), "f_lambda": lam_,
                 "sigma": 1 + 0.1 * rng.standard_normal((2, n))}
    posterior["f_z1"] = coef[..., 0] / (posterior["f_tau"] * lam_[..., 0])
    posterior["f_z2"] = coef[..., 1] / (posterior["f_tau"] * lam_[..., 1])
    return term, posterior


def _library_data(posterior):
    return build_inference_data(posterior=posterior, dims={"f_lambda": ["f_lambda_dim"]}, coords={"f_lambda_dim": [1, 2]})


def test_horseshoe_library_is_judged_on_its_coefficients_and_function_not_its_scales():
    from msml_dsl.diagnostics.function_checks import weakly_identified

    term, posterior = _horseshoe_chains()
    assert weakly_identified(term) and not weakly_identified(_Library("g", (), sympy.Integer(0), (), ()))
    stats = function_diagnostics(term, posterior)
    assert stats.column_labels[:2] == ("f[x]", "f[x^2]") and stats.n_coefficients == 2 and len(stats.rhat) == 7
    assert stats.max_rhat < 1.01
    plain = {w.code: w for w in check_convergence(_library_data(posterior), max_tree_depth=10)}
    assert "W101" in plain and "f_tau" in plain["W101"].message
    judged = {w.code: w for w in check_convergence(_library_data(posterior), max_tree_depth=10, functions=[stats])}
    assert "W101" not in judged and "I103" not in judged
    info = judged["I104"].message
    assert "f_tau" in info and "largest R-hat" in info and "2 coefficients" in info and "5 input points" in info


def test_horseshoe_library_flags_chains_that_disagree_on_a_coefficient():
    term, posterior = _horseshoe_chains()
    posterior["f_z2"][1] += 0.5 / (posterior["f_tau"][1] * 20.0)      # chain 2: c2 about 0.5 higher
    stats = function_diagnostics(term, posterior)
    found = {w.code: w for w in check_convergence(_library_data(posterior), max_tree_depth=10, functions=[stats])}
    assert "W101" in found and "f[x^2]" in found["W101"].message and "f_tau" not in found["W101"].message
