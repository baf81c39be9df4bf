"""Exact Gaussian processes: gp terms evaluated only at inputs known from the data (ir/exact_gp.py)."""

import json

import numpy as np
import pytest

import msml_dsl
from msml_dsl.errors import MsmlError

# A decay observed through a sensor whose offset drifts over time: the drift is the unknown term,
# called at the observation times (data), so it is an exact GP.
DRIFT = """
model drift "Decay seen through a drifting sensor"
time t in [0, 6]
state x
param k ~ LogNormal(0, 1)
param sigma ~ HalfNormal(0.1)
unknown drift(t) : gp({options})
equation der(x) = -k * x
init x = 2
data d = csv("d.csv")
observe d.x ~ Normal(x + drift(t), {noise})
"""


@pytest.fixture
def drift_data(tmp_path):
    rng = np.random.default_rng(1)
    t = np.linspace(0.25, 6, 12)
    y = 2 * np.exp(-0.5 * t) + 0.1 * np.sin(t) + 0.01 * rng.normal(size=t.size)
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{b}\n" for a, b in zip(t, y)))
    return tmp_path


def _compile(folder, options="kernel=rbf", noise="sigma", text=DRIFT):
    return msml_dsl.compile_source(text.format(options=options, noise=noise), base_dir=folder)


def _rbf(a, b, amplitude, ell, half_width, centre):
    d = ((a[:, None] - centre) - (b[None, :] - centre)) / half_width
    return amplitude ** 2 * np.exp(-0.5 * (d / ell) ** 2)


def test_a_gp_called_at_data_inputs_is_exact_and_one_in_the_dynamics_is_a_basis(drift_data):
    m = _compile(drift_data)
    (term,) = m.ir.unknowns
    assert term.exact is not None and len(term.exact.points) == 12
    assert {p.name for p in m.ir.parameters} >= {"drift_amplitude", "drift_lengthscale", "drift_z"}
    assert "drift_beta" not in {p.name for p in m.ir.parameters}
    shown = {p["name"]: p["prior"] for p in json.loads(m.ir.to_json())["parameters"]}
    assert shown["drift_z"] == "MultivariateNormal(0, drift_amplitude^2 rbf(drift_lengthscale)) at 12 points"
    (obs,) = m.ir.observations
    assert len(obs.gathers) == 1 and sorted(next(iter(obs.gathers.values()))[1]) == list(range(12))
    basis = _compile(drift_data, "kernel=rbf, method=basis")
    assert basis.ir.unknowns[0].exact is None
    assert "drift_beta" in {p.name for p in basis.ir.parameters}
    in_dynamics = DRIFT.replace("equation der(x) = -k * x", "equation der(x) = -k * x + drift(t)")
    assert _compile(drift_data, text=in_dynamics).ir.unknowns[0].exact is None   # auto: along the solution


def test_exact_gp_prior_has_the_kernel_covariance(drift_data):
    # hyperparameters pinned by narrow priors; the sensor noise 0.001: the prior predictive's
    # covariance across rows is amplitude^2 K(t, t') + 0.001^2 I
    m = _compile(drift_data, "kernel=rbf, amplitude=LogNormal(-0.693147, 0.0001), "
                             "lengthscale=LogNormal(-0.693147, 0.0001)", noise="0.001",
                 text=DRIFT.replace("param k ~ LogNormal(0, 1)", "param k ~ LogNormal(-0.693147, 0.0001)"))
    spec = m.ir.unknowns[0].exact
    n = 20000
    prior = m.program.sample_prior(n, seed=3)
    t = np.linspace(0.25, 6, 12)
    residual = prior["d.x"] - 2 * np.exp(-0.5 * t)
    empirical = np.cov(residual, rowvar=False)
    expected = _rbf(t, t, 0.5, 0.5, spec.half_width[0], spec.centre[0]) + 1e-6 * np.eye(12)
    # each entry's Monte Carlo sd is at most amplitude^2 sqrt(2 / n) = 0.0025
    assert np.max(np.abs(empirical - expected)) < 4 * 0.25 * np.sqrt(2 / n)
    assert np.abs(residual.mean(axis=0)).max() < 4 * 0.5 / np.sqrt(n)


@pytest.mark.parametrize("parametrisation", ["centred", "noncentred"])
def test_exact_gp_density_matches_an_independent_computation(drift_data, parametrisation):
    import pyro
    import torch
    from scipy import stats

    m = _compile(drift_data, f"kernel=matern52, parametrisation={parametrisation}")
    assert m.ir.unknowns[0].exact.centred == (parametrisation == "centred")
    spec = m.ir.unknowns[0].exact
    rng = np.random.default_rng(0)
    z = rng.normal(scale=0.5, size=(3, m.program.dim))
    values = m.program.to_constrained(z)
    out = m.program.evaluate_draws(values, seed=0, predictive=False)
    data = np.loadtxt(drift_data / "d.csv", delimiter=",", skiprows=1)
    for i in range(3):
        f = spec.values_at_points(values["drift_amplitude"][i], values["drift_lengthscale"][i], values["drift_z"][i])
        x = 2 * np.exp(-values["k"][i] * data[:, 0])
        expected = stats.norm(x + f, values["sigma"][i]).logpdf(data[:, 1])
        assert np.allclose(out["log_likelihood"]["d.x"][i], expected, rtol=1e-6, atol=1e-6)
    # the conditional at the data's own inputs is the values there
    f = spec.values_at_points(0.7, 0.4, values["drift_z"][0])
    assert np.allclose(spec.predict(spec.points, 0.7, 0.4, values["drift_z"][0]), f, atol=1e-5)
    # the prior density of the values: centred, NAME_z ~ MultivariateNormal(0, a^2 (C + jitter I))
    conditioned = pyro.poutine.condition(m.program.model, {k: torch.as_tensor(v) for k, v in values.items()})
    trace = pyro.poutine.trace(conditioned).get_trace(3)
    logp = trace.nodes["drift_z"]["fn"].log_prob(trace.nodes["drift_z"]["value"]).numpy()
    for i in range(3):
        a, ell, z = values["drift_amplitude"][i], values["drift_lengthscale"][i], values["drift_z"][i]
        C = spec.unit_kernel(spec.points, spec.points, ell) + spec.jitter * np.eye(len(spec.points))
        expected = (stats.multivariate_normal(np.zeros(len(z)), a ** 2 * C).logpdf(z) if spec.centred
                    else stats.norm().logpdf(z).sum())
        assert logp[i] == pytest.approx(expected, rel=1e-8)


def test_exact_gp_upstream_of_a_parameter_per_experiment(tmp_path):
    # each run's decay rate is an unknown function of its temperature: three temperatures, three points
    rng = np.random.default_rng(2)
    rows = []
    for run, temp in enumerate((290.0, 300.0, 310.0), start=1):
        k = 0.2 + 0.01 * (temp - 290)
        for t in np.linspace(0.5, 6, 10):
            rows.append(f"{run},{temp},{t},{2 * np.exp(-k * t) + 0.01 * rng.normal()}\n")
    (tmp_path / "runs.csv").write_text("run,temp,t,x\n" + "".join(rows))
    text = """
model arrhenius "Decay rates as an unknown function of temperature"
const T = 300
time t in [0, 6]
state x
param sigma ~ HalfNormal(0.1)
unknown rate(T) : gp(kernel=rbf, amplitude=HalfNormal(0.5))
experiment run = runs.run
derive k = exp(rate(runs.temp) - 1.2)
equation der(x) = -k * x
init x = 2
data runs = csv("runs.csv")
observe runs.x ~ Normal(x, sigma)
"""
    m = msml_dsl.compile_source(text, base_dir=tmp_path)
    term = m.ir.unknowns[0]
    assert term.exact is not None and sorted(term.exact.points[:, 0]) == [290.0, 300.0, 310.0]
    assert set(term.exact.value_symbols) <= set(m.ir.ode.parameters)
    fit = m.map(starts=2, seed=1)
    for run, temp in enumerate((290.0, 300.0, 310.0), start=1):
        assert fit.derived[f"k[run={run}]"] == pytest.approx(0.2 + 0.01 * (temp - 290), rel=0.05)


def test_chains_of_an_exact_gp_model_start_from_prior_draws(drift_data):
    # no optimisation: the starts are the prior's own draws (init=map is replaced, with a note), and
    # init=prior for any model returns prior draws (it used to run the optimiser too)
    from msml_dsl.inference.runner import initial_points

    for text, how in ((DRIFT.format(options="kernel=rbf", noise="sigma"), "map"),
                      (DRIFT.replace("unknown drift(t) : gp({options})\n", "").replace(" + drift(t)", "")
                       .format(noise="sigma"), "prior")):
        m = msml_dsl.compile_source(text, base_dir=drift_data)
        notes: list[str] = []
        starts = initial_points(m.program, 3, how, seed=4, notes=notes)
        prior = m.program.sample_prior(16, seed=4)
        expected = m.program.to_unconstrained({k: prior[k] for k in m.program.layout})[:3]
        assert np.allclose(starts, expected)
        assert (how == "map") == any("init=prior" in n for n in notes)


def test_exact_gp_errors(drift_data):
    in_dynamics = DRIFT.replace("equation der(x) = -k * x", "equation der(x) = -k * x + drift(x)")
    with pytest.raises(MsmlError) as info:
        _compile(drift_data, "kernel=rbf, method=exact", text=in_dynamics)
    (d,) = info.value.diagnostics
    assert d.code == "E316" and "drift(x)" in d.message and "method=basis" in d.help
    with pytest.raises(MsmlError) as info:
        _compile(drift_data, "kernel=rbf, method=exakt")
    (d,) = info.value.diagnostics
    assert d.code == "E262" and "exact" in d.help


def test_time_in_an_observation_formula_is_each_rows_time(drift_data):
    # a linear drift written with the time itself: the compiled density and the Pyro program agree
    text = DRIFT.replace("unknown drift(t) : gp({options})\n", "param c ~ Normal(0, 1)\n").replace(
        "drift(t)", "c * t")
    m = msml_dsl.compile_source(text.format(noise="sigma"), base_dir=drift_data)
    assert m.program.fast is not None
    z = np.random.default_rng(1).normal(scale=0.3, size=(3, m.program.dim))
    u_fast, g_fast = m.program.potential_and_grad(z)
    u_ref, g_ref = m.program.reference_potential_and_grad(z)
    assert np.allclose(u_fast, u_ref, rtol=1e-9) and np.allclose(g_fast, g_ref, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_exact_gp_posterior_matches_gp_regression(tmp_path):
    # y = f(t) + noise with known noise sd and hyperparameters held within 1 % by their priors: f's
    # posterior at new inputs is the textbook GP regression posterior (Rasmussen & Williams 2006,
    # eq. 2.25-2.26) to well within the Monte Carlo error
    rng = np.random.default_rng(5)
    t = np.linspace(0.5, 5.5, 8)
    y = np.sin(t) + 0.1 * rng.normal(size=t.size)
    (tmp_path / "d.csv").write_text("t,y\n" + "".join(f"{a},{b}\n" for a, b in zip(t, y)))
    text = """
model regression "GP regression through the language"
time t in [0, 6]
state x
equation der(x) = 0
init x = 0
unknown f(t) : gp(kernel=rbf, amplitude=LogNormal(0, 0.01), lengthscale=LogNormal(-0.693147, 0.01))
data d = csv("d.csv")
observe d.y ~ Normal(x + f(t), 0.1)
"""
    m = msml_dsl.compile_source(text, base_dir=tmp_path)
    spec = m.ir.unknowns[0].exact
    fit = m.sample(chains=4, warmup=500, draws=500, seed=1)
    grid = np.array([1.0, 2.2, 3.0, 4.7])
    draws = fit.evaluate_unknown("f", t=grid)
    K = _rbf(t, t, 1.0, 0.5, spec.half_width[0], spec.centre[0])
    Ks = _rbf(grid, t, 1.0, 0.5, spec.half_width[0], spec.centre[0])
    A = np.linalg.solve(K + 0.01 * np.eye(8), np.eye(8))
    mean = Ks @ A @ y
    sd = np.sqrt(np.diag(_rbf(grid, grid, 1.0, 0.5, spec.half_width[0], spec.centre[0]) - Ks @ A @ Ks.T))
    # 400 of the 2,000 draws are evaluated; with their autocorrelation the mean's Monte Carlo sd is
    # below sd / sqrt(100)
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 4 * sd / 10)
    assert np.allclose(draws.std(axis=0), sd, rtol=0.25)


@pytest.mark.parametrize("kernel", ["rbf", "matern32", "matern52", "periodic"])
def test_kernels_agree_between_numpy_and_torch_and_with_their_formulas(kernel):
    import torch

    from msml_dsl.symbolic.unknown_terms import kernel_from_differences

    diff = np.linspace(-2, 2, 9)[:, None]
    ell, period = 0.7, 1.5
    r = np.abs(diff[:, 0]) / ell
    expected = {"rbf": np.exp(-r ** 2 / 2), "matern32": (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r),
                "matern52": (1 + np.sqrt(5) * r + 5 * r ** 2 / 3) * np.exp(-np.sqrt(5) * r),
                "periodic": np.exp(-2 * np.sin(np.pi * np.abs(diff[:, 0]) / period) ** 2 / ell ** 2)}[kernel]
    got = kernel_from_differences(kernel, diff, ell, period, np)
    t = torch.tensor(diff, dtype=torch.float64, requires_grad=True)
    got_torch = kernel_from_differences(kernel, t, torch.tensor(ell, dtype=torch.float64), period, torch)
    assert np.allclose(got, expected, rtol=1e-12) and np.allclose(got_torch.detach().numpy(), expected, rtol=1e-12)
    (grad,) = torch.autograd.grad(got_torch.sum(), t)
    assert torch.isfinite(grad).all()      # including at zero distance
