"""laplace's linearised predictive in the joint scheme (``predictive="linearised"``; MacKay 1992): the
mean is the MAP's, the variance the MAP's plus J Sigma J^T (Sigma the hyperparameters' Laplace
covariance); the default ``mixture`` mixes the importance-sampled draws instead."""

import numpy as np
import pytest
import torch

from msml_dsl.api import compile_source
from msml_dsl.backends.multifidelity.inference import LINEARISATION_STEP, linearised

TWO = """model two "Two levels, a linear link"
space x in [0, 1]
unknown f_low(x) : gp(kernel=rbf)
unknown delta(x) : gp(kernel=rbf)
param rho ~ Normal(1, 2)
param s ~ HalfNormal(0.05)
fidelity low = f_low(x)
fidelity high = rho * low + delta(x)
data cheap = csv("low.csv") fidelity low
data costly = csv("high.csv") fidelity high
observe cheap.y ~ Normal(low, s)
observe costly.y ~ Normal(high, s)
infer laplace(starts=1, seed=1, draws=60, max_iter=200)
"""


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    d = tmp_path_factory.mktemp("two")
    xl, xh = np.linspace(0, 1, 7), np.array([0.1, 0.5, 0.9])
    (d / "low.csv").write_text("x,y\n" + "".join(f"{a},{np.sin(6 * a)}\n" for a in xl))
    (d / "high.csv").write_text("x,y\n" + "".join(f"{a},{1.5 * np.sin(6 * a) + a}\n" for a in xh))
    model = compile_source(TWO, "two.msml", device="cpu", base_dir=d)
    return model.run(method="map"), model.run(predictive="linearised"), model


def test_linearised_moments_are_the_map_mean_and_a_delta_method_variance():
    M = torch.tensor([[1.0, 2.0], [1.3, 2.0], [0.9, 2.2], [1.0, 1.9], [1.0, 2.1]], dtype=torch.float64)
    V = torch.tensor([[0.5, 0.1]] * 5, dtype=torch.float64)
    mean, var, D = linearised(M, V)
    h = LINEARISATION_STEP
    assert mean.tolist() == [1.0, 2.0]
    expected = [0.5 + (0.4 / (2 * h)) ** 2, 0.1 + (0.2 / (2 * h)) ** 2 + (0.2 / (2 * h)) ** 2]
    assert var.numpy() == pytest.approx(expected)


@pytest.mark.slow
def test_linearised_laplace_predicts_the_map_mean_with_wider_bands(fits):
    map_fit, lin, _ = fits
    x = np.linspace(0, 1, 41)
    p_map, p_lin = map_fit.predict(x), lin.predict(x)
    assert lin.state.linearised and not map_fit.state.linearised
    assert p_lin.mean == pytest.approx(p_map.mean, abs=1e-8)
    assert np.all(p_lin.sd >= p_map.sd - 1e-12) and p_lin.sd.mean() > 1.05 * p_map.sd.mean()
    assert p_lin.upper - p_lin.mean == pytest.approx(1.959964 * p_lin.sd, rel=1e-5)     # Gaussian bands
    cov = lin.state.covariance("high", torch.as_tensor(x[:, None], dtype=torch.float64))
    assert np.diag(cov.numpy()) == pytest.approx(p_lin.sd ** 2, rel=1e-6, abs=1e-12)
    assert "linearised Laplace" in lin.summary()


@pytest.mark.slow
def test_mixture_predictive_and_bad_option(fits):
    _, lin, _ = fits
    x = np.linspace(0, 1, 21)
    m_lin = lin.predict(x).mean
    options = lin.state.options
    lin.state.options = {k: v for k, v in options.items() if k != "predictive"}   # the default: mixed draws
    try:
        assert not lin.state.linearised
        assert not np.allclose(lin.predict(x).mean, m_lin, atol=1e-8)
    finally:
        lin.state.options = options


def test_predictive_is_an_option_of_the_file_and_the_command_line(tmp_path):
    from msml_dsl.cli import build_parser

    for name in ("low.csv", "high.csv"):
        (tmp_path / name).write_text("x,y\n0.1,1.0\n0.5,2.0\n")
    model = compile_source(TWO.replace("max_iter=200)", "max_iter=200, predictive=linearised)"), "two.msml",
                           device="cpu", base_dir=tmp_path)
    assert dict(model.ir.inference.options)["predictive"] == "linearised"
    args = build_parser().parse_args(["run", "m.msml", "--method", "laplace", "--predictive", "linearised"])
    assert args.predictive == "linearised"
    with pytest.raises(ValueError, match="predictive"):      # checked before the model is built
        model.run(predictive="mean")
