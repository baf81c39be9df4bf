"""The checked model: names resolved, constants evaluated, settings validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from msml_dsl.errors import Diagnostic, Span
from msml_dsl.syntax import ast


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    size: int | None               # None: scalar
    distribution: str
    args: tuple[ast.Expr, ...]
    lower: float | None
    upper: float | None
    span: Span
    depends_on: tuple[str, ...]    # other parameters in the prior's arguments
    per: str | None = None         # the experiment it is copied per (``param x0 ~ ... per run``)


@dataclass(frozen=True)
class DataSourceInfo:
    name: str
    path: Path
    path_span: Span
    bindings: tuple[tuple[str, ast.Expr], ...]   # model variable -> column expression
    fidelity: str | None
    span: Span


@dataclass(frozen=True)
class ObservationInfo:
    source: str
    column: str
    column_span: Span
    distribution: str
    args: tuple[ast.Expr, ...]
    span: Span
    label: str | None = None       # an experiment's copy: ``runs.x[run=2]`` (its source is that experiment's rows)

    @property
    def name(self) -> str:
        return self.label or f"{self.source}.{self.column}"


@dataclass(frozen=True)
class ExperimentInfo:
    """``experiment run = runs.run``: the model is solved once per distinct value of that column.

    ``labels`` and ``copies`` are filled when the data split the model (``data/experiments.py``):
    each experiment's label as it appears in names (``1``, ``patient_A``), and each declared name
    with per-experiment copies (states, ``per`` parameters, derived quantities that use them or a
    covariate) -> its copies' names, in label order. ``check_file`` fills ``labels`` alone.
    """

    name: str
    source: str
    column: str
    column_span: Span
    span: Span
    labels: tuple[str, ...] = ()
    copies: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def copy_name(self, name: str, label: str) -> str:
        """The name of ``name``'s copy in one experiment: ``x0[run=3]``."""
        return f"{name}[{self.name}={label}]"


@dataclass(frozen=True)
class SolverSettings:
    method: str = "rk45"
    rtol: float = 1e-6
    atol: float = 1e-8
    max_steps: int = 100_000


@dataclass(frozen=True)
class InferenceSettings:
    method: str = "nuts"
    options: tuple[tuple[str, object], ...] = ()

    def get(self, key: str, default=None):
        return dict(self.options).get(key, default)


@dataclass(frozen=True)
class FieldInfo:
    name: str
    arguments: tuple[str, ...]
    representation: str                       # mlp
    options: tuple[tuple[str, object], ...]   # hidden, activation, fourier_features, fourier_scale
    span: Span


@dataclass(frozen=True)
class UnknownInfo:
    """``unknown f(H, L) : library(...) | gp(...) | mlp(...)``, with its options checked."""

    name: str
    inputs: tuple[str, ...]
    representation: str                       # library | gp | mlp
    options: tuple[tuple[str, object], ...]   # keyword options (numbers, words, lists)
    terms: tuple[ast.Expr, ...]               # library: the candidate groups and custom terms, as written
    priors: tuple[tuple[str, ast.Call], ...]  # prior options given as distributions (mlp prior, gp hyperpriors)
    sparsity: ast.Call | None                 # library: horseshoe(...) | laplace(...) | spike_slab(...) | normal(...)
    span: Span
    option_spans: tuple[tuple[str, Span], ...] = ()   # where each keyword option is written

    def option_span(self, key: str) -> Span:
        """Where ``key=...`` is written (the declaration when it is not)."""
        return next((s for k, s in self.option_spans if k == key), self.span)


@dataclass(frozen=True)
class PhysicsInfo:
    """``physics NAME ~ Normal(0, scale)``: the scale of a residual term."""

    name: str
    scale: ast.Expr
    span: Span


@dataclass(frozen=True)
class PdeInfo:
    """The PDE part of a model: fields, their equations and conditions, and how they are solved."""

    fields: tuple[FieldInfo, ...]
    equations: tuple[ast.EquationDecl, ...]
    conditions: tuple[ast.BoundaryDecl | ast.InitialDecl, ...]
    collocation: tuple[tuple[str, object], ...]   # count, method and options
    physics: tuple[PhysicsInfo, ...]
    solver: str                                   # pinn | mol
    solver_options: tuple[tuple[str, object], ...]
    solver_span: Span | None


@dataclass(frozen=True)
class FidelityLevelInfo:
    """``fidelity NAME = expression``: one level, the levels it uses and the data tagged with it."""

    name: str
    expression: ast.Expr
    lower: tuple[str, ...]          # levels its expression uses directly
    inputs: tuple[str, ...]         # coordinates it depends on, through lower levels too (model order)
    sources: tuple[str, ...]        # data sources tagged with this level
    span: Span


@dataclass(frozen=True)
class FidelityInfo:
    """The fidelity part of a model: levels in dependency order (lowest first) and the GP settings."""

    levels: tuple[FidelityLevelInfo, ...]
    inputs: tuple[str, ...]                          # every coordinate a level uses (model order)
    solver: tuple[tuple[str, object], ...] = ()      # ``solver gp(...)`` options
    solver_span: Span | None = None

    def level(self, name: str) -> FidelityLevelInfo:
        return next(lv for lv in self.levels if lv.name == name)


@dataclass(frozen=True)
class CheckedModel:
    """The output of the ``check`` stage."""

    program: ast.Program
    name: str
    title: str | None
    base_dir: Path
    constants: dict[str, float]
    time: str | None
    time_range: tuple[float, float] | None
    space: dict[str, tuple[float, float]]
    states: tuple[str, ...]
    parameters: tuple[ParameterInfo, ...]       # in dependency order
    equations: dict[str, ast.Expr]              # state -> right-hand side
    inits: dict[str, ast.Expr]
    data_sources: tuple[DataSourceInfo, ...]
    observations: tuple[ObservationInfo, ...]
    derived: tuple[tuple[str, ast.Expr], ...]
    solver: SolverSettings
    inference: InferenceSettings
    unsupported: tuple[tuple[str, Span], ...]   # statements with no backend yet
    unsupported_names: tuple[tuple[str, str], ...] = ()   # (name, kind) declared by those statements
    pde: PdeInfo | None = None
    unknowns: tuple[UnknownInfo, ...] = ()
    warnings: tuple[Diagnostic, ...] = field(default=())
    fidelity: FidelityInfo | None = None        # a multi-fidelity model (levels and tagged data)
    experiment: ExperimentInfo | None = None    # ``experiment run = runs.run`` (split by data/experiments.py)

    @property
    def file(self) -> str:
        return self.program.file

    def parameter(self, name: str) -> ParameterInfo:
        return next(p for p in self.parameters if p.name == name)
