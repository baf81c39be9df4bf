"""Every option the PINN backend accepts, with its type, default and meaning.

Imported by the checker to validate ``solver pinn(...)`` and ``infer ...(...)`` in a model file,
so this module imports nothing but the standard library (no torch: ``msml check`` stays fast).

Each option is ``{"type": int | float | str | bool, "default": ..., "help": "...",
"choices": (...)  # str options only, "min": ...  # numbers only}``.
"""

from __future__ import annotations

PINN_OPTIONS: dict[str, dict] = {
    "adam_steps": {"type": int, "default": 5000, "min": 0,
                   "help": "Adam steps (the first phase of MAP training)"},
    "lr": {"type": float, "default": 1e-3, "min": 0.0, "help": "Adam's learning rate"},
    "lr_decay": {"type": float, "default": 1.0, "min": 0.0,
                 "help": "factor on Adam's learning rate per 1000 steps (1: constant)"},
    "lbfgs_steps": {"type": int, "default": 2000, "min": 0,
                    "help": "L-BFGS iterations after Adam (the second phase; 0: none)"},
    "tol": {"type": float, "default": 1e-7, "min": 0.0,
            "help": "early stopping: a phase ends when the loss changes by less than tol (relative) "
                    "between two checks"},
    "check_every": {"type": int, "default": 100, "min": 1,
                    "help": "steps between progress reports and early-stopping checks (the only host syncs)"},
    "batch": {"type": int, "default": 0, "min": 0,
              "help": "interior points per Adam step, drawn from the collocation set (0: all of them); "
                      "the term is scaled by N/batch so the loss stays unbiased"},
    "dtype": {"type": str, "default": "float32", "choices": ("float32", "float64"),
              "help": "floating-point type of networks and points"},
    "derivatives": {"type": str, "default": "autograd", "choices": ("autograd", "forward"),
                    "help": "input derivatives by reverse mode (torch.autograd.grad) or nested forward mode "
                            "(torch.func.jvp); see benchmarks/pinn_derivatives.py"},
    "output_scale": {"type": bool, "default": True,
                     "help": "scale each field's output by its data range (or its boundary/initial values)"},
    "seed": {"type": int, "default": 0, "help": "seed of the network weights and of random collocation"},
    "freeze_params": {"type": int, "default": 0, "min": 0,
                      "help": "the first N training steps (Adam steps, then L-BFGS iterations) keep the physical "
                              "parameters at their starting values (prior medians): the networks first fit the "
                              "data and the physics, then everything trains together (0: from the start)"},
    "default_scale": {"type": float, "default": 0.01, "min": 0.0,
                      "help": "scale of a physics term (pde, boundary, initial) that no `physics` line sets"},
}

_COMMON = {
    "seed": {"type": int, "default": 1, "help": "seed of the draws"},
}
_LAST_LAYER_PRIOR = {
    "last_layer_prior": {"type": float, "default": 10.0, "min": 0.0,
                         "help": "network=last_layer: sd of the Normal(0, sd) prior on last-layer weights (in scaled "
                                 "output units)"},
}
_NETWORK_HELP = ("which network weights are random: all (every weight, a Gauss-Newton Laplace; laplace only), "
                 "last_layer (each network's last layer, the features fixed at the MAP) or fixed (none: the "
                 "networks at their MAP)")

PINN_INFER_OPTIONS: dict[str, dict[str, dict]] = {
    "map": {**_COMMON},
    "svi": {
        **_COMMON,
        "steps": {"type": int, "default": 2000, "min": 0, "help": "SVI steps after MAP training"},
        "lr": {"type": float, "default": 1e-3, "min": 0.0, "help": "Adam's learning rate for SVI"},
        "guide": {"type": str, "default": "meanfield", "choices": ("meanfield", "lowrank"),
                  "help": "Gaussian guide on the unconstrained physical parameters"},
        "rank": {"type": int, "default": 2, "min": 1, "help": "rank of the low-rank guide"},
        "particles": {"type": int, "default": 8, "min": 1, "help": "draws per ELBO estimate"},
        "draws": {"type": int, "default": 4000, "min": 1, "help": "posterior draws from the fitted guide"},
        "pretrain": {"type": bool, "default": True, "help": "train the MAP first (recommended)"},
    },
    "laplace": {
        **_COMMON,
        "network": {"type": str, "default": "all", "choices": ("all", "last_layer", "fixed"), "help": _NETWORK_HELP},
        **_LAST_LAYER_PRIOR,
        "weight_prior": {"type": float, "default": 1.0, "min": 0.0,
                         "help": "network=all: sd of the Normal(0, sd) prior on every weight that gives the "
                                 "curvature of directions no residual sees (the MAP itself is trained without it)"},
        "max_weights": {"type": int, "default": 8000, "min": 1,
                        "help": "network=all: the most weights the dense curvature may have (P x P in float64)"},
        "draws": {"type": int, "default": 4000, "min": 1, "help": "draws from the Gaussian approximation"},
    },
    "nuts": {
        **_COMMON,
        "network": {"type": str, "default": "last_layer", "choices": ("last_layer", "fixed"), "help": _NETWORK_HELP},
        **_LAST_LAYER_PRIOR,
        "chains": {"type": int, "default": 4, "min": 1, "help": "chains (run as one batch)"},
        "warmup": {"type": int, "default": 500, "min": 0, "help": "warm-up iterations per chain"},
        "draws": {"type": int, "default": 500, "min": 1, "help": "draws per chain"},
        "target_accept": {"type": float, "default": 0.8, "min": 0.0, "help": "NUTS target acceptance"},
        "max_tree_depth": {"type": int, "default": 10, "min": 1, "help": "NUTS maximum tree depth"},
        "metric": {"type": str, "default": "dense", "choices": ("diag", "dense"),
                   "help": "mass matrix, started from the Laplace covariance (dense suits the correlated "
                           "last-layer posterior)"},
        "adapt_metric": {"type": bool, "default": False,
                         "help": "re-estimate the mass matrix in Stan's warm-up windows (false: keep the Laplace "
                                 "covariance, adapt the step size only; short windows estimate a dense matrix badly)"},
    },
}


def resolve_options(spec: dict[str, dict], given: dict, where: str) -> dict:
    """Defaults of ``spec`` overridden by ``given``; ValueError naming ``where`` for a bad option."""
    out = {k: v["default"] for k, v in spec.items()}
    for key, value in dict(given).items():
        if key not in spec:
            raise ValueError(f"{where} has no option '{key}'; it accepts {', '.join(sorted(spec))}")
        s = spec[key]
        kind = s["type"]
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError(f"{where}: '{key}' must be true or false, not {value!r}")
        elif kind is int:
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float)
                                                                         and float(value).is_integer())):
                raise ValueError(f"{where}: '{key}' must be a whole number, not {value!r}")
            value = int(value)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: '{key}' must be a number, not {value!r}")
            value = float(value)
        else:
            value = str(value)
            if "choices" in s and value not in s["choices"]:
                raise ValueError(f"{where}: '{key}' must be one of {', '.join(s['choices'])}, not {value!r}")
        if "min" in s and value < s["min"]:
            raise ValueError(f"{where}: '{key}' must be at least {s['min']}, not {value!r}")
        out[key] = value
    return out
