"""mlp(..., posterior=last_layer): NUTS keeps the hidden layers at the optimum and samples the rest."""

import numpy as np
import pytest

import msml_dsl
from msml_dsl.errors import MsmlError

from msml_dsl.inference.runner import _conditional_covariance, _FixedCoordinates
from test_placements_and_priors import _compile, DECAY


def test_last_layer_fixes_the_hidden_weights_and_samples_the_output_layer(decay_data):
    m = _compile(decay_data, "mlp(hidden=[3], activation=tanh, posterior=last_layer)")
    term = m.ir.unknowns[0]
    assert term.fixed_at_optimum == tuple(range(6))   # 1 x 3 weights + 3 biases; the output layer is 3 + 1
    fit = m.sample(chains=2, warmup=200, draws=100, seed=2)   # 200: the dense metric (the features correlate)
    w = np.asarray(fit.posterior["f_w"]).reshape(2, 100, -1)
    hidden, output = w[..., :6], w[..., 6:]
    assert np.all(hidden == hidden[0, 0])              # one value, the optimum's, in every draw
    assert np.all(output.std(axis=(0, 1)) > 0)         # the output layer is sampled
    assert any("posterior=last_layer" in n for n in fit.sample.init_notes)
    # the decay law f(x) = -0.5 x is still learned over the data's range
    x = np.linspace(0.15, 1.7, 20)
    values = fit.evaluate_unknown("f", x=x).mean(axis=0)
    assert np.max(np.abs(values + 0.5 * x)) < 0.05


def test_the_default_samples_every_weight(decay_data):
    assert _compile(decay_data, "mlp(hidden=[3])").ir.unknowns[0].fixed_at_optimum == ()
    assert _compile(decay_data, "mlp(hidden=[3], posterior=all)").ir.unknowns[0].fixed_at_optimum == ()


def test_bad_posterior_option(decay_data):
    with pytest.raises(MsmlError) as info:
        msml_dsl.compile_source(DECAY.format(representation="mlp(hidden=[3], posterior=last)"), base_dir=decay_data)
    (d,) = info.value.diagnostics
    assert d.code == "E262" and d.message == "option 'posterior' is one of all, last_layer, not 'last'"
    assert d.help == "did you mean 'last_layer'?"


def test_fixed_coordinates_potential_and_conditional_covariance():
    A = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.5]])   # precision of a Gaussian

    def potential(z, jacobian=True):
        return 0.5 * np.einsum("bi,ij,bj->b", z, A, z), z @ A

    fixed = _FixedCoordinates(potential, np.array([0.0, 0.7, 0.0]), np.array([0, 2]))
    u, g = fixed(np.array([[1.0, -1.0]]))
    z = np.array([[1.0, 0.7, -1.0]])
    assert u[0] == pytest.approx(potential(z)[0][0]) and np.allclose(g, (z @ A)[:, [0, 2]])
    assert np.allclose(fixed.embed(np.zeros((2, 3, 2)))[..., 1], 0.7)
    cov = np.linalg.inv(A)
    assert np.allclose(_conditional_covariance(cov, np.array([0, 2])), np.linalg.inv(A[np.ix_([0, 2], [0, 2])]))
