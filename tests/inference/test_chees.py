"""ChEES-HMC: correct moments on Gaussians, lockstep batches, nested R-hat, and a model fit."""

import math

import numpy as np
import pytest

import msml_dsl
from msml_dsl.inference.chees import nested_rhat, run_chees


def correlated_gaussian(D=4, rho=0.9):
    S = np.full((D, D), rho) + np.eye(D) * (1 - rho)
    P = np.linalg.inv(S)
    return S, lambda z: (0.5 * np.einsum("bi,ij,bj->b", z, P, z), z @ P)


def test_moments_of_a_correlated_gaussian():
    S, f = correlated_gaussian()
    rng = np.random.default_rng(0)
    r = run_chees(f, rng.normal(size=(128, 4)), warmup=400, draws=400, seed=3)
    x = r.positions.reshape(-1, 4)
    # 128 x 400 draws with ESS well above 10,000: 0.05 is many Monte Carlo errors
    assert np.abs(x.mean(axis=0)).max() < 0.05
    assert np.abs(np.cov(x.T) - S).max() < 0.05
    assert (r.n_leapfrog == r.n_leapfrog[:1]).all()  # every chain took the same number of steps
    assert 0.5 < r.accept_stat.mean() < 0.95
    assert not r.diverging.any()


def test_same_seed_same_draws():
    _, f = correlated_gaussian()
    init = np.random.default_rng(1).normal(size=(16, 4))
    a = run_chees(f, init, warmup=50, draws=20, seed=5).positions
    b = run_chees(f, init, warmup=50, draws=20, seed=5).positions
    np.testing.assert_array_equal(a, b)


def test_nested_rhat_detects_superchains_that_disagree():
    rng = np.random.default_rng(2)
    mixed = rng.normal(size=(32, 50))
    assert nested_rhat(mixed, 8) < 1.01
    stuck = mixed + np.repeat(np.arange(8) * 0.5, 4)[:, None]
    assert nested_rhat(stuck, 8) > 1.1


def test_chees_fit_of_a_conjugate_model(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.normal(-0.5, 1.0, size=12)
    (tmp_path / "y.csv").write_text("y\n" + "\n".join(f"{v:.6f}" for v in y) + "\n")
    src = ('model conj\nparam mu ~ Normal(0, 2)\ndata d = csv("y.csv")\nobserve d.y ~ Normal(mu, 1)\n'
           'infer chees(chains=32, superchains=4, warmup=200, draws=100, seed=2)\n')
    fit = msml_dsl.compile_source(src, name="c.msml", base_dir=tmp_path, device="cpu").run()
    prec = 1 / 4 + y.size
    mean, sd = y.sum() / prec, math.sqrt(1 / prec)
    mu = fit.posterior["mu"]
    assert mu.shape == (32, 100)
    assert abs(mu.mean() - mean) < 4 * sd / math.sqrt(1000)
    assert abs(mu.std() / sd - 1) < 0.1
    assert fit.sample.nested_rhat["mu"] < 1.01
    assert "nested R-hat over 4 superchains" in fit.summary()


def test_chains_must_divide_into_superchains():
    from msml_dsl.errors import MsmlError
    from msml_dsl.semantics.checker import check
    from msml_dsl.syntax.parser import parse

    with pytest.raises(MsmlError, match="multiple of superchains"):
        check(parse("model m\nparam a ~ Normal(0, 1)\ninfer chees(chains=10, superchains=4)\n"))
