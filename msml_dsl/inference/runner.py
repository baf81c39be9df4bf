"""Inference on a compiled program: NUTS with chains as a batch, MAP, predictive draws.

The sampler sees only ``potential_and_grad`` of the program: a batched
function of unconstrained points, so the chains share every gradient call.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from msml_dsl.errors import InferenceFailed
from msml_dsl.inference import network_warm_start
from msml_dsl.inference.library_warm_start import warm_starts
from msml_dsl.inference.nuts import NutsResult, run_nuts
from msml_dsl.inference.optimize import MapResult, find_map, laplace_starts

DEFAULT_NUTS = {"chains": 4, "warmup": 1000, "draws": 1000, "seed": 1, "target_accept": 0.8,
                "max_tree_depth": 10, "metric": "auto", "init": "map", "thin": 1}
DEFAULT_MAP = {"seed": 1, "starts": 8, "max_iter": 1000}
# A dense metric pays for itself when parameters are correlated (ODE rates always are): on
# Lotka-Volterra it cut the leapfrog steps per draw from 35 to 7. Its covariance needs
# enough warm-up draws per dimension, so larger or briefly warmed-up models stay diagonal.
DENSE_METRIC_MAX_DIM = 50
DENSE_METRIC_MIN_WARMUP = 200
DEFAULT_CHEES = {"chains": 64, "superchains": 8, "warmup": 500, "draws": 250, "seed": 1, "target_accept": 0.651,
                 "init": "map", "thin": 1}


@dataclass
class PosteriorSample:
    """Raw NUTS output with the model's quantities per draw; arrays are (chain, draw, ...)."""

    parameters: dict[str, np.ndarray]
    derived: dict[str, np.ndarray]
    log_likelihood: dict[str, np.ndarray]
    posterior_predictive: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    settings: dict
    timings: dict[str, float]
    interrupted: bool = False
    init_notes: list[str] = field(default_factory=list)
    nuts: NutsResult | None = None
    nested_rhat: dict[str, float] = field(default_factory=dict)
    prior: dict[str, np.ndarray] = field(default_factory=dict)
    prior_predictive: dict[str, np.ndarray] = field(default_factory=dict)


def _quiet_unknown_terms(program, starts: np.ndarray) -> np.ndarray:
    """Copies of ``starts`` with every unknown term's coefficients at zero (the term switched off).

    Prior draws of a library's coefficients often make the ODE blow up or land in a poor mode;
    starting from "no missing physics" and letting the data switch terms on is the natural path.
    """
    from msml_dsl.symbolic.unknown_terms import coefficient_parameters

    names = [p.name for t in getattr(program.ir, "unknowns", ()) for p in t.parameters
             if p.name.endswith(("_z", "_beta", "_w"))]
    names += [p.name for t in getattr(program.ir, "unknowns", ()) if t.kind == "library"
              for p, _ in coefficient_parameters(t) if p.name not in names]
    if not names or not len(starts):
        return np.empty((0, program.dim))
    out = np.array(starts, dtype=float, copy=True)
    for name in names:
        site = program.layout[name]
        out[:, site.offset:site.offset + site.size] = 0.0
    return out


def _with_warm_starts(program, starts: np.ndarray, quiet: np.ndarray, how: str, notes: list[str]) -> np.ndarray:
    """The optimiser's starts plus copies with library coefficients (library_warm_start.py) and
    network/GP weights (network_warm_start.py) fitted to smoothed derivatives; with
    ``how='derivatives'`` those copies alone, when there are any."""
    warm = np.concatenate([warm_starts(program, starts[:4], notes),
                           network_warm_start.warm_starts(program, starts[:4], notes)])
    warm = np.unique(warm, axis=0) if len(warm) else warm
    if how == "derivatives":
        if len(warm):
            return warm
        notes.append("init=derivatives: no library, network or GP term sits in an equation whose states are all observed "
                     "directly, so the optimisation starts as with init=map")
    return np.concatenate([starts, quiet, warm])


def initial_points(program, n: int, how: str, seed: int, notes: list[str],
                   covariance: list | None = None, optimum: list | None = None) -> np.ndarray:
    """Starting points for n chains: 'map' (Laplace draws at the best MAP), 'prior', 'uniform', or
    'derivatives' (like 'map', optimising only from library coefficients fitted to smoothed derivatives).

    ``covariance`` and ``optimum`` (lists) receive the Laplace covariance and the point the draws
    are centred on, when there is one."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    program.reset_step_budget()
    pot = program.potential_and_grad
    exact = [t.name for t in getattr(program.ir, "unknowns", ()) if t.exact is not None]
    if how == "map" and exact:
        # the joint density of a latent GP's values has no useful mode: the optimiser lets the GP
        # interpolate the data and the noise scale run to zero, a funnel's neck to start chains in
        notes.append(f"the exact GP {', '.join(repr(n) for n in exact)} has no useful joint mode (the optimiser "
                     "interpolates the data and shrinks the noise); chains start from prior draws (init=prior)")
        how = "prior"
    if how in ("prior", "map", "derivatives"):
        prior_draws = program.sample_prior(max(4 * n, 16), seed=seed)
        z_prior = program.to_unconstrained({k: prior_draws[k] for k in program.layout})
        u, _ = pot(z_prior)
        z_prior = z_prior[np.isfinite(u)]
    else:
        z_prior = np.empty((0, program.dim))
    if how == "prior" and len(z_prior) >= n:
        return z_prior[:n]
    z_uniform = rng.uniform(-2, 2, size=(max(4 * n, 16), program.dim))
    if how in ("uniform", "prior"):   # prior: too few prior draws with a finite density
        u, _ = pot(z_uniform)
        pool = np.concatenate([z_prior, z_uniform[np.isfinite(u)]])
        if len(pool) < n:
            raise InferenceFailed("no starting point with a finite log density was found",
                                  help="check the priors, bounds and initial values; try init=map")
        return pool[:n]
    starts = np.concatenate([z_prior[:4], z_uniform[:4]])
    starts = _with_warm_starts(program, starts, _quiet_unknown_terms(program, starts[:4]), how, notes)
    result = find_map(pot, program.dim, starts)
    if not np.isfinite(result.log_density):
        raise InferenceFailed("no starting point with a finite log density was found (every optimisation failed)",
                              help="check the priors and bounds; the ODE may fail to solve for typical prior draws")
    if result.modes_disagree:
        notes.append(f"optimisations from {result.n_starts} starts reached different modes (log densities "
                     f"{np.round(np.sort(result.all_log_densities[np.isfinite(result.all_log_densities)])[::-1], 1).tolist()}); "
                     "chains start near the best")
    centre = _horseshoe_scales_reset(program, result.z, notes)
    if optimum is not None:
        optimum.append(centre)
    return laplace_starts(pot, centre, n, rng, covariance=covariance)


def _horseshoe_scales_reset(program, z: np.ndarray, notes: list[str]) -> np.ndarray:
    """The optimum ``z`` with a (partially) centred horseshoe's scales moved back into the bulk.

    Centred coefficients have no joint mode: as tau -> 0 the density of the near-zero coefficients
    grows as fast as (or faster than) the prior and likelihood lose, so the optimiser runs down the
    funnel's neck, a poor place to start chains. The coefficients the optimum found are kept and the
    scales reset as for a warm start: tau = 1, each lambda_k the candidate's standardised coefficient
    (or the term's threshold), the z_k solved to give the same coefficients.
    """
    from msml_dsl.inference.library_warm_start import write_term
    from msml_dsl.symbolic.unknown_terms import coefficient_parameters

    terms = [t for t in getattr(program.ir, "unknowns", ()) if t.kind == "library"
             and len({p.name for p, _ in coefficient_parameters(t)}) > 1]
    if not terms or not np.all(np.isfinite(z)):
        return z
    values = {k: np.array(v, dtype=float, copy=True) for k, v in program.to_constrained(z[None, :]).items()}
    for term in terms:
        env = {e: float(x) for p in term.parameters
               for e, x in zip(p.elements, np.asarray(values[p.name][0], dtype=float).reshape(-1))}
        a = np.array([float(c.coefficient.xreplace(env)) for c in term.candidates])
        if not np.all(np.isfinite(a)):
            continue
        write_term(term, a, values, 0)
    out = program.to_unconstrained({k: values[k] for k in program.layout})[0]
    u, _ = program.potential_and_grad(out[None, :])
    if not np.isfinite(u[0]):
        return z
    notes.append("chains start at the optimum's coefficients with the horseshoe's scales reset (tau = 1): "
                 "a centred horseshoe has no mode in its scales")
    return out


def resolve_metric(metric: str, dim: int, warmup: int) -> str:
    """The metric NUTS adapts: ``auto`` is dense for up to 50 dimensions with 200+ warm-up draws.

    >>> resolve_metric("auto", 8, 1000), resolve_metric("auto", 120, 1000), resolve_metric("diag", 8, 1000)
    ('dense', 'diag', 'diag')
    """
    if metric != "auto":
        return metric
    return "dense" if dim <= DENSE_METRIC_MAX_DIM and warmup >= DENSE_METRIC_MIN_WARMUP else "diag"


def sample_nuts(program, options: dict, progress: Callable | None = None) -> PosteriorSample:
    """Run NUTS on a compiled program and evaluate every draw's derived quantities and predictions."""
    o = {**DEFAULT_NUTS, **options, "method": "nuts"}
    o["metric"] = resolve_metric(o["metric"], program.dim, o["warmup"])
    notes: list[str] = []
    t0 = time.perf_counter()
    laplace: list = []
    optimum: list = []
    init = initial_points(program, o["chains"], o["init"], o["seed"], notes, covariance=laplace, optimum=optimum)
    t_init = time.perf_counter() - t0
    fixed = _fixed_at_optimum(program, optimum, notes)
    if fixed is not None:  # NUTS samples the other coordinates; the fixed ones keep the optimum's values
        free = np.setdiff1d(np.arange(program.dim), fixed)
        potential = _FixedCoordinates(program.potential_and_grad, optimum[0], free)
        o["metric"] = resolve_metric(options.get("metric", DEFAULT_NUTS["metric"]), free.size, o["warmup"])
        laplace = [_conditional_covariance(laplace[0], free)] if laplace else laplace
        init = init[:, free]
    else:
        potential = program.potential_and_grad
    inverse_metric = _laplace_metric(program, laplace, o["metric"], notes)
    result = run_nuts(potential, init, warmup=o["warmup"], draws=o["draws"], seed=o["seed"],
                      target_accept=o["target_accept"], max_tree_depth=o["max_tree_depth"], metric=o["metric"],
                      progress=progress, inverse_metric=inverse_metric)
    if fixed is not None:
        result = dataclasses.replace(result, positions=potential.embed(result.positions))
    return _posterior(program, result, o, notes, t_init, time.perf_counter() - t0 - t_init)


class _FixedCoordinates:
    """The potential over the free coordinates of z, the others held at ``z_fixed``'s values."""

    def __init__(self, potential, z_fixed: np.ndarray, free: np.ndarray):
        self.potential, self.z_fixed, self.free = potential, np.asarray(z_fixed, dtype=float), free

    def embed(self, z_free: np.ndarray) -> np.ndarray:
        out = np.broadcast_to(self.z_fixed, z_free.shape[:-1] + self.z_fixed.shape).copy()
        out[..., self.free] = z_free
        return out

    def __call__(self, z_free: np.ndarray, jacobian: bool = True):
        u, g = self.potential(self.embed(np.atleast_2d(z_free)), jacobian)
        return u, g[:, self.free]


def _fixed_at_optimum(program, optimum: list, notes: list[str]) -> np.ndarray | None:
    """Coordinates of z that NUTS keeps at the optimum (networks with posterior=last_layer), or None."""
    fixed, names = [], []
    for term in getattr(program.ir, "unknowns", ()):
        if term.fixed_at_optimum:
            site = program.layout[term.parameters[0].name]
            fixed += [site.offset + i for i in term.fixed_at_optimum]
            names.append(term.name)
    if not fixed:
        return None
    if not optimum:
        raise InferenceFailed(f"posterior=last_layer ({', '.join(names)}) needs the optimum as the hidden layers' "
                              "values", help="use init=map (or derivatives) with it")
    notes.append(f"the hidden layers of {', '.join(repr(n) for n in names)} stay at the optimum "
                 f"({len(fixed)} weights, posterior=last_layer); NUTS samples the output layer and the other "
                 "parameters, so the bands leave out the hidden layers' uncertainty")
    return np.asarray(fixed, dtype=np.int64)


def _conditional_covariance(cov, free: np.ndarray):
    """The Laplace covariance of the free coordinates with the others held fixed: inv(H_free,free)."""
    if cov is None:
        return None
    try:
        precision = np.linalg.inv(np.asarray(cov, dtype=float))
        return np.linalg.inv(precision[np.ix_(free, free)])
    except np.linalg.LinAlgError:
        return None


def _laplace_metric(program, laplace: list, metric: str, notes: list[str]):
    """The warm-up's first inverse metric: the Laplace covariance at the optimum for models with unknown
    terms, else None (the identity, as Stan).

    An unknown term's parameters (coefficients, scales, weights) and the rates around them span
    orders of magnitude in scale; from the identity, Stan's first 75 warm-up iterations (before the
    first metric window) take steps as small as the narrowest direction and reach the deepest trees
    (on Lotka-Volterra with a library, every one of them). The windows then refine this start.
    """
    if not getattr(program.ir, "unknowns", ()) or not laplace or laplace[0] is None:
        return None
    cov = np.asarray(laplace[0], dtype=float)
    if not np.all(np.isfinite(cov)):
        return None
    notes.append(f"warm-up starts from the Laplace approximation's {'covariance' if metric == 'dense' else 'variances'} "
                 "as its metric")
    return cov if metric == "dense" else np.diag(cov).copy()


def sample_chees(program, options: dict, progress: Callable | None = None) -> PosteriorSample:
    """Run ChEES-HMC: many chains in lockstep, grouped in superchains for nested R-hat."""
    from msml_dsl.inference.chees import CheesSettings, nested_rhat, run_chees

    o = {**DEFAULT_CHEES, **options, "method": "chees"}
    chains, superchains = int(o["chains"]), int(o["superchains"])
    if chains % superchains:
        raise InferenceFailed(f"chees needs chains ({chains}) to be a multiple of superchains ({superchains})")
    notes: list[str] = []
    if any(t.fixed_at_optimum for t in getattr(program.ir, "unknowns", ())):
        notes.append("posterior=last_layer is a NUTS setting: chees samples every weight of the network")
    t0 = time.perf_counter()
    starts = initial_points(program, superchains, o["init"], o["seed"], notes)
    init = np.repeat(starts, chains // superchains, axis=0)  # chains of a superchain share their start
    t_init = time.perf_counter() - t0
    result = run_chees(program.potential_and_grad, init, warmup=o["warmup"], draws=o["draws"], seed=o["seed"],
                       settings=CheesSettings(target_accept=o["target_accept"]), progress=progress)
    sample = _posterior(program, result, o, notes, t_init, time.perf_counter() - t0 - t_init)
    for name, v in sample.parameters.items():
        flat = v.reshape(v.shape[0], v.shape[1], -1)
        for j in range(flat.shape[2]):
            label = name if flat.shape[2] == 1 else f"{name}[{j + 1}]"
            sample.nested_rhat[label] = nested_rhat(flat[:, :, j], superchains)
    return sample


def _posterior(program, result: NutsResult, o: dict, notes: list[str], t_init: float,
               t_sample: float) -> PosteriorSample:
    """Constrained draws, derived quantities, log likelihood, predictive and prior draws of a run."""
    t0 = time.perf_counter()
    C, n_draws = result.positions.shape[:2]
    if n_draws == 0:
        raise KeyboardInterrupt
    keep = slice(None, None, max(1, int(o.get("thin", 1))))
    positions = result.positions[:, keep]
    n_draws = positions.shape[1]
    values = program.to_constrained(positions.reshape(C * n_draws, -1))
    per_draw = program.evaluate_draws(values, seed=o["seed"])
    prior, prior_predictive = prior_draws(program, min(n_draws * C, 1000), o["seed"])

    def grouped(d):
        return {k: v.reshape((C, n_draws) + v.shape[1:]) for k, v in d.items()}

    stats = {
        "lp": -result.potential_energy[:, keep],
        "diverging": result.diverging[:, keep],
        "tree_depth": result.tree_depth[:, keep],
        "n_steps": result.n_leapfrog[:, keep],
        "energy": result.energy[:, keep],
        "acceptance_rate": result.accept_stat[:, keep],
        "step_size": np.broadcast_to(result.step_size[:, None], (C, n_draws)).copy(),
    }
    return PosteriorSample(grouped(values), grouped(per_draw["derived"]), grouped(per_draw["log_likelihood"]),
                           grouped(per_draw["predictive"]), stats, o,
                           {"initialisation_s": t_init, "sampling_s": t_sample,
                            "postprocessing_s": time.perf_counter() - t0,
                            "gradient_calls": result.n_batched_calls, "gradient_evals": result.n_gradient_evals},
                           result.interrupted, notes, result, prior=prior, prior_predictive=prior_predictive)


def prior_draws(program, n: int, seed: int) -> tuple[dict, dict]:
    """Prior draws of parameters and derived quantities, and prior predictive observations, as (1, n, ...)."""
    draws = program.sample_prior(n, seed=seed + 1)
    observed = {o.name: o for o in program.ir.observations}
    prior = {k: v[None] for k, v in draws.items() if k not in observed}
    predictive = {k: v[None][..., observed[k].mask] for k, v in draws.items() if k in observed}
    return prior, predictive


def map_estimate(program, options: dict) -> tuple[MapResult, dict[str, np.ndarray]]:
    """The posterior mode (no Jacobian: the mode of the constrained density) from several starts."""
    o = {**DEFAULT_MAP, **options}
    rng = np.random.default_rng(o["seed"])
    program.reset_step_budget()
    prior = program.sample_prior(o["starts"], seed=o["seed"])
    z_prior = program.to_unconstrained({k: prior[k] for k in program.layout})
    starts = np.concatenate([z_prior, rng.uniform(-2, 2, size=(o["starts"], program.dim))])
    starts = _with_warm_starts(program, starts, _quiet_unknown_terms(program, z_prior), o.get("init", "map"), [])

    def pot(z):
        return program.potential_and_grad(z, jacobian=False)

    result = find_map(pot, program.dim, starts, max_iter=o["max_iter"])
    if not np.isfinite(result.log_density):
        raise InferenceFailed("the optimiser found no point with a finite log density",
                              help="check priors, bounds and initial values")
    values = program.to_constrained(result.z[None, :])
    return result, {k: v[0] for k, v in values.items()}
