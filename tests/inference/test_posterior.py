"""Posterior correctness: analytic and quadrature posteriors, recovery of known parameters,
and the Lotka–Volterra reference posterior (posteriordb, Stan's benchmark rule)."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

import msml_dsl
from msml_dsl.diagnostics import ess_bulk

ROOT = Path(__file__).resolve().parents[2]


def _mc_tolerance(draws: np.ndarray, z: float = 4.0) -> float:
    """z Monte Carlo standard errors of the mean, from a conservative ESS (chains, draws)."""
    flat = draws.reshape(-1)
    n = flat.size
    chains = draws.shape[0]
    # Batch means over chains and 10 batches each: conservative for autocorrelated draws.
    batches = draws.reshape(chains, 10, -1).mean(axis=2).reshape(-1)
    se = max(batches.std(ddof=1) / math.sqrt(batches.size), flat.std() / math.sqrt(n))
    return z * se


def test_conjugate_normal_posterior(tmp_path):
    rng = np.random.default_rng(42)
    y = rng.normal(1.5, 2.0, size=25)
    (tmp_path / "y.csv").write_text("y\n" + "\n".join(f"{v:.6f}" for v in y) + "\n")
    src = ('model conj\nparam mu ~ Normal(0, 3)\ndata d = csv("y.csv")\n'
           'observe d.y ~ Normal(mu, 2)\n')
    fit = msml_dsl.compile_source(src, name="conj.msml", base_dir=tmp_path, device="cpu") \
        .sample(chains=4, warmup=300, draws=1000, seed=3)
    prec = 1 / 9 + y.size / 4
    mean, sd = (y.sum() / 4) / prec, math.sqrt(1 / prec)
    mu = fit.posterior["mu"]
    assert abs(mu.mean() - mean) < _mc_tolerance(mu)
    assert abs(mu.std() - sd) / sd < 0.08
    assert not fit.sample.sample_stats["diverging"].any()


def test_truncated_prior_posterior_by_quadrature(tmp_path):
    """A Normal(0.5, 1) prior truncated at 0 and Poisson counts: posterior mean by quadrature."""
    counts = [0, 1, 0, 2, 1]
    (tmp_path / "c.csv").write_text("n\n" + "\n".join(map(str, counts)) + "\n")
    src = ('model trunc\nparam lam ~ Normal(0.5, 1) [lower=0]\ndata d = csv("c.csv")\n'
           'observe d.n ~ Poisson(lam)\n')
    fit = msml_dsl.compile_source(src, name="t.msml", base_dir=tmp_path, device="cpu") \
        .sample(chains=4, warmup=300, draws=1000, seed=5)

    def unnorm(x):
        return stats.norm(0.5, 1).pdf(x) * np.prod(stats.poisson(x).pmf(counts))

    z = integrate.quad(unnorm, 0, 20)[0]
    mean = integrate.quad(lambda x: x * unnorm(x), 0, 20)[0] / z
    second = integrate.quad(lambda x: x * x * unnorm(x), 0, 20)[0] / z
    lam = fit.posterior["lam"]
    assert abs(lam.mean() - mean) < _mc_tolerance(lam)
    assert abs(lam.std() - math.sqrt(second - mean ** 2)) / math.sqrt(second - mean ** 2) < 0.08
    assert lam.min() > 0


def test_recovers_known_decay_rate_from_simulated_data(tmp_path):
    """Exponential decay with a parameter initial value, Normal noise: truth inside the 95 % interval."""
    rng = np.random.default_rng(7)
    k_true, a0_true, sigma = 0.35, 8.0, 0.3
    t = np.linspace(0.5, 10, 16)
    y = a0_true * np.exp(-k_true * t) + rng.normal(0, sigma, size=t.size)
    rows = "\n".join(f"{ti:.3f},{yi:.5f}" for ti, yi in zip(t, y))
    (tmp_path / "decay.csv").write_text("time,amount\n" + rows + "\n")
    src = """model decay
time t in [0, 10]
state A
param k ~ LogNormal(log(0.5), 1)
param A0 ~ Normal(10, 5) [lower=0]
param sigma ~ HalfNormal(1)
equation der(A) = -k * A
init A = A0
data d = csv("decay.csv", t = time)
observe d.amount ~ Normal(A, sigma)
derive half_life = log(2) / k
"""
    fit = msml_dsl.compile_source(src, name="decay.msml", base_dir=tmp_path, device="cpu") \
        .sample(chains=4, warmup=400, draws=600, seed=11)
    for name, truth in [("k", k_true), ("A0", a0_true), ("sigma", sigma)]:
        lo, hi = np.quantile(fit.posterior[name], [0.025, 0.975])
        assert lo < truth < hi, (name, lo, hi)
    np.testing.assert_allclose(fit.posterior["half_life"], np.log(2) / fit.posterior["k"])
    table = fit.summary_table()
    assert (table["r_hat"] < 1.01).all()


# Long-run reference (posteriordb, 10,000 draws) for the Stan Lotka–Volterra model.
LV_REFERENCE = {"alpha": (0.5469, 0.0631), "beta": (0.02775, 0.00415), "gamma": (0.8001, 0.0894),
                "delta": (0.02409, 0.00353), "H0": (34.04, 2.92), "L0": (5.936, 0.531),
                "sigma_H": (0.2481, 0.0433), "sigma_L": (0.2510, 0.0436)}


def test_lotka_volterra_matches_reference_posterior():
    """Every posterior mean within 0.25 reference sd (Stan's benchmark rule), R-hat < 1.01, no divergences."""
    fit = msml_dsl.compile_file(ROOT / "models" / "lotka_volterra" / "model.msml", device="cpu").run()
    assert fit.sample.settings["chains"] == 4 and fit.sample.settings["draws"] == 1000
    table = fit.summary_table()
    for name, (mean, sd) in LV_REFERENCE.items():
        assert abs(fit.posterior[name].mean() - mean) < 0.25 * sd, name
    assert (table["r_hat"] < 1.01).all()
    assert not fit.sample.sample_stats["diverging"].any()
    assert min(ess_bulk(fit.to_arviz()).values()) > 400


def test_same_seed_same_draws(tmp_path):
    src = ('model conj\nparam mu ~ Normal(0, 3)\ndata d = csv("y.csv")\nobserve d.y ~ Normal(mu, 2)\n')
    (tmp_path / "y.csv").write_text("y\n1.0\n2.5\n0.3\n")
    model = msml_dsl.compile_source(src, name="c.msml", base_dir=tmp_path, device="cpu")
    a = model.sample(chains=2, warmup=50, draws=50, seed=9).posterior["mu"]
    b = model.sample(chains=2, warmup=50, draws=50, seed=9).posterior["mu"]
    c = model.sample(chains=2, warmup=50, draws=50, seed=10).posterior["mu"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
