"""Default priors of link terms: a GP discrepancy of a link has a linear trend with vague coefficients
(integrated out, Kennedy & O'Hagan's regression mean); a term of a level without lower levels, or of
a level that maps a lower level through a term (NARGP), has none."""

import numpy as np
import pytest
import torch

import msml_dsl.ir.fidelity as F
from msml_dsl.api import compile_source
from msml_dsl.backends.multifidelity.model import DTYPE, FidelityModel, Instance, covariance, kernel

from tests.multifidelity.test_linearised_predictive import TWO as BASE  # noqa: E402

TWO = "\n".join(line for line in BASE.splitlines() if not line.startswith("infer")).replace(
    "space x in [0, 1]", "space x in [0, 2]").replace("unknown delta(x) : gp(kernel=rbf)",
                                                      "unknown delta(x) : gp(kernel=matern52)") + "\n"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "low.csv").write_text("x,y\n0.0,1.0\n1.0,2.0\n2.0,3.0\n")
    (tmp_path / "high.csv").write_text("x,y\n0.5,3.0\n1.5,-4.0\n")
    return tmp_path


def test_a_link_term_has_a_trend_scaled_by_its_data(folder):
    model = compile_source(TWO, "two.msml", device="cpu", base_dir=folder)
    terms = model.ir.fidelity.terms
    assert terms["f_low"].trend == 0.0
    assert terms["delta"].trend == pytest.approx(F.DEFAULT_AMPLITUDE_FACTOR * np.sqrt((9 + 16) / 2))
    fm = FidelityModel(model.ir)
    env, _ = fm.unpack(fm.params.initial(1))
    fm.scaling["delta"] = (torch.zeros(1, dtype=DTYPE), torch.full((1,), 2.0, dtype=DTYPE))
    z = torch.tensor([[0.1], [0.8]], dtype=DTYPE)
    one = torch.ones(2, dtype=DTYPE)
    K = covariance(fm, [Instance("delta", "x", one, z)], [0], 2)
    kind, ell, amp, _ = fm.hyper("delta")
    b = terms["delta"].trend
    expected = kernel(kind, z, z, ell, amp) + b ** 2 * (1 + (z - 0.5) @ (z - 0.5).T)
    assert K.numpy() == pytest.approx(expected.numpy())
    diag = covariance(fm, [Instance("delta", "x", one, z)], [0], 2, diag=True)
    assert diag.numpy() == pytest.approx(np.diag(expected.numpy()))


def test_a_prior_scale_that_depends_on_the_lengthscale_is_evaluated_in_closed_form(folder, monkeypatch):
    """The rejected candidate (amplitude scale x sqrt(1 + ell^2)) keeps the fast prior path, and it
    agrees with the general one (PhysicalParameters)."""
    monkeypatch.setattr(F, "LINK_AMPLITUDE_PER_LENGTHSCALE", True)
    model = compile_source(TWO, "two.msml", device="cpu", base_dir=folder)
    fm = FidelityModel(model.ir)
    assert not fm.fast.slow
    z = fm.params.prior_draws(3, 2)
    for row in z:
        _, fast = fm.unpack(row)
        _, _, log_det, log_prior = fm.params.transform(row[None])
        assert float(fast) == pytest.approx(float(log_det[0] + log_prior[0]), rel=1e-10)


def test_the_trend_follows_the_files_amplitude_prior_and_skips_maps_of_levels(folder):
    src = TWO.replace("unknown delta(x) : gp(kernel=matern52)",
                      "unknown delta(x) : gp(kernel=matern52, amplitude=HalfNormal(0.3))")
    assert compile_source(src, "two.msml", device="cpu", base_dir=folder).ir.fidelity.terms["delta"].trend == 0.3
    src = TWO.replace("unknown delta(x) : gp(kernel=matern52)", "unknown g(low, x) : gp(kernel=rbf)\n"
                      "unknown delta(x) : gp(kernel=rbf)").replace("fidelity high = rho * low + delta(x)",
                                                               "fidelity high = g(low, x) + delta(x)")
    terms = compile_source(src, "two.msml", device="cpu", base_dir=folder).ir.fidelity.terms
    assert terms["g"].trend == 0.0 and terms["delta"].trend == 0.0       # NARGP levels have none


def test_trend_false_in_the_file_removes_it(folder):
    src = TWO.replace("unknown delta(x) : gp(kernel=matern52)", "unknown delta(x) : gp(kernel=matern52, trend=false)")
    assert compile_source(src, "two.msml", device="cpu", base_dir=folder).ir.fidelity.terms["delta"].trend == 0.0


def test_an_inverse_gamma_lengthscale_prior_has_scipys_density(folder):
    """InverseGamma (Stan's inv_gamma) as a GP hyperprior: the closed form the fit evaluates is the density."""
    from scipy import stats

    from msml_dsl.backends.multifidelity.model import _closed_form

    source = TWO.replace("gp(kernel=matern52)", "gp(kernel=matern52, lengthscale=InverseGamma(5, 1))")
    model = compile_source(source, "two.msml", device="cpu", base_dir=folder)
    prior = next(p for p in model.ir.parameters if p.name == "delta_lengthscale")
    assert prior.distribution == "InverseGamma"
    v = torch.tensor([0.05, 0.25, 1.3], dtype=DTYPE)
    got = _closed_form("InverseGamma", [float(a) for a in prior.args])(v)
    np.testing.assert_allclose(got.numpy(), stats.invgamma(5, scale=1).logpdf(v.numpy()), rtol=1e-12)
    assert F._scale_of(prior) == pytest.approx(0.25)   # its mean, 1 / (5 - 1)
