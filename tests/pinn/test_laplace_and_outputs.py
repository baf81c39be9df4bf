"""laplace(network=all) against the fixed-feature schemes, and the outputs of a PINN run folder.

The inverse heat problem of test_heat.py (200 observations, noise sd 0.01, truth k = 0.1): the
Fisher information for k is about 1.4e7, so the data alone give an sd of about 3e-4.  One MAP
training (module fixture); each scheme starts from the same trained weights.  Tolerances:

* network=all lets the network re-fit the physics for each k, so its sd must exceed the
  last-layer one (which conditions on the features) and lie within a factor 3 of 3e-4;
* derived `mid = u(0.5, 0.5)` against exp(-0.05 pi^2) = 0.6105, within 0.01 (the short training's
  field error is about 0.1 %);
* the posterior predictive's mean against the data: root mean square 0.01 (the noise) within 30 %.
"""

import math

import numpy as np
import pytest
import torch

from test_heat import INVERSE_FILE, K, heat_data

MID = math.exp(-K * math.pi ** 2 * 0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import msml_dsl
    from msml_dsl.backends.pinn.inference import train_map
    from msml_dsl.backends.pinn.likelihood import PinnModel
    from msml_dsl.backends.pinn.settings import PINN_OPTIONS, resolve_options

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("heat")
    xs, ts, values = heat_data()
    (folder / "heat.csv").write_text("x,t,u\n" + "".join(f"{float(a)!r},{float(b)!r},{float(c)!r}\n"
                                                        for a, b, c in zip(xs, ts, values)))
    text = INVERSE_FILE.replace("collocation 500 sobol", "derive mid = u(0.5, 0.5)\ncollocation 500 sobol")
    ir = msml_dsl.compile_source(text, "heat_inverse.msml", device="cpu", base_dir=folder).ir
    solver = resolve_options(PINN_OPTIONS, dict(ir.pde.solver.options), "solver")
    torch.manual_seed(solver["seed"])
    model = PinnModel(ir, "cpu", solver)
    z = torch.nn.Parameter(model.params.initial(solver["seed"]))
    history = train_map(model, z, solver)
    state = {k: v.detach().clone() for k, v in model.networks.state_dict().items()}
    return ir, solver, z, history, state, folder


def _fit(trained, network, method="laplace", **options):
    from msml_dsl.backends.pinn.inference import posterior_from_map
    from msml_dsl.backends.pinn.likelihood import PinnModel
    from msml_dsl.backends.pinn.settings import PINN_INFER_OPTIONS, resolve_options

    ir, solver, z, history, state, _ = trained
    torch.manual_seed(solver["seed"])
    model = PinnModel(ir, "cpu", solver)
    model.networks.load_state_dict(state)
    opts = resolve_options(PINN_INFER_OPTIONS[method], {"network": network, **options}, method)
    return posterior_from_map(ir, model, z, history, method, opts, solver)


def test_network_all_widens_the_interval_to_the_data_s_precision(trained):
    full = _fit(trained, "all", draws=2000)
    last = _fit(trained, "last_layer", draws=2000)
    sd_full, sd_last = float(full.parameters["k"].std()), float(last.parameters["k"].std())
    assert sd_full > sd_last
    assert 1e-4 < sd_full < 9e-4, sd_full
    lo, hi = np.quantile(full.parameters["k"].ravel(), [0.03, 0.97])
    assert lo < K < hi
    assert any("all" in n and "weights" in n for n in full.notes)
    assert "network=all" in full.summary()


def test_derived_field_at_a_point_and_posterior_predictive(trained):
    fit = _fit(trained, "all", draws=400)
    mid = fit.derived["mid"]
    assert mid.shape == (4, 100)
    assert abs(float(mid.mean()) - MID) < 0.01
    assert 0 < float(mid.std()) < 0.01                    # the linearised field varies per draw
    pred = fit.posterior_predictive["d.u"]
    assert pred.shape == (4, 100, 200)
    _, _, values = heat_data()
    rms = float(np.sqrt(np.mean((pred.mean((0, 1)) - values) ** 2)))
    assert 0.007 < rms < 0.013
    assert 0.007 < float(pred.std((0, 1)).mean()) < 0.013   # noise sd 0.01 plus a little parameter spread


def test_last_layer_fields_vary_per_draw_and_fixed_ones_do_not(trained):
    last = _fit(trained, "last_layer", draws=200)
    fixed = _fit(trained, "fixed", draws=200)
    assert float(last.derived["mid"].std()) > 0
    assert float(fixed.derived["mid"].std()) == 0
    assert abs(float(last.derived["mid"].mean()) - MID) < 0.01


def test_run_folder_has_fields_on_a_grid_and_a_posterior_predictive_group(trained, tmp_path):
    import xarray as xr

    from msml_dsl.diagnostics import get_group, load_netcdf

    fit = _fit(trained, "all", draws=400)
    folder = fit.save(tmp_path / "run")
    ds = xr.open_dataset(folder / "fields.nc")
    assert ds["u_mean"].dims == ("x", "t") and ds["u_mean"].shape == (101, 51)
    X, T = np.meshgrid(ds["x"].values, ds["t"].values, indexing="ij")
    exact = np.exp(-K * math.pi ** 2 * T) * np.sin(math.pi * X)
    assert float(np.abs(ds["u_mean"].values - exact).max()) < 0.02
    assert np.all(ds["u_q03"].values <= ds["u_q97"].values) and float(ds["u_sd"].max()) > 0
    assert ds.attrs["solver"] == "pinn" and "linearised" in ds.attrs["field_uncertainty"]
    ds.close()
    idata = load_netcdf(folder / "posterior.nc")
    assert get_group(idata, "posterior_predictive")["d.u"].shape == (4, 100, 200)
    assert "mid" in get_group(idata, "posterior")


def test_derived_field_outside_the_domain_is_an_error(trained):
    from dataclasses import replace

    import sympy

    ir = trained[0]
    u = sympy.Function("u", real=True)
    bad = replace(ir, derived=(("far", u(sympy.Float(2.0), sympy.Float(0.5))),))
    with pytest.raises(ValueError, match="outside the domain"):
        _fit((bad, *trained[1:]), "fixed", draws=8)


def test_network_all_refuses_networks_above_max_weights(trained):
    with pytest.raises(ValueError, match="max_weights"):
        _fit(trained, "all", draws=8, max_weights=100)
