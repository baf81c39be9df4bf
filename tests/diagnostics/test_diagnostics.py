"""Tests for msml_dsl.diagnostics (run against whichever ArviZ is installed)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from msml_dsl.diagnostics import (
    CODES,
    DiagnosticWarning,
    arviz_major,
    build_inference_data,
    check_convergence,
    e_bfmi,
    ess_bulk,
    format_summary,
    get_group,
    group_names,
    hdi_column_names,
    load_netcdf,
    loo,
    loo_summary,
    rhat,
    save_netcdf,
    summary_table,
)

CHAINS, DRAWS = 4, 500
MU_TRUE, MU_SD = 2.0, 0.5
THETA_TRUE = np.array([-1.0, 0.0, 1.0])
THETA_SD = np.array([1.0, 2.0, 3.0])


def _draws(seed=0, shift_chain0=0.0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(MU_TRUE, MU_SD, size=(CHAINS, DRAWS))
    mu[0] += shift_chain0 * MU_SD
    theta = rng.normal(THETA_TRUE, THETA_SD, size=(CHAINS, DRAWS, 3))
    return {"mu": mu, "theta": theta}


def _good_stats(seed=1, **overrides):
    rng = np.random.default_rng(seed)
    stats = {
        "diverging": np.zeros((CHAINS, DRAWS), dtype=bool),
        "tree_depth": np.full((CHAINS, DRAWS), 3, dtype=np.int64),
        "n_steps": np.full((CHAINS, DRAWS), 7, dtype=np.int64),
        "energy": rng.normal(10.0, 2.0, size=(CHAINS, DRAWS)),
        "lp": rng.normal(-5.0, 1.0, size=(CHAINS, DRAWS)),
        "step_size": np.full((CHAINS, DRAWS), 0.4),
        "acceptance_rate": rng.uniform(0.7, 1.0, size=(CHAINS, DRAWS)),
    }
    stats.update(overrides)
    return stats


def _build(posterior=None, sample_stats=None, **kw):
    return build_inference_data(
        posterior=posterior if posterior is not None else _draws(),
        sample_stats=sample_stats if sample_stats is not None else _good_stats(),
        dims={"theta": ["group"]},
        coords={"group": ["a", "b", "c"]},
        **kw,
    )


def _codes(ws):
    return [w.code for w in ws]


# --------------------------------------------------------------------------- #
def test_version_detected():
    assert arviz_major() in (0, 1, 2)


def test_package_import_is_cheap():
    code = (
        "import sys; import msml_dsl.diagnostics; "
        "print(any(m == 'arviz' or m.startswith(('arviz.', 'arviz_')) for m in sys.modules))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_groups_and_get_group():
    data = _build()
    assert group_names(data) == ["posterior", "sample_stats"]
    post = get_group(data, "posterior")
    assert post["mu"].dims == ("chain", "draw")
    assert post["theta"].dims == ("chain", "draw", "group")
    assert list(post["group"].values) == ["a", "b", "c"]
    stats = get_group(data, "sample_stats")
    assert stats["diverging"].dtype == bool
    with pytest.raises(KeyError):
        get_group(data, "prior")


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        build_inference_data(posterior={"mu": np.zeros(10)})
    with pytest.raises(ValueError):
        build_inference_data(posterior={"a": np.zeros((2, 10)), "b": np.zeros((3, 10))})


def test_summary_close_to_truth():
    table = summary_table(_build())
    assert list(table.columns) == [
        "mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "ess_bulk", "ess_tail", "r_hat",
    ]
    assert list(table.index) == ["mu", "theta[a]", "theta[b]", "theta[c]"]
    n = CHAINS * DRAWS
    truth_mean = np.r_[MU_TRUE, THETA_TRUE]
    truth_sd = np.r_[MU_SD, THETA_SD]
    for i, label in enumerate(table.index):
        row = table.loc[label]
        assert abs(row["mean"] - truth_mean[i]) < 5 * truth_sd[i] / math.sqrt(n)
        assert abs(row["sd"] / truth_sd[i] - 1) < 0.08
        # 94% HDI of a normal: mean +- 1.881 sd
        assert abs(row["hdi_3%"] - (truth_mean[i] - 1.881 * truth_sd[i])) < 0.2 * truth_sd[i]
        assert abs(row["hdi_97%"] - (truth_mean[i] + 1.881 * truth_sd[i])) < 0.2 * truth_sd[i]
        assert row["ess_bulk"] > 1000 and row["ess_tail"] > 1000
        assert 0.99 < row["r_hat"] < 1.01
        assert 0 < row["mcse_mean"] < 3 * truth_sd[i] / math.sqrt(n)


def test_summary_var_names_and_hdi_prob():
    table = summary_table(_build(), var_names=["mu"], hdi_prob=0.95)
    assert list(table.index) == ["mu"]
    assert "hdi_2.5%" in table.columns and "hdi_97.5%" in table.columns
    assert hdi_column_names(0.9) == ("hdi_5%", "hdi_95%")


def test_vector_and_matrix_variables_with_dims_and_coords():
    rng = np.random.default_rng(3)
    data = build_inference_data(
        posterior={
            "theta": rng.normal(size=(CHAINS, DRAWS, 3)),
            "L": rng.normal(size=(CHAINS, DRAWS, 2, 2)),
            "beta": rng.normal(size=(CHAINS, DRAWS, 2)),
        },
        dims={"theta": ["school"], "L": ["row", "col"]},
        coords={"school": ["x", "y", "z"], "row": [0, 1], "col": ["u", "v"]},
    )
    post = get_group(data, "posterior")
    assert post["theta"].dims == ("chain", "draw", "school")
    assert post["L"].dims == ("chain", "draw", "row", "col")
    assert list(post["col"].values) == ["u", "v"]
    table = summary_table(data)
    assert list(table.index) == [
        "theta[x]", "theta[y]", "theta[z]",
        "L[0, u]", "L[0, v]", "L[1, u]", "L[1, v]",
        "beta[0]", "beta[1]",
    ]
    # values follow the label: L[1, u] is L[..., 1, 0]
    flat = np.asarray(post["L"].values)[..., 1, 0].ravel()
    assert table.loc["L[1, u]", "mean"] == pytest.approx(flat.mean())
    assert set(rhat(data)) == set(table.index)
    assert set(ess_bulk(data)) == set(table.index)


def test_rhat_fires_for_shifted_chain_only():
    good = check_convergence(_build(), max_tree_depth=10)
    assert good == []

    bad = check_convergence(_build(posterior=_draws(shift_chain0=3.0)), max_tree_depth=10)
    w101 = [w for w in bad if w.code == "W101"]
    assert len(w101) == 1
    w = w101[0]
    assert w.severity == "warning" and w.name == "rhat"
    assert "mu=" in w.message
    assert "theta" not in w.message  # only mu was shifted
    assert rhat(_build(posterior=_draws(shift_chain0=3.0)))["mu"] > 1.1
    assert "reparameterise" in w.remedy


def test_low_ess_fires():
    rng = np.random.default_rng(5)
    # Strongly autocorrelated AR(1) chains: ESS far below 100 per chain.
    x = np.zeros((CHAINS, DRAWS))
    for t in range(1, DRAWS):
        x[:, t] = 0.995 * x[:, t - 1] + rng.normal(size=CHAINS) * 0.1
    ws = check_convergence(
        build_inference_data(posterior={"x": x}, sample_stats=_good_stats()), max_tree_depth=10
    )
    codes = _codes(ws)
    assert "W102" in codes and "W103" in codes
    w = next(w for w in ws if w.code == "W102")
    assert "400" in w.message and "x=" in w.message


def test_divergence_warning():
    div = np.zeros((CHAINS, DRAWS), dtype=bool)
    div[1, :10] = True
    ws = check_convergence(_build(sample_stats=_good_stats(diverging=div)), max_tree_depth=10)
    assert _codes(ws) == ["W201"]
    w = ws[0]
    assert "10 of 2000" in w.message and "0.5%" in w.message
    assert "target_accept" in w.remedy and "non-centred" in w.remedy


def test_tree_depth_warning():
    depth = np.full((CHAINS, DRAWS), 4)
    depth[2, :50] = 10
    data = _build(sample_stats=_good_stats(tree_depth=depth))
    ws = check_convergence(data, max_tree_depth=10)
    assert _codes(ws) == ["W202"]
    assert "50 of 2000" in ws[0].message
    assert "max_tree_depth" in ws[0].remedy and "reparameterise" in ws[0].remedy
    assert check_convergence(data, max_tree_depth=12) == []


def test_tree_depth_from_n_steps_when_depth_missing():
    stats = _good_stats()
    del stats["tree_depth"]
    stats["n_steps"] = np.full((CHAINS, DRAWS), 15)
    stats["n_steps"][0, :7] = 1023
    ws = check_convergence(_build(sample_stats=stats), max_tree_depth=10)
    assert _codes(ws) == ["W202"] and "7 of 2000" in ws[0].message


def test_ebfmi_hand_computed():
    energy = np.array([[1.0, 2.0, 4.0, 3.0], [0.0, 2.0, 0.0, 2.0]])
    # chain 0: diffs 1, 2, -1 -> 6; deviations from 2.5 -> 5  => 1.2
    # chain 1: diffs 2, -2, 2 -> 12; deviations from 1 -> 4   => 3.0
    np.testing.assert_allclose(e_bfmi(energy), [1.2, 3.0])
    np.testing.assert_allclose(e_bfmi(np.array([1.0, 2.0, 4.0, 3.0])), [1.2])


def test_ebfmi_fires_for_random_walk_energy():
    rng = np.random.default_rng(7)
    rw = np.cumsum(rng.normal(size=(CHAINS, DRAWS)), axis=1)
    assert np.all(e_bfmi(rw) < 0.3)
    ws = check_convergence(_build(sample_stats=_good_stats(energy=rw)), max_tree_depth=10)
    assert _codes(ws) == ["W203"]
    assert "chain 0" in ws[0].message and "reparameterise" in ws[0].remedy.lower()
    # iid energy gives E-BFMI ~ 2
    iid = rng.normal(size=(CHAINS, DRAWS))
    assert np.all(e_bfmi(iid) > 1.5)


def test_single_chain_and_missing_stats_are_info():
    rng = np.random.default_rng(2)
    data = build_inference_data(posterior={"mu": rng.normal(size=(1, 800))})
    ws = check_convergence(data, max_tree_depth=10)
    assert _codes(ws) == ["I101", "I102"]
    assert all(w.severity == "info" for w in ws)


def test_codes_table_documented():
    from msml_dsl.diagnostics import checks

    for code, name in CODES.items():
        assert code in checks.__doc__ and name in checks.__doc__


# --------------------------------------------------------------------------- #
def _assert_same(a, b):
    assert group_names(a) == group_names(b)
    for g in group_names(a):
        ga, gb = get_group(a, g), get_group(b, g)
        assert set(ga.data_vars) == set(gb.data_vars)
        for v in ga.data_vars:
            assert ga[v].dims == gb[v].dims
            assert ga[v].dtype == gb[v].dtype
            np.testing.assert_array_equal(ga[v].values, gb[v].values)
        for c in ga.coords:
            np.testing.assert_array_equal(ga[c].values, gb[c].values)


def test_netcdf_round_trip(tmp_path):
    data = _build(attrs={"msml_model": "eight_schools"})
    path = tmp_path / "fit.nc"
    save_netcdf(data, path)
    back = load_netcdf(path)
    _assert_same(data, back)
    assert get_group(back, "posterior").attrs["msml_model"] == "eight_schools"
    assert os.listdir(tmp_path) == ["fit.nc"]


def test_netcdf_overwrites_existing_target(tmp_path):
    path = tmp_path / "fit.nc"
    path.write_bytes(b"not a netcdf file")
    first = _build(posterior=_draws(seed=10))
    save_netcdf(first, str(path))
    second = _build(posterior=_draws(seed=11))
    save_netcdf(second, path)
    back = load_netcdf(path)
    _assert_same(second, back)
    assert os.listdir(tmp_path) == ["fit.nc"]
    # the loaded object holds no open handle: the file can be replaced again
    save_netcdf(first, path)
    _assert_same(first, load_netcdf(path))


def test_netcdf_failed_write_keeps_target(tmp_path):
    path = tmp_path / "fit.nc"
    data = _build()
    save_netcdf(data, path)
    before = path.read_bytes()

    class Broken:
        def to_netcdf(self, *a, **k):
            with open(a[0], "wb") as fh:
                fh.write(b"partial")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        save_netcdf(Broken(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["fit.nc"]


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_netcdf(tmp_path / "nope.nc")


# --------------------------------------------------------------------------- #
def _conjugate_normal(n=20, seed=11):
    """y_i ~ N(mu, 1), mu ~ N(0, 10^2): exact posterior draws and exact LOO."""
    rng = np.random.default_rng(seed)
    y = rng.normal(1.5, 1.0, size=n)
    prior_prec = 1 / 100.0
    post_prec = prior_prec + n
    post_mean = y.sum() / post_prec
    mu = rng.normal(post_mean, 1 / math.sqrt(post_prec), size=(CHAINS, DRAWS))
    loglik = -0.5 * np.log(2 * np.pi) - 0.5 * (y[None, None, :] - mu[..., None]) ** 2
    # exact elpd_loo: p(y_i | y_-i) = N(m_-i, 1 + 1/prec_-i)
    prec_i = prior_prec + n - 1
    m_i = (y.sum() - y) / prec_i
    var_i = 1 + 1 / prec_i
    exact = float(np.sum(-0.5 * np.log(2 * np.pi * var_i) - 0.5 * (y - m_i) ** 2 / var_i))
    data = build_inference_data(
        posterior={"mu": mu},
        sample_stats=_good_stats(),
        observed_data={"y": y},
        log_likelihood={"y": loglik},
        posterior_predictive={"y": rng.normal(mu[..., None], 1.0, size=(CHAINS, DRAWS, n))},
        dims={"y": ["obs"]},
        coords={"obs": np.arange(n)},
    )
    return data, exact


def test_log_likelihood_group_and_loo():
    data, exact = _conjugate_normal()
    assert group_names(data) == [
        "posterior", "posterior_predictive", "log_likelihood", "sample_stats", "observed_data",
    ]
    ll = get_group(data, "log_likelihood")
    assert ll["y"].dims == ("chain", "draw", "obs")
    assert get_group(data, "observed_data")["y"].dims == ("obs",)

    assert loo(data) is not None
    s = loo_summary(data)
    assert s["n_data_points"] == 20 and s["n_samples"] == CHAINS * DRAWS
    assert abs(s["elpd_loo"] - exact) < 0.3
    assert 0.5 < s["p_loo"] < 1.6  # one effective parameter
    assert s["pareto_k_max"] < 0.7 and s["warning"] is False
    assert s["se"] > 0


def test_loo_unavailable_without_log_likelihood():
    data = _build()
    assert loo(data) is None
    assert loo_summary(data) is None


def test_loo_survives_round_trip(tmp_path):
    data, _ = _conjugate_normal()
    save_netcdf(data, tmp_path / "fit.nc")
    back = load_netcdf(tmp_path / "fit.nc")
    assert loo_summary(back)["elpd_loo"] == pytest.approx(loo_summary(data)["elpd_loo"])


# --------------------------------------------------------------------------- #
def test_format_summary_plain_text():
    data = _build(posterior=_draws(shift_chain0=3.0))
    table = summary_table(data)
    ws = check_convergence(data, max_tree_depth=10)
    text = format_summary(table, ws)
    assert "\x1b[" not in text
    for col in ("mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "r_hat"):
        assert col in text
    for label in ("mu", "theta[a]", "theta[c]"):
        assert label in text
    assert "W101" in text and "remedy:" in text
    assert all(len(line) <= 120 for line in text.splitlines())
    clean = format_summary(summary_table(_build()), [])
    assert "No convergence problems detected." in clean


def test_format_summary_shows_each_value_to_the_precision_of_its_sd():
    import pandas as pd

    table = pd.DataFrame({"mean": [0.0031813, 1234.5, -0.987218220539], "sd": [1.54e-5, 50.0, 2.22e-16],
                          "hdi_3%": [0.0031527, 1100.2, -0.987218220539], "hdi_97%": [0.00321, 1300.0, -0.987218220539],
                          "ess_bulk": [2071, 100, 400], "r_hat": [0.999, 1.0, float("nan")]},
                         index=["viscosity", "volume", "held"])
    rows = {line.split()[0]: line.split() for line in format_summary(table, []).splitlines()[2:5]}
    assert rows["viscosity"][1:5] == ["0.003181", "1.54e-05", "0.003153", "0.003210"]
    assert rows["volume"][1] == "1234" and rows["volume"][3] == "1100"
    # an sd that is rounding noise (a weight held at the optimum) is no precision to print to
    assert rows["held"][1] == "-0.987" and rows["held"][3] == "-0.987"


def test_diagnostic_warning_is_frozen():
    w = DiagnosticWarning("W201", "m", "r", "warning")
    with pytest.raises(Exception):
        w.code = "x"  # type: ignore[misc]
    assert w.name == "divergences" and "W201" in str(w)


def test_prior_groups():
    rng = np.random.default_rng(4)
    data = build_inference_data(
        posterior={"mu": rng.normal(size=(2, 50))},
        prior={"mu": rng.normal(size=(1, 300))},
        prior_predictive={"y": rng.normal(size=(1, 300, 5))},
        observed_data={"y": np.zeros(5)},
        dims={"y": ["obs"]},
    )
    assert set(group_names(data)) == {"posterior", "prior", "prior_predictive", "observed_data"}
    assert get_group(data, "prior")["mu"].shape == (1, 300)
    assert get_group(data, "prior_predictive")["y"].dims == ("chain", "draw", "obs")
