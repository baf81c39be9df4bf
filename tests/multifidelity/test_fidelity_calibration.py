"""Integrated hyperparameters (``infer laplace``): the importance sampler against known
posteriors, and the coverage of the 95 % bands on held-out truth (fixed seeds).

Coverage bands: with n held-out points and a calibrated 95 % band, the number covered is
Binomial(n, 0.95) if the points' errors were independent, so the fraction lies within
0.95 +- 3 sqrt(0.95 * 0.05 / n) but for one time in 370. The points are drawn at random
(seed fixed) over the domain so that they are not a dense grid; errors at nearby points of one
function are still correlated, which makes the real spread wider than the binomial one, so the
band is a necessary check, not a sufficient one. The assertion is the binomial band with its
lower end raised to the issue's 90 % (n = 200: [0.904, 0.996]).
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msml_dsl.api import compile_file
from msml_dsl.backends.multifidelity.inference import integrate

MODELS = Path(__file__).resolve().parents[2] / "models"
N_HELD_OUT = 200


def band(n: int) -> tuple[float, float]:
    half = 3 * math.sqrt(0.95 * 0.05 / n)
    return max(0.90, 0.95 - half), min(1.0, 0.95 + half)


def _potential(logp):
    def fn(Z):
        return np.array([-logp(z) for z in Z]), np.zeros_like(Z)
    return fn


def _gradient(logp, grad):
    def fn(Z):
        return np.array([-logp(z) for z in Z]), np.array([-grad(z) for z in Z])
    return fn


def test_importance_sampler_recovers_a_gaussian_posterior():
    """A correlated 2-D Gaussian: the Laplace proposal is exact up to its t tails; the resampled
    draws' mean and sd match the truth within Monte Carlo error (ESS ~ draws)."""
    mean = np.array([1.0, -2.0])
    cov = np.array([[1.0, 0.6], [0.6, 0.5]])
    P = np.linalg.inv(cov)
    logp = lambda z: -0.5 * (z - mean) @ P @ (z - mean)          # noqa: E731
    grad = lambda z: -P @ (z - mean)                              # noqa: E731
    draws, stats = integrate(_potential(logp), _gradient(logp, grad), mean, 4000, seed=3, keep=1000)
    assert stats["khat"] < 0.5 and stats["ess"] > 1500
    sd = np.sqrt(np.diag(cov))
    assert stats["mean"] == pytest.approx(mean, abs=4 * sd.max() / math.sqrt(stats["ess"]))
    assert stats["sd"] == pytest.approx(sd, rel=0.1)
    assert draws.mean(0) == pytest.approx(mean, abs=5 * sd.max() / math.sqrt(1000))


def test_importance_sampler_follows_a_skewed_posterior():
    """log-sd of a variance with a Gamma posterior (shape 3): skewed, heavier right tail than
    its Laplace approximation; the adaptive stages recover its mean and sd."""
    from scipy import stats as st

    a = 3.0                             # u = log(v), v ~ Gamma(a, 1): p(u) ∝ exp(a u - e^u)
    logp = lambda z: a * z[0] - math.exp(z[0])                          # noqa: E731
    grad = lambda z: np.array([a - math.exp(z[0])])                    # noqa: E731
    z_map = np.array([math.log(a)])
    _, stats = integrate(_potential(logp), _gradient(logp, grad), z_map, 4000, seed=5)
    samples = np.log(st.gamma(a).rvs(size=400_000, random_state=1))
    assert stats["khat"] < 0.7
    assert stats["mean"][0] == pytest.approx(samples.mean(), abs=4 * samples.std() / math.sqrt(stats["ess"]))
    assert stats["sd"][0] == pytest.approx(samples.std(), rel=0.1)


def forrester_high(x):
    return (6 * x - 2) ** 2 * np.sin(12 * x - 4)


def held_out_check(folder, columns, truth, seed, upper=None):
    """The model's default fit (laplace, seed 1) on N_HELD_OUT random held-out points: the
    evaluation, after asserting the coverage band (upper end ``upper`` where a model is known to
    be conservative) and reliable importance weights."""
    pick = np.sort(np.random.default_rng(seed).choice(len(truth), N_HELD_OUT, replace=False))
    fit = compile_file(MODELS / folder / "model.msml", device="cpu").run(method="laplace", seed=1)
    e = fit.evaluate(columns[pick], truth[pick])
    lo, hi = band(N_HELD_OUT)
    assert lo <= e["coverage"] <= (hi if upper is None else upper)
    assert all(b.stats["khat"] < 0.7 for b in fit.state.blocks)
    return e


@pytest.mark.slow
def test_forrester_integrated_bands_cover_held_out_truth():
    """MAP bands covered 75.3 % of a 1,000-point grid; the default (the discrepancy with a linear
    trend, the importance-sampled draws mixed) 96.2 % with RMSE 0.0567 (without the trend: 0.0728)."""
    x = np.linspace(0, 1, 1000)
    e = held_out_check("forrester", x, forrester_high(x), seed=11)
    assert e["rmse"] < 0.0605          # Emukit's linear model: 0.0597-0.0602; measured 0.0567 on 1,000


@pytest.mark.slow
def test_nargp_integrated_bands_cover_held_out_truth():
    """The nonlinear pair: each level's hyperparameters integrated, propagated by sampling
    (measured 90.3 % on 1,000 points; MAP 74.6 %)."""
    test = pd.read_csv(MODELS / "nonlinear_mf" / "test.csv")
    e = held_out_check("nonlinear_mf", test.x.values, test.y.values, seed=12)
    assert e["rmse"] < 0.03                                 # measured 0.0150 (linear link: 0.38)


def _benchmark():
    """benchmarks/multifidelity.py as a module: its noise replicates are the ones reported."""
    import importlib.util

    path = MODELS.parent / "benchmarks" / "multifidelity.py"
    spec = importlib.util.spec_from_file_location("_benchmark_multifidelity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replicate_coverages(name):
    """The default fit (laplace, the file's settings) on the committed data and five noise
    replicates of the same design (the folder's make_data.py, seeds 1-5): coverage of the whole
    truth.csv per replicate, and the RMSEs."""
    bench = _benchmark()
    coverages, rmses = [], []
    for seed in range(6):
        model, X, y, _ = bench.replicate_model(name, seed)
        fit = model.run(method="laplace")
        e = fit.evaluate(X, y)
        assert all(b.stats["khat"] < 0.7 for b in fit.state.blocks)
        coverages.append(e["coverage"])
        rmses.append(e["rmse"])
    return np.array(coverages), np.array(rmses)


@pytest.mark.slow
def test_pk_bands_are_calibrated_over_noise_replicates():
    """Nine samples assayed in duplicate (the pairs identify the assay error): mean coverage of
    the 481-point truth curve over six replicates 96.6 % (94.6-99.2 %), RMSE 0.220 mg/L mean. With
    eight single samples it was 99.9 % (99.6-100 %): the noise was over-estimated. The issue's
    band is asserted on the mean; single replicates may exceed 0.98 (one, 99.2 %), none is below 0.90."""
    cov, rmse = replicate_coverages("pk")
    assert 0.90 <= cov.mean() <= 0.98
    assert cov.min() >= 0.90
    assert rmse.mean() < 0.25                              # measured 0.220 (single samples: 0.222)


@pytest.mark.slow
def test_fkpp_bands_are_calibrated_over_noise_replicates():
    """The 21-node grid and 20 scan positions per session at every phase of it: mean coverage of
    the 820 held-out field values 96.8 % (94.3-98.3 %), RMSE 0.0063 mean. With 11 nodes and ten
    probes at the grid's midpoints: 89.6 % (79.8 % at the nodes no probe saw), RMSE 0.0172."""
    cov, rmse = replicate_coverages("fkpp")
    assert 0.90 <= cov.mean() <= 0.98
    assert cov.min() >= 0.90
    assert rmse.mean() < 0.01                              # measured 0.0063
