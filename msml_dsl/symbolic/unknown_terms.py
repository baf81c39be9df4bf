"""Unknown terms ("missing physics") as finite expansions with structured priors.

Each ``unknown f(inputs) : ...`` becomes a SymPy expression in its inputs and new
latent parameters, so everything downstream — the compiled ODE solver with its
sensitivities, the compiled log density, NUTS and MAP — handles it unchanged:

* ``library(poly(S, I, degree=2), fourier(t, n=2, period=365), S / (1 + S), sparsity=...)``
  is ``sum_k c_k phi_k(inputs)``. Each candidate is standardised by its standard deviation
  over the data (``phi_k / s_k``), so the sparsity prior acts on every candidate's typical
  contribution ``c_k s_k`` in the units of the equation. Priors: ``horseshoe(tau0)``
  (``c_k s_k = sqrt(tau lambda_k) z_k``, z_k ~ Normal(0, sqrt(tau lambda_k)), tau ~ HalfCauchy(tau0),
  lambda_k ~ HalfCauchy(1): partially centred, each z_k a scalar ``NAME_z{k}``), the regularised horseshoe ``horseshoe(tau0, slab_scale=c, slab_df=nu)``
  (Piironen & Vehtari 2017; see ``_sparsity_prior``), ``laplace(b)``, ``normal(s)`` and
  ``spike_slab(p, slab)`` (a continuous
  two-component mixture with a spike of slab/100, so NUTS can move between them).
* ``gp(kernel=rbf|matern32|matern52|periodic, basis=16, lengthscale=..., amplitude=...)`` is the
  Hilbert-space basis approximation of a Gaussian process (Solin & Särkkä 2020; Riutort-Mayol
  et al. 2023): ``f(x) = amplitude * sum_j sqrt(S(sqrt(lambda_j); lengthscale)) phi_j(x) beta_j``
  with Laplacian eigenfunctions phi_j on the inputs' range widened by ``boundary_factor``
  (2.5), beta_j ~ Normal(0, 1). Inputs are standardised to [-1, 1] over the data, so
  lengthscales are in units of half the data range. The periodic kernel uses its Fourier
  (Bessel) expansion with the lengthscale fixed by the option.
* ``mlp(hidden=[16, 16], activation=tanh, prior=Normal(0, 1), output_scale=...)`` is a small
  network written out symbolically; its weights are one vector parameter with the given prior,
  its inputs standardised over the data and its output multiplied by ``output_scale`` (by
  default the typical rate of change, from the data, of the states whose equations call it).

The data scales come from the observations: an input that is a state or field observed directly
(``Normal(H, s)``, ``LogNormal(log(H), s)``, ``Poisson(H)``...) takes that column's values;
the time takes its declared range. An input with no data uses the scale 1 and a note says so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import sympy

from msml_dsl.semantics.model import UnknownInfo
from msml_dsl.syntax import ast
from msml_dsl.syntax.evaluate import evaluate

ACTIVATION_FUNCTIONS = {
    "tanh": sympy.tanh, "sigmoid": lambda x: 1 / (1 + sympy.exp(-x)), "sin": sympy.sin,
    "softplus": lambda x: sympy.log(1 + sympy.exp(x)), "silu": lambda x: x / (1 + sympy.exp(-x)),
    "elu": lambda x: sympy.Piecewise((x, x > 0), (sympy.exp(x) - 1, True)),
    "relu": lambda x: sympy.Max(x, 0), "gelu": lambda x: x / (1 + sympy.exp(-1.702 * x)),
}


@dataclass(frozen=True)
class TermParameter:
    """A latent parameter an unknown term adds (a scalar or a vector)."""

    name: str
    shape: tuple[int, ...]
    distribution: str
    args: tuple[sympy.Expr, ...]
    elements: tuple[sympy.Symbol, ...]


@dataclass(frozen=True)
class Candidate:
    """One library candidate: its feature, its coefficient on the original scale, and its data sd."""

    label: str
    feature: sympy.Expr
    coefficient: sympy.Expr
    scale: float


@dataclass(frozen=True)
class ExpandedTerm:
    name: str
    kind: str
    inputs: tuple[sympy.Symbol, ...]                 # placeholders the expression is written in
    input_names: tuple[str, ...]
    expression: sympy.Expr
    parameters: tuple[TermParameter, ...]
    candidates: tuple[Candidate, ...] = ()
    threshold: float = 0.1
    input_ranges: tuple[tuple[float, float], ...] = ()
    notes: tuple[str, ...] = field(default=())
    # elements of parameters[0] that NUTS keeps at the optimum (an mlp's hidden layers with
    # posterior=last_layer); empty: every parameter is sampled
    fixed_at_optimum: tuple[int, ...] = ()
    # an exact GP (gp terms evaluated only at inputs known from the data, ir/exact_gp.py): the term's
    # values at its points are computed by the backend, not by `expression`
    exact: ExactGaussianProcess | None = None

    def apply(self, args) -> sympy.Expr:
        """The term at actual arguments (``f(H, L)`` in an equation)."""
        return self.expression.xreplace(dict(zip(self.inputs, args)))


@dataclass(frozen=True, eq=False)
class ExactGaussianProcess:
    """A ``gp`` term as an exact Gaussian process over the finite set of inputs it is called at.

    The term's values there have the prior MultivariateNormal(0, amplitude^2 (C + jitter I)), C
    the unit kernel matrix of the points on standardised inputs (the points' range mapped to
    [-1, 1]; the periodic kernel works on the inputs as written); ``centred`` below says how
    they are parametrised. Elsewhere the
    term is the GP conditioned on those values (``predict``), which is how plots and reports
    evaluate it.
    """

    kernel: str                                   # rbf | matern32 | matern52 | periodic
    period: float | None
    points: np.ndarray                            # (P, D) in the inputs' own units
    centre: np.ndarray                            # (D,)
    half_width: np.ndarray                        # (D,)
    value_symbols: tuple[sympy.Symbol, ...]       # the term at each point (``NAME_at[i]``)
    amplitude: str                                # parameter names
    lengthscale: str
    z: str
    jitter: float = 1e-8
    # centred: NAME_z are the values themselves, z ~ MultivariateNormal(0, amplitude^2 (C + jitter I));
    # else z ~ Normal(0, 1) and the values are amplitude chol(C + jitter I) z
    centred: bool = True

    def standardised(self, x: np.ndarray) -> np.ndarray:
        """Inputs as the kernel sees them."""
        x = np.asarray(x, dtype=float)
        return x if self.kernel == "periodic" else (x - self.centre) / self.half_width

    def unit_kernel(self, a: np.ndarray, b: np.ndarray, ell: float) -> np.ndarray:
        """The kernel with amplitude 1 between the rows of ``a`` and ``b`` (inputs in their own units)."""
        diff = self.standardised(a)[:, None, :] - self.standardised(b)[None, :, :]
        return kernel_from_differences(self.kernel, diff, ell, self.period, np)

    def factor(self, ell: float) -> np.ndarray:
        """chol(C + jitter I) at the points."""
        C = self.unit_kernel(self.points, self.points, ell) + self.jitter * np.eye(len(self.points))
        return np.linalg.cholesky(C)

    def values_at_points(self, amplitude: float, ell: float, z: np.ndarray) -> np.ndarray:
        """The term at its points for one draw."""
        if self.centred:
            return np.asarray(z, dtype=float)
        return amplitude * (self.factor(ell) @ z)

    def predict(self, x: np.ndarray, amplitude: float, ell: float, z: np.ndarray,
                rng: np.random.Generator | None = None) -> np.ndarray:
        """The term at new inputs ``x`` (Q, D) given one draw: the conditional mean, or a draw from the
        conditional when ``rng`` is given (the band then includes the GP's spread between points)."""
        from scipy.linalg import solve_triangular

        L = self.factor(ell)
        cross = self.unit_kernel(self.points, x, ell)                     # (P, Q)
        V = solve_triangular(L, cross, lower=True)                          # L^-1 C_PQ
        # C_QP C_PP^-1 f_P = V^T L^-1 f_P; non-centred f_P = a L z, so L^-1 f_P = a z
        w = solve_triangular(L, np.asarray(z, dtype=float), lower=True) if self.centred else amplitude * np.asarray(z)
        mean = V.T @ w
        if rng is None:
            return mean
        cov = amplitude ** 2 * (self.unit_kernel(x, x, ell) - V.T @ V)
        w, U = np.linalg.eigh((cov + cov.T) / 2)
        return mean + U @ (np.sqrt(np.clip(w, 0.0, None)) * rng.standard_normal(len(w)))


def exact_gp_values(term: ExpandedTerm, draws: dict, points: np.ndarray, rng: np.random.Generator | None = None,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """An exact GP term at ``points`` (Q, D) for posterior draws (any leading shape, flattened): (N, Q).

    The conditional mean per draw, or a draw from the conditional with ``rng``; ``rows`` picks draws."""
    spec = term.exact
    amp = np.asarray(draws[spec.amplitude], dtype=float).reshape(-1)
    ell = np.asarray(draws[spec.lengthscale], dtype=float).reshape(-1)
    z = np.asarray(draws[spec.z], dtype=float).reshape(len(amp), -1)
    rows = np.arange(len(amp)) if rows is None else rows
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    return np.stack([spec.predict(points, amp[i], ell[i], z[i], rng) for i in rows]) if len(rows) else \
        np.zeros((0, len(points)))


def kernel_from_differences(kernel: str, diff, ell, period, xp):
    """Unit-amplitude stationary kernels from input differences (..., D), for numpy or torch (``xp``)."""
    if kernel == "periodic":
        s = xp.sin(math.pi * diff[..., 0] / period)
        return xp.exp(-2 * s ** 2 / ell ** 2)
    d2 = (diff ** 2).sum(-1) / ell ** 2
    if kernel == "rbf":
        return xp.exp(-d2 / 2)
    # sqrt at 0 has no derivative; clamping there leaves the kernel's (zero) slope at r = 0 intact
    r = xp.sqrt(xp.clip(d2, 1e-30, None)) if xp is np else xp.sqrt(d2.clamp_min(1e-30))
    if kernel == "matern32":
        return (1 + math.sqrt(3) * r) * xp.exp(-math.sqrt(3) * r)
    return (1 + math.sqrt(5) * r + 5 * r ** 2 / 3) * xp.exp(-math.sqrt(5) * r)


def exact_gp_term(info: UnknownInfo, xs, points: np.ndarray, symbolic) -> ExpandedTerm:
    """A ``gp`` term as an exact GP at ``points`` (P, D): hyperparameters as for the basis form, and
    ``NAME_z`` (P values: the term's values there, or standard normals when non-centred)."""
    opts = dict(info.options)
    priors = dict(info.priors)
    kernel = opts.get("kernel", "rbf")
    name = info.name
    P, D = points.shape
    lo, hi = points.min(axis=0), points.max(axis=0)
    width = np.where(hi - lo > 1e-12, (hi - lo) / 2, 1.0)
    amp = sympy.Symbol(f"{name}_amplitude", real=True)
    ell = sympy.Symbol(f"{name}_lengthscale", real=True)
    default_ell = ("LogNormal", (0.0, 0.5)) if kernel == "periodic" else ("LogNormal", (math.log(0.5), 0.5))
    z = _vector(f"{name}_z", P)
    params = (_prior_parameter(f"{name}_amplitude", priors.get("amplitude"), ("HalfNormal", (1.0,)), amp, symbolic),
              _prior_parameter(f"{name}_lengthscale", priors.get("lengthscale"), default_ell, ell, symbolic),
              # centred, the program gives NAME_z its GP prior (MultivariateNormal, backends/pyro/program.py)
              TermParameter(f"{name}_z", (P,), "Normal", (sympy.Integer(0), sympy.Integer(1)), z))
    centred = opts.get("parametrisation", "centred") == "centred"
    spec = ExactGaussianProcess(kernel, float(opts["period"]) if kernel == "periodic" else None, points,
                                (lo + hi) / 2, width, _vector(f"{name}_at", P), f"{name}_amplitude",
                                f"{name}_lengthscale", f"{name}_z", centred=centred)
    ranges = tuple((float(a), float(b)) if b - a > 1e-12 else (float(a) - 1.0, float(b) + 1.0) for a, b in zip(lo, hi))
    note = f"'{name}' is an exact Gaussian process over the {P} input value{'s' if P != 1 else ''} it is evaluated at"
    return ExpandedTerm(name, "gp", xs, info.inputs, sympy.Integer(0), params, (), 0.1, ranges, (note,), (), spec)


def expand_unknowns(symbolic, tables) -> dict[str, ExpandedTerm]:
    """Expand every unknown term of a symbolic model, using the data for its scales."""
    model = symbolic.checked
    samples = _input_samples(symbolic, tables)
    out = {}
    for info in model.unknowns:
        placeholders = tuple(sympy.Symbol(f"_in_{info.name}_{i}", real=True) for i in range(len(info.inputs)))
        data = [samples.get(name) for name in info.inputs]
        notes = tuple(f"'{name}' has no data to scale '{info.name}' by; its scale is taken as 1"
                      for name, d in zip(info.inputs, data) if d is None)
        if info.representation == "library":
            out[info.name] = _library(info, placeholders, data, symbolic, notes)
        elif info.representation == "gp":
            out[info.name] = _gp(info, placeholders, data, symbolic, notes)
        else:
            out[info.name] = _mlp(info, placeholders, data, symbolic, notes, _rate_scale(info.name, symbolic, tables))
    return out


def substitute_unknowns(expr: sympy.Expr, terms: dict[str, ExpandedTerm]) -> sympy.Expr:
    """Replace every call of an unknown term in ``expr`` by its expansion."""
    if not terms:
        return expr
    from sympy.core.function import AppliedUndef

    # exact GP calls were replaced by their values' symbols before (ir/exact_gp.py)
    return expr.replace(lambda e: isinstance(e, AppliedUndef) and e.func.__name__ in terms
                        and terms[e.func.__name__].exact is None,
                        lambda e: terms[e.func.__name__].apply(e.args))


# ----------------------------------------------------------------------------- data scales
def _input_samples(symbolic, tables, n: int = 400) -> dict[str, np.ndarray]:
    """Values each possible input takes in the data (a state or field observed directly, or the time)."""
    from sympy.core.function import AppliedUndef

    model = symbolic.checked
    out: dict[str, np.ndarray] = {}
    if model.time and model.time_range:
        out[model.time] = np.linspace(*model.time_range, n)
    for name, (lo, hi) in model.space.items():
        out[name] = np.linspace(lo, hi, n)
    for obs in model.observations:
        loc = symbolic.observation_args[obs.name][0] if symbolic.observation_args[obs.name] else None
        if loc is None:
            continue
        values = tables[obs.source].columns[obs.column]
        values = values[np.isfinite(values)]
        fields = {f.name for f in model.pde.fields} if model.pde is not None else set()
        if isinstance(loc, sympy.Symbol) and loc.name in model.states:
            target = loc.name
        elif isinstance(loc, AppliedUndef) and loc.func.__name__ in fields:   # a field observed directly
            target = loc.func.__name__
        elif isinstance(loc, sympy.log) and isinstance(loc.args[0], sympy.Symbol) and loc.args[0].name in model.states:
            target = loc.args[0].name
            values = np.exp(values) if obs.distribution == "Normal" else values
        else:
            continue
        if obs.distribution == "LogNormal" or values.size:
            out.setdefault(target, values)
    for name, copies in model.experiment.copies if model.experiment is not None else ():
        found = [out[c] for c in copies if c in out]   # a state of several experiments: all their data
        if found:
            out.setdefault(name, np.concatenate(found))
    return out


def _rate_scale(name: str, symbolic, tables) -> float | None:
    """The typical rate of change of the states whose ODE equations call ``name``, from their data.

    The sd of the derivative of a GCV smoothing spline through the observations (nine or more
    distinct times; on dense noisy data plain differences are mostly noise — 35.9 against 13.7 on
    the monthly predator-prey counts), else of finite differences of consecutive observations. It
    only sets the order of magnitude of a network's output. None when no state it drives is observed.
    """
    from msml_dsl.syntax.parser import iter_expr

    model = symbolic.checked
    targets = {state for state, rhs in model.equations.items()
               if any(isinstance(n, ast.Call) and n.func.id == name for n in iter_expr(rhs))}
    rates = []
    for obs in model.observations:
        loc = symbolic.observation_args[obs.name][0] if symbolic.observation_args[obs.name] else None
        table = tables[obs.source]
        times = table.coordinates.get(model.time) if model.time else None
        if loc is None or times is None:
            continue
        values = np.asarray(table.columns[obs.column], dtype=float)
        if isinstance(loc, sympy.Symbol) and loc.name in targets:
            pass
        elif isinstance(loc, sympy.log) and isinstance(loc.args[0], sympy.Symbol) and loc.args[0].name in targets:
            values = np.exp(values) if obs.distribution == "Normal" else values
        else:
            continue
        keep = np.isfinite(values) & np.isfinite(times)
        t, v = np.asarray(times, dtype=float)[keep], values[keep]
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        t, first = np.unique(t, return_index=True)
        v = v[first]
        if t.size >= 9:     # dense data: differences of noisy counts are mostly noise, smooth first
            from scipy.interpolate import make_smoothing_spline

            try:
                rates.append(float(np.std(make_smoothing_spline(t, v).derivative()(t))))
                continue
            except (ValueError, np.linalg.LinAlgError):
                pass
        if t.size >= 3:
            rates.append(float(np.std(np.diff(v) / np.diff(t))))
    rates = [r for r in rates if np.isfinite(r) and r > 0]
    return max(rates) if rates else None


def _joint(data: list, n: int = 400, seed: int = 0) -> list[np.ndarray] | None:
    """Samples of the inputs drawn independently from their data (a broad proxy of the joint range)."""
    if any(d is None for d in data):
        return None
    rng = np.random.default_rng(seed)
    return [rng.choice(d, size=n, replace=True) if d.size != n else d for d in data]


def _range(d: np.ndarray | None) -> tuple[float, float]:
    if d is None or not d.size:
        return (-1.0, 1.0)
    lo, hi = float(np.min(d)), float(np.max(d))
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    return lo, hi


def _constant_value(e: ast.Expr, symbolic) -> float:
    return float(evaluate(e, symbolic.checked.constants))


# ----------------------------------------------------------------------------- library
def _library(info: UnknownInfo, xs, data, symbolic, notes) -> ExpandedTerm:
    opts = dict(info.options)
    names = dict(zip(info.inputs, xs))
    features: list[tuple[str, sympy.Expr]] = []
    builder = _TermBuilder(names, symbolic)
    for t in info.terms:
        if isinstance(t, ast.Call) and t.func.id == "poly":
            variables = [names[a.id] for a in t.args]
            kw = t.keyword("degree")
            degree = int(_constant_value(kw.value, symbolic)) if kw else 2
            for d in range(0 if opts.get("constant", True) else 1, degree + 1):
                for combo in itertools.combinations_with_replacement(variables, d):
                    mono = sympy.Mul(*combo) if combo else sympy.Integer(1)
                    features.append((_label(mono, info.inputs, xs), mono))
        elif isinstance(t, ast.Call) and t.func.id == "fourier":
            var = names[t.args[0].id]
            kw_n = t.keyword("n")
            n = int(_constant_value(kw_n.value, symbolic)) if kw_n else 1
            period = _constant_value(t.keyword("period").value, symbolic)
            for j in range(1, n + 1):
                for fn in (sympy.sin, sympy.cos):
                    e = fn(2 * sympy.pi * j * var / period)
                    features.append((_label(e, info.inputs, xs), e))
        else:
            e = builder.build(t)
            features.append((_label(e, info.inputs, xs), e))
    # one feature per distinct expression (poly(x, degree=2) and a custom x would repeat x)
    seen, unique = set(), []
    for label, e in features:
        if e not in seen:
            seen.add(e)
            unique.append((label, e))
    features = unique
    K = len(features)
    samples = _joint(data)
    scales = []
    for _, e in features:
        s = 1.0
        if samples is not None and e.free_symbols:
            fn = sympy.lambdify(xs, e, "numpy")
            with np.errstate(all="ignore"):
                v = np.asarray(fn(*samples), dtype=float) * np.ones(len(samples[0]))
            v = v[np.isfinite(v)]
            if v.size and np.std(v) > 1e-12:
                s = float(np.std(v))
        elif not e.free_symbols:
            s = 1.0  # a constant's contribution is its coefficient
        scales.append(s)
    name = info.name
    params, standardised = _sparsity_prior(name, K, info.sparsity, symbolic)
    candidates = []
    expression = sympy.Integer(0)
    for (label, e), s, c_std in zip(features, scales, standardised):
        coefficient = c_std / sympy.Float(s)
        candidates.append(Candidate(label, e, coefficient, s))
        expression += coefficient * e
    return ExpandedTerm(name, "library", xs, info.inputs, expression, tuple(params), tuple(candidates),
                        float(opts.get("threshold", 0.1)), tuple(_range(d) for d in data), notes)


# How far the horseshoe's coefficients are centred (Papaspiliopoulos, Roberts & Skold 2007): the
# sampler moves in z_k with b_k = s_k^(1 - a) z_k and z_k ~ Normal(0, s_k^a), s_k = tau lambda~_k.
# 0 is the usual non-centred form, 1 the centred one; see _sparsity_prior for why 1/2.
HORSESHOE_CENTRING = 0.5


def coefficient_parameters(term) -> list[tuple[object, sympy.Symbol]]:
    """The parameter and element that carry each library candidate's coefficient, in candidate order.

    The vector ``NAME_z`` (laplace, normal, spike_slab, a non-centred horseshoe), or the scalars
    ``NAME_z1 .. NAME_zK`` of a (partially) centred horseshoe, whose prior scales differ per candidate.
    """
    by_name = {p.name: p for p in term.parameters}
    z = by_name.get(f"{term.name}_z")
    if z is not None:
        return [(z, e) for e in z.elements]
    out = []
    for k in range(len(term.candidates)):
        p = by_name.get(f"{term.name}_z{k + 1}")
        if p is None:
            return []
        out.append((p, p.elements[0]))
    return out


def _sparsity_prior(name: str, K: int, sparsity: ast.Call | None, symbolic):
    """The latent parameters of a sparsity prior and the K standardised coefficients ``b_k = c_k s_k``.

    ``horseshoe(tau0)``: b_k ~ Normal(0, tau lambda_k), tau ~ HalfCauchy(tau0), lambda_k ~ HalfCauchy(1)
    (the sampler moves in log tau, log lambda_k and z_k below).

    ``horseshoe(tau0, slab_scale=c)``: the regularised ("Finnish") horseshoe of Piironen & Vehtari
    (2017, Electron. J. Statist. 11:5018): lambda_k is replaced by
    ``lambda~_k = c lambda_k / sqrt(c^2 + tau^2 lambda_k^2)``, so a coefficient the data need is shrunk
    like a Normal(0, c) slab instead of not at all. With ``slab_df=nu`` the slab itself is uncertain,
    c^2 ~ InvGamma(nu/2, nu c^2/2) (written ``c^2 / g``, g ~ Gamma(nu/2, nu/2)): a Student-t slab, at
    the price of one more scale for the sampler to move along.

    Partially centred. The usual non-centred form ``b_k = s_k z_k``, z_k ~ Normal(0, 1), s_k = tau lambda~_k
    (brms, rstanarm) suits coefficients the data say little about. An ODE fitted to many observations
    pins every coefficient, the kept ones and the spurious ones near zero, to a width sigma_k; then
    z_k's width sigma_k / s_k changes a hundredfold between a spurious candidate's small and large local
    scales, and the kept candidate's z_k lies on the curved ridge ``s_k z_k = b_k``: on Lotka-Volterra
    with five candidates 60 % of NUTS draws reached tree depth 10 (888 leapfrog steps per draw).
    Centred (b_k ~ Normal(0, s_k)) the width is sigma_k wherever s_k exceeds it, but a spurious
    candidate's neck s_k << sigma_k is a funnel (divergences), and the joint density grows without
    bound as tau -> 0, so there is no mode to start from. Halfway, b_k = sqrt(s_k) z_k with
    z_k ~ Normal(0, sqrt(s_k)), z_k's width is min(sqrt(s_k), sigma_k / sqrt(s_k)): it changes by the
    square root of the factor either way. On a Gaussian stand-in for the Lotka-Volterra likelihood
    (2 chains, 250 + 250, dense metric) non-centred needed over 500 leapfrog steps per draw, centred
    40 with 6.8 % divergent, halfway 81 with none. Each z_k is a scalar ``NAME_z{k}`` (its prior scale
    differs per candidate); HORSESHOE_CENTRING = 0 restores the vector ``NAME_z`` of Normal(0, 1).
    """
    kind = sparsity.func.id if sparsity is not None else "horseshoe"
    values = [_constant_value(a, symbolic) for a in sparsity.args] if sparsity is not None else [1.0]
    zero, one = sympy.Integer(0), sympy.Integer(1)
    z = _vector(f"{name}_z", K)
    if kind == "horseshoe":
        tau = sympy.Symbol(f"{name}_tau", real=True)
        lam = _vector(f"{name}_lambda", K)
        params = [TermParameter(f"{name}_tau", (), "HalfCauchy", (sympy.Float(values[0]),), (tau,)),
                  TermParameter(f"{name}_lambda", (K,), "HalfCauchy", (one,), lam)]
        slab = sparsity.keyword("slab_scale") if sparsity is not None else None
        if slab is None:
            scales = [tau * lam[k] for k in range(K)]
        else:
            c2 = sympy.Float(_constant_value(slab.value, symbolic)) ** 2
            df_kw = sparsity.keyword("slab_df")
            if df_kw is not None:
                nu = _constant_value(df_kw.value, symbolic)
                g = sympy.Symbol(f"{name}_slab", real=True)
                params.append(TermParameter(f"{name}_slab", (), "Gamma", (sympy.Float(nu / 2), sympy.Float(nu / 2)),
                                            (g,)))
                c2 = c2 / g
            scales = [tau * sympy.sqrt(c2 * lam[k] ** 2 / (c2 + tau ** 2 * lam[k] ** 2)) for k in range(K)]
        a = sympy.nsimplify(HORSESHOE_CENTRING)
        if a == 0:
            params.append(TermParameter(f"{name}_z", (K,), "Normal", (zero, one), z))
            return params, [scales[k] * z[k] for k in range(K)]
        w = [sympy.Symbol(f"{name}_z{k + 1}", real=True) for k in range(K)]
        params += [TermParameter(f"{name}_z{k + 1}", (), "Normal", (zero, scales[k] ** a), (w[k],)) for k in range(K)]
        return params, [scales[k] ** (1 - a) * w[k] for k in range(K)]
    if kind in ("laplace", "normal"):
        dist = "Laplace" if kind == "laplace" else "Normal"
        return [TermParameter(f"{name}_z", (K,), dist, (zero, sympy.Float(values[0])), z)], list(z)
    p, slab_sd = values  # spike_slab(p, slab)
    return [TermParameter(f"{name}_z", (K,), "SpikeSlab", (sympy.Float(p), sympy.Float(slab_sd),
                                                           sympy.Float(slab_sd / 100)), z)], list(z)


def _label(e: sympy.Expr, names, xs) -> str:
    """A candidate's label in the model's own names: ``S*I``, ``sin(2*pi*t/365)``."""
    text = sympy.sstr(e.xreplace({x: sympy.Symbol(n) for n, x in zip(names, xs)}))
    return text.replace("**", "^")


def _vector(name: str, size: int) -> tuple[sympy.Symbol, ...]:
    return tuple(sympy.Symbol(f"{name}[{i + 1}]", real=True) for i in range(size))


class _TermBuilder:
    """SymPy from a library's custom term (inputs and constants only; the checker made sure)."""

    def __init__(self, names, symbolic):
        from msml_dsl.symbolic.builder import SYMPY_FUNCTIONS

        self.names = names
        self.constants = symbolic.checked.constants
        self.functions = SYMPY_FUNCTIONS

    def build(self, e):
        if isinstance(e, ast.Number):
            return sympy.Float(e.value) if not float(e.value).is_integer() else sympy.Integer(int(e.value))
        if isinstance(e, ast.Name):
            if e.id in self.names:
                return self.names[e.id]
            if e.id in self.constants:
                return sympy.Float(self.constants[e.id])
            if e.id == "pi":
                return sympy.pi
        if isinstance(e, ast.UnaryOp):
            v = self.build(e.operand)
            return -v if e.op == "-" else v
        if isinstance(e, ast.BinOp):
            a, b = self.build(e.left), self.build(e.right)
            return {"+": a + b, "-": a - b, "*": a * b, "/": a / b, "^": a ** b}[e.op]
        if isinstance(e, ast.Call) and e.func.id in self.functions:
            return self.functions[e.func.id](*[self.build(a) for a in e.args])
        raise ValueError(f"cannot build a library term from {type(e).__name__}")


# ----------------------------------------------------------------------------- Gaussian process
def _gp(info: UnknownInfo, xs, data, symbolic, notes) -> ExpandedTerm:
    opts = dict(info.options)
    priors = dict(info.priors)
    kernel = opts.get("kernel", "rbf")
    D = len(xs)
    basis = opts.get("basis") or ((24,) if D == 1 else (10,))
    if len(basis) == 1:
        basis = basis * D
    # The basis vanishes at +-factor: the data range [-1, 1] must sit a few lengthscales inside it,
    # or the variance sags near the data's edges (Riutort-Mayol et al. 2023, fig. 5).
    factor = float(opts.get("boundary_factor", 2.5))
    ranges = [_range(d) for d in data]
    name = info.name
    amp = sympy.Symbol(f"{name}_amplitude", real=True)
    params = [_prior_parameter(f"{name}_amplitude", priors.get("amplitude"), ("HalfNormal", (1.0,)), amp, symbolic)]
    standardised = [(x - (lo + hi) / 2) / ((hi - lo) / 2) for x, (lo, hi) in zip(xs, ranges)]
    if kernel == "periodic":
        from scipy.special import ive

        period = float(opts["period"])
        ell = 1.0  # in units of the period / (2 pi): a smooth but not sinusoidal cycle
        J = basis[0]
        M = 2 * J + 1
        beta = _vector(f"{name}_beta", M)
        params.append(TermParameter(f"{name}_beta", (M,), "Normal", (sympy.Integer(0), sympy.Integer(1)), beta))
        x = xs[0]
        q2 = [ive(0, ell ** -2)] + [2 * ive(j, ell ** -2) for j in range(1, J + 1)]
        expr = math.sqrt(q2[0]) * beta[0]
        for j in range(1, J + 1):
            w = 2 * sympy.pi * j * x / period
            expr += math.sqrt(q2[j]) * (beta[2 * j - 1] * sympy.cos(w) + beta[2 * j] * sympy.sin(w))
        return ExpandedTerm(name, "gp", xs, info.inputs, amp * expr, tuple(params), (), 0.1, tuple(ranges),
                            notes + (f"the periodic kernel of '{name}' has its lengthscale fixed at 1",))
    ell = sympy.Symbol(f"{name}_lengthscale", real=True)
    params.append(_prior_parameter(f"{name}_lengthscale", priors.get("lengthscale"), ("LogNormal", (math.log(0.5), 0.5)),
                                   ell, symbolic))
    index_sets = list(itertools.product(*[range(1, m + 1) for m in basis]))
    M = len(index_sets)
    beta = _vector(f"{name}_beta", M)
    params.append(TermParameter(f"{name}_beta", (M,), "Normal", (sympy.Integer(0), sympy.Integer(1)), beta))
    L = factor
    expr = sympy.Integer(0)
    for k, js in enumerate(index_sets):
        eigen = sum((math.pi * j / (2 * L)) ** 2 for j in js)
        phi = sympy.Integer(1)
        for j, xt in zip(js, standardised):
            phi *= sympy.sin(sympy.pi * j * (xt + L) / (2 * L)) / math.sqrt(L)
        expr += sympy.sqrt(_spectral_density(kernel, math.sqrt(eigen), ell, D)) * phi * beta[k]
    return ExpandedTerm(name, "gp", xs, info.inputs, amp * expr, tuple(params), (), 0.1, tuple(ranges), notes)


def _spectral_density(kernel: str, omega: float, ell, D: int) -> sympy.Expr:
    """Unit-amplitude spectral densities of the isotropic kernels in D dimensions."""
    if kernel == "rbf":
        return (2 * sympy.pi) ** sympy.Rational(D, 2) * ell ** D * sympy.exp(-ell ** 2 * omega ** 2 / 2)
    nu = sympy.Rational(3, 2) if kernel == "matern32" else sympy.Rational(5, 2)
    const = 2 ** D * sympy.pi ** sympy.Rational(D, 2) * sympy.gamma(nu + sympy.Rational(D, 2)) * (2 * nu) ** nu \
        / sympy.gamma(nu)
    return sympy.nsimplify(const) * ell ** (-2 * nu) * (2 * nu / ell ** 2 + omega ** 2) ** (-(nu + sympy.Rational(D, 2)))


def _prior_parameter(name, call: ast.Call | None, default, symbol, symbolic) -> TermParameter:
    if call is None:
        dist, args = default
        return TermParameter(name, (), dist, tuple(sympy.Float(a) for a in args), (symbol,))
    args = tuple(sympy.Float(_constant_value(a, symbolic)) for a in call.args)
    return TermParameter(name, (), call.func.id, args, (symbol,))


# ----------------------------------------------------------------------------- network
def _mlp(info: UnknownInfo, xs, data, symbolic, notes, rate: float | None = None) -> ExpandedTerm:
    """The network ``output_scale * net(standardised inputs)``.

    ``output_scale`` defaults to the typical rate of change (from the data) of the states whose
    equations call the term, so unit-scale weights give a term of the size the equations need;
    a term used only in observations or parameters has scale 1 unless the option sets it.
    """
    opts = dict(info.options)
    priors = dict(info.priors)
    hidden = tuple(opts.get("hidden", (16, 16)))
    act = ACTIVATION_FUNCTIONS[opts.get("activation", "tanh")]
    ranges = [_range(d) for d in data]
    layer = [(x - (lo + hi) / 2) / ((hi - lo) / 2) for x, (lo, hi) in zip(xs, ranges)]
    sizes = [len(xs), *hidden, 1]
    K = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    w = _vector(f"{info.name}_w", K)
    k = 0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        out = []
        for j in range(b):
            total = w[k + a * b + j]  # the bias
            for q in range(a):
                total += w[k + j * a + q] * layer[q]
            out.append(total if i == len(sizes) - 2 else act(total))
        k += a * b + b
        layer = out
    prior = priors.get("prior")
    if prior is None:
        dist, args = "Normal", (sympy.Integer(0), sympy.Integer(1))
    else:
        dist, args = prior.func.id, tuple(sympy.Float(_constant_value(a, symbolic)) for a in prior.args)
    params = (TermParameter(f"{info.name}_w", (K,), dist, args, w),)
    scale = opts.get("output_scale")
    if scale is None:
        scale = rate if rate is not None else 1.0
        notes = notes + ((f"the output of '{info.name}' is scaled by {scale:.4g}, the typical rate of change of "
                          "the states it drives (set output_scale= to change it)") if rate is not None else
                         (f"'{info.name}' drives no observed state; its output scale is 1 (set output_scale=)"),)
    # posterior=last_layer: the hidden layers' weights stay at the optimum and NUTS samples the output
    # layer, in which the term is linear (a "neural linear" model); see inference/runner.py
    fixed = tuple(range(K - hidden[-1] - 1)) if opts.get("posterior") == "last_layer" and hidden else ()
    return ExpandedTerm(info.name, "mlp", xs, info.inputs, sympy.Float(float(scale)) * layer[0], params, (), 0.1,
                        tuple(ranges), notes, fixed)
