"""metric=auto: a dense mass matrix for small models with enough warm-up, diagonal otherwise."""

import numpy as np

from msml_dsl.inference.nuts import run_nuts
from msml_dsl.inference.runner import DENSE_METRIC_MAX_DIM, DENSE_METRIC_MIN_WARMUP, resolve_metric


def test_auto_is_dense_for_small_models_with_enough_warmup():
    assert resolve_metric("auto", 8, 1000) == "dense"
    assert resolve_metric("auto", DENSE_METRIC_MAX_DIM, DENSE_METRIC_MIN_WARMUP) == "dense"
    assert resolve_metric("auto", DENSE_METRIC_MAX_DIM + 1, 1000) == "diag"
    assert resolve_metric("auto", 8, DENSE_METRIC_MIN_WARMUP - 1) == "diag"
    assert resolve_metric("diag", 8, 1000) == "diag" and resolve_metric("dense", 500, 10) == "dense"


def test_dense_metric_shortens_trajectories_on_a_correlated_posterior():
    """The reason for the default: on a strongly correlated Gaussian the dense metric learns the
    covariance, so NUTS needs far fewer leapfrog steps per draw than with a diagonal metric."""
    rho = 0.99
    cov = np.array([[1.0, rho], [rho, 1.0]])
    prec = np.linalg.inv(cov)

    def potential(z):
        g = z @ prec
        return 0.5 * np.einsum("kd,kd->k", z, g), g

    init = np.zeros((2, 2))
    steps = {m: run_nuts(potential, init, warmup=400, draws=200, seed=3, metric=m).n_leapfrog.mean()
             for m in ("diag", "dense")}
    assert steps["dense"] < 0.5 * steps["diag"], steps
