"""Unknown terms: their expansions, the GP approximation, identification and the rewritten model."""

import math

import numpy as np
import pytest
import sympy

import msml_dsl
from msml_dsl.diagnostics.identified import IdentifiedCandidate, IdentifiedTerm, rewrite_model

DECAY = """
model decay_id "Decay with its rate law unknown"
time t in [0, 6]
state x
param sigma ~ HalfNormal(0.1)
unknown f(x) : library({library}, sparsity={sparsity})
equation der(x) = f(x)
init x = 2
data d = csv("d.csv")
observe d.x ~ Normal(x, sigma)
"""


def _compile(folder, library="poly(x, degree=2)", sparsity="laplace(1)"):
    return msml_dsl.compile_source(DECAY.format(library=library, sparsity=sparsity), base_dir=folder)


def test_library_candidates_and_scales(decay_data):
    m = _compile(decay_data, library="poly(x, degree=2), fourier(x, n=1, period=4), x / (1 + x)")
    term = m.ir.unknowns[0]
    labels = [c.label for c in term.candidates]
    assert labels == ["1", "x", "x^2", "sin(pi*x/2)", "cos(pi*x/2)", "x/(x + 1)"]
    x = m.ir.observations[0].values
    assert term.candidates[1].scale == pytest.approx(np.std(x), rel=0.2)  # resampled data
    assert term.candidates[0].scale == 1.0
    names = [p.name for p in m.ir.parameters]
    assert "f_z" in names and m.ir.parameters[names.index("f_z")].shape == (6,)


def test_map_identifies_a_linear_rate_law(decay_data):
    fit = _compile(decay_data).map(starts=8)
    assert float(fit.derived["f[x]"]) == pytest.approx(-0.5, abs=0.03)
    identified = fit.identified()[0]
    assert [c.label for c in identified.included][:1] == ["x"] or "x" in [c.label for c in identified.included]
    text = fit.identified_model()
    assert "unknown f" not in text and "# identified by msml: f(x) =" in text
    assert "equation der(x) = (" in text
    # the rewritten model is a valid model file
    msml_dsl.compile_source(text, base_dir=decay_data)


def test_every_sparsity_prior_compiles_and_has_a_finite_density(decay_data):
    for sparsity in ("horseshoe(0.5)", "laplace(1)", "normal(2)", "spike_slab(0.2, 5)"):
        m = _compile(decay_data, sparsity=sparsity)
        program = m.program
        z = np.zeros((2, program.dim))
        u_fast, g_fast = program.potential_and_grad(z)
        u_ref, g_ref = program.reference_potential_and_grad(z)
        assert np.allclose(u_fast, u_ref, rtol=1e-8), sparsity
        assert np.allclose(g_fast, g_ref, rtol=1e-6, atol=1e-8), sparsity


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_hilbert_space_gp_matches_its_kernel(tmp_path, kernel):
    """The basis expansion's covariance is the kernel's, inside the data range (Riutort-Mayol et al.)."""
    (tmp_path / "d.csv").write_text("t,x\n1,1\n2,1\n")
    src = DECAY.replace("library({library}, sparsity={sparsity})", f"gp(kernel={kernel}, basis=40)")
    term = msml_dsl.compile_source(src, base_dir=tmp_path).ir.unknowns[0]
    ell, amp = sympy.Symbol("f_lengthscale", real=True), sympy.Symbol("f_amplitude", real=True)
    beta = term.parameters[-1].elements
    lo, hi = term.input_ranges[0]
    xs = np.linspace(lo, hi, 9)   # the whole data range, edges included
    basis = np.array([[float(term.expression.diff(b).subs({ell: 0.5, amp: 1.0, term.inputs[0]: x}))
                       for b in beta] for x in xs])
    cov = basis @ basis.T
    r = np.abs(xs[:, None] - xs[None, :]) / ((hi - lo) / 2)   # standardised distance
    if kernel == "rbf":
        exact = np.exp(-r ** 2 / (2 * 0.5 ** 2))
    else:
        s = math.sqrt(5) * r / 0.5
        exact = (1 + s + s ** 2 / 3) * np.exp(-s)
    assert np.abs(cov - exact).max() < 0.03


def test_rewrite_replaces_calls_with_their_arguments(tmp_path):
    from msml_dsl.syntax.parser import parse

    src = "model m\ntime t in [0, 1]\nstate a, b\nunknown g(a, b) : library(a*b)\n" \
          "equation der(a) = -g(a, b)\nequation der(b) = g(2 * a, b) - b\ninit a = 1\ninit b = 1\n"
    term = IdentifiedTerm("g", ("a", "b"), (IdentifiedCandidate("a*b", 0.25, 0.2, 0.3, 0.99),
                                            IdentifiedCandidate("a", 0.001, -0.01, 0.01, 0.1)), 0.1)
    text = rewrite_model(parse(src, "m.msml"), [term])
    assert "equation der(a) = -(0.25 * a*b)" in text
    assert "equation der(b) = (0.25 * (2 * a)*b) - b" in text
    assert "# identified by msml: g(a, b) = 0.25 * a*b" in text
