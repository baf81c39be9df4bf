"""Multi-fidelity Gaussian processes: the backend of models with ``fidelity`` levels.

``run_fidelity(ir, ...)`` fits the levels (joint Kennedy–O'Hagan scheme, or recursive with
Monte Carlo propagation for nonlinear links) and returns a :class:`FidelityFit`.
"""

from __future__ import annotations

from typing import Callable

from msml_dsl.backends.multifidelity.fit import FidelityFit, Prediction, Suggestion

__all__ = ["run_fidelity", "FidelityFit", "Prediction", "Suggestion", "FIDELITY_METHODS"]

#: inference methods and the options each takes
FIDELITY_METHODS = {"map": ("seed", "starts", "max_iter"),
                    "laplace": ("seed", "starts", "max_iter", "draws", "predictive"),
                    "nuts": ("seed", "chains", "warmup", "draws", "target_accept", "max_tree_depth", "metric",
                             "thin")}


def run_fidelity(ir, device: str = "cpu", method: str = "map", options: dict | None = None,
                 progress: Callable | None = None, source: str | None = None) -> FidelityFit:
    """Fit the hyperparameters (``map``, ``laplace``: integrated by importance sampling, or ``nuts``)
    and return the fit."""
    from msml_dsl.backends.multifidelity.inference import PREDICTIVES, fit

    predictive = (options or {}).get("predictive")
    if method == "laplace" and predictive is not None and predictive not in PREDICTIVES:
        raise ValueError(f"predictive={predictive!r}: use one of {', '.join(PREDICTIVES)}")
    from msml_dsl.backends.multifidelity.model import FidelityModel

    from msml_dsl.backends.multifidelity.model import few_threads

    model = FidelityModel(ir, device)
    with few_threads(model.n_rows):
        return FidelityFit(fit(model, method, dict(options or {}), progress), source)
