"""Tests of the batched-chain NUTS sampler (msml_dsl.inference.nuts)."""

import math

import numpy as np
import pytest

from msml_dsl.inference.nuts import NutsResult, _window_schedule, run_nuts


# --------------------------------------------------------------------------- helpers


def gaussian_potential(mean, cov):
    mean = np.asarray(mean, float)
    prec = np.linalg.inv(np.asarray(cov, float))

    def fn(z):
        d = z - mean
        g = d @ prec
        return 0.5 * np.einsum("kd,kd->k", d, g), g

    return fn


def ess(x):
    """Effective sample size of x: (C, N), Stan's estimator (Geyer's initial monotone sequence)."""
    x = np.asarray(x, float)
    C, N = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    nfft = 1 << int(math.ceil(math.log2(2 * N)))
    f = np.fft.rfft(xc, nfft, axis=1)
    acov = np.fft.irfft(f * np.conj(f), nfft, axis=1)[:, :N] / N
    chain_var = acov[:, 0] * N / (N - 1)
    mean_var = chain_var.mean()
    var_plus = mean_var * (N - 1) / N
    if C > 1:
        var_plus += x.mean(axis=1).var(ddof=1)
    if var_plus <= 0:
        return float(C * N)
    rho = 1.0 - (mean_var - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    # Geyer: sums of pairs, positive and monotone
    total = 0.0
    prev = math.inf
    t = 0
    while t + 1 < N:
        pair = rho[t] + rho[t + 1]
        if pair < 0:
            break
        pair = min(pair, prev)
        total += pair
        prev = pair
        t += 2
    tau = -1.0 + 2.0 * total
    return float(C * N / max(tau, 1.0 / math.log10(C * N)))


def check_moments(draws, mean, var, k=4.0):
    """|mean - truth| < k * sd / sqrt(ESS) and the same for the second central moment."""
    C, N, D = draws.shape
    for d in range(D):
        x = draws[:, :, d]
        n_eff = ess(x)
        m = x.mean()
        assert abs(m - mean[d]) < k * math.sqrt(var[d] / n_eff), (d, m, mean[d], n_eff)
        sq = (x - mean[d]) ** 2
        n_eff2 = ess(sq)
        # sd of (x - mu)^2 for a Gaussian is sqrt(2) var
        assert abs(sq.mean() - var[d]) < k * math.sqrt(2.0) * var[d] / math.sqrt(n_eff2), (
            d, sq.mean(), var[d], n_eff2)


# --------------------------------------------------------------------------- 1. correlated Gaussians


@pytest.mark.parametrize("metric", ["diag", "dense"])
def test_correlated_gaussian_2d(metric):
    mean = np.array([1.0, -2.0])
    sd = np.array([1.0, 3.0])
    corr = np.array([[1.0, 0.9], [0.9, 1.0]])
    cov = corr * np.outer(sd, sd)
    z0 = np.random.default_rng(0).normal(size=(4, 2))
    warm_acc = []

    def progress(i, n, info):
        if info["phase"] == "warmup":
            warm_acc.append(info["accept_stat"])

    res = run_nuts(gaussian_potential(mean, cov), z0, warmup=500, draws=1000, seed=11, metric=metric,
                   progress=progress)
    assert isinstance(res, NutsResult)
    assert res.positions.shape == (4, 1000, 2)
    assert res.diverging.sum() == 0
    assert not res.interrupted and res.n_draws_completed == 1000
    check_moments(res.positions, mean, np.diag(cov))
    # correlation
    x = res.positions.reshape(-1, 2)
    assert abs(np.corrcoef(x.T)[0, 1] - 0.9) < 0.03
    # Dual averaging drives the warm-up acceptance to the target ...
    assert abs(np.mean(warm_acc[100:]) - 0.8) < 0.05
    # ... while the final step size exp(x_bar) is a little smaller, so that (as in Stan) in very
    # low dimension the sampling acceptance ends up above the target (about 0.92 here).
    assert 0.75 < res.accept_stat.mean() < 0.96
    if metric == "dense":
        assert res.inverse_metric.shape == (4, 2, 2)
        # the adapted dense metric approximates the covariance
        np.testing.assert_allclose(res.inverse_metric.mean(0), cov, rtol=0.35, atol=0.35)
    else:
        assert res.inverse_metric.shape == (4, 2)


@pytest.mark.parametrize("metric", ["diag", "dense"])
def test_correlated_gaussian_5d(metric):
    rng = np.random.default_rng(3)
    D = 5
    A = rng.normal(size=(D, D))
    cov = A @ A.T / D + 0.2 * np.eye(D)
    mean = rng.normal(size=D) * 2
    z0 = rng.normal(size=(4, D))
    res = run_nuts(gaussian_potential(mean, cov), z0, warmup=500, draws=750, seed=5, metric=metric)
    assert res.diverging.sum() == 0
    check_moments(res.positions, mean, np.diag(cov))
    assert 0.75 < res.accept_stat.mean() < 0.95  # see the 2-D test
    # reported energies are consistent
    U = gaussian_potential(mean, cov)(res.positions.reshape(-1, D))[0].reshape(4, -1)
    np.testing.assert_allclose(res.potential_energy, U, rtol=1e-10, atol=1e-10)
    assert np.all(res.energy >= res.potential_energy - 1e-12)
    assert np.all(res.n_leapfrog >= 1)
    assert np.all((res.tree_depth >= 0) & (res.tree_depth <= 10))
    # n_leapfrog <= 2^depth + 2^depth - 1 (last, rejected subtree included)
    assert np.all(res.n_leapfrog <= 2 ** (res.tree_depth + 1) - 1)


# --------------------------------------------------------------------------- 2. ill-scaled


def test_ill_scaled_metric_adaptation():
    scales = np.logspace(-2, 2, 5)
    var = scales ** 2

    def fn(z):
        return 0.5 * np.sum(z * z / var, axis=1), z / var

    z0 = np.random.default_rng(1).normal(size=(2, 5)) * 0.01
    res = run_nuts(fn, z0, warmup=1000, draws=300, seed=2)
    ratio = res.inverse_metric / var
    assert np.all(np.abs(ratio - 1) < 0.3), ratio
    assert res.diverging.sum() == 0
    # after adaptation the problem is well conditioned: short trajectories
    assert res.tree_depth.mean() < 4
    check_moments(res.positions, np.zeros(5), var)


# --------------------------------------------------------------------------- 3. determinism


def test_determinism_and_batch_independence():
    fn = lambda z: (0.5 * np.sum(z * z, axis=1), z.copy())  # row-wise, exact arithmetic per row
    z0 = np.random.default_rng(0).normal(size=(3, 4))
    kw = dict(warmup=150, draws=100)
    a = run_nuts(fn, z0, seed=7, **kw)
    b = run_nuts(fn, z0, seed=7, **kw)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.step_size, b.step_size)
    np.testing.assert_array_equal(a.n_leapfrog, b.n_leapfrog)
    c = run_nuts(fn, z0, seed=8, **kw)
    assert not np.array_equal(a.positions, c.positions)
    # chain 0 run alone equals chain 0 run together with the others
    alone = run_nuts(fn, z0[:1], seed=7, **kw)
    np.testing.assert_array_equal(alone.positions[0], a.positions[0])
    np.testing.assert_array_equal(alone.inverse_metric[0], a.inverse_metric[0])
    # lock-step scheduling gives the same draws
    ls = run_nuts(fn, z0, seed=7, lockstep=True, **kw)
    np.testing.assert_array_equal(ls.positions, a.positions)
    np.testing.assert_array_equal(ls.tree_depth, a.tree_depth)
    assert ls.n_gradient_evals == a.n_gradient_evals
    assert ls.n_batched_calls >= a.n_batched_calls
    # chains differ from each other
    assert not np.array_equal(a.positions[0], a.positions[1])


# --------------------------------------------------------------------------- 4. infinite / NaN potential


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_infinite_region(bad):
    def fn(z):
        U = 0.5 * np.sum(z * z, axis=1)
        g = z.copy()
        out = z[:, 0] > 2.0
        U[out] = bad
        if np.isnan(bad):
            g[out] = np.nan
        return U, g

    z0 = np.zeros((2, 2))
    res = run_nuts(fn, z0, warmup=300, draws=1000, seed=4)
    assert res.diverging.sum() > 0
    assert np.all(res.positions[:, :, 0] <= 2.0)
    assert np.all(np.isfinite(res.positions))
    assert np.all(np.isfinite(res.potential_energy))
    # truncated normal N(0,1) on x <= 2: mean -phi(2)/Phi(2) ~ -0.0552 (loose check)
    assert abs(res.positions[:, :, 0].mean() + 0.0552) < 0.15
    assert abs(res.positions[:, :, 1].mean()) < 0.15


def test_initial_point_must_be_finite():
    fn = lambda z: (np.full(len(z), np.inf), np.zeros_like(z))
    with pytest.raises(ValueError):
        run_nuts(fn, np.zeros((2, 2)), warmup=10, draws=10, seed=0)


# --------------------------------------------------------------------------- 5. funnel


def test_funnel_divergences():
    """Centred eight schools (a funnel in (log tau, theta)): divergences are reported."""
    y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
    sig = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])

    def fn(z):
        mu, lt, th = z[:, 0], z[:, 1], z[:, 2:]
        tau2 = np.exp(2 * lt)
        d = th - mu[:, None]
        ss = np.sum(d * d, axis=1)
        U = (mu ** 2 / 50 + np.log1p(tau2 / 25) + 7 * lt + 0.5 * ss / tau2
             + 0.5 * np.sum(((th - y) / sig) ** 2, axis=1))
        g = np.empty_like(z)
        g[:, 0] = mu / 25 - np.sum(d, axis=1) / tau2
        g[:, 1] = 2 * (tau2 / 25) / (1 + tau2 / 25) + 7 - ss / tau2
        g[:, 2:] = d / tau2[:, None] + (th - y) / sig ** 2
        return U, g

    # gradient check
    z = np.random.default_rng(1).normal(size=(1, 10))
    num = [(fn(z + 1e-6 * e)[0] - fn(z - 1e-6 * e)[0])[0] / 2e-6 for e in np.eye(10)]
    np.testing.assert_allclose(num, fn(z)[1][0], atol=1e-6)

    z0 = np.random.default_rng(0).normal(size=(4, 10))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        res = run_nuts(fn, z0, warmup=250, draws=250, seed=1)
    assert res.diverging.sum() > 0
    assert np.all(np.isfinite(res.positions))
    assert np.all(res.n_leapfrog[res.diverging] >= 1)


# --------------------------------------------------------------------------- 6. progress, interrupt


def test_progress_callback():
    calls = []
    fn = lambda z: (0.5 * np.sum(z * z, axis=1), z.copy())
    res = run_nuts(fn, np.zeros((3, 2)), warmup=30, draws=20, seed=0,
                   progress=lambda i, n, info: calls.append((i, n, dict(info))))
    assert len(calls) == 50
    assert [c[0] for c in calls] == list(range(50))
    assert all(c[1] == 50 for c in calls)
    assert [c[2]["phase"] for c in calls] == ["warmup"] * 30 + ["sampling"] * 20
    assert all(isinstance(c[2]["divergences"], int) for c in calls)
    assert all(c[2]["step_size"] > 0 for c in calls)
    assert calls[-1][2]["step_size"] == pytest.approx(res.step_size.mean())


def test_keyboard_interrupt_during_sampling_returns_partial():
    fn = lambda z: (0.5 * np.sum(z * z, axis=1), z.copy())

    def progress(i, n, info):
        if i == 20 + 7:  # the 8th sampling iteration has completed
            raise KeyboardInterrupt

    res = run_nuts(fn, np.zeros((2, 3)), warmup=20, draws=50, seed=0, progress=progress)
    assert res.interrupted and res.n_draws_completed == 8
    assert res.positions.shape == (2, 8, 3)
    for arr in (res.potential_energy, res.energy, res.tree_depth, res.n_leapfrog, res.diverging,
                res.accept_stat):
        assert arr.shape == (2, 8)
    full = run_nuts(fn, np.zeros((2, 3)), warmup=20, draws=50, seed=0)
    np.testing.assert_array_equal(full.positions[:, :8], res.positions)

    # interrupt raised inside the potential, mid-iteration
    n = [0]

    def fn2(z):
        n[0] += 1
        if n[0] == full.n_batched_calls - 5:
            raise KeyboardInterrupt
        return fn(z)

    res2 = run_nuts(fn2, np.zeros((2, 3)), warmup=20, draws=50, seed=0)
    assert res2.interrupted and 0 < res2.n_draws_completed < 50
    np.testing.assert_array_equal(full.positions[:, :res2.n_draws_completed], res2.positions)


def test_keyboard_interrupt_during_warmup_reraises():
    fn = lambda z: (0.5 * np.sum(z * z, axis=1), z.copy())

    def progress(i, n, info):
        if i == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_nuts(fn, np.zeros((2, 3)), warmup=20, draws=50, seed=0, progress=progress)


# --------------------------------------------------------------------------- misc


def test_window_schedule_matches_stan():
    add, end = _window_schedule(1000, 75, 50, 25)
    assert list(np.flatnonzero(end)) == [99, 149, 249, 449, 949]
    assert add.sum() == 1000 - 75 - 50 and add[75] and not add[74] and not add[950]
    add, end = _window_schedule(100, 75, 50, 25)  # short warm-up: 15 / 75 / 10
    assert list(np.flatnonzero(end)) == [89]
    assert np.flatnonzero(add)[0] == 15
    add, end = _window_schedule(10, 75, 50, 25)
    assert not add.any() and not end.any()


def test_fixed_step_size_no_warmup():
    fn = lambda z: (0.5 * np.sum(z * z, axis=1), z.copy())
    res = run_nuts(fn, np.zeros((2, 2)), warmup=0, draws=200, seed=0, step_size=0.3, max_tree_depth=3)
    np.testing.assert_array_equal(res.step_size, [0.3, 0.3])
    assert res.tree_depth.max() <= 3
    assert np.all(res.n_leapfrog <= 2 ** 3 - 1)
    assert res.tree_depth.max() == 3  # hits the cap with this small step


@pytest.mark.parametrize("metric", ["diag", "dense"])
def test_stepsize_search_stays_near_a_steep_start(metric):
    # A narrow posterior (sd 0.01) and chains started 5 sd out: the gradient is 500. Stan's search
    # would try eps = 1 first, whose half kick throws the position 250 units (25,000 sd) away;
    # for an ODE model such points are stiff and cost seconds per solve. The search must stay near.
    sd = 0.01
    fn = gaussian_potential([0.0, 0.0], np.diag([sd ** 2, sd ** 2]))
    seen = []

    def recording(z):
        seen.append(np.abs(z).max())
        return fn(z)

    # warmup=0 without a step size runs the search alone; its result is the step size reported
    res = run_nuts(recording, np.full((2, 2), 5 * sd), warmup=0, draws=0, seed=3, metric=metric)
    assert max(seen) < 100 * sd
    # and the step size it finds is on the posterior's scale (leapfrog's stability limit is 2 sd)
    assert np.all(res.step_size > 0.5 * sd) and np.all(res.step_size < 5 * sd)
