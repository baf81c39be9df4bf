import itertools
import math

import pytest
import torch
from torch.func import hessian, vmap

from msml_dsl.backends.pinn.derivatives import input_derivatives
from msml_dsl.backends.pinn.network import FieldNetwork

A, B, C = 1.7, -0.6, 2.3


def f(x):
    """sin(A x) exp(B t) + x^2 t^3 cos(C t): products of sines, exponentials and polynomials."""
    xx, tt = x[:, 0], x[:, 1]
    return torch.sin(A * xx) * torch.exp(B * tt) + xx ** 2 * tt ** 3 * torch.cos(C * tt)


def analytic(alpha, x):
    """d^(i+j) f / dx^i dt^j, written out."""
    i, j = alpha
    xx, tt = x[:, 0], x[:, 1]
    # first part: derivatives of sin(A x) and exp(B t) separately
    sin_d = [torch.sin(A * xx), A * torch.cos(A * xx), -A ** 2 * torch.sin(A * xx), -A ** 3 * torch.cos(A * xx)][i]
    part1 = sin_d * B ** j * torch.exp(B * tt)
    # second part: x^2 derivatives times d^j/dt^j of t^3 cos(Ct) (Leibniz)
    x_d = [xx ** 2, 2 * xx, 2 * torch.ones_like(xx), torch.zeros_like(xx)][i]
    poly = [tt ** 3, 3 * tt ** 2, 6 * tt, 6 * torch.ones_like(tt)]
    cosd = [torch.cos(C * tt), -C * torch.sin(C * tt), -C ** 2 * torch.cos(C * tt), C ** 3 * torch.sin(C * tt)]
    t_d = sum(math.comb(j, m) * poly[m] * cosd[j - m] for m in range(j + 1))
    return part1 + x_d * t_d


ALPHAS = [a for a in itertools.product(range(4), repeat=2) if sum(a) <= 3]


@pytest.mark.parametrize("method", ["autograd", "forward"])
def test_every_partial_up_to_third_order_matches_the_analytic_one(method):
    x = torch.rand(64, 2, dtype=torch.float64) * 2 - 1
    got = input_derivatives(f, x, ALPHAS, method=method)
    assert set(got) == set(ALPHAS)
    for alpha in ALPHAS:
        torch.testing.assert_close(got[alpha], analytic(alpha, x), rtol=1e-10, atol=1e-10, msg=str(alpha))


@pytest.mark.parametrize("method", ["autograd", "forward"])
def test_several_channels_at_once(method):
    x = torch.rand(16, 2, dtype=torch.float64)

    def g(z):
        return torch.stack([f(z), 3 * f(z) ** 2], dim=1)

    got = input_derivatives(g, x, [(1, 1), (2, 0)], method=method)
    torch.testing.assert_close(got[(1, 1)][:, 0], analytic((1, 1), x))
    d = f(x)
    expected_xx = 6 * (analytic((1, 0), x) ** 2 + d * analytic((2, 0), x))
    torch.testing.assert_close(got[(2, 0)][:, 1], expected_xx)


def test_network_second_derivatives_match_torch_func_hessian_and_backpropagate():
    torch.manual_seed(0)
    net = FieldNetwork(2, (16, 16), "tanh", [-1.0, 0.0], [1.0, 2.0], shift=0.3, scale=2.0).double()
    x = torch.rand(32, 2, dtype=torch.float64)
    got = input_derivatives(net, x, [(2, 0), (1, 1), (0, 2)])
    h = vmap(hessian(lambda z: net(z[None])[0]))(x)
    torch.testing.assert_close(got[(2, 0)], h[:, 0, 0])
    torch.testing.assert_close(got[(1, 1)], h[:, 0, 1])
    torch.testing.assert_close(got[(0, 2)], h[:, 1, 1])
    # the derivatives are differentiable with respect to the weights (training needs it)
    got[(2, 0)].pow(2).sum().backward()
    assert net.hidden[0].weight.grad is not None and torch.isfinite(net.hidden[0].weight.grad).all()


def test_derivative_of_a_function_that_ignores_an_input_is_zero():
    x = torch.rand(8, 2, dtype=torch.float64)
    got = input_derivatives(lambda z: torch.sin(z[:, 0]), x, [(0, 1), (1, 1), (0, 2)])
    for a in [(0, 1), (1, 1), (0, 2)]:
        assert torch.equal(got[a], torch.zeros(8, dtype=torch.float64))


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="autograd"):
        input_derivatives(f, torch.zeros(2, 2), [(1, 0)], method="finite")


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "sin", "gelu", "softplus", "silu", "elu"])
def test_activations_and_fourier_features_give_finite_outputs(activation):
    net = FieldNetwork(2, (8,), activation, [0.0, 0.0], [10.0, 5.0], fourier_features=4)
    y = net(torch.rand(5, 2, dtype=torch.float64) * 10)
    assert y.shape == (5,) and torch.isfinite(y).all()
