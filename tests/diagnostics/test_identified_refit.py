"""Select, then refit: the identified model with its kept coefficients re-estimated (identified.py).

The fit a refit file comes from is faked by draws (the selection: x kept, 1 and x^2 dropped), so
the test costs three compilations of a one-state ODE and two MAPs.
"""

import numpy as np
import pytest

import msml_dsl
from msml_dsl.diagnostics.identified import identify_terms, rewrite_model
from msml_dsl.syntax.parser import parse

DECAY = """model decay_id "Decay with its rate law unknown"
time t in [0, 6]
state x
param sigma ~ HalfNormal(0.1)
unknown f(x) : library(poly(x, degree=2), sparsity=spike_slab(0.2, 5), threshold=0.05)
equation der(x) = f(x)
init x = 2
data d = csv("d.csv")
observe d.x ~ Normal(x, sigma)
infer nuts(chains=2, warmup=50, draws=50, init=derivatives)
"""


@pytest.fixture
def selection(tmp_path):
    """The decay model (truth f(x) = -0.5 x, noise sd 0.01) and its library term identified from
    draws that keep x only (medians -0.48, spurious 1 and x^2 at -0.01 and 0.003)."""
    rng = np.random.default_rng(3)
    t = np.linspace(0.25, 6, 24)
    x = 2 * np.exp(-0.5 * t)
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{b + 0.01 * rng.normal()}\n" for a, b in zip(t, x)))
    model = msml_dsl.compile_source(DECAY, name="decay.msml", base_dir=tmp_path)
    draws = {"f[1]": rng.normal(-0.01, 0.002, 200), "f[x]": rng.normal(-0.48, 0.01, 200),
             "f[x^2]": rng.normal(0.003, 0.001, 200)}
    return model, identify_terms(model.ir, draws), tmp_path


def test_refit_as_a_library_of_the_kept_candidates_recovers_the_coefficient(selection):
    model, terms, folder = selection
    term = terms[0]
    assert [c.label for c in term.included] == ["x"] and term.slab == 5
    assert term.included[0].scale == pytest.approx(model.ir.unknowns[0].candidates[1].scale)
    text = rewrite_model(model.checked.program, terms, refit="library")
    assert "unknown f(x) : library(x, sparsity=normal(5), threshold=0.05)" in text
    assert "equation der(x) = f(x)" in text and "init=derivatives" in text      # the warm start still applies
    refit = msml_dsl.compile_source(text, base_dir=folder).map(init="derivatives")
    assert float(refit.derived["f[x]"]) == pytest.approx(-0.5, rel=0.02)         # not the selection's -0.48


def test_refit_with_one_parameter_per_kept_coefficient(selection):
    model, terms, folder = selection
    s = terms[0].included[0].scale
    text = rewrite_model(model.checked.program, terms, refit="parameters")
    assert f"param f_x ~ Normal(0, {5 / s:.4g})" in text                        # the slab over the data sd
    assert "unknown f" not in text and "equation der(x) = (f_x * x)" in text
    assert "init=map)" in text and "init=derivatives)" not in text             # nothing left to start from
    refit = msml_dsl.compile_source(text, base_dir=folder).map()
    assert float(refit.values["f_x"]) == pytest.approx(-0.5, rel=0.02)


def test_refit_rewrites_names_data_paths_and_dropped_terms(tmp_path):
    src = ("model m\ntime t in [0, 1]\nstate a, b\nparam g_a ~ Normal(0, 1)\n"
           "unknown g(a, b) : library(poly(a, b, degree=2))\nunknown h(a) : library(poly(a, degree=1))\n"
           "equation der(a) = -g(a, b) + g_a\nequation der(b) = g(2 * a, b) - b + h(a)\ninit a = 1\ninit b = 1\n"
           'data d = csv("d.csv")\nobserve d.a ~ Normal(a, 0.1)\n')
    program = parse(src, str(tmp_path / "models" / "m.msml"))
    from msml_dsl.diagnostics.identified import IdentifiedCandidate, IdentifiedTerm
    g = IdentifiedTerm("g", ("a", "b"), (IdentifiedCandidate("1", 0.3, 0.2, 0.4, 0.9, 1.0),
                                         IdentifiedCandidate("a", 0.2, 0.1, 0.3, 0.95, 2.0),
                                         IdentifiedCandidate("a*b", 0.25, 0.2, 0.3, 0.99, 4.0)), 0.1, None)
    h = IdentifiedTerm("h", ("a",), (IdentifiedCandidate("a", 0.001, -0.01, 0.01, 0.1, 1.0),), 0.1, 2.0)
    text = rewrite_model(program, [g, h], refit="parameters", folder=tmp_path / "runs" / "r1")
    # name clash with the model's own g_a; the horseshoe (no slab) takes 10 x the largest contribution
    assert "param g_const ~ Normal(0, 10)" in text and "param g_a_2 ~ Normal(0, 5)" in text
    assert "equation der(b) = (g_const + g_a_2 * (2 * a) + g_a_b * (2 * a)*b) - b + (0)" in text
    assert 'csv("../../models/d.csv")' in text                                   # resolves from the run folder
    library = rewrite_model(program, [g, h], refit="library")
    assert "unknown g(a, b) : library(1, a, a*b, sparsity=normal(10), threshold=0.1)" in library
    assert "unknown h" not in library and "+ (0)" in library
    with pytest.raises(ValueError):
        rewrite_model(program, [g], refit="numbers")
