"""Starting points for sparse-library coefficients from smoothed derivatives of the data (SINDy's STLSQ).

A library term's coefficients enter the right-hand side linearly, so when the states an equation
needs are observed directly, a least-squares fit of their time derivatives gives the coefficients
almost for free (Brunton, Proctor & Kutz 2016). msml never *fits* the model that way — the
likelihood stays the one of the observations through the ODE solution — but it starts the
optimiser (MAP, and the optimisation that places NUTS/ChEES chains) there:

1. every state observed directly (``Normal(x, s)``, ``StudentT(nu, x, s)``, ``LogNormal(log(x), s)``...)
   is smoothed by a penalised cubic spline whose penalty is chosen by generalised cross-validation
   (``scipy.interpolate.make_smoothing_spline``; on the log scale for ``LogNormal``) and
   differentiated;
2. each equation holding a library term, whose state and inputs are all observed, contributes the
   rows ``der(x)(t_j) - known part = sum_k a_k * d rhs / d a_k`` at the observation times inside the
   common observed window (two points trimmed at each end, where spline derivatives are poor); the
   other parameters of the equation take the start point's values;
3. sequentially thresholded least squares: solve, zero every coefficient whose typical contribution
   ``|a_k| s_k`` (``s_k``: the candidate's sd over the data) is below the term's ``threshold`` —
   the same rule as the inclusion probability's — and solve again on the rest, until the support
   stops changing;
4. the coefficients are written into the term's parameters: for a horseshoe, the global scale is set
   so the median kept candidate needs no local scaling, each local scale so a kept candidate's
   ``z_k`` is +-1 and a dropped one's unit ``z_k`` would contribute ``threshold``, and ``z_k``
   solves ``coefficient_k = a_k`` (so ``z_k = +-1`` kept, ``0`` dropped); for the other priors
   ``z_k`` solves it directly. An initial value given by a
   bare parameter (``init x = x0``) takes the smoothed state at the start time when the data begin
   there, and an observation's scale given by a bare parameter takes the smoother's residual sd.

``warm_starts(program, starts, notes)`` returns the starts so modified (none when no library
equation is fully observed). ``derivative_fit(program)`` returns the STLSQ coefficients themselves.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import sympy

from msml_dsl.symbolic.unknown_terms import coefficient_parameters

DIRECT = {"Normal": 0, "StudentT": 1, "Cauchy": 0, "LogNormal": 0}   # distribution -> index of its location
TRIM = 2                                                               # points dropped at each end


@dataclass(frozen=True)
class SmoothedState:
    """A directly observed state, smoothed: values and derivatives at its observation times."""

    times: np.ndarray
    values: np.ndarray
    derivatives: np.ndarray
    spline: object
    log_scale: bool
    residual_sd: float
    observation: str

    def at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, ds = self.spline(t), self.spline.derivative()(t)
        return (np.exp(s), np.exp(s) * ds) if self.log_scale else (s, ds)


@dataclass(frozen=True)
class _Regression:
    """The linear structure of the equations that hold library coefficients."""

    rows: list                      # (state index, lambdified r0, lambdified columns) per equation used
    other: tuple                    # other parameter symbols the equations use
    coefficients: list              # (term, candidate index, symbol a) in column order
    times: np.ndarray
    inputs: np.ndarray              # (len(times), n states + 1): time and smoothed states
    targets: np.ndarray             # (len(times), n states): smoothed derivatives


_CACHE: dict[int, "_Regression | None"] = {}       # id(ir) -> regression, dropped with the IR


def smooth_observed_states(ir) -> dict[str, SmoothedState]:
    """Each state observed directly, smoothed by a GCV-penalised cubic spline (the first observation wins)."""
    from scipy.interpolate import make_smoothing_spline

    if ir.ode is None:
        return {}
    states = {s.name for s in ir.ode.states}
    out: dict[str, SmoothedState] = {}
    for obs in ir.observations:
        if obs.distribution not in DIRECT or obs.times is None or len(obs.args) <= DIRECT[obs.distribution]:
            continue
        loc = obs.args[DIRECT[obs.distribution]]
        log_scale = obs.distribution == "LogNormal"
        target = loc.args[0] if (log_scale and isinstance(loc, sympy.log)) else (None if log_scale else loc)
        if not isinstance(target, sympy.Symbol) or target.name not in states or target.name in out:
            continue
        t, y = np.asarray(obs.times, dtype=float)[obs.mask], np.asarray(obs.values, dtype=float)[obs.mask]
        if log_scale:
            y = np.log(y)
        order = np.argsort(t, kind="stable")
        t, y = t[order], y[order]
        t, index = np.unique(t, return_index=True)
        y = np.array([v.mean() for v in np.split(y, index[1:])])
        if t.size < 2 * TRIM + 5:
            continue
        spline = make_smoothing_spline(t, y)
        residual = float(np.std(y - spline(t), ddof=1))
        s, ds = spline(t), spline.derivative()(t)
        values, derivatives = (np.exp(s), np.exp(s) * ds) if log_scale else (s, ds)
        out[target.name] = SmoothedState(t, values, derivatives, spline, log_scale, residual, obs.name)
    return out


def per_ir(cache: dict, model, build):
    """``build(model.ir)``, computed once per IR and dropped with it."""
    key = id(model.ir)
    if key not in cache:
        cache[key] = build(model.ir)
        weakref.finalize(model.ir, cache.pop, key, None)
    return cache[key]


def _regression(model) -> _Regression | None:
    """The equations' linear structure in the library coefficients, built once per IR (``model.ir``)."""
    return per_ir(_CACHE, model, _build_regression)


def observed_window(ir, smoothed: dict[str, SmoothedState], used: set[str], min_points: int = 3):
    """``(times, inputs, targets)`` over the common smoothed window of the states ``used``
    (``TRIM`` points dropped at each end): the time and smoothed states, and their derivatives
    (NaN for a state not observed). None with fewer than ``min_points`` times."""
    lo = max(smoothed[n].times[TRIM] for n in used)
    hi = min(smoothed[n].times[-1 - TRIM] for n in used)
    times = np.unique(np.concatenate([smoothed[n].times for n in used]))
    times = times[(times >= lo) & (times <= hi)]
    if times.size < min_points:
        return None
    states = ir.ode.states
    inputs = np.zeros((times.size, len(states) + 1))
    targets = np.full((times.size, len(states)), np.nan)
    inputs[:, 0] = times
    for j, s in enumerate(states):
        if s.name in smoothed:
            inputs[:, j + 1], targets[:, j] = smoothed[s.name].at(times)
    return times, inputs, targets


def _build_regression(ir) -> _Regression | None:
    terms = [t for t in getattr(ir, "unknowns", ()) if t.kind == "library"]
    if ir.ode is None or not terms:
        return None
    smoothed = smooth_observed_states(ir)
    states = list(ir.ode.states)
    coefficients, replace = [], {}
    for term in terms:
        carriers = coefficient_parameters(term)
        if not carriers:
            continue
        for k, (c, (_, zk)) in enumerate(zip(term.candidates, carriers)):
            a = sympy.Symbol(f"_a_{term.name}_{k}", real=True)
            scale = c.coefficient.diff(zk)
            if scale == 0 or scale.has(zk):
                continue
            replace[zk] = a / scale
            coefficients.append((term, k, a))
    if not coefficients:
        return None
    a_symbols = [a for _, _, a in coefficients]
    rows, used_states, other = [], set(), set()
    library_params = {e for t in terms for p in t.parameters for e in p.elements}
    for i, (state, rhs) in enumerate(zip(states, ir.ode.rhs)):
        if not rhs.free_symbols & set(replace):
            continue
        expr = sympy.expand(rhs.xreplace(replace))
        if expr.free_symbols & library_params:          # a coefficient that does not cancel: not linear
            return None
        split = _linear_parts(expr, a_symbols)
        if split is None:
            return None                                 # the term enters nonlinearly
        needed = {s.name for s in states if s in expr.free_symbols} | {state.name}
        if not needed <= set(smoothed):
            continue
        rows.append((i, *split))
        used_states |= needed
        other |= {s for s in expr.free_symbols if s not in set(states) | set(a_symbols) | {ir.ode.time}}
    if not rows:
        return None
    window = observed_window(ir, smoothed, used_states)
    if window is None:
        return None
    times, inputs, targets = window
    other = tuple(sorted(other, key=lambda s: s.name))
    arguments = [ir.ode.time, *states, *other]
    compiled = [(i, sympy.lambdify(arguments, r0, "numpy"), sympy.lambdify(arguments, columns, "numpy"))
                for i, r0, columns in rows]
    return _Regression(compiled, other, coefficients, times, inputs, targets)


def _linear_parts(expr: sympy.Expr, a_symbols: list) -> tuple[sympy.Expr, list] | None:
    """``expr = r0 + sum_k columns[k] * a_k`` for an expanded ``expr``; None if it is not linear in the a's."""
    index = {a: k for k, a in enumerate(a_symbols)}
    base, columns = [], [[] for _ in a_symbols]
    for part in sympy.Add.make_args(expr):
        present = [a for a in part.free_symbols if a in index]
        if not present:
            base.append(part)
            continue
        column = part.diff(present[0]) if len(present) == 1 else None
        if column is None or column.has(present[0]):
            return None
        columns[index[present[0]]].append(column)
    return sympy.Add(*base), [sympy.Add(*c) for c in columns]


def _other_values(reg: _Regression, values: dict[str, np.ndarray], ir, row: int) -> list[float]:
    """The start's value of each other parameter element the equations use."""
    out = []
    for symbol in reg.other:
        for p in ir.parameters:
            if symbol in p.elements:
                v = np.asarray(values[p.name][row], dtype=float).reshape(-1)
                out.append(float(v[p.elements.index(symbol)]))
                break
        else:
            out.append(0.0)
    return out


def stlsq(A: np.ndarray, y: np.ndarray, scales: np.ndarray, thresholds: np.ndarray,
          max_rounds: int = 20) -> np.ndarray:
    """Sequentially thresholded least squares (Brunton et al. 2016) on standardised contributions.

    >>> A = np.c_[np.arange(5.0), np.ones(5)]; y = 2 * np.arange(5.0)
    >>> np.round(stlsq(A, y, np.ones(2), np.full(2, 0.1)), 6).tolist()
    [2.0, 0.0]
    """
    keep = np.ones(A.shape[1], dtype=bool)
    coef = np.zeros(A.shape[1])
    for _ in range(max_rounds):
        coef = np.zeros(A.shape[1])
        if keep.any():
            coef[keep] = np.linalg.lstsq(A[:, keep], y, rcond=None)[0]
        new = keep & (np.abs(coef) * scales >= thresholds)
        if np.array_equal(new, keep):
            break
        keep = new
    coef[~keep] = 0.0
    return coef


def _fit(reg: _Regression, other: list[float]) -> np.ndarray | None:
    blocks_a, blocks_y = [], []
    for i, r0, columns in reg.rows:
        args = [reg.inputs[:, 0], *reg.inputs[:, 1:].T, *other]
        with np.errstate(all="ignore"):
            base = np.asarray(r0(*args), dtype=float) * np.ones(reg.times.size)
            cols = [np.asarray(c, dtype=float) * np.ones(reg.times.size) for c in columns(*args)]
        blocks_a.append(np.column_stack(cols))
        blocks_y.append(reg.targets[:, i] - base)
    A, y = np.concatenate(blocks_a), np.concatenate(blocks_y)
    if not (np.isfinite(A).all() and np.isfinite(y).all()):
        return None
    scales = np.array([term.candidates[k].scale for term, k, _ in reg.coefficients])
    thresholds = np.array([term.threshold for term, _, _ in reg.coefficients])
    return stlsq(A, y, scales, thresholds)


def derivative_fit(model, values: dict[str, np.ndarray] | None = None, row: int = 0) -> dict[str, np.ndarray] | None:
    """The STLSQ coefficients per library term (``{name: (K,)}``; None when no equation is fully observed).

    ``model`` is anything with an ``ir`` (a compiled model or its program). ``values`` (constrained,
    batched) supplies the other parameters the equations use (row ``row``); without it they are 1.
    """
    reg = _regression(model)
    if reg is None:
        return None
    other = _other_values(reg, values, model.ir, row) if (values is not None and reg.other) else [1.0] * len(reg.other)
    coef = _fit(reg, other)
    if coef is None:
        return None
    out = {t.name: np.zeros(len(t.candidates)) for t, _, _ in reg.coefficients}
    for (term, k, _), c in zip(reg.coefficients, coef):
        out[term.name][k] = c
    return out


def _multipliers(term, carriers, values: dict, row: int) -> np.ndarray:
    """d coefficient_k / d z_k at the term's current non-z parameter values (row ``row``)."""
    env = {}
    coefficient_names = {p.name for p, _ in carriers}
    for p in term.parameters:
        if p.name not in coefficient_names:
            v = np.asarray(values[p.name][row], dtype=float).reshape(-1)
            env.update({e: float(x) for e, x in zip(p.elements, v)})
    out = np.zeros(len(term.candidates))
    for k, (c, (_, zk)) in enumerate(zip(term.candidates, carriers)):
        m = c.coefficient.diff(zk).xreplace(env)
        out[k] = float(m) if m.is_number else np.nan
    return out


def _rescale(values: dict, name: str, row: int, factor, index=None) -> None:
    """Multiply a scale parameter by ``factor``; a ``_b`` (the Gamma denominator of ``a / sqrt(b)``) by factor^-2."""
    target = values[name][row] if index is None else values[name][row][index]
    new = target / np.square(factor) if name.endswith("_b") else target * factor
    if index is None:
        values[name][row] = new
    else:
        values[name][row][index] = new


def _carrier(names: list[str]) -> list[str]:
    """The parameter that carries a scale: the ``_b`` of an ``a / sqrt(b)`` pair (its heavy tail), else the one."""
    b = [n for n in names if n.endswith("_b")]
    return b[:1] if b else names[:1]


def write_term(term, a: np.ndarray, values: dict[str, np.ndarray], row: int) -> None:
    """Set a term's parameters (in ``values``, row ``row``) so its coefficients are ``a``.

    The shrinkage scales (``NAME_tau*`` global, ``NAME_lambda*`` per candidate; a half-Cauchy
    written as ``a / sqrt(b)`` has both parts) start at 1, the global one is scaled so the median kept
    candidate needs no local scaling, each local one so a kept candidate's ``z_k`` is +-1 and a dropped
    one's unit ``z_k`` contributes ``threshold``; then ``z_k`` solves ``coefficient_k = a_k`` exactly.
    """
    scales = np.array([c.scale for c in term.candidates])
    contributions = np.abs(a) * scales
    kept = contributions > 0
    wanted = np.where(kept, np.abs(a), term.threshold / scales)          # |multiplier| giving |z| = 1
    carriers = coefficient_parameters(term)
    global_scales = [p.name for p in term.parameters if p.name.startswith(f"{term.name}_tau")]
    local_scales = [p.name for p in term.parameters if p.name.startswith(f"{term.name}_lambda")]
    for name in global_scales + local_scales:
        values[name][row] = np.ones_like(values[name][row])
    if len({p.name for p, _ in carriers}) > 1 and len(local_scales) == 1:
        # the (partially) centred horseshoe: tau = 1 and each lambda_k = |c_k s_k| (a dropped one's
        # threshold), so every standardised coefficient sits about one prior sd from zero
        values[local_scales[0]][row] = np.where(kept, contributions, term.threshold)
        global_scales = local_scales = []
    global_scales, local_scales = _carrier(global_scales), _carrier(local_scales)
    if global_scales:
        m = np.abs(_multipliers(term, carriers, values, row))
        ratio = wanted / m
        ratio = ratio[kept] if kept.any() else ratio
        if np.isfinite(ratio).all() and (ratio > 0).all():
            factor = float(np.median(ratio))
            for name in global_scales:
                _rescale(values, name, row, factor)
    if local_scales:
        m = np.abs(_multipliers(term, carriers, values, row))
        for k in range(len(a)):
            if np.isfinite(m[k]) and m[k] > 0:
                for name in local_scales:
                    _rescale(values, name, row, wanted[k] / m[k], index=k)
    m = _multipliers(term, carriers, values, row)
    z = np.where(np.isfinite(m) & (m != 0), a / np.where(m != 0, m, 1.0), 0.0)
    if len({p.name for p, _ in carriers}) == 1:
        values[carriers[0][0].name][row] = z
    else:                                   # the centred horseshoe: one scalar per coefficient
        for (p, _), v in zip(carriers, z):
            values[p.name][row] = v


def _write_inits_and_scales(program, smoothed: dict[str, SmoothedState], values: dict, row: int) -> None:
    """Bare-parameter initial values from the smoothed states, bare-parameter noise scales from the residuals."""
    ir = program.ir
    scalar = {p.elements[0]: p.name for p in ir.parameters if not p.shape}
    for state, init in zip(ir.ode.states, ir.ode.inits):
        sm = smoothed.get(state.name)
        if sm is not None and init in scalar and abs(sm.times[0] - ir.ode.t0) < 1e-9:
            values[scalar[init]][row] = float(sm.at(np.array([ir.ode.t0]))[0][0])
    by_obs = {sm.observation: sm for sm in smoothed.values()}
    for obs in ir.observations:
        sm = by_obs.get(obs.name)
        if sm is None or len(obs.args) <= DIRECT[obs.distribution] + 1:
            continue
        scale = obs.args[DIRECT[obs.distribution] + 1]
        if scale in scalar and sm.residual_sd > 0:
            values[scalar[scale]][row] = sm.residual_sd


def rewrite_starts(program, starts: np.ndarray, write) -> np.ndarray:
    """Copies of the unconstrained ``starts`` after ``write(values, row)`` edits each row's constrained
    values in place; rows where it returns False, or that are not finite afterwards, are dropped."""
    values = program.to_constrained(np.asarray(starts, dtype=float))
    values = {k: np.array(v, dtype=float, copy=True) for k, v in values.items()}
    ok = [row for row in range(len(starts)) if write(values, row)]
    if not ok:
        return np.empty((0, program.dim))
    z = program.to_unconstrained(values)[ok]
    return z[np.isfinite(z).all(axis=1)]


def warm_starts(program, starts: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Copies of ``starts`` (unconstrained rows) with library coefficients from the derivative fit.

    Empty (0, dim) when the model has no library term in an equation whose states are all observed.
    """
    empty = np.empty((0, program.dim))
    if not len(starts) or _regression(program) is None:
        return empty
    smoothed = smooth_observed_states(program.ir)

    def write(values, row):
        fit = derivative_fit(program, values, row)
        if fit is None:
            return False
        _write_inits_and_scales(program, smoothed, values, row)
        for term in program.ir.unknowns:
            if term.name in fit:
                write_term(term, fit[term.name], values, row)
        return True

    z = rewrite_starts(program, starts, write)
    if notes is not None and len(z):
        reg = _regression(program)
        eq = ", ".join(f"der({program.ir.ode.states[i].name})" for i, _, _ in reg.rows)
        notes.append(f"library coefficients also start from a sequentially thresholded least-squares fit of "
                     f"smoothed derivatives ({eq})")
    return z
