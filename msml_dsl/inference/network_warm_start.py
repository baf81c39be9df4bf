"""Starting points for network (``mlp``) and Gaussian-process (``gp``) terms from smoothed derivatives.

The library warm start (library_warm_start.py) solves a linear problem; a network's weights enter
nonlinearly and usually share their equations with other unknown rates (``der(H) = alpha H - f``,
``der(L) = -gamma L + efficiency f``), so here the fit is a small nonlinear least-squares problem:

1. every directly observed state is smoothed and differentiated as for libraries
   (``smooth_observed_states``: GCV spline, two points trimmed at each end);
2. every equation that calls an ``mlp``/``gp`` term, and whose state and the states its
   right-hand side uses are all observed, contributes residuals ``der(x)(t_j) - rhs(t_j)``
   at the observation times of the common window, divided by the equation's derivative noise
   ``s_i`` (first 10 % of the derivative's sd, then the first fit's residual sd);
3. the unknowns are the terms' weights (``NAME_w``; ``NAME_beta`` of a GP, its amplitude and
   lengthscale staying at the start's values) *and* every other scalar parameter those
   equations use (``alpha``, ``gamma``, ``efficiency``), within their bounds; the weights' prior
   ``Normal(m, s)`` is an L2 penalty ``(w - m) / s`` — together the MAP of the derivative
   regression. ``scipy.optimize.least_squares`` with the symbolic Jacobian, from several small
   random weight vectors (``RESTARTS``); fits are ranked by their cost;
4. a start row gets the weights and rates of one fit (row r the r-th best distinct fit), and
   like the library warm start the smoothed initial values and the smoother's residual sd for
   bare-parameter inits and noise scales.

The ODE likelihood is never replaced: these are only the optimiser's starting points (MAP, and the
optimisation that places NUTS/ChEES chains). ``warm_starts(program, starts, notes)`` returns the
modified rows (none when no network equation is fully observed); ``derivative_fit(model)`` returns
the best fit's parameter values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy

from msml_dsl.inference.library_warm_start import (_write_inits_and_scales, observed_window, per_ir,
                                                   rewrite_starts, smooth_observed_states)

KINDS = {"mlp": "_w", "gp": "_beta"}      # term kind -> suffix of the parameter fitted
RESTARTS = 6
INITIAL_WEIGHT_SD = 0.3


@dataclass(frozen=True)
class _Problem:
    rows: list                  # (state index, lambdified rhs, lambdified gradient) per equation used
    hyper: tuple                # term parameter elements held at the start's values (GP amplitude, ...)
    theta: tuple                # fitted symbols: other scalar parameters, then the weights
    n_other: int
    lower: np.ndarray
    upper: np.ndarray
    prior_mean: np.ndarray      # per weight
    prior_sd: np.ndarray
    times: np.ndarray
    inputs: np.ndarray          # (times, 1 + states): time and smoothed states
    targets: np.ndarray         # (times, states): smoothed derivatives
    weight_params: tuple        # (parameter name, slice into the weights) per term
    other_params: tuple         # (parameter name, element index) per other symbol


_CACHE: dict[int, "_Problem | None"] = {}
_FITS: dict[tuple, list] = {}


def _problem(model) -> _Problem | None:
    return per_ir(_CACHE, model, _build)


def _number(e, default: float) -> float:
    try:
        return float(e)
    except (TypeError, ValueError):
        return default


def _build(ir) -> _Problem | None:
    terms = [t for t in getattr(ir, "unknowns", ()) if t.kind in KINDS and t.exact is None]
    if ir.ode is None or not terms:
        return None
    weights, hyper, weight_params, means, sds = [], [], [], [], []
    for term in terms:
        p = next((q for q in term.parameters if q.name == f"{term.name}{KINDS[term.kind]}"), None)
        if p is None:
            continue
        normal = p.distribution == "Normal" and len(p.args) == 2
        m, s = (_number(p.args[0], 0.0), _number(p.args[1], 1.0)) if normal else (0.0, 1.0)
        weight_params.append((p.name, slice(len(weights), len(weights) + len(p.elements))))
        weights += list(p.elements)
        means += [m] * len(p.elements)
        sds += [s] * len(p.elements)
        hyper += [e for q in term.parameters if q is not p for e in q.elements]
    if not weights:
        return None
    smoothed = smooth_observed_states(ir)
    states = list(ir.ode.states)
    wset, hset = set(weights), set(hyper)
    used_rows, used_states, other = [], set(), set()
    for i, (state, rhs) in enumerate(zip(states, ir.ode.rhs)):
        if not rhs.free_symbols & wset:
            continue
        needed = {s.name for s in states if s in rhs.free_symbols} | {state.name}
        if not needed <= set(smoothed):
            continue
        used_rows.append(i)
        used_states |= needed
        other |= {s for s in rhs.free_symbols if s not in set(states) | wset | hset | {ir.ode.time}}
    if not used_rows:
        return None
    # the other symbols must be scalar parameters (a vector element or a derived symbol: not fitted)
    by_symbol = {p.elements[0]: p for p in ir.parameters if not p.shape}
    if not other <= set(by_symbol):
        return None
    other = tuple(sorted(other, key=lambda s: s.name))
    window = observed_window(ir, smoothed, used_states, min_points=5)
    if window is None:
        return None
    times, inputs, targets = window
    theta = other + tuple(weights)
    arguments = [ir.ode.time, *states, *hyper, *theta]
    rows = []
    for i in used_rows:
        rhs = ir.ode.rhs[i]
        grad = [rhs.diff(s) for s in theta]
        rows.append((i, sympy.lambdify(arguments, rhs, "numpy", cse=True),
                     sympy.lambdify(arguments, grad, "numpy", cse=True)))
    lower = np.full(len(theta), -np.inf)
    upper = np.full(len(theta), np.inf)
    for k, s in enumerate(other):
        p = by_symbol[s]
        support = p.support or (p.lower, p.upper)
        if support[0] is not None and np.isfinite(support[0]):
            lower[k] = support[0]
        if support[1] is not None and np.isfinite(support[1]):
            upper[k] = support[1]
    return _Problem(rows, tuple(hyper), theta, len(other), lower, upper, np.array(means), np.array(sds),
                    times, inputs, targets, tuple(weight_params), tuple((by_symbol[s].name, 0) for s in other))


def _residuals(prob: _Problem, hyper: list[float], noise: np.ndarray):
    n = prob.times.size
    base = [prob.inputs[:, 0], *prob.inputs[:, 1:].T, *hyper]
    K = prob.n_other

    def fun(x):
        out = []
        for (i, f, _), s in zip(prob.rows, noise):
            with np.errstate(all="ignore"):
                out.append((prob.targets[:, i] - np.asarray(f(*base, *x), dtype=float) * np.ones(n)) / s)
        out.append((x[K:] - prob.prior_mean) / prob.prior_sd)
        return np.concatenate(out)

    def jac(x):
        blocks = []
        for (i, _, g), s in zip(prob.rows, noise):
            with np.errstate(all="ignore"):
                cols = [np.asarray(c, dtype=float) * np.ones(n) for c in g(*base, *x)]
            blocks.append(-np.column_stack(cols) / s)
        penalty = np.zeros((len(x) - K, len(x)))
        penalty[:, K:] = np.diag(1.0 / prob.prior_sd)
        blocks.append(penalty)
        return np.concatenate(blocks)

    return fun, jac


def _fit(prob: _Problem, hyper: list[float], other0: np.ndarray, seed: int = 0) -> list[tuple[float, np.ndarray]]:
    """Fits from RESTARTS random small weight vectors: (cost, theta), best first."""
    from scipy.optimize import least_squares

    key = (id(prob), tuple(np.round(hyper, 12)), tuple(np.round(other0, 12)), seed)
    if key in _FITS:
        return _FITS[key]
    rng = np.random.default_rng(seed)
    spread = np.array([np.nanstd(prob.targets[:, i]) for i, _, _ in prob.rows])
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    x_other = np.clip(other0, prob.lower[:prob.n_other] + 1e-9, prob.upper[:prob.n_other] - 1e-9)
    n_w = len(prob.theta) - prob.n_other
    fits = []
    for r in range(RESTARTS):
        x = np.concatenate([x_other, prob.prior_mean + INITIAL_WEIGHT_SD * rng.normal(size=n_w)])
        try:
            noise = 0.1 * spread
            for _ in range(2):          # assumed derivative noise, then the first fit's residual sd
                fun, jac = _residuals(prob, hyper, noise)
                sol = least_squares(fun, x, jac=jac, bounds=(prob.lower, prob.upper), method="trf", max_nfev=300)
                x = sol.x
                res = fun(x)[:len(noise) * prob.times.size].reshape(len(noise), -1) * noise[:, None]
                noise = np.maximum(np.sqrt(np.mean(res ** 2, axis=1)), 1e-3 * spread)
            fun, _ = _residuals(prob, hyper, noise)
            fits.append((float(np.sum(fun(x) ** 2)), x))
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            continue
    fits = [f for f in fits if np.isfinite(f[0])]
    fits.sort(key=lambda f: f[0])
    _FITS[key] = fits
    return fits


def _hyper_values(prob: _Problem, ir, values: dict, row: int) -> list[float]:
    out = []
    for symbol in prob.hyper:
        for p in list(ir.parameters):
            if symbol in p.elements:
                out.append(float(np.asarray(values[p.name][row], dtype=float).reshape(-1)[p.elements.index(symbol)]))
                break
        else:
            out.append(1.0)
    return out


def _default_other(prob: _Problem, ir) -> np.ndarray:
    """Starting values of the other rates: their prior's location, inside the bounds (else 1)."""
    by_name = {p.name: p for p in ir.parameters}
    out = []
    for name, _ in prob.other_params:
        p = by_name[name]
        v = _number(p.args[0], 1.0) if p.args else 1.0
        if p.distribution == "LogNormal":
            v = float(np.exp(v))
        if not np.isfinite(v) or v <= 0:
            v = 1.0
        out.append(v)
    return np.array(out, dtype=float)


def derivative_fit(model, values: dict | None = None, row: int = 0) -> dict[str, np.ndarray] | None:
    """The best derivative fit: ``{parameter name: value}`` for the weights and the other rates."""
    prob = _problem(model)
    if prob is None:
        return None
    hyper = _hyper_values(prob, model.ir, values, row) if values is not None else [1.0] * len(prob.hyper)
    fits = _fit(prob, hyper, _default_other(prob, model.ir))
    return _as_values(prob, fits[0][1]) if fits else None


def _as_values(prob: _Problem, x: np.ndarray) -> dict[str, np.ndarray]:
    out = {name: np.array(x[k]) for k, (name, _) in enumerate(prob.other_params)}
    w = x[prob.n_other:]
    for name, sl in prob.weight_params:
        out[name] = w[sl].copy()
    return out


def warm_starts(program, starts: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Copies of ``starts`` (unconstrained rows) with network/GP weights and rates from the derivative fit."""
    prob = _problem(program) if len(starts) else None
    if prob is None:
        return np.empty((0, program.dim))
    smoothed = smooth_observed_states(program.ir)
    other0 = _default_other(prob, program.ir)

    def write(values, row):
        fits = _fit(prob, _hyper_values(prob, program.ir, values, row), other0)
        if not fits:
            return False
        for name, v in _as_values(prob, fits[min(row, len(fits) - 1)][1]).items():
            values[name][row] = v
        _write_inits_and_scales(program, smoothed, values, row)
        return True

    z = rewrite_starts(program, starts, write)
    if notes is not None and len(z):
        eq = ", ".join(f"der({program.ir.ode.states[i].name})" for i, _, _ in prob.rows)
        notes.append("network/GP weights also start from a least-squares fit to smoothed derivatives "
                     f"({eq}), jointly with the equations' other rates")
    return z
