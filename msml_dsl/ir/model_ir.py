"""The backend-neutral IR, grouped by inference role (the ``lower`` stage).

Backends see only this: latent parameters with priors and supports, the ODE
problem, observations with their data already bound, derived quantities and
inference settings.  ``ModelIR.to_json()`` is what ``msml compile --emit ir``
prints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import sympy

from msml_dsl.data.csv_source import DataTable
from msml_dsl.errors import Diagnostic, MsmlError, UnsupportedFeature
from msml_dsl.ir.pde import PdeProblem, lower_pde
from msml_dsl.semantics.distributions import DISTRIBUTIONS
from msml_dsl.semantics.model import InferenceSettings, SolverSettings
from msml_dsl.symbolic.builder import SymbolicModel

_LATER_BACKENDS = {
    "unknown": "unknown functional terms (networks, Gaussian processes, sparse libraries)",
}


@dataclass(frozen=True)
class LatentParameter:
    name: str
    shape: tuple[int, ...]                 # () for a scalar
    distribution: str
    args: tuple[sympy.Expr, ...]           # in terms of constants and earlier parameters
    lower: float | None                    # the declared bounds (a truncated prior when either is set)
    upper: float | None
    elements: tuple[sympy.Symbol, ...]     # one symbol per element (a scalar has one)
    support: tuple[float, float] | None    # bounds intersected with the prior's support; None if it moves

    @property
    def truncated(self) -> bool:
        return self.lower is not None or self.upper is not None


@dataclass(frozen=True)
class OdeProblem:
    time: sympy.Symbol
    t0: float
    states: tuple[sympy.Symbol, ...]
    rhs: tuple[sympy.Expr, ...]            # constants substituted
    parameters: tuple[sympy.Symbol, ...]   # parameter elements the right-hand side uses
    inits: tuple[sympy.Expr, ...]          # constants substituted
    output_times: np.ndarray               # sorted union of all observation times
    solver: SolverSettings


@dataclass(frozen=True)
class Observation:
    name: str                              # "source.column"
    distribution: str
    args: tuple[sympy.Expr, ...]           # constants substituted
    values: np.ndarray                     # masked cells hold a harmless placeholder
    mask: np.ndarray                       # True where observed
    time_index: np.ndarray | None          # row -> index into OdeProblem.output_times
    times: np.ndarray | None
    covariates: dict[str, np.ndarray]      # "source.column" -> per-row values
    file_lines: np.ndarray
    # PDE models: coordinate name ("x", "t") -> per-row values; fields in `args` are u(x, t) there
    coordinates: dict[str, np.ndarray] = field(default_factory=dict)
    # Method of lines: a field at a row is a linear combination of grid states,
    # symbol -> (state columns (rows, K), weights (rows, K)) read at the row's time_index
    state_maps: dict = field(default_factory=dict)
    # exact GP terms called in the formulas (ir/exact_gp.py): symbol -> (term name, row -> point index)
    gathers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelIR:
    name: str
    title: str | None
    file: str
    parameters: tuple[LatentParameter, ...]
    ode: OdeProblem | None
    observations: tuple[Observation, ...]
    derived: tuple[tuple[str, sympy.Expr], ...]
    inference: InferenceSettings
    constants: dict[str, float]
    warnings: tuple[Diagnostic, ...] = ()
    pde: PdeProblem | None = None
    unknowns: tuple = ()                   # ExpandedTerm per unknown term (symbolic/unknown_terms.py)
    fidelity: object = None                # FidelityProblem (ir/fidelity.py) of a multi-fidelity model

    def to_json(self) -> str:
        """A readable, serialisable view of the IR."""
        def expr(e):
            return sympy.sstr(e)

        def prior(p):
            gp = next((t.exact for t in self.unknowns if t.exact is not None and t.exact.z == p.name), None)
            if gp is not None and gp.centred:   # the values of an exact GP at its points
                return (f"MultivariateNormal(0, {gp.amplitude}^2 {gp.kernel}({gp.lengthscale})) at "
                        f"{len(gp.points)} points")
            return f"{p.distribution}(" + ", ".join(expr(a) for a in p.args) + ")"

        data = {
            "model": self.name, "title": self.title, "file": self.file, "constants": self.constants,
            "parameters": [{"name": p.name, "shape": list(p.shape), "prior": prior(p), "lower": p.lower,
                            "upper": p.upper} for p in self.parameters],
            "ode": None if self.ode is None else {
                "time": str(self.ode.time), "t0": self.ode.t0,
                "states": [str(s) for s in self.ode.states],
                "rhs": {str(s): expr(r) for s, r in zip(self.ode.states, self.ode.rhs)},
                "inits": {str(s): expr(i) for s, i in zip(self.ode.states, self.ode.inits)},
                "parameters": [str(p) for p in self.ode.parameters],
                "output_times": self.ode.output_times.tolist(),
                "solver": vars(self.ode.solver) if hasattr(self.ode.solver, "__dict__") else
                {"method": self.ode.solver.method, "rtol": self.ode.solver.rtol, "atol": self.ode.solver.atol,
                 "max_steps": self.ode.solver.max_steps},
            },
            "observations": [{"name": o.name, "distribution": f"{o.distribution}("
                              + ", ".join(expr(a) for a in o.args) + ")", "rows": int(o.values.size),
                              "observed": int(o.mask.sum())} for o in self.observations],
            "derived": {n: expr(e) for n, e in self.derived},
            "inference": {"method": self.inference.method, **dict(self.inference.options)},
        }
        if self.pde is not None:
            pde = self.pde
            data["pde"] = {
                "space": {str(a.symbol): [a.lower, a.upper] for a in pde.space},
                "time": None if pde.time is None else {str(pde.time): list(pde.time_range)},
                "fields": [{"name": f.name, "arguments": [str(a) for a in f.arguments], "hidden": list(f.hidden),
                            "activation": f.activation, "fourier_features": f.fourier_features}
                           for f in pde.fields],
                "equations": {e.name: expr(e.expr) + " = 0" for e in pde.equations},
                "conditions": [{"kind": c.kind, "field": c.field, "residual": expr(c.expr),
                                "at": {str(k): v for k, v in c.at}, **({"partner": {str(k): v for k, v in c.partner}}
                                                                       if c.partner else {})}
                               for c in pde.conditions],
                "collocation": vars(pde.collocation),
                "physics": {t.name: {"scale": expr(t.scale), "declared": t.declared} for t in pde.physics},
                "solver": {"method": pde.solver.method, **dict(pde.solver.options)},
            }
        if self.fidelity is not None:
            data["fidelity"] = self.fidelity.to_dict()
        return json.dumps(data, indent=2, default=_json_default)


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(type(o).__name__)


@dataclass(frozen=True)
class _Bounds:
    distribution: str
    lower: float | None
    upper: float | None


def _support(p, args) -> tuple[float, float] | None:
    """Declared bounds intersected with the distribution's support (None when that depends on parameters)."""
    spec = DISTRIBUTIONS[p.distribution]
    if p.distribution == "Uniform":
        if any(a.free_symbols for a in args):
            return None
        lo, hi = (float(a) for a in args)
    else:
        lo, hi = spec.support
    if p.lower is not None:
        lo = max(lo, p.lower)
    if p.upper is not None:
        hi = min(hi, p.upper)
    return (lo, hi)


def lower_to_ir(symbolic: SymbolicModel, tables: dict[str, DataTable]) -> ModelIR:
    """Group a symbolic model and its bound data by inference role.

    Raises UnsupportedFeature for statements whose backend does not exist yet.
    """
    model = symbolic.checked
    if model.unsupported:
        diags = [Diagnostic("E401", f"'{kind}' statements are not supported yet: the backend for "
                            f"{_LATER_BACKENDS[kind]} has not been built", span, model.file,
                            help="this statement parses and checks, but msml cannot compile it to a Pyro "
                                 "program yet; remove it to fit the rest of the model")
                 for kind, span in model.unsupported]
        raise UnsupportedFeature(diags, {model.file: model.program.source})

    params = []
    for p in model.parameters:
        elements = symbolic.parameter_elements.get(p.name) or (symbolic.symbols[p.name],)
        args = tuple(symbolic.numeric(a) for a in symbolic.prior_args[p.name])
        params.append(LatentParameter(p.name, () if p.size is None else (p.size,), p.distribution, args,
                                      p.lower, p.upper, tuple(elements), _support(p, args)))

    if model.fidelity is not None:  # levels, links and tagged data: the multi-fidelity backend
        from msml_dsl.ir.fidelity import lower_fidelity

        problem, params = lower_fidelity(symbolic, tables, params)
        return ModelIR(model.name, model.title, model.file, tuple(params), None, (), (), model.inference,
                       dict(model.constants), model.warnings, fidelity=problem)

    # each observation's times, and its formulas with the time read per row
    time_values = {}
    if symbolic.states:
        for obs in model.observations:
            t = tables[obs.source].coordinates.get(model.time)
            if t is not None:
                time_values[obs.name] = t
    observation_args, time_columns = {}, {}
    for obs in model.observations:
        args = tuple(symbolic.numeric(a) for a in symbolic.observation_args[obs.name])
        if symbolic.time is not None and obs.name in time_values and any(symbolic.time in a.free_symbols for a in args):
            # the time in an observation formula (a drift, a time-varying offset) is each row's own time
            time_column = sympy.Symbol(f"{obs.source}.{model.time}", real=True)
            args = tuple(a.xreplace({symbolic.time: time_column}) for a in args)
            time_columns[obs.name] = {time_column.name: np.asarray(time_values[obs.name], dtype=float)}
        observation_args[obs.name] = args

    terms: dict = {}
    exact_plan = None
    if model.unknowns:
        from msml_dsl.ir.exact_gp import ObservationCalls, plan_exact_gps
        from msml_dsl.symbolic.unknown_terms import expand_unknowns, substitute_unknowns

        terms = expand_unknowns(symbolic, tables)
        def read_columns(obs):
            """The data columns an observation's formula reads (by their symbols' names), and the time."""
            table = tables[obs.source]
            names = {s.name for a in observation_args[obs.name] for s in a.free_symbols if "." in s.name}
            read = {n: np.asarray(table.columns[n.rsplit(".", 1)[1]], dtype=float) for n in names
                    if n.rsplit(".", 1)[1] in table.columns and n not in time_columns.get(obs.name, {})}
            return {**read, **time_columns.get(obs.name, {})}

        calls = {obs.name: ObservationCalls(obs.name, observation_args[obs.name], read_columns(obs),
                                            len(tables[obs.source].columns[obs.column]))
                 for obs in model.observations}
        exact_plan = plan_exact_gps(symbolic, terms, [symbolic.numeric(e) for e in symbolic.rhs + symbolic.inits]
                                    + [symbolic.numeric(e) for _, e in symbolic.derived], list(calls.values()))
        if exact_plan.errors:
            raise MsmlError(list(exact_plan.errors), {model.file: model.program.source})
        terms = exact_plan.terms
        for t in terms.values():
            for tp in t.parameters:
                args = tuple(symbolic.numeric(a) for a in tp.args)
                spec = _Bounds(tp.distribution, None, None)
                params.append(LatentParameter(tp.name, tp.shape, tp.distribution, args, None, None, tp.elements,
                                              _support(spec, args)))

    def expand(e):
        if exact_plan is not None:
            e = exact_plan.replace_fixed(e)
        return substitute_unknowns(e, terms) if terms else e

    pde = None
    if model.pde is not None:
        pde, problems = lower_pde(symbolic, lambda e: expand(symbolic.numeric(e)), [e for p in params for e in p.elements])
        if problems:
            raise MsmlError(problems, {model.file: model.program.source})

    ode = None
    if symbolic.states:
        all_times = [np.array([model.time_range[0]])] + list(time_values.values())
        output_times = np.unique(np.concatenate(all_times))
        rhs = tuple(expand(symbolic.numeric(r)) for r in symbolic.rhs)
        inits = tuple(expand(symbolic.numeric(i)) for i in symbolic.inits)
        element_symbols = [e for p in params for e in p.elements]
        # an exact GP's values at numeric inputs enter the dynamics as parameters (a rate per dose)
        element_symbols += [v for t in terms.values() if t.exact is not None for v in t.exact.value_symbols]
        used = set().union(*(r.free_symbols for r in rhs)) if rhs else set()
        ode_params = tuple(e for e in element_symbols if e in used)
        ode = OdeProblem(symbolic.time, float(model.time_range[0]), symbolic.states, rhs, ode_params, inits,
                         output_times, model.solver)

    observations = []
    for obs in model.observations:
        table = tables[obs.source]
        raw = table.columns[obs.column]
        args, gathers = observation_args[obs.name], {}
        if exact_plan is not None:
            args, gathers = exact_plan.replace_observation(calls[obs.name])
        args = tuple(expand(a) for a in args)
        covariates = dict(time_columns.get(obs.name, {}))
        mask = np.isfinite(raw)
        for term_name, rows in list(gathers.values()):   # a row whose exact GP input is missing is not observed
            mask &= rows >= 0
        gathers = {sym: (term_name, np.maximum(rows, 0)) for sym, (term_name, rows) in gathers.items()}
        for a in args:
            for s in a.free_symbols:
                if "." in s.name and s.name not in covariates:
                    col = table.columns[s.name.rsplit(".", 1)[1]]
                    covariates[s.name] = col
                    mask &= np.isfinite(col)
        placeholder = float(np.nanmedian(raw[np.isfinite(raw)])) if np.isfinite(raw).any() else 1.0
        values = np.where(mask, raw, placeholder)
        covariates = {k: np.where(mask, v, np.nanmedian(v) if np.isfinite(v).any() else 0.0)
                      for k, v in covariates.items()}
        times = time_values.get(obs.name)
        index = np.searchsorted(ode.output_times, times) if (ode is not None and times is not None) else None
        coordinates = {}
        if pde is not None:
            for axis in [str(a.symbol) for a in pde.space] + ([str(pde.time)] if pde.time is not None else []):
                col = table.coordinates.get(axis)
                if col is not None:
                    coordinates[axis] = np.asarray(col, dtype=float)
        observations.append(Observation(obs.name, obs.distribution, args, values, mask, index, times, covariates,
                                        table.file_lines, coordinates, gathers=gathers))

    derived = tuple((n, expand(symbolic.numeric(e))) for n, e in symbolic.derived)
    # a library's coefficients on the original scale are reported like derived quantities
    derived += tuple((f"{t.name}[{c.label}]", c.coefficient) for t in terms.values() for c in t.candidates)
    ir = ModelIR(model.name, model.title, model.file, tuple(params), ode, tuple(observations), derived,
                 model.inference, dict(model.constants), model.warnings, pde, tuple(terms.values()))
    if pde is not None and pde.solver.method == "mol":
        from msml_dsl.errors import Span
        from msml_dsl.ir.method_of_lines import discretize

        try:
            ir = discretize(ir)
        except MsmlError as exc:
            lines = model.program.source.splitlines()
            diags = [Diagnostic(d.code, d.message, None if d.span is None else
                                Span(d.span.line, 1, d.span.line, len(lines[d.span.line - 1]) + 1), d.file,
                                help=d.help) for d in exc.diagnostics]
            raise MsmlError(diags, {model.file: model.program.source}) from None
    return ir
