"""Fidelity models: lowering errors (E299, E309, E303), the IR, the exact-GP pieces against numpy."""

import json
import math

import numpy as np
import pytest
import torch

from msml_dsl.api import compile_source
from msml_dsl.errors import MsmlError

TWO_LEVELS = """model mf "two levels"
space x in [0, 1]
unknown f_lo(x) : gp(kernel=rbf)
unknown delta(x) : gp(kernel=rbf)
param rho ~ Normal(1, 1)
param s ~ HalfNormal(0.1)
fidelity low = f_lo(x)
fidelity high = rho * low + delta(x)
data cheap = csv("lo.csv") fidelity low
data costly = csv("hi.csv") fidelity high
observe cheap.y ~ Normal(low, s)
observe costly.y ~ Normal(high, s)
"""


@pytest.fixture
def folder(tmp_path):
    x = np.linspace(0, 1, 9)
    (tmp_path / "lo.csv").write_text("x,y\n" + "".join(f"{a},{np.sin(6 * a)}\n" for a in x))
    (tmp_path / "hi.csv").write_text("x,y\n" + "".join(f"{a},{2 * np.sin(6 * a) + a}\n" for a in x[::3]))
    return tmp_path


def compile_text(text, folder):
    return compile_source(text, "m.msml", device="cpu", base_dir=folder)


def test_lowering_builds_levels_in_order_with_data(folder):
    m = compile_text(TWO_LEVELS, folder)
    p = m.ir.fidelity
    assert [lv.name for lv in p.levels] == ["low", "high"] and p.scheme == "joint" and p.top == ("high",)
    assert p.level("high").linear and p.level("high").stochastic
    assert p.level("low").data[0].values.size == 9 and p.level("high").data[0].inputs.shape == (3, 1)
    names = [q.name for q in m.ir.parameters]
    assert names == ["rho", "s", "f_lo_amplitude", "f_lo_lengthscale", "delta_amplitude", "delta_lengthscale"]
    data = json.loads(m.ir.to_json())
    assert data["fidelity"]["levels"][1]["link"] == "low*rho + delta(x)"


def test_default_amplitude_priors_follow_the_output_scale(folder):
    """A term of a level without lower levels: HalfNormal(2 x the rms of that level's data);
    a term of a link (the discrepancy): HalfNormal(10 x the rms of its level's data); a prior
    the file gives is kept."""
    m = compile_text(TWO_LEVELS, folder)
    by_name = {q.name: q for q in m.ir.parameters}
    lo = np.sin(6 * np.linspace(0, 1, 9))
    hi = 2 * lo[::3] + np.linspace(0, 1, 9)[::3]
    rms = lambda v: float(np.sqrt(np.mean(v ** 2)))          # noqa: E731
    assert by_name["f_lo_amplitude"].distribution == "HalfNormal"
    assert float(by_name["f_lo_amplitude"].args[0]) == pytest.approx(2 * rms(lo), rel=1e-9)
    assert float(by_name["delta_amplitude"].args[0]) == pytest.approx(10 * rms(hi), rel=1e-9)
    assert by_name["delta_lengthscale"].distribution == "LogNormal"
    own = TWO_LEVELS.replace("unknown f_lo(x) : gp(kernel=rbf)", "unknown f_lo(x) : gp(kernel=rbf, amplitude=HalfNormal(3))")
    by_name = {q.name: q for q in compile_text(own, folder).ir.parameters}
    assert float(by_name["f_lo_amplitude"].args[0]) == 3.0


def test_nonlinear_link_chooses_the_recursive_scheme_and_joint_refuses_it(folder):
    text = TWO_LEVELS.replace("unknown delta(x)", "unknown delta(low, x)").replace("delta(x)\ndata", "delta(low, x)\ndata")
    assert compile_text(text, folder).ir.fidelity.scheme == "recursive"
    with pytest.raises(MsmlError) as info:
        compile_text(text + "solver gp(scheme=joint)\n", folder)
    assert info.value.diagnostics[0].code == "E299" and "not linear" in info.value.diagnostics[0].message


def test_recursive_scheme_needs_data_where_a_term_is_learned(folder):
    text = TWO_LEVELS.replace("data cheap = csv(\"lo.csv\") fidelity low\n", "").replace(
        "observe cheap.y ~ Normal(low, s)\n", "") + "solver gp(scheme=recursive)\n"
    with pytest.raises(MsmlError) as info:
        compile_text(text, folder)
    d = info.value.diagnostics[0]
    assert d.code == "E299" and "'low' has an unknown term but no data" in d.message and d.span.line == 7


def test_rows_outside_the_domain_and_missing_input_columns(folder):
    (folder / "hi.csv").write_text("x,y\n0.5,1\n1.5,2\n")
    with pytest.raises(MsmlError) as info:
        compile_text(TWO_LEVELS, folder)
    assert info.value.diagnostics[0].code == "E309" and "line 3" in info.value.diagnostics[0].message
    (folder / "hi.csv").write_text("pos,y\n0.5,1\n")
    with pytest.raises(MsmlError) as info:
        compile_text(TWO_LEVELS, folder)
    assert info.value.diagnostics[0].code == "E303" and "no column 'x'" in info.value.diagnostics[0].message


def test_fast_priors_match_the_pyro_backend(folder):
    from msml_dsl.backends.multifidelity.model import FidelityModel

    model = FidelityModel(compile_text(TWO_LEVELS, folder).ir)
    z = torch.randn(model.params.dim, dtype=torch.float64)
    _, _, fast = model.fast.transform(z)
    values, _, log_det, log_prior = model.params.transform(z[None])
    assert float(fast) == pytest.approx(float((log_det + log_prior)[0]), rel=1e-12, abs=1e-12)


def test_the_joint_likelihood_is_the_kennedy_ohagan_gaussian(folder):
    """log N(y; 0, C) with C from the AR(1) covariance written out by hand (the discrepancy with its
    default linear trend)."""
    from msml_dsl.backends.multifidelity.inference import data_rows
    from msml_dsl.backends.multifidelity.model import Block, FidelityModel

    model = FidelityModel(compile_text(TWO_LEVELS, folder).ir)
    rows = data_rows(model)
    block = Block(model, rows["low"] + rows["high"], [p.name for p in model.ir.parameters], joint=True)
    z = torch.tensor([0.7, math.log(0.05), math.log(1.3), math.log(0.4), math.log(0.6), math.log(0.9)],
                     dtype=torch.float64)
    env, _ = model.unpack(z)
    got = float(block.log_likelihood(env))
    xl = rows["low"][0].X[:, 0].numpy()
    xh = rows["high"][0].X[:, 0].numpy()
    y = np.concatenate([rows["low"][0].y.numpy(), rows["high"][0].y.numpy()])

    def k(a, b, amp, ell):
        return amp ** 2 * np.exp(-0.5 * ((a[:, None] - b[None, :]) / ell) ** 2)

    rho, s = 0.7, 0.05
    b = model.problem.terms["delta"].trend           # the discrepancy's linear trend, integrated out
    assert b > 0
    trend = b ** 2 * (1 + (xh[:, None] - 0.5) * (xh[None, :] - 0.5))
    C = np.block([[k(xl, xl, 1.3, 0.4), rho * k(xl, xh, 1.3, 0.4)],
                  [rho * k(xh, xl, 1.3, 0.4), rho ** 2 * k(xh, xh, 1.3, 0.4) + k(xh, xh, 0.6, 0.9) + trend]])
    C_noise = C + np.eye(len(y)) * (s ** 2 + 1e-8 * np.mean(np.diag(C)) + 1e-12)
    sign, logdet = np.linalg.slogdet(C_noise)
    want = -0.5 * y @ np.linalg.solve(C_noise, y) - 0.5 * logdet - 0.5 * len(y) * math.log(2 * math.pi)
    assert got == pytest.approx(want, rel=1e-9)


def test_a_link_must_be_linear_in_its_own_gp_terms(folder):
    text = TWO_LEVELS.replace("fidelity high = rho * low + delta(x)", "fidelity high = rho * low + exp(delta(x))")
    with pytest.raises(MsmlError) as info:
        compile_text(text, folder)
    assert info.value.diagnostics[0].code == "E299" and "not linear in its gp terms" in info.value.diagnostics[0].message


def test_nuts_over_the_hyperparameters_runs_and_reports_diagnostics(folder):
    one = """model one "a single level"
space x in [0, 1]
unknown f(x) : gp(kernel=matern52)
param s ~ HalfNormal(0.1)
fidelity y = f(x)
data d = csv("lo.csv") fidelity y
observe d.y ~ Normal(y, s)
infer nuts(chains=2, warmup=40, draws=40, seed=3)
"""
    fit = compile_text(one, folder).run()
    assert fit.method == "nuts"
    text = fit.summary()
    assert "r_hat" in text and "NUTS:" in text
    p = fit.predict(np.array([0.25, 0.5]))
    assert np.all(np.abs(p.mean - np.sin(6 * np.array([0.25, 0.5]))) < 0.2)


def test_two_outputs_share_a_cheap_level(folder, tmp_path):
    """Several outputs: two chains of levels over one cheap level; both are predicted and saved."""
    x = np.linspace(0, 1, 5)
    (folder / "a.csv").write_text("x,y\n" + "".join(f"{u},{2 * np.sin(6 * u)}\n" for u in x))
    (folder / "b.csv").write_text("x,y\n" + "".join(f"{u},{-np.sin(6 * u) + u}\n" for u in x))
    text = """model outputs "two outputs"
space x in [0, 1]
unknown f(x) : gp(kernel=rbf)
unknown da(x) : gp(kernel=rbf)
unknown db(x) : gp(kernel=rbf)
param ra ~ Normal(1, 2)
param rb ~ Normal(1, 2)
param s ~ HalfNormal(0.01)
fidelity low = f(x)
fidelity out_a = ra * low + da(x)
fidelity out_b = rb * low + db(x)
data cheap = csv("lo.csv") fidelity low
data a = csv("a.csv") fidelity out_a
data b = csv("b.csv") fidelity out_b
observe cheap.y ~ Normal(low, s)
observe a.y ~ Normal(out_a, s)
observe b.y ~ Normal(out_b, s)
infer map(starts=2, seed=1)
"""
    m = compile_text(text, folder)
    assert m.ir.fidelity.top == ("out_a", "out_b")
    fit = m.run()
    u = np.array([0.3, 0.7])
    assert fit.predict(u, level="out_a").mean == pytest.approx(2 * np.sin(6 * u), abs=0.1)
    assert fit.predict(u, level="out_b").mean == pytest.approx(-np.sin(6 * u) + u, abs=0.1)
    fit.save(tmp_path / "run")
    header = (tmp_path / "run" / "predictions.csv").read_text().splitlines()[0]
    assert "out_a_mean" in header and "out_b_upper95" in header
