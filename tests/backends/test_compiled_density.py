"""The compiled log density equals the Pyro model's (density and gradient), and matches SciPy."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import msml_dsl

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["lotka_volterra", "sir_influenza", "theophylline_pk"]


@pytest.mark.parametrize("name", MODELS)
def test_fast_path_equals_pyro_model(name):
    model = msml_dsl.compile_file(ROOT / "models" / name / "model.msml", device="cpu")
    program = model.program
    assert program.fast is not None
    prior = program.sample_prior(6, seed=11)
    z = program.to_unconstrained({k: prior[k] for k in program.layout})
    for jacobian in (True, False):
        u_fast, g_fast = program.potential_and_grad(z, jacobian)
        u_ref, g_ref = program.reference_potential_and_grad(z, jacobian)
        finite = np.isfinite(u_ref)
        assert finite.sum() >= 3
        np.testing.assert_allclose(u_fast[finite], u_ref[finite], rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(g_fast[finite], g_ref[finite], rtol=1e-8, atol=1e-8)
    if name == "sir_influenza":
        # constant initial values get no compiled kernel; without explicit time neither does t_deriv
        assert "def inits(" not in program.fast.source
        assert program.system.t_deriv is program.system.f_jac


SRC = """model demo
param mu ~ Normal(1, 2) [lower=0]
param s ~ Gamma(2, 3)
param w ~ Beta(2, 5)
param k[2] ~ StudentT(4, 0, 1.5)
param r ~ Uniform(-1, 3)
param v ~ InverseGamma(3, 2)
data d = csv("demo.csv")
observe d.y ~ Normal(mu + k[1] * d.x, s)
observe d.n ~ NegBinomial2(exp(k[2]) + 1, 1 / w)
observe d.c ~ Poisson(mu + 0.5)
"""


def test_log_density_matches_scipy(tmp_path):
    (tmp_path / "demo.csv").write_text("x,y,n,c\n0.5,1.2,3,1\n1.0,,7,0\n2.0,0.3,0,4\n")
    model = msml_dsl.compile_source(SRC, name="demo.msml", base_dir=tmp_path, device="cpu")
    program = model.program
    values = {"mu": np.array([0.7]), "s": np.array([0.9]), "w": np.array([0.3]),
              "k": np.array([[0.2, -0.4]]), "r": np.array([1.1]), "v": np.array([0.8])}
    z = program.to_unconstrained(values)
    u, _ = program.potential_and_grad(z, jacobian=False)
    u_ref, _ = program.reference_potential_and_grad(z, jacobian=False)
    x = np.array([0.5, 1.0, 2.0])
    expected = (stats.norm(1, 2).logpdf(0.7) - math.log(stats.norm(1, 2).sf(0))
                + stats.gamma(2, scale=1 / 3).logpdf(0.9) + stats.beta(2, 5).logpdf(0.3)
                + stats.t(4, 0, 1.5).logpdf([0.2, -0.4]).sum() + stats.uniform(-1, 4).logpdf(1.1)
                + stats.invgamma(3, scale=2).logpdf(0.8)
                + stats.norm(0.7 + 0.2 * x[[0, 2]], 0.9).logpdf([1.2, 0.3]).sum())
    mean, phi = math.exp(-0.4) + 1, 1 / 0.3
    expected += stats.nbinom(phi, phi / (mean + phi)).logpmf([3, 7, 0]).sum()
    expected += stats.poisson(1.2).logpmf([1, 0, 4]).sum()
    assert -u[0] == pytest.approx(expected, rel=1e-10)
    assert -u_ref[0] == pytest.approx(expected, rel=1e-10)


def test_gradient_matches_finite_differences(tmp_path):
    (tmp_path / "demo.csv").write_text("x,y,n,c\n0.5,1.2,3,1\n1.0,,7,0\n2.0,0.3,0,4\n")
    program = msml_dsl.compile_source(SRC, name="demo.msml", base_dir=tmp_path, device="cpu").program
    z = np.random.default_rng(0).normal(size=(1, program.dim)) * 0.5
    _, g = program.potential_and_grad(z)
    h = 1e-6
    fd = np.array([(program.potential_and_grad(z + h * e)[0] - program.potential_and_grad(z - h * e)[0])[0] / (2 * h)
                   for e in np.eye(program.dim)])
    np.testing.assert_allclose(g[0], fd, rtol=1e-5, atol=1e-6)


def test_kernels_are_cached_on_disk_and_fall_back_without_a_cache(tmp_path, monkeypatch):
    import ctypes

    from msml_dsl.backends.pyro.compiled_density import load_cfuncs

    source = "def prior(x, lp, gx, _a3, _a4):\n    lp[0] = x[0] * 2.0\n    gx[0] = 2.0\n    return\n"
    ptr = ctypes.POINTER(ctypes.c_double)

    def call(kernel, value):
        x, lp, gx = np.array([value]), np.zeros(1), np.zeros(1)
        kernel.ctypes(*[a.ctypes.data_as(ptr) for a in (x, lp, gx, lp, lp)])
        return lp[0], gx[0]

    monkeypatch.setenv("MSML_CACHE_DIR", str(tmp_path / "cache"))
    (prior,) = load_cfuncs(source, ("prior",))
    assert call(prior, 3.0) == (6.0, 2.0)
    assert len(list((tmp_path / "cache" / "kernels").glob("msml_density_*.py"))) == 1
    load_cfuncs(source, ("prior",))  # same source: the same file is reused
    assert len(list((tmp_path / "cache" / "kernels").glob("msml_density_*.py"))) == 1
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("MSML_CACHE_DIR", str(blocker))
    (prior,) = load_cfuncs(source, ("prior",))
    assert call(prior, 1.5) == (3.0, 2.0)


FORCED = """model forced
time t in [0, 4]
state y, z
param k ~ LogNormal(0, 0.5)
param a ~ Normal(0, 1)
param b ~ Normal(a, 1) [lower=0]
param y0 ~ LogNormal(0, 0.3)
param s ~ HalfNormal(0.5)
param w[2] ~ Normal(0, 1)
equation der(y) = -k * y + a * sin(t) + w[2] * z
equation der(z) = -z + b
init y = y0
init z = 1
data d = csv("d.csv", t = time)
observe d.obs ~ Normal(y + w[1] * d.x, s)
observe d.count ~ Poisson(exp(z) + y * y)
observe d.zobs ~ Normal(z + w[1] * d.x, s)
"""


def test_fast_path_with_explicit_time_covariates_and_parameter_initial_values(tmp_path):
    """The generic density core with per-statement kernels: time in the right-hand side (t_deriv),
    an initial value that is a parameter (its kernel and the S0 chain rule), a covariate, a missing
    value, three observation statements (two of which differ only in the state, so they share a kernel)
    and a truncated prior whose normaliser depends on a parameter."""
    (tmp_path / "d.csv").write_text("time,x,obs,count,zobs\n0.5,0.1,1.1,2,1.3\n1.0,0.4,,1,1.1\n2.0,-0.3,0.7,0,\n"
                                    "3.5,1.2,0.2,3,0.8\n")
    program = msml_dsl.compile_source(FORCED, name="forced.msml", base_dir=tmp_path, device="cpu").program
    assert program.fast is not None and program.system.has_time
    assert "def inits(" in program.fast.source and program.system.t_deriv is not program.system.f_jac
    assert program.fast.source.count("def obs") == 2
    prior = program.sample_prior(6, seed=3)
    z = program.to_unconstrained({k: prior[k] for k in program.layout})
    for jacobian in (True, False):
        u_fast, g_fast = program.potential_and_grad(z, jacobian)
        u_ref, g_ref = program.reference_potential_and_grad(z, jacobian)
        assert np.isfinite(u_ref).all()
        np.testing.assert_allclose(u_fast, u_ref, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(g_fast, g_ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name,args", [("Normal", [2.0, 1.0]), ("Normal", [-3.0, 0.2]), ("LogNormal", [0.0, 1.0]),
                                       ("HalfNormal", [2.0]), ("HalfCauchy", [1.5]), ("Exponential", [5.0]),
                                       ("Cauchy", [1.0, 2.0]), ("Uniform", [-1.0, 3.0]), ("Gamma", [2.0, 3.0]),
                                       ("InverseGamma", [3.0, 2.0])])
def test_constant_truncation_normalisers_match_scipy(name, args):
    """The closed-form CDFs (which spare importing scipy.stats) agree with SciPy's."""
    from msml_dsl.backends.pyro.distributions import _scipy_log_normalizer, constant_log_normalizer

    for low, high in [(0.0, None), (None, 1.0), (0.5, 2.0), (-0.5, None), (1.0, 1.5), (-2.0, 10.0)]:
        ref = _scipy_log_normalizer(name, args, low, high)
        got = constant_log_normalizer(name, args, low, high)
        if math.isinf(ref):  # SciPy's cdf rounds a far tail's mass to 0; the survival function does not
            assert got <= -50 or math.isinf(got)
        else:
            assert got == pytest.approx(ref, rel=1e-12, abs=1e-14)


DECAY = """model decay
time t in [0, 10]
state x
param k ~ LogNormal(0, 1)
equation der(x) = -k * x
init x = 1
data d = csv("decay.csv")
observe d.x ~ Normal(x, 0.05)
solver rk45(rtol=1e-6, atol=1e-8)
"""


def test_a_solve_far_outside_the_posterior_is_abandoned_at_the_step_budget(tmp_path):
    """At k = 1e13 the explicit solver would grind through all 100,000 steps; the budget (50 x the
    median of the solves so far, at least 5,000) gives it up and the density is -inf."""
    (tmp_path / "decay.csv").write_text("t,x\n1,0.37\n5,0.007\n10,0.0\n")
    program = msml_dsl.compile_source(DECAY, name="decay.msml", base_dir=tmp_path, device="cpu").program
    density = program.fast
    z_typical = np.array([[0.0], [0.1], [-0.1]])            # log k near 0: tens of steps
    u_before, _ = program.potential_and_grad(z_typical)
    assert np.isfinite(u_before).all()
    assert density.step_cap == density.STEP_BUDGET_FLOOR
    u, g = program.potential_and_grad(np.array([[30.0], [0.0]]))
    assert np.isinf(u[0]) and u[0] > 0 and np.isfinite(u[1])
    assert density.abandoned_solves == 1
    assert density.system.last_nsteps[0] <= density.STEP_BUDGET_FLOOR + 1
    u_after, _ = program.potential_and_grad(z_typical)        # nothing else changes
    np.testing.assert_array_equal(u_after, u_before)
    program.reset_step_budget()                                 # each fit starts afresh (same seed, same draws)
    assert density.step_cap == 100_000 and density.abandoned_solves == 0
