"""AST → :class:`CheckedModel` (the ``check`` stage).

One pass collects every problem: unknown and duplicate names, states without
equations or initial values, misuse of ``der``, unknown distributions and wrong
arity, priors whose support conflicts with their bounds, malformed settings.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from msml_dsl.errors import DiagnosticBag, Span, did_you_mean
from msml_dsl.semantics.distributions import DISTRIBUTIONS, support_of
from msml_dsl.semantics.model import (CheckedModel, DataSourceInfo, ExperimentInfo, FidelityInfo, FidelityLevelInfo,
                                      FieldInfo, InferenceSettings, ObservationInfo, ParameterInfo, PdeInfo,
                                      PhysicsInfo, SolverSettings, UnknownInfo)
from msml_dsl.syntax import ast
from msml_dsl.syntax.evaluate import BUILTIN_CONSTANTS, FUNCTIONS, EvaluationError, evaluate
from msml_dsl.syntax.parser import iter_expr

SOLVERS = {"rk45": "rk45", "stiff": "stiff", "bdf": "stiff", "rosenbrock": "stiff", "auto": "auto"}
SOLVER_OPTIONS = {"rtol": float, "atol": float, "max_steps": int}

INFER_OPTIONS: dict[str, dict[str, type]] = {
    "nuts": {"chains": int, "warmup": int, "draws": int, "seed": int, "target_accept": float,
             "max_tree_depth": int, "metric": str, "init": str, "thin": int},
    "map": {"seed": int, "starts": int, "max_iter": int, "init": str},
    "svi": {"steps": int, "lr": float, "seed": int, "draws": int},
    "chees": {"chains": int, "superchains": int, "warmup": int, "draws": int, "seed": int, "target_accept": float,
              "init": str, "thin": int},
}
METRICS = ("auto", "diag", "dense")
FIDELITY_PREDICTIVES = ("mixture", "linearised")   # infer laplace(predictive=...) of a fidelity model
ACTIVATIONS = ("tanh", "relu", "sigmoid", "sin", "gelu", "softplus", "silu", "elu")
KERNELS = ("rbf", "matern32", "matern52", "periodic")
REPRESENTATIONS = {"field": ("mlp",), "unknown": ("mlp", "gp", "library")}
COLLOCATION_METHODS = ("sobol", "halton", "uniform", "grid")
INITS = ("map", "prior", "uniform", "derivatives")

# Statements that parse and check but have no backend yet (later issues).
_LATER: dict = {}
MLP_OPTIONS = {"hidden": "ints", "activation": str, "prior": "distribution", "output_scale": float,
               "posterior": {"type": str, "choices": ("all", "last_layer")}}   # which weights NUTS samples
GP_OPTIONS = {"kernel": str, "basis": "ints", "lengthscale": "distribution", "amplitude": "distribution",
              "period": float, "boundary_factor": float, "trend": bool,   # trend: fidelity discrepancies
              "method": {"type": str, "choices": ("auto", "exact", "basis")},   # ir/exact_gp.py
              "parametrisation": {"type": str, "choices": ("centred", "noncentred")}}   # of an exact GP
LIBRARY_OPTIONS = {"sparsity": "call", "threshold": float, "constant": bool}
LIBRARY_GROUPS = ("poly", "fourier")
SPARSITY_PRIORS = {"horseshoe": 1, "laplace": 1, "spike_slab": 2, "normal": 1}
SPARSITY_KEYWORDS = {"horseshoe": ("slab_scale", "slab_df")}  # the regularised horseshoe's slab
# Statements of PDE models (checked here, lowered by ir/ and solved by backends/pinn or method of lines).
_PDE_STATEMENTS = (ast.SpaceDecl, ast.FieldDecl, ast.BoundaryDecl, ast.InitialDecl, ast.CollocationDecl,
                   ast.PhysicsDecl)

PDE_SOLVERS = ("pinn", "mol")
MOL_OPTIONS = {"points": "ints", "method": str, "rtol": float, "atol": float, "max_steps": int,
               "steady_time": float, "scheme": {"type": str, "choices": ("central", "upwind1", "upwind2")}}
MOL_METHODS = ("rk45", "stiff", "auto")
FIELD_OPTIONS = {"hidden": "ints", "activation": str, "fourier_features": int, "fourier_scale": float}
COLLOCATION_OPTIONS = {"boundary": int, "initial": int, "resample": int, "adaptive": int, "rounds": int,
                       "seed": int}
# Fidelity models: simulate(OUTPUT, ...) and solver gp(...)
SIMULATE_OPTIONS = {"steps": {"type": int, "min": 1},
                    "method": {"type": str, "choices": ("rk4", "midpoint", "euler", "rk45", "stiff", "auto")},
                    "rtol": {"type": float, "min": 1e-12}, "atol": {"type": float, "min": 1e-15}}
FIDELITY_SOLVER_OPTIONS = {"scheme": {"type": str, "choices": ("auto", "joint", "recursive")},
                           "samples": {"type": int, "min": 10}, "jitter": {"type": float, "min": 0.0},
                           "max_exact": {"type": int, "min": 1}}


def check_simulate_tolerances(checker, call: ast.Call, opts: dict) -> None:
    """rtol= and atol= of simulate() belong to the adaptive methods (rk45, stiff, auto)."""
    method = opts.get("method", "rk4")
    for kw in call.keywords:
        if kw.name.id in ("rtol", "atol") and method not in ("rk45", "stiff", "auto"):
            checker.bag.error("E336", f"{kw.name.id}= sets the tolerance of an adaptive solve; method={method} "
                              "takes fixed steps", kw.span,
                              help="use method=rk45 (or stiff, auto) for a looser-tolerance level, or steps= "
                                   "for a coarser fixed grid")


def check(program: ast.Program) -> CheckedModel:
    """Resolve names and validate a parsed program.

    >>> from msml_dsl.syntax.parser import parse
    >>> src = 'model m\\ntime t in [0, 1]\\nstate x\\nparam k ~ Normal(0, 1)\\n'
    >>> src += 'equation der(x) = -k * x\\ninit x = 1\\n'
    >>> check(parse(src)).states
    ('x',)
    """
    return _Checker(program).run()


class _Checker:
    def __init__(self, program: ast.Program):
        self.p = program
        self.bag = DiagnosticBag(file=program.file)
        self.declared: dict[str, tuple[str, Span]] = {}   # name -> (kind, span)
        self.constants: dict[str, float] = {}
        self.vector_sizes: dict[str, int] = {}

    # ----------------------------------------------------------------- helpers
    def declare(self, name: ast.Name, kind: str) -> None:
        if name.id in self.declared:
            prev_kind, prev_span = self.declared[name.id]
            self.bag.error("E203", f"'{name.id}' is already declared as a {prev_kind} on line {prev_span.line}",
                           name.span, help="give each declaration its own name")
            return
        if name.id in FUNCTIONS or name.id in BUILTIN_CONSTANTS or name.id == "der":
            self.bag.error("E204", f"'{name.id}' is a built-in name and cannot be declared", name.span,
                           help="choose another name")
            return
        self.declared[name.id] = (kind, name.span)

    def kind(self, name: str) -> str | None:
        entry = self.declared.get(name)
        return entry[0] if entry else None

    def names_of(self, *kinds: str) -> list[str]:
        return [n for n, (k, _) in self.declared.items() if k in kinds]

    def unknown_name(self, node: ast.Name, allowed: list[str]) -> None:
        self.bag.error("E201", f"unknown name '{node.id}'", node.span,
                       help=did_you_mean(node.id, allowed + list(BUILTIN_CONSTANTS)))

    # --------------------------------------------------------------------- run
    def run(self) -> CheckedModel:
        p = self.p
        models = p.of_type(ast.ModelDecl)
        if not models:
            first = p.statements[0].span if p.statements else None
            self.bag.error("E202", "the file has no 'model' statement", first,
                           help="start the file with: model NAME \"title\"")
        elif len(models) > 1:
            self.bag.error("E203", "a file declares one model; 'model' appears again", models[1].span)
        elif p.statements[0] is not models[0]:
            self.bag.warning("W011", "the 'model' statement is usually the first line", models[0].span)

        times = p.of_type(ast.TimeDecl)
        for extra in times[1:]:
            self.bag.error("E205", "the time variable is declared twice", extra.span,
                           help=f"keep one 'time' statement (the first is on line {times[0].span.line})")

        # declarations first, so order in the file never matters
        for s in p.statements:
            if isinstance(s, ast.ConstDecl):
                self.declare(s.name, "const")
            elif isinstance(s, ast.TimeDecl) and s is times[0]:
                self.declare(s.name, "time variable")
            elif isinstance(s, ast.SpaceDecl):
                for v in s.variables:
                    self.declare(v.name, "space variable")
            elif isinstance(s, ast.StateDecl):
                for n in s.names:
                    self.declare(n, "state")
            elif isinstance(s, ast.FieldDecl):
                self.declare(s.name, "field")
            elif isinstance(s, ast.ParamDecl):
                self.declare(s.name, "param")
                if s.size is not None:
                    if s.size < 1:
                        self.bag.error("E206", f"the vector parameter '{s.name.id}' needs a size of at least 1",
                                       s.size_span)
                    self.vector_sizes[s.name.id] = max(1, s.size)
            elif isinstance(s, ast.UnknownDecl):
                self.declare(s.name, "unknown")
            elif isinstance(s, ast.DataDecl):
                self.declare(s.name, "data source")
            elif isinstance(s, ast.ExperimentDecl):
                self.declare(s.name, "experiment")
            elif isinstance(s, ast.DeriveDecl):
                self.declare(s.name, "derived quantity")
            elif isinstance(s, ast.FidelityDecl):
                self.declare(s.name, "fidelity level")

        experiments = p.of_type(ast.ExperimentDecl)   # equations and initial values may read its columns
        self.experiment_source = experiments[0].column.source.id if experiments else None
        self.evaluate_constants()
        time_name, time_range = self.check_time(times[0] if times else None)
        self.time_range = time_range
        space = self.check_space()
        states = tuple(n.id for s in p.of_type(ast.StateDecl) for n in s.names)
        parameters = self.check_parameters()
        equations = self.check_equations(states, time_name)
        inits = self.check_inits(states)
        sources = self.check_data(time_name, space)
        observations = self.check_observations(sources, time_name)
        derived = self.check_derived()
        solver = self.check_solver()
        inference = self.check_inference()
        unsupported = self.check_later_statements(space, time_name)
        pde = self.check_pde(space, time_name)
        unknowns = self.check_unknowns()
        fidelity, sources = self.check_fidelity(sources, space, time_name)
        self.check_trend_options()
        experiment = self.check_experiment(states, parameters, pde, fidelity)

        if not states and not unsupported and pde is None and fidelity is None and not p.of_type(ast.ParamDecl):
            self.bag.error("E207", "the model declares nothing to infer: no state, param or field",
                           models[0].span if models else None)

        self.bag.raise_if_errors({p.file: p.source})
        return CheckedModel(
            program=p, name=models[0].name.id, title=models[0].title,
            base_dir=Path(p.file).resolve().parent if p.file and not p.file.startswith("<") else Path.cwd(),
            constants=dict(self.constants), time=time_name, time_range=time_range, space=space,
            states=states, parameters=parameters, equations=equations, inits=inits,
            data_sources=sources, observations=observations, derived=derived, solver=solver,
            inference=inference, unsupported=unsupported, pde=pde, unknowns=unknowns, fidelity=fidelity,
            experiment=experiment,
            unsupported_names=tuple((n, k) for n, (k, _) in self.declared.items()
                                    if k in ("fidelity level",)),
            warnings=tuple(self.bag.warnings()))

    # ---------------------------------------------------------------- constants
    def evaluate_constants(self) -> None:
        decls = {s.name.id: s for s in self.p.of_type(ast.ConstDecl)}
        state: dict[str, str] = {}  # name -> 'visiting' | 'done'

        def visit(name: str, chain: list[str]) -> None:
            if state.get(name) == "done":
                return
            decl = decls[name]
            if state.get(name) == "visiting":
                cycle = " -> ".join(chain + [name])
                self.bag.error("E208", f"constants depend on each other in a cycle: {cycle}", decl.name.span)
                state[name] = "done"
                return
            state[name] = "visiting"
            for node in iter_expr(decl.value):
                if isinstance(node, ast.Name) and node.id in decls:
                    visit(node.id, chain + [name])
            state[name] = "done"
            ok = True
            for node in iter_expr(decl.value):
                if isinstance(node, ast.Name) and node.id not in decls and node.id not in BUILTIN_CONSTANTS:
                    k = self.kind(node.id)
                    if k is None:
                        self.unknown_name(node, list(decls))
                    else:
                        self.bag.error("E209", f"the constant '{name}' uses the {k} '{node.id}'; constants must "
                                       "be known numbers", node.span,
                                       help="use 'derive' for a quantity computed from parameters")
                    ok = False
                elif isinstance(node, (ast.Call,)) and node.func.id not in FUNCTIONS:
                    self.bag.error("E230", f"unknown function '{node.func.id}'", node.func.span,
                                   help=did_you_mean(node.func.id, FUNCTIONS))
                    ok = False
                elif isinstance(node, (ast.Attribute, ast.Index, ast.String, ast.ListExpr)):
                    self.bag.error("E209", f"the constant '{name}' must be a number", node.span)
                    ok = False
            if ok and all(n in self.constants for n in _names(decl.value) if n in decls):
                try:
                    value = float(evaluate(decl.value, self.constants))
                except (EvaluationError, TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
                    self.bag.error("E209", f"the constant '{name}' cannot be computed: {exc}", decl.value.span)
                    return
                if not math.isfinite(value):
                    self.bag.error("E209", f"the constant '{name}' is not a finite number ({value})", decl.value.span)
                    return
                self.constants[name] = value

        for name in decls:
            visit(name, [])

    def constant_value(self, expr: ast.Expr, what: str) -> float | None:
        """Evaluate an expression that must be a constant; report otherwise."""
        for node in iter_expr(expr):
            if isinstance(node, ast.Name) and node.id not in self.constants and node.id not in BUILTIN_CONSTANTS:
                k = self.kind(node.id)
                if k is None:
                    self.unknown_name(node, list(self.constants))
                elif k != "const":
                    self.bag.error("E212", f"{what} must be a constant, but uses the {k} '{node.id}'", node.span)
                return None
        try:
            value = float(evaluate(expr, self.constants))
        except (EvaluationError, TypeError, ValueError) as exc:
            self.bag.error("E212", f"{what} must be a number: {exc}", expr.span)
            return None
        return value

    # ------------------------------------------------------------ time, space
    def check_time(self, decl: ast.TimeDecl | None):
        if decl is None:
            return None, None
        lo = self.constant_value(decl.interval.lower, "the start of the time range")
        hi = self.constant_value(decl.interval.upper, "the end of the time range")
        if lo is not None and hi is not None and not lo < hi:
            self.bag.error("E214", f"the time range [{_fmt(lo)}, {_fmt(hi)}] is empty: the start must be below the end",
                           decl.interval.span, help=f"write [{_fmt(min(lo, hi))}, {_fmt(max(lo, hi))}]")
            return decl.name.id, None
        return decl.name.id, (lo, hi) if lo is not None and hi is not None else None

    def check_space(self) -> dict[str, tuple[float, float]]:
        out = {}
        for s in self.p.of_type(ast.SpaceDecl):
            for v in s.variables:
                lo = self.constant_value(v.interval.lower, f"the start of the range of '{v.name.id}'")
                hi = self.constant_value(v.interval.upper, f"the end of the range of '{v.name.id}'")
                if lo is not None and hi is not None:
                    if not lo < hi:
                        self.bag.error("E214", f"the range of '{v.name.id}' is empty: the start must be below the end",
                                       v.interval.span)
                    else:
                        out[v.name.id] = (lo, hi)
        return out

    # -------------------------------------------------------------- parameters
    def check_parameters(self) -> tuple[ParameterInfo, ...]:
        infos: dict[str, ParameterInfo] = {}
        decls = self.p.of_type(ast.ParamDecl)
        for d in decls:
            if self.declared.get(d.name.id, ("", None))[1] is not d.name.span:
                continue  # a duplicate, already reported
            spec = self.check_distribution(d.prior, role="prior")
            deps = set()
            for a in list(d.prior.args):
                deps |= self.check_expression(a, allowed=("const", "param"), context="a prior's argument")
            if d.name.id in deps:
                self.bag.error("E216", f"the prior of '{d.name.id}' uses '{d.name.id}' itself", d.prior.span)
            lower = upper = None
            bounds_ok = True
            seen_bounds: set[str] = set()
            for kw in d.bounds:
                if kw.name.id in seen_bounds:
                    self.bag.error("E213", f"the bound '{kw.name.id}' is given twice", kw.span)
                    bounds_ok = False
                    continue
                seen_bounds.add(kw.name.id)
                if kw.name.id not in ("lower", "upper"):
                    self.bag.error("E213", f"unknown bound '{kw.name.id}'", kw.name.span,
                                   help=did_you_mean(kw.name.id, ["lower", "upper"]) or "bounds are lower= and upper=")
                    bounds_ok = False
                    continue
                v = self.constant_value(kw.value, f"the bound '{kw.name.id}'")
                if v is None:
                    bounds_ok = False
                elif kw.name.id == "lower":
                    lower = v
                else:
                    upper = v
            if bounds_ok and lower is not None and upper is not None and not lower < upper:
                self.bag.error("E214", f"the bounds of '{d.name.id}' are empty: lower={_fmt(lower)} is not below "
                               f"upper={_fmt(upper)}", d.bounds[0].span if d.bounds else d.span)
                bounds_ok = False
            if spec is not None and bounds_ok:
                const_args = [self._try_constant(a) for a in d.prior.args]
                lo_s, hi_s = support_of(spec, const_args if len(const_args) == len(spec.parameters) else [None, None])
                span = _join(d.bounds[0].span, d.bounds[-1].span) if d.bounds else d.prior.span
                eff_lo = max(lo_s, lower) if lower is not None else lo_s
                eff_hi = min(hi_s, upper) if upper is not None else hi_s
                if not eff_lo < eff_hi:
                    self.bag.error("E215", f"the bounds of '{d.name.id}' exclude the whole support "
                                   f"{_interval(lo_s, hi_s)} of its {spec.name} prior", span,
                                   help="change the bounds or choose a prior whose support meets them")
                elif (lower is not None and lower < lo_s) or (upper is not None and upper > hi_s):
                    bad = "lower" if lower is not None and lower < lo_s else "upper"
                    val = lower if bad == "lower" else upper
                    self.bag.error("E215", f"the bound {bad}={_fmt(val)} of '{d.name.id}' lies outside the support "
                                   f"{_interval(lo_s, hi_s)} of its {spec.name} prior", span,
                                   help=f"remove the bound; the {spec.name} prior already keeps '{d.name.id}' in "
                                        f"{_interval(lo_s, hi_s)}")
            infos[d.name.id] = ParameterInfo(d.name.id, d.size, d.prior.func.id, d.prior.args, lower, upper,
                                             d.span, tuple(sorted(x for x in deps if x != d.name.id)),
                                             d.per.id if d.per is not None else None)
        return self._order_parameters(infos, {d.name.id: d for d in decls})

    def _order_parameters(self, infos, decls) -> tuple[ParameterInfo, ...]:
        ordered: list[ParameterInfo] = []
        state: dict[str, str] = {}

        def visit(name, chain):
            if state.get(name) == "done" or name not in infos:
                return
            if state.get(name) == "visiting":
                self.bag.error("E216", "parameter priors depend on each other in a cycle: "
                               + " -> ".join(chain + [name]), decls[name].name.span)
                return
            state[name] = "visiting"
            for dep in infos[name].depends_on:
                visit(dep, chain + [name])
            state[name] = "done"
            ordered.append(infos[name])

        for name in infos:
            visit(name, [])
        return tuple(ordered)

    def _try_constant(self, expr: ast.Expr) -> float | None:
        try:
            return float(evaluate(expr, self.constants))
        except (EvaluationError, TypeError, ValueError):
            return None

    def check_distribution(self, call: ast.Call, role: str):
        spec = DISTRIBUTIONS.get(call.func.id)
        if spec is None:
            self.bag.error("E210", f"unknown distribution '{call.func.id}'", call.func.span,
                           help=did_you_mean(call.func.id, DISTRIBUTIONS)
                           or "known distributions: " + ", ".join(DISTRIBUTIONS))
            return None
        if role == "prior" and not spec.prior_allowed:
            self.bag.error("E217", f"{spec.name} is a distribution of counts and cannot be a parameter's prior",
                           call.func.span, help="parameters are continuous: use e.g. LogNormal or Gamma")
            return None
        if call.keywords:
            self.bag.error("E211", f"{spec.name} takes its arguments by position: {spec.name}("
                           + ", ".join(spec.parameters) + ")", call.keywords[0].span)
            return None
        if len(call.args) != len(spec.parameters):
            n = len(spec.parameters)
            self.bag.error("E211", f"{spec.name} takes {n} argument{'s' if n != 1 else ''} "
                           f"({', '.join(spec.parameters)}), but {len(call.args)} "
                           f"{'were' if len(call.args) != 1 else 'was'} given", call.span)
            return None
        for pname, arg in zip(spec.parameters, call.args):
            v = self._try_constant(arg) if not _names(arg) - set(self.constants) - set(BUILTIN_CONSTANTS) else None
            if v is not None and pname in spec.positive and not v > 0:
                self.bag.error("E218", f"the {pname} of {spec.name} must be positive, but is {_fmt(v)}", arg.span)
        if spec.name == "Uniform":
            lo, hi = (self._try_constant(a) for a in call.args)
            if lo is not None and hi is not None and not lo < hi:
                self.bag.error("E218", f"Uniform needs low < high, but got low={_fmt(lo)}, high={_fmt(hi)}", call.span)
        return spec

    # --------------------------------------------------------------- expressions
    def check_expression(self, expr: ast.Expr, allowed: tuple[str, ...], context: str,
                         columns_of: str | None = None, covariates: bool = False) -> set[str]:
        """Check names and calls in an expression; return the parameters it uses.

        ``covariates``: columns of the experiment's data source may appear (ODE equations, initial values,
        derived quantities).
        """
        used_params: set[str] = set()
        pool = [n for n in self.declared if self.kind(n) in allowed]
        for node in iter_expr(expr):
            if isinstance(node, ast.Name):
                k = self.kind(node.id)
                if node.id in BUILTIN_CONSTANTS and k is None:
                    continue
                if k is None:
                    self.unknown_name(node, pool)
                elif k not in allowed:
                    self.bag.error("E219", f"{context} cannot use the {k} '{node.id}'", node.span,
                                   help=_allowed_help(allowed))
                elif k == "param":
                    if node.id in self.vector_sizes and not self._indexed(expr, node):
                        size = self.vector_sizes[node.id]
                        self.bag.error("E271", f"'{node.id}' is a vector of {size}; use one element, "
                                       f"{node.id}[1] to {node.id}[{size}]", node.span)
                    used_params.add(node.id)
            elif isinstance(node, ast.Index):
                name = node.target.id
                if name not in self.vector_sizes:
                    k = self.kind(name)
                    if k is None:
                        self.unknown_name(node.target, pool)
                    else:
                        self.bag.error("E270", f"'{name}' is a {'scalar ' if k == 'param' else ''}{k}, not a "
                                       "vector parameter, and cannot be indexed", node.span)
                    continue
                idx = node.index
                if isinstance(idx, ast.Number) and float(idx.value).is_integer():
                    i = int(idx.value)
                    size = self.vector_sizes[name]
                    if not 1 <= i <= size:
                        self.bag.error("E270", f"index {i} is out of range for '{name}', which has {size} element"
                                       f"{'s' if size != 1 else ''} (indices start at 1)", idx.span,
                                       help=f"use {name}[1] to {name}[{size}]")
                else:
                    self.bag.error("E270", "an index must be a whole number such as k[1]", idx.span)
                used_params.add(name)
            elif isinstance(node, ast.Call):
                fname = node.func.id
                if fname == "der":
                    self.bag.error("E227", f"der() cannot appear in {context}", node.span,
                                   help="der(STATE) belongs on the left side of an equation")
                elif fname in FUNCTIONS:
                    arity = FUNCTIONS[fname][1]
                    if len(node.args) != arity or node.keywords:
                        self.bag.error("E231", f"{fname}() takes {arity} argument{'s' if arity != 1 else ''}, "
                                       f"but {len(node.args) + len(node.keywords)} were given", node.span)
                elif self.kind(fname) in ("unknown", "field"):
                    if "unknown" not in allowed and "field" not in allowed:
                        self.bag.error("E219", f"{context} cannot use the {self.kind(fname)} '{fname}'", node.span)
                elif fname in DISTRIBUTIONS:
                    self.bag.error("E230", f"the distribution '{fname}' cannot be used as a function here", node.span,
                                   help="distributions appear after '~' in param and observe statements")
                else:
                    k = self.kind(fname)
                    if k is not None:
                        self.bag.error("E230", f"'{fname}' is a {k}, not a function", node.func.span)
                    else:
                        self.bag.error("E230", f"unknown function '{fname}'", node.func.span,
                                       help=did_you_mean(fname, list(FUNCTIONS) + self.names_of("unknown"))
                                       or "functions: " + ", ".join(FUNCTIONS))
            elif isinstance(node, ast.Attribute):
                if columns_of is None and covariates and node.source.id == self.experiment_source:
                    continue   # a per-experiment covariate: constant within each experiment (data/experiments.py)
                if columns_of is None:
                    self.bag.error("E219", f"{context} cannot use data columns", node.span,
                                   help=f"only columns of the experiment's source '{self.experiment_source}' may "
                                        "appear here (one value per experiment)" if covariates and self.experiment_source
                                   else None)
                elif node.source.id != columns_of:
                    self.bag.error("E219", f"an observation of '{columns_of}' can only use columns of "
                                   f"'{columns_of}', not of '{node.source.id}'", node.source.span)
            elif isinstance(node, (ast.String, ast.ListExpr)):
                self.bag.error("E219", f"{context} must be a numeric expression", node.span)
        return used_params

    @staticmethod
    def _indexed(expr: ast.Expr, name_node: ast.Name) -> bool:
        return any(isinstance(n, ast.Index) and n.target is name_node for n in iter_expr(expr))

    # ---------------------------------------------------------------- equations
    def check_equations(self, states, time_name) -> dict[str, ast.Expr]:
        eqs: dict[str, ast.Expr] = {}
        eq_spans: dict[str, Span] = {}
        has_space = bool(self.p.of_type(ast.SpaceDecl))
        for e in self.p.of_type(ast.EquationDecl):
            if _mentions_field(e, self.names_of("field")):
                continue  # a PDE: its checks belong to the field backend
            lhs = e.lhs
            if not (isinstance(lhs, ast.Call) and lhs.func.id == "der"):
                self.bag.error("E225", "the left side of an ODE equation must be der(STATE)", lhs.span,
                               help="write e.g. equation der(x) = -k * x")
                continue
            if len(lhs.args) != 1 or lhs.keywords:
                if len(lhs.args) > 1 and not has_space:
                    wrt = lhs.args[1]
                    self.bag.error("E226", f"der() with respect to '{_text(wrt)}': partial derivatives need a "
                                   "field and 'space' variables; for a state write der(STATE)", lhs.span)
                else:
                    self.bag.error("E226", "der() takes one state: der(STATE)", lhs.span)
                continue
            target = lhs.args[0]
            if not isinstance(target, ast.Name):
                self.bag.error("E226", "der() takes the name of a state", target.span)
                continue
            k = self.kind(target.id)
            if k is None:
                self.bag.error("E224", f"equation for '{target.id}', which is not declared", target.span,
                               help=did_you_mean(target.id, states) or f"declare it: state {target.id}")
                continue
            if k != "state":
                self.bag.error("E224", f"der() of '{target.id}', which is a {k}, not a state", target.span,
                               help=f"only states have time derivatives; declare 'state {target.id}'"
                               if k == "param" else None)
                continue
            if target.id in eqs:
                self.bag.error("E221", f"'{target.id}' has two equations (the first is on line "
                               f"{eq_spans[target.id].line})", e.span, help="write one equation per state")
                continue
            self.check_expression(e.rhs, allowed=("const", "param", "state", "time variable", "unknown",
                                                  "derived quantity"),
                                  context="an ODE right-hand side", covariates=True)
            eqs[target.id] = e.rhs
            eq_spans[target.id] = e.span
        for s in self.p.of_type(ast.StateDecl):
            for n in s.names:
                if n.id not in eqs and self.declared.get(n.id, ("", None))[1] is n.span:
                    self.bag.error("E220", f"the state '{n.id}' has no equation", n.span,
                                   help=f"add: equation der({n.id}) = ...")
        if eqs and time_name is None:
            self.bag.error("E228", "the model has ODE equations but no time variable",
                           next(iter(eq_spans.values())), help="declare one: time t in [0, 10]")
        return eqs

    def check_inits(self, states) -> dict[str, ast.Expr]:
        inits: dict[str, ast.Expr] = {}
        spans: dict[str, Span] = {}
        for i in self.p.of_type(ast.InitDecl):
            k = self.kind(i.name.id)
            if k is None:
                self.bag.error("E232", f"initial value for '{i.name.id}', which is not declared", i.name.span,
                               help=did_you_mean(i.name.id, states))
                continue
            if k != "state":
                self.bag.error("E232", f"'init' sets the initial value of a state, but '{i.name.id}' is a {k}",
                               i.name.span)
                continue
            if i.name.id in inits:
                self.bag.error("E223", f"'{i.name.id}' has two initial values (the first is on line "
                               f"{spans[i.name.id].line})", i.span)
                continue
            self.check_expression(i.value, allowed=("const", "param", "derived quantity", "unknown"),
                                  context="an initial value", covariates=True)
            inits[i.name.id] = i.value
            spans[i.name.id] = i.span
        for s in self.p.of_type(ast.StateDecl):
            for n in s.names:
                if n.id not in inits and self.declared.get(n.id, ("", None))[1] is n.span:
                    self.bag.error("E222", f"the state '{n.id}' has no initial value", n.span,
                                   help=f"add: init {n.id} = ...")
        return inits

    # --------------------------------------------------------------------- data
    def check_data(self, time_name, space) -> tuple[DataSourceInfo, ...]:
        out = []
        coordinates = ([time_name] if time_name else []) + list(space)
        for d in self.p.of_type(ast.DataDecl):
            src = d.source
            if src.func.id != "csv":
                self.bag.error("E240", f"unknown data format '{src.func.id}'", src.func.span,
                               help=did_you_mean(src.func.id, ["csv"]) or "data sources are read with csv(\"file.csv\")")
                continue
            if len(src.args) != 1 or not isinstance(src.args[0], ast.String):
                self.bag.error("E240", "csv() takes the file name as a string first: csv(\"file.csv\", t = column)",
                               src.span)
                continue
            bindings = []
            for kw in src.keywords:
                if kw.name.id not in coordinates:
                    self.bag.error("E241", f"'{kw.name.id}' is not a coordinate of the model; a csv() binding "
                                   "names the time or a space variable", kw.name.span,
                                   help=did_you_mean(kw.name.id, coordinates)
                                   or (f"bind the time: {time_name} = COLUMN" if time_name else None))
                    continue
                for node in iter_expr(kw.value):
                    if isinstance(node, (ast.Attribute, ast.Index, ast.String, ast.ListExpr)):
                        self.bag.error("E241", "a binding is a column name or an expression of columns", node.span)
                    elif isinstance(node, ast.Call) and node.func.id not in FUNCTIONS:
                        self.bag.error("E230", f"unknown function '{node.func.id}'", node.func.span,
                                       help=did_you_mean(node.func.id, FUNCTIONS))
                bindings.append((kw.name.id, kw.value))
            if d.fidelity is not None and self.kind(d.fidelity.id) != "fidelity level":
                self.bag.error("E242", f"unknown fidelity level '{d.fidelity.id}'", d.fidelity.span,
                               help=did_you_mean(d.fidelity.id, self.names_of("fidelity level")))
            path = Path(src.args[0].value)
            out.append(DataSourceInfo(d.name.id, path, src.args[0].span, tuple(bindings),
                                      d.fidelity.id if d.fidelity else None, d.span))
        return tuple(out)

    def check_observations(self, sources, time_name) -> tuple[ObservationInfo, ...]:
        out = []
        names = {s.name for s in sources}
        seen: dict[str, Span] = {}
        for o in self.p.of_type(ast.ObserveDecl):
            src = o.target.source
            if self.kind(src.id) != "data source":
                k = self.kind(src.id)
                self.bag.error("E243", f"'{src.id}' is not a data source" if k else f"unknown data source '{src.id}'",
                               src.span, help=did_you_mean(src.id, names) or f"declare it: data {src.id} = csv(\"...\")")
                continue
            key = f"{src.id}.{o.target.column.id}"
            if key in seen:
                self.bag.error("E244", f"'{key}' is observed twice (first on line {seen[key].line})", o.target.span)
                continue
            seen[key] = o.span
            spec = self.check_distribution(o.distribution, role="observation")
            for a in o.distribution.args:
                self.check_expression(a, allowed=("const", "param", "state", "time variable", "unknown", "field",
                                                  "fidelity level", "space variable", "derived quantity"),
                                      context="an observation's argument", columns_of=src.id)
            if spec is not None:
                out.append(ObservationInfo(src.id, o.target.column.id, o.target.column.span, spec.name,
                                           o.distribution.args, o.span))
        observed = {o.target.source.id for o in self.p.of_type(ast.ObserveDecl)}
        for s in sources:
            if s.name not in observed:
                self.bag.warning("W012", f"the data source '{s.name}' is never observed", s.span,
                                 help=f"add: observe {s.name}.COLUMN ~ Normal(STATE, sigma)")
        return tuple(out)

    def check_derived(self):
        out = []
        defined: set[str] = set()
        for d in self.p.of_type(ast.DeriveDecl):
            self.check_expression(d.value, allowed=("const", "param", "derived quantity", "unknown"),
                                  context="a derived quantity", covariates=True)   # one per experiment
            for node in iter_expr(d.value):
                if isinstance(node, ast.Name) and self.kind(node.id) == "derived quantity" and node.id not in defined:
                    self.bag.error("E250", f"the derived quantity '{d.name.id}' uses '{node.id}', which is derived "
                                   "later in the file (or is itself)", node.span,
                                   help=f"move 'derive {node.id}' above this line")
            defined.add(d.name.id)
            out.append((d.name.id, d.value))
        return tuple(out)

    def check_experiment(self, states, parameters, pde, fidelity) -> ExperimentInfo | None:
        """``experiment run = runs.run`` and the ``per run`` declarations that use it."""
        decls = self.p.of_type(ast.ExperimentDecl)
        for extra in decls[1:]:
            self.bag.error("E245", "a model has one 'experiment' statement; 'experiment' appears again", extra.span,
                           help=f"keep the one on line {decls[0].span.line}; several factors (subject and dose) "
                                "can be combined into one column of the data")
        experiments = [d.name.id for d in decls[:1]]
        for d in self.p.of_type(ast.ParamDecl) + self.p.of_type(ast.UnknownDecl):
            if d.per is None:
                continue
            if d.per.id not in experiments:
                kind = self.kind(d.per.id)
                self.bag.error("E246", f"'{d.per.id}' is not an experiment" + (f" (it is a {kind})" if kind else ""),
                               d.per.span, help=did_you_mean(d.per.id, experiments) or
                               ("declare it: experiment NAME = SOURCE.COLUMN" if not experiments else
                                f"the model's experiment is '{experiments[0]}'"))
            elif isinstance(d, ast.UnknownDecl):
                self.bag.error("E247", f"the unknown term '{d.name.id}' cannot be per experiment: unknown terms are "
                               "shared by every experiment", _join(d.representation.span, d.per.span),
                               help="give the term an input that differs between experiments, or make a parameter "
                                    "per experiment")
        if not decls:
            return None
        d = decls[0]
        per = {p.name for p in parameters if p.per}
        for p in parameters:
            used = [x for x in p.depends_on if x in per]
            if not p.per and used:
                self.bag.error("E247", f"the prior of the shared parameter '{p.name}' uses '{used[0]}', which is per "
                               "experiment", p.span, help=f"add 'per {d.name.id}' to '{p.name}' as well")
        what = "a PDE model" if pde is not None else "a multi-fidelity model" if fidelity is not None else \
            None if states else "a model without states"
        if what:
            self.bag.error("E248", f"'experiment' is not supported in {what}: it repeats the ODE solution once per "
                           "experiment", d.span, help="experiments are supported for ODE models (state, equation, "
                                                      "init); remove the statement")
        src = d.column.source
        if self.kind(src.id) != "data source":
            k = self.kind(src.id)
            self.bag.error("E243", f"'{src.id}' is not a data source" if k else f"unknown data source '{src.id}'",
                           src.span, help=did_you_mean(src.id, self.names_of("data source")) or
                           f"declare it: data {src.id} = csv(\"...\")")
            return None
        return ExperimentInfo(d.name.id, src.id, d.column.column.id, d.column.column.span, d.span)

    # ----------------------------------------------------------------- settings
    def _options(self, method: ast.Method, schema: dict[str, type], what: str) -> dict:
        opts = {}
        if method.args:
            self.bag.error("E261", f"{what} options are named, e.g. {method.name.id}({next(iter(schema), 'x')}=...)",
                           method.args[0].span)
        for kw in method.keywords:
            key = kw.name.id
            if key not in schema:
                self.bag.error("E261", f"unknown option '{key}' for {what} '{method.name.id}'", kw.name.span,
                               help=did_you_mean(key, schema) or "options: " + ", ".join(schema))
                continue
            if key in opts:
                self.bag.error("E261", f"option '{key}' is given twice", kw.span)
                continue
            typ = schema[key]
            spec = typ if isinstance(typ, dict) else {}   # a backend's settings table: type, choices, min
            typ = spec.get("type", typ)
            if typ is bool:
                word = kw.value.id if isinstance(kw.value, ast.Name) else None
                if word not in ("true", "false"):
                    self.bag.error("E262", f"option '{key}' is true or false", kw.value.span)
                else:
                    opts[key] = word == "true"
                continue
            if typ == "ints":
                values = self._int_list(kw.value, f"option '{key}'")
                if values is not None:
                    opts[key] = values
                continue
            if typ is str:
                if isinstance(kw.value, ast.Name):
                    opts[key] = kw.value.id
                elif isinstance(kw.value, ast.String):
                    opts[key] = kw.value.value
                else:
                    self.bag.error("E262", f"option '{key}' takes a word", kw.value.span)
                    continue
                choices = spec.get("choices")
                if choices and opts[key] not in choices:
                    self.bag.error("E262", f"option '{key}' is one of {', '.join(choices)}, not '{opts[key]}'",
                                   kw.value.span, help=did_you_mean(opts.pop(key), choices))
                continue
            v = self.constant_value(kw.value, f"option '{key}'")
            if v is None:
                continue
            if typ is int:
                if not float(v).is_integer():
                    self.bag.error("E262", f"option '{key}' must be a whole number, not {_fmt(v)}", kw.value.span)
                    continue
                v = int(v)
            if "min" in spec and v < spec["min"]:
                self.bag.error("E262", f"option '{key}' must be at least {_fmt(spec['min'])}, not {_fmt(v)}",
                               kw.value.span)
                continue
            opts[key] = v
        return opts

    def _int_list(self, expr: ast.Expr, what: str) -> tuple[int, ...] | None:
        """A whole number or a list of them (``points=64`` or ``hidden=[20, 20]``), each at least 1."""
        items = expr.items if isinstance(expr, ast.ListExpr) else (expr,)
        out = []
        for item in items:
            v = self.constant_value(item, what)
            if v is None:
                return None
            if not float(v).is_integer() or v < 1:
                self.bag.error("E262", f"{what} takes whole numbers of at least 1, not {_fmt(v)}", item.span)
                return None
            out.append(int(v))
        if not out:
            self.bag.error("E262", f"{what} needs at least one number", expr.span)
            return None
        return tuple(out)

    def check_solver(self) -> SolverSettings:
        decls = self.p.of_type(ast.SolverDecl)
        if self.p.of_type(ast.FidelityDecl):
            return SolverSettings()  # solver gp(...): check_fidelity
        if self.p.of_type(ast.FieldDecl):
            # A PDE model: the solver statement chooses pinn or mol; mol's time integration options
            # become the ODE settings.
            for extra in decls[1:]:
                self.bag.error("E260", "the solver is set twice", extra.span)
            m = decls[0].method if decls else None
            if m is None:
                return SolverSettings()
            if m.name.id not in PDE_SOLVERS:
                self.bag.error("E260", f"unknown solver '{m.name.id}' for a model with fields", m.name.span,
                               help=did_you_mean(m.name.id, PDE_SOLVERS)
                               or "PDE models are solved by pinn (a physics-informed network) or mol "
                                  "(the method of lines)")
                return SolverSettings()
            if m.name.id == "pinn":
                from msml_dsl.backends.pinn.settings import PINN_OPTIONS

                self.pde_solver = ("pinn", self._options(m, PINN_OPTIONS, "solver"), m.span)
                return SolverSettings()
            o = self._options(m, MOL_OPTIONS, "solver")
            self.pde_solver = ("mol", o, m.span)
            method = o.get("method", "auto")
            if method not in MOL_METHODS:
                self.bag.error("E262", f"unknown time integrator '{method}' for the method of lines",
                               _kw_span(m, "method"), help=did_you_mean(method, MOL_METHODS)
                               or "use rk45, stiff or auto")
                method = "auto"
            return SolverSettings(method, float(o.get("rtol", 1e-6)), float(o.get("atol", 1e-8)),
                                  int(o.get("max_steps", 100_000)))
        for extra in decls[1:]:
            self.bag.error("E260", "the solver is set twice", extra.span)
        if not decls:
            return SolverSettings()
        m = decls[0].method
        if m.name.id not in SOLVERS:
            self.bag.error("E260", f"unknown solver '{m.name.id}'", m.name.span,
                           help=did_you_mean(m.name.id, SOLVERS) or "solvers: rk45, stiff (alias bdf), auto")
            return SolverSettings()
        o = self._options(m, SOLVER_OPTIONS, "solver")
        for key in ("rtol", "atol"):
            if key in o and not o[key] > 0:
                self.bag.error("E262", f"solver option '{key}' must be positive", _kw_span(m, key))
        if "max_steps" in o and o["max_steps"] < 1:
            self.bag.error("E262", "solver option 'max_steps' must be at least 1", _kw_span(m, "max_steps"))
        return SolverSettings(SOLVERS[m.name.id], float(o.get("rtol", 1e-6)), float(o.get("atol", 1e-8)),
                              int(o.get("max_steps", 100_000)))

    def check_inference(self) -> InferenceSettings:
        decls = self.p.of_type(ast.InferDecl)
        for extra in decls[1:]:
            self.bag.error("E263", "the inference method is set twice", extra.span)
        if not decls:
            return InferenceSettings()
        m = decls[0].method
        if getattr(self, "pde_solver", (None,))[0] == "pinn" or (self.p.of_type(ast.FieldDecl) and
                                                                  not hasattr(self, "pde_solver")):
            from msml_dsl.backends.pinn.settings import PINN_INFER_OPTIONS

            if m.name.id not in PINN_INFER_OPTIONS:
                self.bag.error("E263", f"unknown inference method '{m.name.id}' for a physics-informed network",
                               m.name.span, help=did_you_mean(m.name.id, PINN_INFER_OPTIONS)
                               or "methods: " + ", ".join(PINN_INFER_OPTIONS))
                return InferenceSettings()
            o = self._options(m, PINN_INFER_OPTIONS[m.name.id], "inference method")
            return InferenceSettings(m.name.id, tuple(sorted(o.items())))
        if m.name.id == "laplace" and self.p.of_type(ast.FidelityDecl):
            o = self._options(m, {**INFER_OPTIONS["map"], "draws": int,
                                  "predictive": {"type": str, "choices": FIDELITY_PREDICTIVES}}, "inference method")
            for key in ("starts", "max_iter", "draws"):
                if key in o and o[key] < 1:
                    self.bag.error("E262", f"option '{key}' must be at least 1", _kw_span(m, key))
            return InferenceSettings(m.name.id, tuple(sorted(o.items())))
        if m.name.id not in INFER_OPTIONS:
            self.bag.error("E263", f"unknown inference method '{m.name.id}'", m.name.span,
                           help=did_you_mean(m.name.id, INFER_OPTIONS) or "methods: nuts, chees, map, svi")
            return InferenceSettings()
        o = self._options(m, INFER_OPTIONS[m.name.id], "inference method")
        for key in ("chains", "draws", "steps", "starts", "max_iter", "max_tree_depth", "thin", "superchains"):
            if key in o and o[key] < 1:
                self.bag.error("E262", f"option '{key}' must be at least 1", _kw_span(m, key))
        for key in ("warmup", "seed"):
            if key in o and o[key] < 0:
                self.bag.error("E262", f"option '{key}' cannot be negative", _kw_span(m, key))
        if "target_accept" in o and not 0 < o["target_accept"] < 1:
            self.bag.error("E262", "option 'target_accept' must lie between 0 and 1 (e.g. 0.9)",
                           _kw_span(m, "target_accept"))
        if m.name.id == "chees" and o.get("chains", 64) % o.get("superchains", 8):
            self.bag.error("E262", f"chees needs chains ({o.get('chains', 64)}) to be a multiple of superchains "
                           f"({o.get('superchains', 8)})", _kw_span(m, "superchains" if "superchains" in o else "chains"))
        if "lr" in o and not o["lr"] > 0:
            self.bag.error("E262", "option 'lr' must be positive", _kw_span(m, "lr"))
        if "metric" in o and o["metric"] not in METRICS:
            self.bag.error("E262", f"unknown metric '{o['metric']}'", _kw_span(m, "metric"),
                           help=did_you_mean(o["metric"], METRICS) or "metrics: auto, diag, dense")
        if "init" in o and o["init"] not in INITS:
            self.bag.error("E262", f"unknown init '{o['init']}'", _kw_span(m, "init"),
                           help=did_you_mean(o["init"], INITS) or "inits: " + ", ".join(INITS))
        return InferenceSettings(m.name.id, tuple(sorted(o.items())))

    # ---------------------------------------------------------------- PDE models
    def check_pde(self, space, time_name) -> PdeInfo | None:
        """Fields, their equations, conditions, collocation, physics terms and solver, as one PdeInfo."""
        field_decls = self.p.of_type(ast.FieldDecl)
        if not field_decls:
            for s in self.p.statements:
                if isinstance(s, (ast.BoundaryDecl, ast.InitialDecl, ast.CollocationDecl, ast.PhysicsDecl)):
                    keyword = type(s).__name__.replace("Decl", "").lower()
                    self.bag.error("E289", f"'{keyword}' statements belong to models with a field, and this model "
                                   "declares none", s.span, help="declare one: field u(x, t) : mlp(hidden=[32, 32])")
            return None
        fields = []
        for f in field_decls:
            rep = f.representation
            opts = {}
            if rep.func.id == "mlp":
                opts = self._options(ast.Method(rep.func, rep.args, rep.keywords, rep.span), FIELD_OPTIONS,
                                     "field representation")
            fields.append(FieldInfo(f.name.id, tuple(a.id for a in f.arguments), rep.func.id,
                                    tuple(sorted(opts.items())), f.span))
        field_names = [f.name for f in fields]
        equations = tuple(e for e in self.p.of_type(ast.EquationDecl) if _mentions_field(e, field_names))
        if not equations:
            self.bag.error("E289", "the model declares a field but no equation for it", field_decls[0].span,
                           help=f"add e.g.: equation der({field_names[0]}, t) = D * laplacian({field_names[0]})")
        for e in equations:
            if any(isinstance(n, ast.Name) and self.kind(n.id) == "state" for side in (e.lhs, e.rhs)
                   for n in iter_expr(side)):
                self.bag.error("E289", "an equation cannot mix fields and ODE states", e.span,
                               help="couple them through parameters, or make the state a field")
        conditions = tuple(s for s in self.p.statements if isinstance(s, (ast.BoundaryDecl, ast.InitialDecl)))

        colloc = self.p.of_type(ast.CollocationDecl)
        for extra in colloc[1:]:
            self.bag.error("E287", f"collocation is set twice (first on line {colloc[0].span.line})", extra.span)
        collocation: dict = {}
        if colloc:
            c = colloc[0]
            if c.count < 1:
                self.bag.error("E287", "collocation needs at least 1 point", c.span)
            method = c.method.id if c.method is not None else "sobol"
            if method not in COLLOCATION_METHODS:
                self.bag.error("E287", f"unknown collocation method '{method}'", c.method.span,
                               help=did_you_mean(method, COLLOCATION_METHODS)
                               or "methods: " + ", ".join(COLLOCATION_METHODS))
            opts = self._options(ast.Method(c.method or ast.Name("collocation", c.span), (), c.options, c.span),
                                 COLLOCATION_OPTIONS, "collocation")
            for key in ("boundary", "initial", "resample", "adaptive", "rounds"):
                if key in opts and opts[key] < 0:
                    self.bag.error("E262", f"collocation option '{key}' cannot be negative", c.span)
            collocation = {"count": c.count, "method": method, **opts}

        term_names = ["pde"] + ([f"pde{i + 1}" for i in range(len(equations))] if len(equations) > 1 else []) \
            + ["boundary", "initial"]
        physics = []
        seen: dict[str, Span] = {}
        for ph in self.p.of_type(ast.PhysicsDecl):
            name = ph.name.id
            if name not in term_names:
                self.bag.error("E290", f"unknown physics term '{name}'", ph.name.span,
                               help=did_you_mean(name, term_names) or "terms: " + ", ".join(term_names))
                continue
            if name in seen:
                self.bag.error("E290", f"the physics term '{name}' is set twice (first on line {seen[name].line})",
                               ph.span)
                continue
            seen[name] = ph.span
            d = ph.distribution
            if d.func.id != "Normal" or len(d.args) != 2 or d.keywords:
                self.bag.error("E290", "a physics term is a residual with a Normal(0, scale) likelihood", d.span,
                               help=f"write: physics {name} ~ Normal(0, 0.01)")
                continue
            centre = self._try_constant(d.args[0])
            if centre is None or centre != 0:
                self.bag.error("E290", "a residual is centred at zero: Normal(0, scale)", d.args[0].span)
                continue
            scale = d.args[1]
            if isinstance(scale, ast.Name) and self.kind(scale.id) == "param":
                if scale.id in self.vector_sizes:
                    self.bag.error("E290", "a physics scale is a scalar parameter", scale.span)
                    continue
            else:
                v = self.constant_value(scale, "a physics scale")
                if v is None:
                    continue
                if not v > 0:
                    self.bag.error("E290", f"a physics scale must be positive, not {_fmt(v)}", scale.span)
                    continue
            physics.append(PhysicsInfo(name, scale, ph.span))

        solver, options, span = getattr(self, "pde_solver", ("pinn", {}, None))
        if solver == "mol":
            self._check_mol(fields, equations, conditions, space, time_name, options, span)
        return PdeInfo(tuple(fields), equations, conditions, tuple(sorted(collocation.items())), tuple(physics),
                       solver, tuple(sorted(options.items())), span)

    def _check_mol(self, fields, equations, conditions, space, time_name, options, span) -> None:
        """What the method of lines needs beyond a PINN: a grid size per space variable, a rectangle."""
        points = options.get("points")
        if points is not None and len(points) not in (1, len(space)):
            self.bag.error("E262", f"points gives {len(points)} grid sizes, but the model has {len(space)} space "
                           f"variable{'s' if len(space) != 1 else ''}", span)
        if points is not None and min(points) < 3:
            self.bag.error("E262", "the method of lines needs at least 3 grid points per space variable",
                           span)
        if len(space) > 2:
            self.bag.error("E291", f"the method of lines covers 1-D and 2-D rectangles; this model has "
                           f"{len(space)} space variables", span, help="use solver pinn()")
        for f in fields:
            missing = [v for v in space if v not in f.arguments]
            if missing:
                self.bag.error("E291", f"the method of lines needs every field on the whole grid; '{f.name}' "
                               f"does not depend on {', '.join(missing)}", f.span)
        for d in self.p.of_type(ast.DeriveDecl):
            for node in iter_expr(d.value):
                if isinstance(node, ast.Call) and self.kind(node.func.id) == "field":
                    self.bag.error("E293", f"a derived quantity cannot evaluate the field '{node.func.id}' with the "
                                   "method of lines", node.span,
                                   help="use solver pinn() for it, or read the field from fields.nc in the run folder")

    # ------------------------------------------------------------ unknown terms
    def check_unknowns(self) -> tuple[UnknownInfo, ...]:
        """Each unknown term's representation options, its calls' arity, and that it is used."""
        decls = self.p.of_type(ast.UnknownDecl)
        if not decls:
            return ()
        calls: dict[str, list[ast.Call]] = {d.name.id: [] for d in decls}
        for s in self.p.statements:
            for e in _expressions_of(s):
                for node in iter_expr(e):
                    if isinstance(node, ast.Call) and node.func.id in calls:
                        calls[node.func.id].append(node)
        out = []
        input_kinds = ("state", "time variable", "space variable", "field", "param", "const", "fidelity level",
                       "derived quantity")
        pool = [n for n in self.declared if self.kind(n) in input_kinds]
        for d in decls:
            n_inputs = len(d.inputs)
            seen: set[str] = set()
            for a in d.inputs:
                k = self.kind(a.id)
                if a.id in seen:
                    self.bag.error("E296", f"the unknown term '{d.name.id}' lists the input '{a.id}' twice", a.span)
                elif k is None:
                    self.bag.error("E296", f"the input '{a.id}' of the unknown term '{d.name.id}' is not in scope: "
                                   "no state, time or space variable, field, parameter or constant has that name",
                                   a.span, help=did_you_mean(a.id, pool) or f"declare it, or name one of: "
                                   f"{', '.join(pool) if pool else '(nothing is declared)'}")
                elif k not in input_kinds:
                    self.bag.error("E296", f"the input '{a.id}' of the unknown term '{d.name.id}' is a {k}; an input "
                                   "is a state, a time or space variable, a field, a parameter or a constant", a.span)
                seen.add(a.id)
            for c in calls[d.name.id]:
                if len(c.args) != n_inputs or c.keywords:
                    self.bag.error("E295", f"the unknown term '{d.name.id}' takes {n_inputs} input"
                                   f"{'s' if n_inputs != 1 else ''} ({', '.join(a.id for a in d.inputs)}), but "
                                   f"{len(c.args) + len(c.keywords)} "
                                   f"{'was' if len(c.args) + len(c.keywords) == 1 else 'were'} given", c.span)
            if not calls[d.name.id]:
                self.bag.error("E296", f"the unknown term '{d.name.id}' is declared but never used", d.name.span,
                               help=f"use it in an equation, e.g. der(x) = ... + {d.name.id}"
                                    f"({', '.join(a.id for a in d.inputs)})")
            rep = d.representation
            if rep.func.id not in REPRESENTATIONS["unknown"]:
                continue  # reported by _check_representation
            info = self._unknown_options(d)
            if info is not None:
                out.append(info)
        return tuple(out)

    def _unknown_options(self, d: ast.UnknownDecl) -> UnknownInfo | None:
        rep = d.representation
        kind = rep.func.id
        schema = {"mlp": MLP_OPTIONS, "gp": GP_OPTIONS, "library": LIBRARY_OPTIONS}[kind]
        plain = {k: v for k, v in schema.items() if v not in ("distribution", "call")}
        priors, sparsity = [], None
        keywords = []
        for kw in rep.keywords:
            typ = schema.get(kw.name.id)
            if typ == "distribution":
                if not isinstance(kw.value, ast.Call) or kw.value.func.id not in DISTRIBUTIONS:
                    self.bag.error("E297", f"option '{kw.name.id}' takes a distribution, e.g. "
                                   f"{kw.name.id}=Normal(0, 1)", kw.value.span)
                else:
                    self.check_distribution(kw.value, role="prior")
                    for a in kw.value.args:
                        self.constant_value(a, f"an argument of the '{kw.name.id}' prior")
                    priors.append((kw.name.id, kw.value))
            elif typ == "call":
                v = kw.value
                if not isinstance(v, ast.Call) or v.func.id not in SPARSITY_PRIORS:
                    word = v.func.id if isinstance(v, ast.Call) else _text(v)
                    self.bag.error("E297", f"unknown sparsity prior '{word}'", v.span,
                                   help=did_you_mean(word, SPARSITY_PRIORS) or "use horseshoe(0.1), laplace(1), "
                                   "spike_slab(0.2, 10) or normal(1)")
                elif len(v.args) != SPARSITY_PRIORS[v.func.id]:
                    self.bag.error("E297", f"{v.func.id}() takes {SPARSITY_PRIORS[v.func.id]} number"
                                   f"{'s' if SPARSITY_PRIORS[v.func.id] != 1 else ''}", v.span)
                elif not self._sparsity_keywords(v):
                    pass
                else:
                    values = [self.constant_value(a, f"an argument of {v.func.id}()") for a in v.args]
                    if all(x is not None for x in values):
                        if v.func.id == "spike_slab" and not 0 < values[0] < 1:
                            self.bag.error("E297", "spike_slab(p, slab): the inclusion probability p lies in "
                                           "(0, 1)", v.args[0].span)
                        elif any(x <= 0 for x in values[-1:]):
                            self.bag.error("E297", f"the scale of {v.func.id}() must be positive", v.args[-1].span)
                        else:
                            sparsity = v
            else:
                keywords.append(kw)
        opts = self._options(ast.Method(rep.func, (), tuple(keywords), rep.span), plain, f"{kind} term")
        if kind == "mlp" and "output_scale" in opts and not opts["output_scale"] > 0:
            self.bag.error("E297", "output_scale must be positive", _kw_span(rep, "output_scale"))
            opts.pop("output_scale")
        if kind == "gp":
            kernel = opts.get("kernel", "rbf")
            if kernel == "periodic" and "period" not in opts:
                self.bag.error("E297", "a periodic kernel needs its period: gp(kernel=periodic, period=365)",
                               rep.span)
            basis = opts.get("basis")
            if basis is not None and len(basis) not in (1, len(d.inputs)):
                self.bag.error("E297", f"basis gives {len(basis)} sizes for {len(d.inputs)} inputs", rep.span)
            in_level = any(isinstance(n, ast.Call) and n.func.id == d.name.id   # exact GPs: any number
                           for f in self.p.of_type(ast.FidelityDecl) for n in iter_expr(f.value))
            if len(d.inputs) > 2 and not in_level:
                self.bag.error("E297", f"a gp term takes 1 or 2 inputs (its basis grows as the product); "
                               f"'{d.name.id}' has {len(d.inputs)}", d.name.span,
                               help="use an mlp or a library for more inputs")
        terms: list[ast.Expr] = []
        if kind == "library":
            inputs = {a.id for a in d.inputs}
            for a in rep.args:
                if isinstance(a, ast.Call) and a.func.id in LIBRARY_GROUPS:
                    self._check_library_group(a, inputs)
                else:
                    for node in iter_expr(a):
                        if isinstance(node, ast.Name) and node.id not in inputs and node.id not in self.constants \
                                and node.id not in BUILTIN_CONSTANTS:
                            self.bag.error("E298", f"a library term uses '{node.id}', which is not an input of "
                                           f"'{d.name.id}' ({', '.join(sorted(inputs))})", node.span,
                                           help=did_you_mean(node.id, inputs))
                        elif isinstance(node, ast.Call) and node.func.id not in FUNCTIONS:
                            self.bag.error("E230", f"unknown function '{node.func.id}' in a library", node.func.span,
                                           help=did_you_mean(node.func.id, list(FUNCTIONS) + list(LIBRARY_GROUPS)))
                terms.append(a)
            if not rep.args:
                self.bag.error("E298", "a library lists its candidate terms, e.g. library(poly(x, y, degree=2))",
                               rep.span)
        elif rep.args:
            self.bag.error("E261", f"{kind}() options are named, e.g. {kind}({next(iter(schema))}=...)",
                           rep.args[0].span)
        return UnknownInfo(d.name.id, tuple(a.id for a in d.inputs), kind, tuple(sorted(opts.items())),
                           tuple(terms), tuple(priors), sparsity, d.span,
                           tuple((k.name.id, k.span) for k in rep.keywords))

    def _sparsity_keywords(self, v: ast.Call) -> bool:
        """horseshoe(tau0, slab_scale=2, slab_df=4): the regularised horseshoe's slab; other priors take none."""
        allowed = SPARSITY_KEYWORDS.get(v.func.id, ())
        ok = True
        for kw in v.keywords:
            if kw.name.id not in allowed:
                self.bag.error("E297", f"{v.func.id}() has no option '{kw.name.id}'", kw.name.span,
                               help=did_you_mean(kw.name.id, allowed) or (
                                   f"{v.func.id}() takes " + (", ".join(allowed) if allowed else "no named options")))
                ok = False
                continue
            value = self.constant_value(kw.value, f"{v.func.id}(..., {kw.name.id}=...)")
            if value is None:
                ok = False
            elif not value > 0:
                self.bag.error("E297", f"{kw.name.id} must be positive", kw.value.span)
                ok = False
        if v.keyword("slab_df") is not None and v.keyword("slab_scale") is None:
            self.bag.error("E297", "slab_df sets the slab of a regularised horseshoe; give its slab_scale too",
                           v.keyword("slab_df").name.span,
                           help=f"e.g. horseshoe({v.args[0].text if isinstance(v.args[0], ast.Number) else 1}, "
                                "slab_scale=2, slab_df=4)")
            ok = False
        return ok

    def _check_library_group(self, call: ast.Call, inputs: set[str]) -> None:
        """poly(x, y, degree=2) or fourier(t, n=3, period=365): names must be inputs."""
        for a in call.args:
            if not isinstance(a, ast.Name) or a.id not in inputs:
                self.bag.error("E298", f"{call.func.id}() takes inputs of the unknown term by name, not "
                               f"'{_text(a)}'", a.span, help=did_you_mean(_text(a), inputs))
        if not call.args:
            self.bag.error("E298", f"{call.func.id}() needs at least one input", call.span)
        allowed = {"poly": ("degree",), "fourier": ("n", "period")}[call.func.id]
        for kw in call.keywords:
            if kw.name.id not in allowed:
                self.bag.error("E261", f"unknown option '{kw.name.id}' for {call.func.id}()", kw.name.span,
                               help=did_you_mean(kw.name.id, allowed) or "options: " + ", ".join(allowed))
                continue
            v = self.constant_value(kw.value, f"option '{kw.name.id}'")
            if v is not None and (v <= 0 or (kw.name.id != "period" and not float(v).is_integer())):
                self.bag.error("E262", f"option '{kw.name.id}' must be a positive "
                               f"{'number' if kw.name.id == 'period' else 'whole number'}", kw.value.span)
        if call.func.id == "fourier" and call.keyword("period") is None:
            self.bag.error("E298", "fourier() needs its period: fourier(t, n=2, period=365)", call.span)

    # ------------------------------------------------------------ fidelity levels
    def check_fidelity(self, sources, space, time_name):
        """Levels, their links and the tagged data of a multi-fidelity model (E299, E330-E339).

        Returns the FidelityInfo (None for other models) and the data sources, where each tagged
        source gains a binding ``x = x`` for every coordinate its level uses and does not bind.
        """
        decls = self.p.of_type(ast.FidelityDecl)
        if not decls:
            return None, sources
        levels = {d.name.id: d for d in decls if self.declared.get(d.name.id, ("", None))[1] is d.name.span}
        coords = list(space) + ([time_name] if time_name else [])
        self._fidelity_space = dict(space)
        uses: dict[str, list[ast.Name]] = {}
        direct_inputs: dict[str, set[str]] = {}
        for name, d in levels.items():
            uses[name], direct_inputs[name] = self._check_level(d, coords, time_name)
        order = self._order_levels(levels, uses)
        inputs: dict[str, tuple[str, ...]] = {}
        for name in order:
            found = set(direct_inputs[name]).union(*(inputs.get(n.id, ()) for n in uses[name]))
            inputs[name] = tuple(c for c in coords if c in found)

        for f in self.p.of_type(ast.FieldDecl):
            self.bag.error("E339", "a model with fidelity levels cannot declare fields", f.span,
                           help="fit the field model on its own; a level may use simulate() of the model's ODE")
        for decl in self.p.of_type(ast.InferDecl)[:1]:
            if decl.method.name.id not in ("map", "nuts") and decl.method.name.id in INFER_OPTIONS:
                self.bag.error("E263", f"infer {decl.method.name.id}() is not available for a model with fidelity "
                               "levels", decl.method.name.span, help="use map (the default), laplace or nuts")
        observed = {o.target.source.id for o in self.p.of_type(ast.ObserveDecl)}
        tags = {s.name: s.fidelity for s in sources}
        for s in sources:
            if s.fidelity is None and s.name in observed:
                self.bag.error("E330", f"the data source '{s.name}' is observed in a model with fidelity levels, but "
                               "is tagged with no level", s.span,
                               help=f"tag it with the level it measures: data {s.name} = csv(\"{s.path}\") fidelity "
                                    f"{order[-1] if order else 'LEVEL'} (levels: {', '.join(order)})")
        for o in self.p.of_type(ast.ObserveDecl):
            self._check_level_observation(o, tags.get(o.target.source.id), levels)

        out = []
        for i, s in enumerate(sources):
            if s.fidelity in inputs:
                bound = {v for v, _ in s.bindings}
                extra = tuple((c, ast.Name(c, s.path_span)) for c in inputs[s.fidelity] if c not in bound)
                s = replace(s, bindings=s.bindings + extra)
            out.append(s)
        infos = tuple(FidelityLevelInfo(n, levels[n].value, tuple(dict.fromkeys(u.id for u in uses[n])), inputs[n],
                                        tuple(s.name for s in sources if s.fidelity == n), levels[n].span)
                      for n in order)
        solver, solver_span = self._fidelity_solver()
        used = set().union(*inputs.values()) if inputs else set()
        return FidelityInfo(infos, tuple(c for c in coords if c in used), solver, solver_span), tuple(out)

    def _check_level(self, d: ast.FidelityDecl, coords: list[str], time_name) -> tuple[list[ast.Name], set[str]]:
        """One level's expression: the names it may use; returns the levels and coordinates it uses."""
        lower: list[ast.Name] = []
        found: set[str] = set()
        allowed = ("const", "param", "space variable", "time variable", "fidelity level", "unknown")
        in_equations = {n.func.id for e in self.p.of_type(ast.EquationDecl) for side in (e.lhs, e.rhs)
                        for n in iter_expr(side) if isinstance(n, ast.Call)}
        unknowns = {u.name.id: u for u in self.p.of_type(ast.UnknownDecl)}

        def walk(node, inside_term=False):
            if isinstance(node, ast.Call):
                fname = node.func.id
                if fname == "simulate":
                    from msml_dsl.semantics.fidelity_files import check_model_level, model_option

                    kw = model_option(node)
                    if kw is not None:   # another .msml file solved as the level
                        found.update(check_model_level(self, node, kw, time_name, self._fidelity_space))
                        return
                    if time_name:
                        found.add(time_name)
                    self._check_simulate(node, time_name)
                    return
                if fname in FUNCTIONS:
                    arity = FUNCTIONS[fname][1]
                    if len(node.args) != arity or node.keywords:
                        self.bag.error("E231", f"{fname}() takes {arity} argument{'s' if arity != 1 else ''}, "
                                       f"but {len(node.args) + len(node.keywords)} were given", node.span)
                elif self.kind(fname) == "unknown":
                    u = unknowns.get(fname)
                    if u is not None and u.representation.func.id not in ("gp", "mlp"):
                        self.bag.error("E335", f"the unknown term '{fname}' is a {u.representation.func.id}(); a "
                                       "fidelity link takes gp() or mlp() terms", node.func.span,
                                       help=f"declare it as: unknown {fname}({', '.join(a.id for a in u.inputs)}) "
                                            ": gp(kernel=rbf)")
                    if fname in in_equations:
                        self.bag.error("E335", f"the unknown term '{fname}' is used both in an ODE equation and in a "
                                       "fidelity level", node.func.span, help="declare one term for each use")
                    inside_term = True
                else:
                    k = self.kind(fname)
                    if k is not None:
                        self.bag.error("E230", f"'{fname}' is a {k}, not a function", node.func.span)
                    else:
                        self.bag.error("E230", f"unknown function '{fname}'", node.func.span,
                                       help=did_you_mean(fname, list(FUNCTIONS) + self.names_of("unknown")
                                                         + ["simulate"]) or "functions: " + ", ".join(FUNCTIONS))
                for a in node.args:
                    walk(a, inside_term)
                return
            if isinstance(node, ast.Name):
                k = self.kind(node.id)
                if k is None and node.id in BUILTIN_CONSTANTS:
                    return
                if k is None:
                    self.unknown_name(node, [n for n in self.declared if self.kind(n) in allowed])
                elif k == "state":
                    self.bag.error("E334", f"a fidelity level cannot use the state '{node.id}' directly", node.span,
                                   help=f"simulate({node.id}, steps=20) solves the model's ODE and gives "
                                        f"{node.id} at each input")
                elif k not in allowed or k == "unknown":
                    self.bag.error("E334", f"a fidelity level cannot use the {k} '{node.id}'", node.span,
                                   help="a level is an expression of inputs, parameters, constants, lower levels "
                                        "and unknown terms")
                elif k == "fidelity level":
                    lower.append(node)
                elif k in ("space variable", "time variable"):
                    found.add(node.id)
                elif k == "param" and node.id in self.vector_sizes:
                    size = self.vector_sizes[node.id]
                    self.bag.error("E271", f"'{node.id}' is a vector of {size}; use one element, "
                                   f"{node.id}[1] to {node.id}[{size}]", node.span)
                elif k == "param" and inside_term:
                    self.bag.error("E335", f"an unknown term's input is a coordinate or a level, not the parameter "
                                   f"'{node.id}'", node.span)
                return
            if isinstance(node, ast.BinOp):
                walk(node.left, inside_term)
                walk(node.right, inside_term)
            elif isinstance(node, ast.UnaryOp):
                walk(node.operand, inside_term)
            elif isinstance(node, ast.Index):
                self.check_expression(node, allowed=("param",), context="a fidelity level")
            elif not isinstance(node, ast.Number):
                self.bag.error("E334", "a fidelity level is a numeric expression of inputs, parameters, constants, "
                               "lower levels and unknown terms", node.span)

        walk(d.value)
        return lower, found

    def check_trend_options(self) -> None:
        """``gp(trend=...)`` shapes a discrepancy in a fidelity link (E262 anywhere it would do nothing).

        A link's discrepancy (a term in a level that uses a lower level) gets a linear trend by
        default; elsewhere, in an ODE, an observation or a level of its own, the option would be
        silently ignored, so saying it is an error.
        """
        linked: set[str] = set()   # gp terms called in a level that uses a lower level
        for d in self.p.of_type(ast.FidelityDecl):
            names = [n for n in iter_expr(d.value) if isinstance(n, ast.Name)]
            if any(self.kind(n.id) == "fidelity level" for n in names):
                linked.update(c.func.id for c in iter_expr(d.value) if isinstance(c, ast.Call))
        in_levels = {c.func.id for d in self.p.of_type(ast.FidelityDecl) for c in iter_expr(d.value)
                     if isinstance(c, ast.Call)}
        for u in self.p.of_type(ast.UnknownDecl):
            name = u.name.id
            if u.representation.func.id != "gp":
                continue
            for kw in u.representation.keywords:
                if kw.name.id == "method" and name in in_levels:
                    self.bag.error("E262", f"'{name}' is used in a fidelity level, where a GP is always exact; "
                                   "method= chooses between exact and basis only in the dynamics, observations "
                                   "and derived quantities", kw.span, help="remove method=")
                if kw.name.id == "trend" and name not in linked:
                    self.bag.error("E262", f"trend= shapes the discrepancy of a fidelity link; '{name}' is not "
                                   "used in a level that links to a lower one, so it would have no effect",
                                   kw.span, help="remove trend=, or use the term in a link: "
                                                 f"fidelity high = rho * low + {name}(x)")

    def _check_simulate(self, call: ast.Call, time_name) -> None:
        """``simulate(OUTPUT, steps=20, method=rk4)``: the model's own ODE, solved on a coarse fixed grid."""
        if not self.p.of_type(ast.StateDecl) or time_name is None:
            self.bag.error("E336", "simulate() solves the model's ODE, but the model declares no "
                           + ("state" if time_name else "time variable"), call.span,
                           help="declare the ODE (time, state, equation, init) that the level simulates")
            return
        if len(call.args) != 1:
            self.bag.error("E336", "simulate() takes one output, an expression of the states: simulate(C, steps=20)",
                           call.span)
        else:
            self.check_expression(call.args[0], allowed=("const", "param", "state", "time variable"),
                                  context="the output of simulate()")
        opts = self._options(ast.Method(call.func, (), call.keywords, call.span), SIMULATE_OPTIONS, "simulate()")
        check_simulate_tolerances(self, call, opts)

    def _order_levels(self, levels: dict[str, ast.FidelityDecl], uses: dict[str, list[ast.Name]]) -> list[str]:
        """Levels lowest first; a cycle among links is E331."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, chain: list[str]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                cycle = chain[chain.index(name):] + [name]
                if len(cycle) == 2:
                    self.bag.error("E331", f"the fidelity level '{name}' is defined through itself",
                                   levels[name].name.span, help="a level links to lower levels only")
                else:
                    self.bag.error("E331", "fidelity levels depend on each other in a cycle: " + " -> ".join(cycle),
                                   levels[name].name.span, help="links go from lower to higher levels; remove one "
                                                                "of them")
                state[name] = "done"
                return
            state[name] = "visiting"
            for n in uses[name]:
                if n.id in levels:
                    visit(n.id, chain + [name])
            if state.get(name) != "done":
                order.append(name)
            state[name] = "done"

        for name in levels:
            visit(name, [])
        return order

    def _check_level_observation(self, o: ast.ObserveDecl, tag: str | None, levels) -> None:
        """In a fidelity model an observation is ``Normal(LEVEL, scale)`` of its source's level."""
        if tag is None or tag not in levels:
            return
        d = o.distribution
        if d.func.id != "Normal" or len(d.args) != 2:
            if d.func.id in DISTRIBUTIONS:
                self.bag.error("E332", f"a level is observed with Normal noise, not {d.func.id}", d.func.span,
                               help=f"write: observe {o.target.source.id}.{o.target.column.id} ~ Normal({tag}, sigma)")
            return
        loc, scale = d.args
        if not (isinstance(loc, ast.Name) and self.kind(loc.id) == "fidelity level"):
            self.bag.error("E332", f"the mean of this observation is the level of '{o.target.source.id}' itself",
                           loc.span, help=f"write: Normal({tag}, sigma); the link between levels belongs in the "
                                          "'fidelity' statements")
        elif loc.id != tag:
            self.bag.error("E332", f"this observes the level '{loc.id}', but the data source "
                           f"'{o.target.source.id}' is tagged with the level '{tag}'", loc.span,
                           help=f"observe Normal({tag}, ...) here, or tag the source 'fidelity {loc.id}'")
        for node in iter_expr(scale):
            if isinstance(node, ast.Name) and self.kind(node.id) not in (None, "const", "param"):
                self.bag.error("E333", f"the noise scale of a level is a constant or parameter expression; it "
                               f"cannot use the {self.kind(node.id)} '{node.id}'", node.span)

    def _fidelity_solver(self):
        """``solver gp(scheme=auto|joint|recursive, samples=500, jitter=1e-8, max_exact=3000)``."""
        decls = self.p.of_type(ast.SolverDecl)
        if not decls:
            return (), None
        m = decls[0].method
        if m.name.id != "gp":
            self.bag.error("E260", f"a model with fidelity levels is fitted by Gaussian processes, not by the "
                           f"solver '{m.name.id}'", m.name.span,
                           help="write solver gp(scheme=auto) or leave the solver out; simulate(...) takes its own "
                                "steps and method")
            return (), None
        return tuple(sorted(self._options(m, FIDELITY_SOLVER_OPTIONS, "solver").items())), m.span

    # ------------------------------------------------------- later statements
    def check_later_statements(self, space, time_name):
        out = []
        coords = list(space) + ([time_name] if time_name else [])
        ranges = dict(space)
        for s in self.p.statements:
            kind = _LATER.get(type(s))
            if kind is not None:
                out.append((kind, s.span))
            elif not isinstance(s, _PDE_STATEMENTS):
                continue
            if isinstance(s, (ast.FieldDecl, ast.UnknownDecl)):
                self._check_representation(s)
            if isinstance(s, (ast.FieldDecl, ast.UnknownDecl)):
                args = s.arguments if isinstance(s, ast.FieldDecl) else s.inputs
                if isinstance(s, ast.FieldDecl) and not self.p.of_type(ast.SpaceDecl):
                    self.bag.error("E280", f"the field '{s.name.id}' needs space variables, but the model has "
                                   "no 'space' statement", s.name.span, help="declare one: space x in [0, 1]")
                for a in args:
                    if isinstance(s, ast.FieldDecl) and space and a.id not in coords:
                        self.bag.error("E281", f"'{a.id}' is not a space or time variable", a.span,
                                       help=did_you_mean(a.id, coords))
                    elif isinstance(s, ast.UnknownDecl) and self.kind(a.id) is None:
                        self.unknown_name(a, self.names_of("state", "space variable", "time variable", "field",
                                                           "param", "const"))
            elif isinstance(s, (ast.BoundaryDecl, ast.InitialDecl)):
                self._check_condition(s, space, time_name, ranges)
        for e in self.p.of_type(ast.EquationDecl):
            if _mentions_field(e, self.names_of("field")):
                self._check_pde_equation(e)
        return tuple(out)

    def _check_representation(self, s) -> None:
        what = "field" if isinstance(s, ast.FieldDecl) else "unknown"
        rep = s.representation
        allowed = REPRESENTATIONS[what]
        if rep.func.id not in allowed:
            self.bag.error("E285", f"unknown representation '{rep.func.id}' for {'a' if what == 'field' else 'an'} "
                           f"{what}", rep.func.span,
                           help=did_you_mean(rep.func.id, allowed) or "use one of: " + ", ".join(allowed))
            return
        act = rep.keyword("activation")
        if act is not None:
            word = act.value.id if isinstance(act.value, ast.Name) else None
            if word not in ACTIVATIONS:
                self.bag.error("E286", f"unknown activation '{word or '?'}'", act.value.span,
                               help=did_you_mean(word or "", ACTIVATIONS) or "activations: " + ", ".join(ACTIVATIONS))
        kernel = rep.keyword("kernel")
        if rep.func.id == "gp" and kernel is not None:
            word = kernel.value.id if isinstance(kernel.value, ast.Name) else None
            if word not in KERNELS:
                self.bag.error("E286", f"unknown kernel '{word or '?'}'", kernel.value.span,
                               help=did_you_mean(word or "", KERNELS) or "kernels: " + ", ".join(KERNELS))

    def _check_pde_equation(self, e: ast.EquationDecl) -> None:
        fields = {f.name.id: [a.id for a in f.arguments] for f in self.p.of_type(ast.FieldDecl)}
        allowed = ("const", "param", "field", "space variable", "time variable", "unknown", "state")
        skip: set[int] = set()
        for side in (e.lhs, e.rhs):
            for node in iter_expr(side):
                if isinstance(node, ast.Call) and node.func.id in ("der", "laplacian"):
                    if not node.args or not isinstance(node.args[0], ast.Name) or node.args[0].id not in fields:
                        self.bag.error("E288", f"{node.func.id}() takes a field first, e.g. {node.func.id}(u, x)",
                                       node.span)
                        continue
                    variables = fields[node.args[0].id]
                    skip.add(id(node.args[0]))
                    for a in node.args[1:]:
                        skip.add(id(a))
                        if not isinstance(a, ast.Name) or a.id not in variables:
                            self.bag.error("E288", f"der({node.args[0].id}, {_text(a)}): '{_text(a)}' is not a "
                                           f"variable of the field {node.args[0].id}({', '.join(variables)})", a.span,
                                           help=did_you_mean(_text(a), variables))
                    if node.func.id == "der" and len(node.args) < 2:
                        self.bag.error("E288", "a partial derivative names its variables: der(u, x)", node.span)
                elif isinstance(node, ast.Call) and node.func.id in fields:
                    if len(node.args) != len(fields[node.func.id]):
                        self.bag.error("E283", f"the field '{node.func.id}' takes {len(fields[node.func.id])} "
                                       f"arguments, but {len(node.args)} were given", node.span)
                elif isinstance(node, ast.Name) and id(node) not in skip:
                    k = self.kind(node.id)
                    if k is None and node.id not in BUILTIN_CONSTANTS:
                        self.unknown_name(node, [n for n in self.declared if self.kind(n) in allowed])
                    elif k is not None and k not in allowed:
                        self.bag.error("E219", f"a PDE cannot use the {k} '{node.id}'", node.span)

    def _check_condition(self, s, space, time_name, ranges):
        initial = isinstance(s, ast.InitialDecl)
        what = "initial" if initial else "boundary"
        lhs = s.lhs
        fields = {f.name.id: f for f in self.p.of_type(ast.FieldDecl)}
        if isinstance(lhs, ast.Evaluated):
            target = lhs.target
            if not (target.func.id == "der" and target.args and isinstance(target.args[0], ast.Name)
                    and target.args[0].id in fields):
                self.bag.error("E282", "a value at a point is a field's derivative there, e.g. der(u, x)(0, t)",
                               target.span)
                return
            field_decl, point = fields[target.args[0].id], lhs.args
            variables = [a.id for a in field_decl.arguments]
            for a in target.args[1:]:
                if not isinstance(a, ast.Name) or a.id not in variables:
                    self.bag.error("E288", f"der({field_decl.name.id}, {_text(a)}): '{_text(a)}' is not a "
                                   f"variable of the field {field_decl.name.id}({', '.join(variables)})", a.span,
                                   help=did_you_mean(_text(a), variables))
                    return
            if len(target.args) < 2:
                self.bag.error("E288", "a partial derivative names its variables: der(u, x)", target.span)
                return
        elif isinstance(lhs, ast.Call) and lhs.func.id in fields:
            field_decl, point = fields[lhs.func.id], lhs.args
        else:
            self.bag.error("E282", f"a{'n' if initial else ''} {what} condition sets a field at some coordinates, "
                           "e.g. u(0, t) = 0 or der(u, x)(0, t) = 0", lhs.span)
            return
        if len(point) != len(field_decl.arguments):
            self.bag.error("E283", f"the field '{field_decl.name.id}' takes {len(field_decl.arguments)} arguments "
                           f"({', '.join(a.id for a in field_decl.arguments)}), but {len(point)} were given",
                           lhs.span)
            return
        self._check_condition_side(s.rhs, fields, space, time_name)
        for param, arg in zip(field_decl.arguments, point):
            if isinstance(arg, ast.Name) and arg.id != param.id and self.kind(arg.id) in ("space variable",
                                                                                          "time variable"):
                self.bag.error("E284", f"the field {field_decl.name.id}({', '.join(a.id for a in field_decl.arguments)})"
                               f" takes '{param.id}' here, not '{arg.id}'", arg.span)
                return
        fixed = [(param.id, arg) for param, arg in zip(field_decl.arguments, point)
                 if not (isinstance(arg, ast.Name) and arg.id == param.id)]
        if initial:
            at = [(name, arg) for name, arg in fixed if name == time_name]
            if not at:
                self.bag.error("E284", "an initial condition fixes the time argument, e.g. u(x, 0)", lhs.span)
            elif self.time_range is not None:
                v = self.constant_value(at[0][1], "the initial time")
                if v is not None and not math.isclose(v, self.time_range[0], abs_tol=1e-12):
                    self.bag.error("E284", f"this initial condition sits at {time_name} = {_fmt(v)}, but the time "
                                   f"range starts at {_fmt(self.time_range[0])}", at[0][1].span,
                                   help=f"use {time_name} = {_fmt(self.time_range[0])}")
            return
        for name, arg in fixed:
            v = self.constant_value(arg, f"the coordinate '{name}'")
            if v is None or name not in ranges:
                continue
            lo, hi = ranges[name]
            if not (math.isclose(v, lo, abs_tol=1e-12) or math.isclose(v, hi, abs_tol=1e-12)):
                self.bag.error("E284", f"this boundary condition sits at {name} = {_fmt(v)}, which is not an edge "
                               f"of the domain {name} in [{_fmt(lo)}, {_fmt(hi)}]", arg.span,
                               help=f"use {name} = {_fmt(lo)} or {name} = {_fmt(hi)}")
        if ranges and not any(name in ranges for name, _ in fixed):
            self.bag.error("E284", "a boundary condition fixes one space coordinate at an edge, e.g. u(0, t)",
                           lhs.span)

    def _check_condition_side(self, expr: ast.Expr, fields: dict, space, time_name) -> None:
        """The right side of a condition: constants, parameters, coordinates and fields at points."""
        allowed = ("const", "param", "space variable", "time variable", "field")
        skip: set[int] = set()
        for node in iter_expr(expr):
            if isinstance(node, ast.Evaluated):
                skip.update(id(a) for a in node.target.args)
                skip.add(id(node.target))
                first = node.target.args[0] if node.target.args else None
                name = first.id if isinstance(first, ast.Name) else None
                if node.target.func.id != "der" or name not in fields:
                    self.bag.error("E282", "a value at a point is a field's derivative there, e.g. der(u, x)(0, t)",
                                   node.target.span)
                elif len(node.args) != len(fields[name].arguments):
                    self.bag.error("E283", "a derivative at a point gives one coordinate per field argument",
                                   node.span)
            elif isinstance(node, ast.Call) and id(node) not in skip:
                if node.func.id in fields:
                    n = len(fields[node.func.id].arguments)
                    if len(node.args) != n:
                        self.bag.error("E283", f"the field '{node.func.id}' takes {n} arguments, but "
                                       f"{len(node.args)} were given", node.span)
                elif node.func.id == "der":
                    self.bag.error("E282", "a derivative in a condition is taken at a point, e.g. der(u, x)(0, t)",
                                   node.span)
                elif node.func.id not in FUNCTIONS:
                    self.bag.error("E230", f"unknown function '{node.func.id}'", node.func.span,
                                   help=did_you_mean(node.func.id, list(FUNCTIONS)))
            elif isinstance(node, ast.Name) and id(node) not in skip:
                k = self.kind(node.id)
                if k is None and node.id not in BUILTIN_CONSTANTS:
                    self.unknown_name(node, [n for n in self.declared if self.kind(n) in allowed])
                elif k is not None and k not in allowed:
                    self.bag.error("E219", f"a condition cannot use the {k} '{node.id}'", node.span)
            elif isinstance(node, (ast.Attribute, ast.String, ast.ListExpr)):
                self.bag.error("E219", "a condition is a numeric expression", node.span)


# --------------------------------------------------------------------- utils
def _expressions_of(s) -> list:
    """The expressions a statement evaluates (where unknown terms can be called)."""
    if isinstance(s, ast.EquationDecl):
        return [s.lhs, s.rhs]
    if isinstance(s, (ast.InitDecl, ast.DeriveDecl, ast.FidelityDecl)):
        return [s.value]
    if isinstance(s, ast.ObserveDecl):
        return list(s.distribution.args)
    if isinstance(s, (ast.BoundaryDecl, ast.InitialDecl)):
        return [s.lhs, s.rhs]
    return []



def _names(expr: ast.Expr) -> set[str]:
    return {n.id for n in iter_expr(expr) if isinstance(n, ast.Name)}


def _mentions_field(e: ast.EquationDecl, fields: list[str]) -> bool:
    nodes = list(iter_expr(e.lhs)) + list(iter_expr(e.rhs))
    return any((isinstance(n, ast.Name) and n.id in fields) or
               (isinstance(n, ast.Call) and n.func.id == "laplacian") for n in nodes)


def _fmt(v: float) -> str:
    if v is None:
        return "?"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def _interval(lo: float, hi: float) -> str:
    left = "(-inf" if lo == -math.inf else f"[{_fmt(lo)}"
    right = "inf)" if hi == math.inf else f"{_fmt(hi)}]"
    return f"{left}, {right}"


def _join(a: Span, b: Span) -> Span:
    return Span(a.line, a.column, b.end_line, b.end_column)


def _kw_span(m: ast.Method, key: str) -> Span:
    return next((k.span for k in m.keywords if k.name.id == key), m.span)


def _text(e: ast.Expr) -> str:
    return e.id if isinstance(e, ast.Name) else "?"


def _allowed_help(allowed: tuple[str, ...]) -> str:
    plural = {"derived quantity": "derived quantities", "unknown": "unknown terms"}
    return "here you may use: " + ", ".join(plural.get(a, a + "s") for a in allowed)
