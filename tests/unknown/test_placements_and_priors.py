"""Unknown terms: the three placements, the horseshoe's parameterisations, a network's output scale, scope errors."""

import math

import numpy as np
import pytest
import sympy
from scipy import stats

import msml_dsl
from msml_dsl.errors import MsmlError

# decay_data (tests/unknown/conftest.py): x = 2 exp(-0.5 t) with noise sd 0.01, so f(x) = -0.5 x

DECAY = """
model decay_id "Decay with its rate law unknown"
time t in [0, 6]
state x
param sigma ~ HalfNormal(0.1)
unknown f(x) : {representation}
equation der(x) = f(x)
init x = 2
data d = csv("d.csv")
observe d.x ~ Normal(x, sigma)
"""


def _compile(folder, representation, text=DECAY):
    return msml_dsl.compile_source(text.format(representation=representation), base_dir=folder)


def _errors(folder, text):
    with pytest.raises(MsmlError) as info:
        msml_dsl.compile_source(text, base_dir=folder)
    return [(d.code, d.message, d.span.line, d.span.column) for d in info.value.diagnostics]


# ----------------------------------------------------------------------------- sparsity priors
def _coefficient_draws(m, n=40000, seed=5):
    """Prior draws of each candidate's standardised coefficient c_k s_k, from the program's own prior."""
    term = m.ir.unknowns[0]
    prior = m.program.sample_prior(n, seed)
    symbols = [e for p in term.parameters for e in p.elements]
    columns = [np.asarray(prior[p.name]).reshape(n, -1) for p in term.parameters]
    values = np.concatenate(columns, axis=1)
    out = []
    for c in term.candidates:
        fn = sympy.lambdify(symbols, c.coefficient * c.scale, "numpy")
        out.append(np.asarray(fn(*values.T), dtype=float))
    return prior, np.stack(out, axis=1)


def test_horseshoe_scales_are_half_cauchy(decay_data):
    m = _compile(decay_data, "library(x, x^2, sparsity=horseshoe(0.5))")
    names = {p.name: (p.distribution, tuple(float(a) if a.is_number else a for a in p.args)) for p in m.ir.parameters}
    assert names["f_tau"] == ("HalfCauchy", (0.5,)) and names["f_lambda"] == ("HalfCauchy", (1.0,))
    assert names["f_z1"][0] == "Normal" and names["f_z1"][1][0] == 0   # its scale is sqrt(tau lambda~_1)
    prior, coefficient = _coefficient_draws(m)
    # 40,000 draws: the quantiles' Monte Carlo sd is below 2 % of their values
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(prior["f_tau"], q) == pytest.approx(stats.halfcauchy(scale=0.5).ppf(q), rel=0.05)
    # partially centred: c_k s_k = sqrt(tau lambda_k) z_k with z_k ~ Normal(0, sqrt(tau lambda_k))
    scale = prior["f_tau"][:, None] * prior["f_lambda"]
    z = np.stack([prior["f_z1"], prior["f_z2"]], axis=1)
    assert np.allclose(coefficient, np.sqrt(scale) * z)
    # ... which is the horseshoe's Normal(0, tau lambda_k): z_k / sqrt(tau lambda_k) is standard normal
    u = (z / np.sqrt(scale)).ravel()
    assert stats.kstest(u, "norm").pvalue > 0.01


@pytest.mark.parametrize("slab_df", [None, 4])
def test_regularised_horseshoe_bounds_large_coefficients_by_its_slab(decay_data, slab_df):
    plain = _compile(decay_data, "library(x, x^2, sparsity=horseshoe(1))")
    option = "" if slab_df is None else f", slab_df={slab_df}"
    slab = _compile(decay_data, f"library(x, x^2, sparsity=horseshoe(1, slab_scale=2{option}))")
    extra = {p.name for p in slab.ir.parameters} - {p.name for p in plain.ir.parameters}
    assert extra == (set() if slab_df is None else {"f_slab"})
    prior, c_slab = _coefficient_draws(slab)
    _, c_plain = _coefficient_draws(plain)
    # tau * lambda_tilde < c: the coefficient (sqrt(tau lambda_tilde) z) is at most sqrt(c) |z|, where the
    # plain horseshoe's has no bound
    c = 2.0 if slab_df is None else 2 / np.sqrt(prior["f_slab"])[:, None]
    z = np.stack([prior["f_z1"], prior["f_z2"]], axis=1)
    assert np.all(np.abs(c_slab) <= np.sqrt(c) * np.abs(z) + 1e-12)
    assert np.quantile(np.abs(c_slab), 0.99) < 0.1 * np.quantile(np.abs(c_plain), 0.99)
    # near zero both shrink alike: the same share of small coefficients (Monte Carlo sd about 0.003)
    small = [np.mean(np.abs(v) < 0.05) for v in (c_slab, c_plain)]
    assert small[0] == pytest.approx(small[1], abs=0.02)
    if slab_df is not None:  # c^2 ~ InvGamma(nu/2, nu s^2/2): 1 / c^2 ~ Gamma(2, rate 8), mean 1/4
        assert np.mean(1 / c ** 2) == pytest.approx(0.25, rel=0.03)


@pytest.mark.slow
def test_regularised_horseshoe_nuts_recovers_the_rate_law(decay_data):
    # a horseshoe's mode is not where its mass is (MAP spreads the term over candidates): NUTS is the reading
    m = _compile(decay_data, "library(x, x^2, x^3, sparsity=horseshoe(0.1, slab_scale=1))")
    fit = m.sample(chains=2, warmup=300, draws=300, seed=2, target_accept=0.9)
    diverging = np.mean(fit.sample.sample_stats["diverging"])
    assert diverging < 0.02
    grid = np.linspace(0.1, 2.0, 50)
    values = fit.evaluate_unknown("f", x=grid).mean(axis=0)
    assert np.max(np.abs(values + 0.5 * grid)) < 0.03 * 0.5 * 2.0   # within 3 % of the largest rate
    identified = {c.label: c for c in fit.identified()[0].candidates}
    assert identified["x"].inclusion > 0.9 and identified["x^3"].inclusion < 0.5
    # the horseshoe's scales are judged through the coefficients and the function (I104)
    found = {w.code: w for w in fit.warnings()}
    assert "I104" in found and "f_lambda" in found["I104"].message
    assert "W101" not in found or "f_lambda" not in found["W101"].message


def test_sparsity_option_errors(decay_data):
    text = DECAY.format(representation="library(x, x^2, sparsity=laplace(1, slab_scale=2))")
    (code, message, *_), = _errors(decay_data, text)
    assert code == "E297" and "laplace() has no option 'slab_scale'" in message
    text = DECAY.format(representation="library(x, x^2, sparsity=horseshoe(1, slab_scale=0))")
    (code, message, *_), = _errors(decay_data, text)
    assert code == "E297" and "slab_scale must be positive" in message


# ----------------------------------------------------------------------------- network output scale
def test_network_output_is_scaled_by_the_states_rate_of_change(decay_data):
    m = _compile(decay_data, "mlp(hidden=[3])")
    term = m.ir.unknowns[0]
    data = np.loadtxt(decay_data / "d.csv", delimiter=",", skiprows=1)
    # 24 times: the sd of a GCV smoothing spline's derivative (plain differences would be mostly noise)
    from scipy.interpolate import make_smoothing_spline

    rate = np.std(make_smoothing_spline(data[:, 0], data[:, 1]).derivative()(data[:, 0]))
    assert rate == pytest.approx(np.std(np.diff(data[:, 1]) / np.diff(data[:, 0])), rel=0.2)
    w = [e for p in term.parameters for e in p.elements]
    # the last layer is linear: scaling its weights by s scales the term by s; with output bias 1 and
    # every other weight 0 the term is the output scale itself
    value = term.expression.xreplace({e: 0 for e in w[:-1]} | {w[-1]: 1})
    assert float(value) == pytest.approx(rate, rel=1e-9)
    assert any("scaled by" in n for n in term.notes)
    m = _compile(decay_data, "mlp(hidden=[3], output_scale=0.25)")
    term = m.ir.unknowns[0]
    w = [e for p in term.parameters for e in p.elements]
    assert float(term.expression.xreplace({e: 0 for e in w[:-1]} | {w[-1]: 1})) == pytest.approx(0.25)


# ----------------------------------------------------------------------------- the three placements
OBSERVED = """
model calibration "Known decay, unknown sensor response"
time t in [0, 6]
state x
param sigma ~ HalfNormal(0.1)
unknown response(x) : library(x, x^2, sparsity=normal(1))
equation der(x) = -0.5 * x
init x = 2
data d = csv("d.csv")
observe d.x ~ Normal(response(x), sigma)
"""

UPSTREAM = """
model upstream "A decay rate set by an unknown function of the temperature"
const T = 2
time t in [0, 6]
state x
param sigma ~ HalfNormal(0.1)
unknown rate(T) : library(T, T^2, sparsity=normal(1))
derive k = rate(T)
derive half_life = log(2) / k
equation der(x) = -k * x
init x = 2
data d = csv("d.csv")
observe d.x ~ Normal(x, sigma)
"""


def test_unknown_term_in_an_observation(tmp_path):
    rng = np.random.default_rng(4)
    t = np.linspace(0.25, 6, 24)
    y = 3 * (2 * np.exp(-0.5 * t))      # truth: response(x) = 3 x
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{b + 0.01 * rng.normal()}\n" for a, b in zip(t, y)))
    m = msml_dsl.compile_source(OBSERVED, base_dir=tmp_path)
    assert m.ir.ode.parameters == ()                 # the term is not in the dynamics
    fit = m.map(starts=2)
    assert fit.derived["response[x]"] == pytest.approx(3.0, abs=0.05)
    assert abs(fit.derived["response[x^2]"]) < 0.05


def test_unknown_term_upstream_of_a_parameter(decay_data):
    m = msml_dsl.compile_source(UPSTREAM, base_dir=decay_data)
    z1, z2 = (e for p in m.ir.parameters if p.name == "rate_z" for e in p.elements)
    assert m.ir.ode.rhs[0].free_symbols >= {z1, z2}  # the derived k is substituted into the dynamics
    fit = m.map(starts=2)
    assert fit.derived["k"] == pytest.approx(0.5, abs=0.01)
    assert fit.derived["half_life"] == pytest.approx(math.log(2) / fit.derived["k"], rel=1e-9)


def test_derived_quantities_feed_equations_initial_values_and_observations(decay_data):
    text = """
model uses "Derived quantities upstream of the dynamics"
time t in [0, 6]
state x
param log_k ~ Normal(0, 1)
param sigma ~ HalfNormal(0.1)
derive k = exp(log_k)
derive start = 2 * k / k
equation der(x) = -k * x
init x = start
data d = csv("d.csv")
observe d.x ~ Normal(x * k / k, sigma)
"""
    fit = msml_dsl.compile_source(text, base_dir=decay_data).map(starts=2)
    assert fit.derived["k"] == pytest.approx(0.5, abs=0.01)


# ----------------------------------------------------------------------------- scope
def test_unknown_term_inputs_must_be_in_scope(decay_data):
    text = DECAY.format(representation="library(x, x^2)").replace("unknown f(x)", "unknown f(xx)")
    text = text.replace("library(x, x^2)", "library(xx, xx^2)")
    (code, message, line, col), = _errors(decay_data, text)
    assert code == "E296" and "the input 'xx' of the unknown term 'f' is not in scope" in message
    assert (line, col) == (6, 11)
    text = DECAY.format(representation="library(x, x^2)").replace("unknown f(x)", "unknown f(x, x)") \
        .replace("f(x)\n", "f(x, x)\n")
    (code, message, *_), = _errors(decay_data, text)
    assert code == "E296" and "lists the input 'x' twice" in message
    text = DECAY.format(representation="library(d, d^2)").replace("unknown f(x)", "unknown f(d)")
    codes = [e[0] for e in _errors(decay_data, text)]
    assert "E296" in codes


def test_unknown_term_never_used_is_located(decay_data):
    text = DECAY.format(representation="library(x, x^2)").replace("equation der(x) = f(x)", "equation der(x) = -x")
    (code, message, line, col), = _errors(decay_data, text)
    assert (code, line, col) == ("E296", 6, 9) and "declared but never used" in message
