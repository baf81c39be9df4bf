"""Library coefficients started from smoothed derivatives (STLSQ), and the Lorenz model's warm start."""

from pathlib import Path

import numpy as np
import pytest

import msml_dsl
from msml_dsl.inference.library_warm_start import derivative_fit, smooth_observed_states, stlsq, warm_starts
from msml_dsl.inference.runner import initial_points

ROOT = Path(__file__).resolve().parents[2]
LORENZ = ROOT / "models" / "lorenz_sysid"

DECAY = """
model decay_warm "Decay with its rate law unknown"
time t in [0, 6]
state x
param sigma ~ HalfNormal(0.1)
unknown f(x) : library(poly(x, degree=2), sparsity={sparsity})
equation der(x) = f(x)
init x = 2
data d = csv("d.csv")
observe d.x ~ {observation}
"""


def _decay(folder, sparsity="laplace(1)", observation="Normal(x, sigma)"):
    return msml_dsl.compile_source(DECAY.format(sparsity=sparsity, observation=observation), base_dir=folder)


def test_stlsq_drops_small_standardised_coefficients():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(200, 4))
    y = A @ np.array([3.0, 0.0, -2.0, 0.0]) + 0.01 * rng.normal(size=200)
    coef = stlsq(A, y, scales=np.ones(4), thresholds=np.full(4, 0.5))
    assert coef[1] == 0 and coef[3] == 0
    assert coef[0] == pytest.approx(3.0, abs=0.01) and coef[2] == pytest.approx(-2.0, abs=0.01)
    # the threshold acts on |coefficient| x scale: a large scale keeps a small coefficient
    keep = stlsq(A * [1, 1, 100, 1], y, scales=np.array([1, 1, 100, 1.0]), thresholds=np.full(4, 0.5))
    assert keep[2] == pytest.approx(-0.02, rel=0.01)
    drop = stlsq(A * [1, 1, 100, 1], y, scales=np.ones(4), thresholds=np.full(4, 0.5))
    assert drop[2] == 0


def test_decay_derivative_fit_finds_the_linear_rate(decay_data):
    m = _decay(decay_data)
    smoothed = smooth_observed_states(m.ir)
    assert set(smoothed) == {"x"} and smoothed["x"].residual_sd == pytest.approx(0.01, rel=0.5)
    fit = derivative_fit(m)["f"]
    labels = [c.label for c in m.ir.unknowns[0].candidates]
    assert fit[labels.index("x")] == pytest.approx(-0.5, abs=0.02)
    assert fit[labels.index("1")] == 0 and fit[labels.index("x^2")] == 0


@pytest.mark.parametrize("sparsity", ["laplace(1)", "horseshoe(1)", "spike_slab(0.2, 5)"])
def test_warm_starts_carry_the_fitted_coefficients_and_inits(decay_data, sparsity):
    m = _decay(decay_data, sparsity=sparsity)
    program = m.program
    prior = program.sample_prior(3, seed=2)
    z = program.to_unconstrained({k: prior[k] for k in program.layout})
    notes = []
    warm = warm_starts(program, z, notes)
    assert warm.shape == z.shape and notes and "smoothed derivatives" in notes[0]
    derived = program.evaluate_draws(program.to_constrained(warm), seed=1, predictive=False)["derived"]
    fit = derivative_fit(m)["f"]
    for k, c in enumerate(m.ir.unknowns[0].candidates):       # the write-back is exact for every prior
        assert np.allclose(derived[f"f[{c.label}]"], fit[k], atol=1e-9), (sparsity, c.label)
    values = program.to_constrained(warm)
    assert np.allclose(values["sigma"], smooth_observed_states(m.ir)["x"].residual_sd)
    assert np.isfinite(program.potential_and_grad(warm)[0]).all()


def test_map_from_derivatives_alone(decay_data):
    fit = _decay(decay_data).map(init="derivatives", starts=2)
    assert float(fit.derived["f[x]"]) == pytest.approx(-0.5, abs=0.02)


def test_no_warm_start_without_a_directly_observed_state(decay_data):
    m = _decay(decay_data, observation="Normal(2 * x, sigma)")
    assert derivative_fit(m) is None
    program = m.program
    assert warm_starts(program, np.zeros((2, program.dim))).shape == (0, program.dim)
    notes = []
    starts = initial_points(program, 2, "derivatives", seed=1, notes=notes)
    assert starts.shape == (2, program.dim)
    assert any("init=derivatives" in n for n in notes)


def test_lorenz_checks_and_its_warm_start_recovers_the_true_support():
    """The Lorenz model compiles (no ODE build), and STLSQ of its smoothed derivatives finds the 7 terms."""
    from tests.support.model_scripts import load_model_script

    TRUE_TERMS = load_model_script(LORENZ).TRUE_TERMS
    m = msml_dsl.compile_file(LORENZ / "model.msml")
    assert len(m.ir.ode.states) == 12 and [t.name for t in m.ir.unknowns] == ["fx", "fy", "fz"]
    fit = derivative_fit(m)
    for term in m.ir.unknowns:
        found = {c.label: float(v) for c, v in zip(term.candidates, fit[term.name]) if v != 0}
        assert set(found) == set(TRUE_TERMS[term.name]), term.name
        for label, truth in TRUE_TERMS[term.name].items():
            assert found[label] == pytest.approx(truth, rel=0.06), (term.name, label)
