"""Network (mlp) and GP weights started from smoothed derivatives, and the network Lotka-Volterra MAP."""

import sys
from pathlib import Path

import numpy as np
import pytest

import msml_dsl
from msml_dsl.diagnostics.identified import term_values
from msml_dsl.inference.network_warm_start import derivative_fit, warm_starts
from test_placements_and_priors import _compile     # the decay model with its term left open

ROOT = Path(__file__).resolve().parents[2]
_decay = _compile


def _relative_error(term, values: dict) -> float:
    x = np.linspace(0.15, 1.7, 50)          # inside the smoothed window of the data
    f = term_values(term, {k: np.asarray(v)[None] for k, v in values.items()}, [x])[0]
    return float(np.linalg.norm(f + 0.5 * x) / np.linalg.norm(0.5 * x))


def test_network_warm_start_recovers_the_decay_law(decay_data):
    m = _decay(decay_data, "mlp(hidden=[3], activation=tanh)")
    fit = derivative_fit(m)
    assert set(fit) == {"f_w"} and fit["f_w"].shape == (10,)
    assert _relative_error(m.ir.unknowns[0], fit) < 0.03


def test_gp_warm_start_rows_carry_the_fit(decay_data):
    m = _decay(decay_data, "gp(kernel=rbf, basis=12)")
    program = m.program
    prior = program.sample_prior(2, seed=2)
    values = {k: np.array(prior[k], dtype=float) for k in program.layout}
    values["f_amplitude"][:] = 1.0          # held at the start's value; the basis weights are fitted
    values["f_lengthscale"][:] = 0.7
    notes = []
    warm = warm_starts(program, program.to_unconstrained(values), notes)
    assert warm.shape == (2, program.dim) and notes and "smoothed derivatives" in notes[0]
    assert np.isfinite(program.potential_and_grad(warm)[0]).all()
    fitted = program.to_constrained(warm)
    assert np.allclose(fitted["sigma"], 0.01, rtol=0.5)        # the smoother's residual sd
    assert _relative_error(m.ir.unknowns[0], {k: v[0] for k, v in fitted.items()}) < 0.1


@pytest.mark.slow
def test_lotka_volterra_network_map_learns_the_predation():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lotka_volterra_unknown as bench

    compiled = msml_dsl.compile_file(bench.FOLDER / "network.msml")
    fit = compiled.run(method="map")
    draws = {k: np.asarray(v) for k, v in fit.draws.items()}
    term = next(t for t in compiled.ir.unknowns if t.name == "predation")
    assert bench.learned_term_error(term, draws)["rel_l2"] < 0.05
    assert float(np.ravel(draws["sigma"])[0]) == pytest.approx(0.05, rel=0.3)
