"""The IR of a multi-fidelity model (the ``lower`` stage for models with ``fidelity`` levels).

A :class:`FidelityProblem` lists the levels lowest first; each has its link (a SymPy
expression in the inputs, parameters, lower levels, unknown-term calls and simulated
outputs), the data tagged with it and their noise scales. The backend
(``backends/multifidelity``) sees only this and the latent parameters of ``ModelIR``.

Two ways to fit, chosen here (``solver gp(scheme=...)``, default ``auto``):

* ``joint``: every link is affine in the lower stochastic levels and in its unknown terms,
  the terms' inputs hold no stochastic level, so all levels are one Gaussian process (the
  Kennedy–O'Hagan autoregressive model and its generalisations) and one marginal likelihood
  covers all data;
* ``recursive``: each level with data is fitted in turn, given the posterior means of the
  levels below at its inputs (Le Gratiet & Garnier 2014; the nonlinear autoregressive GP of
  Perdikaris et al. 2017 when a term takes a level as input); predictions propagate the lower
  levels' uncertainty by Monte Carlo.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import sympy
from sympy.core.function import AppliedUndef

from msml_dsl.data.csv_source import DataTable
from msml_dsl.errors import Diagnostic, MsmlError, Span
from msml_dsl.syntax import ast

#: GP hyperparameter defaults, on inputs scaled to [0, 1] over the domain (or the data's range).
DEFAULT_LENGTHSCALE = ("LogNormal", (0.0, 2.0))
#: Amplitude (the marginal sd of a zero-mean GP term): HalfNormal(factor x the root mean square
#: of the data of the level the term first appears in). A term of a level without lower levels
#: is that level's function, whose marginal sd the data's rms estimates: HalfNormal(2 x rms)
#: (median 1.35 rms, 95 % below 3.9 rms). A term of a link (a discrepancy, a nonlinear map of a
#: lower level) has no such scale (delta = high - rho * low depends on the unknown rho and may
#: need a large amplitude at a long lengthscale to make a trend): HalfNormal(10 x rms).
DEFAULT_AMPLITUDE_FACTOR = 10.0     # terms of a link
DEFAULT_LINK_AMPLITUDE = "HalfNormal"  # the family of a link term's amplitude prior
DEFAULT_BASE_AMPLITUDE_FACTOR = 2.0  # terms of a level without lower levels
#: A GP term of a link (a discrepancy; not periodic; not in a level that maps a lower level through a
#: term, g(low, x), whose dependence on the coordinates g already models) has a linear trend
#: in its scaled inputs besides the stationary kernel: g(z) = b0 + b.(z - 1/2) + GP, the
#: coefficients Normal(0, s^2) and integrated out (a kernel term s^2 (1 + (z - 1/2).(z' - 1/2))), s
#: = LINK_TREND_RELATIVE x the scale of the term's amplitude prior (default 10 x rms): the regression
#: mean of Kennedy & O'Hagan's discrepancy with a vague prior. A discrepancy is often a trend
#: (Forrester's is linear), which a stationary kernel alone can only make at a lengthscale beyond the
#: range with an amplitude that grows with it. Measured against other defaults in docs/fidelity.md.
LINK_TREND_RELATIVE = 1.0
LINK_TREND_ON_LEVEL_INPUTS = False      # NARGP levels, g(low, x) + delta(x): no trend (docs/fidelity.md)
#: Rejected alternative (kept for benchmarks/multifidelity.py --prior-candidates): the scale of a
#: link term's amplitude prior grows with its lengthscale, factor x rms x sqrt(1 + ell^2) (ARD:
#: 1 / sqrt(sum_j 1 / (1 + ell_j^2))), bounding the variation over the domain rather than the sd.
LINK_AMPLITUDE_PER_LENGTHSCALE = False
BASE_AMPLITUDE_PER_LENGTHSCALE = False
SCHEMES = ("auto", "joint", "recursive")


@dataclass(frozen=True)
class InputAxis:
    """A coordinate the levels depend on (a space variable or the time) and its declared range."""

    name: str
    symbol: sympy.Symbol
    lower: float
    upper: float


@dataclass(frozen=True)
class Term:
    """An unknown term of a link: an exact GP (``gp``) or a network (``mlp``)."""

    name: str
    kind: str                                  # gp | mlp
    arity: int
    kernel: str = "rbf"                        # gp: rbf | matern32 | matern52 | periodic
    period: float | None = None                # gp periodic, in input units
    hidden: tuple[int, ...] = (16, 16)         # mlp
    activation: str = "tanh"                   # mlp
    parameters: tuple[str, ...] = ()           # latent parameters: amplitude, lengthscale | weights
    trend: float = 0.0                         # gp: sd of the coefficients of a linear trend added to the kernel


@dataclass(frozen=True)
class Simulation:
    """``simulate(OUTPUT, steps=N, method=rk4)``: the model's own ODE on a coarse fixed grid."""

    symbol: sympy.Symbol                       # stands for the output in level expressions
    output: sympy.Expr                         # in states, parameters and the time
    time: sympy.Symbol
    t0: float
    t1: float
    states: tuple[sympy.Symbol, ...]
    rhs: tuple[sympy.Expr, ...]
    inits: tuple[sympy.Expr, ...]
    steps: int                                 # fixed-step methods: steps; adaptive: output grid intervals
    method: str                                # rk4 | midpoint | euler | rk45 | stiff | auto
    rtol: float = 1e-3                         # adaptive methods: the (loose) tolerances
    atol: float = 1e-6
    source: str | None = None                  # simulate(..., model="file"): the other model's file
    space: str | None = None                   # a PDE level: the space variable of its grid
    nodes: tuple[float, ...] = ()              # ... the grid's nodes (the output's states, in order)
    periodic: bool = False


@dataclass(frozen=True)
class LevelData:
    """One observed column of a data source tagged with a level: ``y = level(x) + Normal(0, noise)``."""

    name: str                                  # "source.column"
    inputs: np.ndarray                         # (n, len(FidelityProblem.inputs)); NaN for unused coordinates
    values: np.ndarray                         # (n,)
    noise: sympy.Expr                          # the noise scale: constants and parameters
    file_lines: np.ndarray
    span: Span | None = None


@dataclass(frozen=True)
class Level:
    name: str
    symbol: sympy.Symbol
    expression: sympy.Expr                     # unknown terms as applied functions, simulations as symbols
    lower: tuple[str, ...]                     # levels the expression uses
    terms: tuple[str, ...]                     # unknown terms it calls
    data: tuple[LevelData, ...]
    stochastic: bool                           # a GP term at this level or below
    linear: bool                               # affine in its terms and stochastic lower levels (joint-ready)
    span: Span | None = None


@dataclass(frozen=True)
class FidelityProblem:
    inputs: tuple[InputAxis, ...]
    levels: tuple[Level, ...]                  # lowest first
    terms: dict[str, Term]
    simulations: tuple[Simulation, ...]
    scheme: str                                # joint | recursive (resolved)
    samples: int = 500                         # Monte Carlo samples per point (recursive scheme)
    jitter: float = 1e-8                       # relative, added to the covariance's diagonal
    top: tuple[str, ...] = ()                  # levels no other level uses (the outputs)
    notes: tuple[str, ...] = field(default=())

    def level(self, name: str) -> Level:
        return next(lv for lv in self.levels if lv.name == name)

    @property
    def target(self) -> str:
        """The default level to predict: the last output with data, else the last output."""
        with_data = [n for n in self.top if self.level(n).data]
        return (with_data or list(self.top))[-1]

    def to_dict(self) -> dict:
        def expr(e):
            return sympy.sstr(e)

        return {
            "scheme": self.scheme, "samples": self.samples, "jitter": self.jitter, "outputs": list(self.top),
            "inputs": {a.name: [a.lower, a.upper] for a in self.inputs},
            "levels": [{"name": lv.name, "link": expr(lv.expression), "lower": list(lv.lower),
                        "terms": list(lv.terms), "linear": lv.linear, "stochastic": lv.stochastic,
                        "data": [{"name": d.name, "rows": int(d.values.size), "noise": expr(d.noise)}
                                 for d in lv.data]} for lv in self.levels],
            "terms": {t.name: {"kind": t.kind, "kernel": t.kernel, "parameters": list(t.parameters),
                               "trend": t.trend}
                      for t in self.terms.values()},
            "simulations": [{"symbol": str(s.symbol), "output": expr(s.output), "steps": s.steps,
                             "method": s.method, "rtol": s.rtol, "atol": s.atol, "model": s.source,
                             "grid": {s.space: len(s.nodes)} if s.space else None, "rhs": {str(a): expr(b) for a, b in zip(s.states, s.rhs)}}
                            for s in self.simulations],
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# ------------------------------------------------------------------ link analysis
def term_calls(expr: sympy.Expr, terms) -> list[AppliedUndef]:
    """The calls of unknown terms in an expression, in a stable order."""
    calls = [a for a in expr.atoms(AppliedUndef) if type(a).__name__ in terms]
    return sorted(set(calls), key=sympy.default_sort_key)


def decompose(expr: sympy.Expr, variables: list[sympy.Symbol]):
    """Write ``expr`` as ``m + sum_i c_i v_i``; return (m, [c_i]) or None when it is not affine in ``v``."""
    coefficients = []
    for v in variables:
        c = sympy.diff(expr, v)
        if c.free_symbols & set(variables):
            return None
        coefficients.append(c)
    rest = expr.xreplace({v: 0 for v in variables})
    return rest, coefficients


def _replace_gp_calls(expr, terms):
    """Each GP call becomes a dummy symbol: (new expression, {dummy: call})."""
    calls = [c for c in term_calls(expr, terms) if terms[type(c).__name__].kind == "gp"]
    dummies = {c: sympy.Dummy(f"G_{type(c).__name__}") for c in calls}
    return expr.xreplace(dummies), {d: c for c, d in dummies.items()}


def link_is_linear(expr, terms, stochastic_levels: set[sympy.Symbol]) -> bool:
    """Affine in the GP calls and the stochastic lower levels; no stochastic level inside a call."""
    replaced, dummies = _replace_gp_calls(expr, terms)
    for call in expr.atoms(AppliedUndef):
        if any(a.free_symbols & stochastic_levels for a in call.args):
            return False
    return decompose(replaced, list(dummies) + sorted(stochastic_levels & replaced.free_symbols,
                                                      key=lambda s: s.name)) is not None


# ------------------------------------------------------------------------ lowering
class _LevelBuilder:
    """Builds level expressions; ``simulate(...)`` calls become symbols with a Simulation each."""

    def __init__(self, symbolic, builder_cls):
        self.symbolic = symbolic
        self.simulations: list[Simulation] = []
        self.builder = builder_cls(symbolic.symbols, symbolic.parameter_elements)
        self.builder.other_names = {n for n, _ in symbolic.checked.unsupported_names}

    def build(self, e: ast.Expr) -> sympy.Expr:
        if isinstance(e, ast.Call) and e.func.id == "simulate":
            return self._simulation(e)
        if isinstance(e, ast.BinOp):
            a, b = self.build(e.left), self.build(e.right)
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: a / b, "^": lambda: a ** b}[e.op]()
        if isinstance(e, ast.UnaryOp):
            v = self.build(e.operand)
            return -v if e.op == "-" else v
        if isinstance(e, ast.Call) and any(isinstance(a, ast.Call) and a.func.id == "simulate" for a in e.args):
            from msml_dsl.symbolic.builder import SYMPY_FUNCTIONS

            args = [self.build(a) for a in e.args]
            fn = SYMPY_FUNCTIONS.get(e.func.id)
            return fn(*args) if fn else sympy.Function(e.func.id, real=True)(*args)
        return self.builder.build(e)

    def _simulation(self, call: ast.Call) -> sympy.Symbol:
        sym = self.symbolic
        model = sym.checked
        opts = {}
        for kw in call.keywords:
            v = kw.value
            opts[kw.name.id] = v.id if isinstance(v, ast.Name) else v.value if isinstance(v, ast.String) else \
                float(v.value) if isinstance(v, ast.Number) else None
        symbol = sympy.Symbol(f"simulate#{len(self.simulations) + 1}", real=True)
        if opts.get("model") is not None:
            self.simulations.append(_file_simulation(sym, symbol, call.args[0].id, opts))
            return symbol
        self.simulations.append(Simulation(
            symbol, sym.numeric(self.builder.build(call.args[0])), sym.time, float(model.time_range[0]),
            float(model.time_range[1]), sym.states, tuple(sym.numeric(r) for r in sym.rhs),
            tuple(sym.numeric(i) for i in sym.inits), int(opts.get("steps", 20)), str(opts.get("method", "rk4")),
            float(opts.get("rtol", 1e-3)), float(opts.get("atol", 1e-6))))
        return symbol


def _file_simulation(symbolic, symbol: sympy.Symbol, output: str, opts: dict) -> Simulation:
    """``simulate(OUTPUT, model="file.msml", steps=, method=, points=)``: the other file's ODE, or its PDE
    discretised by the method of lines on ``points`` nodes, with this file's parameters of the same
    names (its constants stay its own; a name that is a constant here takes this file's value)."""
    from dataclasses import replace

    from msml_dsl.data.csv_source import load_data
    from msml_dsl.ir.method_of_lines import _Discretization
    from msml_dsl.ir.model_ir import lower_to_ir
    from msml_dsl.semantics.fidelity_files import load_checked, resolve
    from msml_dsl.symbolic.builder import build_symbolic

    path = resolve(symbolic.checked.program, str(opts["model"]))
    other = load_checked(path)
    if other.pde is not None:
        options = dict(other.pde.solver_options)
        options.pop("method", None)
        if opts.get("points") is not None:
            options["points"] = (int(opts["points"]),)
        other = replace(other, pde=replace(other.pde, solver="mol", solver_options=tuple(sorted(options.items()))))
    ir = lower_to_ir(build_symbolic(other), load_data(other))
    ode = ir.ode
    own_params = {p.name for p in symbolic.checked.parameters}
    constants = {sympy.Symbol(k, real=True): sympy.Float(v) for k, v in symbolic.checked.constants.items()
                 if k not in own_params}
    rhs = tuple(sympy.sympify(r).xreplace(constants) for r in ode.rhs)
    inits = tuple(sympy.sympify(i).xreplace(constants) for i in ode.inits)
    t0, t1 = (float(v) for v in other.time_range)
    common = dict(time=ode.time, t0=t0, t1=t1, states=ode.states, rhs=rhs, inits=inits,
                  steps=int(opts.get("steps", 20)), method=str(opts.get("method", "rk4")),
                  rtol=float(opts.get("rtol", 1e-3)), atol=float(opts.get("atol", 1e-6)), source=str(path))
    if ir.pde is None:
        state = next(s for s in ode.states if s.name == output)
        return Simulation(symbol, state, **common)
    grid = _Discretization(ir)
    field_states = tuple(grid.states[(output, (i,))] for i in range(grid.n[0]))
    return Simulation(symbol, sympy.Tuple(*field_states), space=str(grid.axes[0]),
                      nodes=tuple(float(v) for v in grid.nodes[0]), periodic=bool(grid.periodic[0]), **common)


def lower_fidelity(symbolic, tables: dict[str, DataTable], params: list) -> tuple:
    """The FidelityProblem of a checked model with levels, and the GP terms' latent parameters.

    ``params`` are the model's own latent parameters (LatentParameter); the returned list adds
    each term's hyperparameters. Raises MsmlError (E299, E309) for what the scheme cannot fit.
    """
    from msml_dsl.ir.model_ir import LatentParameter
    from msml_dsl.symbolic.builder import _ExprBuilder

    model = symbolic.checked
    info = model.fidelity
    sources = {model.file: model.program.source}
    problems: list[Diagnostic] = []
    coords = {c: (model.space[c] if c in model.space else model.time_range) for c in info.inputs}
    axes = tuple(InputAxis(c, symbolic.symbols[c], float(lo), float(hi)) for c, (lo, hi) in coords.items())
    axis_index = {a.name: i for i, a in enumerate(axes)}

    unknowns = {u.name: u for u in model.unknowns}
    builder = _LevelBuilder(symbolic, _ExprBuilder)
    level_symbols = {lv.name: sympy.Symbol(lv.name, real=True) for lv in info.levels}
    expressions = {lv.name: symbolic.numeric(builder.build(lv.expression)) for lv in info.levels}

    # data of each level: one LevelData per observed column of its sources
    observations = {o.source: [] for o in model.observations}
    for o in model.observations:
        observations[o.source].append(o)
    source_info = {s.name: s for s in model.data_sources}
    level_data: dict[str, list[LevelData]] = {lv.name: [] for lv in info.levels}
    for lv in info.levels:
        for src in lv.sources:
            table = tables[src]
            for o in observations.get(src, []):
                n = table.n_rows
                X = np.full((n, len(axes)), np.nan)
                for c in lv.inputs:
                    X[:, axis_index[c]] = table.coordinates[c]
                y = np.asarray(table.columns[o.column], dtype=float)
                used = [axis_index[c] for c in lv.inputs]
                keep = np.isfinite(y) & np.isfinite(X[:, used]).all(axis=1)
                for c in lv.inputs:
                    lo, hi = coords[c]
                    col = X[:, axis_index[c]]
                    tol = 1e-9 * max(1.0, hi - lo)
                    bad = np.flatnonzero(keep & ((col < lo - tol) | (col > hi + tol)))
                    if bad.size:
                        i = bad[0]
                        problems.append(Diagnostic(
                            "E309", f"'{table.path.name}' line {table.file_lines[i]}: {c} = {col[i]:g} lies outside "
                            f"the domain {c} in [{lo:g}, {hi:g}]", source_info[src].span, model.file,
                            help="widen the range or drop the row"))
                scale = symbolic.numeric(symbolic.observation_args[o.name][1])
                level_data[lv.name].append(LevelData(o.name, X[keep], y[keep], scale, table.file_lines[keep],
                                                     o.span))

    # unknown terms and their hyperparameters
    terms: dict[str, Term] = {}
    extra_params = []
    all_values = np.concatenate([d.values for ds in level_data.values() for d in ds] or [np.ones(1)])
    for lv in info.levels:
        for call in term_calls(expressions[lv.name], unknowns):
            name = type(call).__name__
            if name in terms:
                continue
            u = unknowns[name]
            opts, priors = dict(u.options), dict(u.priors)
            values = np.concatenate([d.values for d in level_data[lv.name]] or [all_values])
            ref = float(np.sqrt(np.mean(values ** 2))) or 1.0
            k = len(u.inputs)
            if u.representation == "gp":
                kernel = str(opts.get("kernel", "rbf"))
                names = (f"{name}_amplitude", f"{name}_lengthscale")
                factor = DEFAULT_AMPLITUDE_FACTOR if lv.lower else DEFAULT_BASE_AMPLITUDE_FACTOR
                ell = _latent(LatentParameter, names[1], () if k == 1 else (k,), priors.get("lengthscale"),
                              DEFAULT_LENGTHSCALE, symbolic)
                scale = sympy.Float(factor * ref)
                if LINK_AMPLITUDE_PER_LENGTHSCALE if lv.lower else BASE_AMPLITUDE_PER_LENGTHSCALE:
                    scale = scale / sympy.sqrt(sum(1 / (1 + e ** 2) for e in ell.elements))
                amp = _latent(LatentParameter, names[0], (), priors.get("amplitude"),
                              (DEFAULT_LINK_AMPLITUDE if lv.lower else "HalfNormal", (scale,)), symbolic)
                # a prior that depends on the lengthscale follows it (priors are evaluated in order)
                extra_params += [ell, amp] if amp.args[0].free_symbols else [amp, ell]
                # a level with a map of a lower level, g(low, x) (NARGP): no trend in any of its terms
                on_levels = any(any(i not in coords for i in unknowns[type(c).__name__].inputs)
                                for c in term_calls(expressions[lv.name], unknowns))
                # an explicit trend=true asks for one in a NARGP level too
                wanted = opts.get("trend", LINK_TREND_ON_LEVEL_INPUTS or not on_levels)
                trend = LINK_TREND_RELATIVE * _scale_of(amp) if (lv.lower and kernel != "periodic" and wanted) else 0.0
                terms[name] = Term(name, "gp", k, kernel, opts.get("period"), parameters=names, trend=trend)
            else:
                hidden = tuple(opts.get("hidden", (16, 16)))
                sizes = [k, *hidden, 1]
                n_w = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
                extra_params.append(_latent(LatentParameter, f"{name}_w", (n_w,), priors.get("prior"),
                                            ("Normal", (0.0, 1.0)), symbolic))
                terms[name] = Term(name, "mlp", k, hidden=hidden, activation=str(opts.get("activation", "tanh")),
                                   parameters=(f"{name}_w",))

    # which levels are stochastic, and is each link affine (joint-ready)?
    stochastic: dict[str, bool] = {}
    levels = []
    used_by_higher = {n for lv in info.levels for n in lv.lower}
    for lv in info.levels:
        e = expressions[lv.name]
        own_gp = any(terms[type(c).__name__].kind == "gp" for c in term_calls(e, terms))
        stochastic[lv.name] = own_gp or any(stochastic[n] for n in lv.lower)
        stoch_syms = {level_symbols[n] for n in lv.lower if stochastic[n]}
        linear = link_is_linear(e, terms, stoch_syms)
        levels.append(Level(lv.name, level_symbols[lv.name], e, lv.lower,
                            tuple(type(c).__name__ for c in term_calls(e, terms)), tuple(level_data[lv.name]),
                            stochastic[lv.name], linear, lv.span))

    settings = dict(model.fidelity.solver)
    scheme = str(settings.get("scheme", "auto"))
    n_rows = sum(d.values.size for lv in levels for d in lv.data)
    all_linear = all(lv.linear for lv in levels)
    notes = []
    if scheme == "auto":
        max_exact = int(settings.get("max_exact", 3000))
        scheme = "joint" if all_linear and n_rows <= max_exact else "recursive"
        if all_linear and n_rows > max_exact:
            notes.append(f"{n_rows} rows exceed max_exact={max_exact}: levels are fitted one after another "
                         "(recursive scheme)")
    span = info.solver_span
    if scheme == "joint" and not all_linear:
        for lv in levels:
            if not lv.linear:
                problems.append(Diagnostic(
                    "E299", f"the link of '{lv.name}' is not linear in its unknown terms and the stochastic levels "
                    "below it, so the joint scheme cannot fit it", lv.span, model.file,
                    help="use solver gp(scheme=recursive) (or auto), which fits the levels one after another"))
    for lv in levels:
        replaced, dummies = _replace_gp_calls(lv.expression, terms)
        if decompose(replaced, list(dummies)) is None:
            problems.append(Diagnostic(
                "E299", f"the link of '{lv.name}' is not linear in its gp terms, so the level is not a Gaussian "
                "process", lv.span, model.file,
                help="write the term outside the nonlinearity (f(x) + ...), or make it an mlp() term"))
    if not any(lv.data for lv in levels):
        problems.append(Diagnostic("E299", "no fidelity level has data to fit", info.levels[-1].span, model.file,
                                   help="tag a data source with a level and observe it"))
    if scheme == "recursive":
        owner: dict[str, str] = {}
        for lv in levels:
            gp_terms = [t for t in lv.terms if terms[t].kind == "gp"]
            for t in lv.terms:
                if t in owner:
                    problems.append(Diagnostic(
                        "E299", f"the unknown term '{t}' appears in the levels '{owner[t]}' and '{lv.name}'; the "
                        "recursive scheme learns each term from one level's data", lv.span, model.file,
                        help="declare a term for each level, or fit jointly (linear links, solver gp(scheme=joint))"))
                owner.setdefault(t, lv.name)
            if (gp_terms or any(terms[t].kind == "mlp" for t in lv.terms)) and not lv.data:
                problems.append(Diagnostic(
                    "E299", f"the level '{lv.name}' has an unknown term but no data; the recursive scheme learns a "
                    "level's terms from its own data", lv.span, model.file,
                    help=f"tag a data source 'fidelity {lv.name}', or fit jointly (linear links)"))
    if problems:
        raise MsmlError(problems, sources)
    top = tuple(lv.name for lv in levels if lv.name not in used_by_higher)
    problem = FidelityProblem(axes, tuple(levels), terms, tuple(builder.simulations), scheme,
                              int(settings.get("samples", 500)), float(settings.get("jitter", 1e-8)), top,
                              tuple(notes))
    return problem, params + extra_params


def _scale_of(amplitude) -> float:
    """The sd of a link term's trend coefficients: the scale of its amplitude prior (the default
    HalfNormal(10 x rms), or the file's: HalfNormal/HalfCauchy scale, 1 / rate of an Exponential,
    the median of a LogNormal, the mean of a Gamma, the mean of an InverseGamma (its mode when the
    mean is infinite)), so a file that bounds its discrepancy bounds
    the trend alike."""
    try:
        a = [float(v) for v in amplitude.args]
    except TypeError:                       # a scale that depends on another parameter: its factor
        return float(amplitude.args[0].as_coeff_Mul()[0])
    scale = {"HalfNormal": lambda: a[0], "HalfCauchy": lambda: a[0], "Exponential": lambda: 1 / a[0],
             "LogNormal": lambda: math.exp(a[0]), "Gamma": lambda: a[0] / a[1],
             "InverseGamma": lambda: a[1] / (a[0] - 1) if a[0] > 1 else a[1] / (a[0] + 1)}.get(amplitude.distribution)
    return float(scale()) if scale else 0.0


def _latent(cls, name, shape, call, default, symbolic):
    """A hyperparameter as a LatentParameter: the prior the file gives (``lengthscale=...``) or the default."""
    from msml_dsl.syntax.evaluate import evaluate

    if call is None:
        dist, args = default
        args = tuple(a if isinstance(a, sympy.Expr) and a.free_symbols else sympy.Float(a) for a in args)
    else:
        dist = call.func.id
        args = tuple(sympy.Float(float(evaluate(a, symbolic.checked.constants))) for a in call.args)
    if shape:
        elements = tuple(sympy.Symbol(f"{name}[{i + 1}]", real=True) for i in range(shape[0]))
    else:
        elements = (sympy.Symbol(name, real=True),)
    from msml_dsl.ir.model_ir import _Bounds, _support

    return cls(name, shape, dist, args, None, None, elements, _support(_Bounds(dist, None, None), args))
