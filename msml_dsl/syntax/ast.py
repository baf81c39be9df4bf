"""The msml abstract syntax tree: frozen dataclasses, each with its source span."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from msml_dsl.errors import Span


# ------------------------------------------------------------------ expressions
@dataclass(frozen=True)
class Number:
    value: float
    text: str
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class Index:
    """``k[2]``: an element of a vector parameter (1-based)."""

    target: Name
    index: "Expr"
    span: Span


@dataclass(frozen=True)
class Attribute:
    """``flu.in_bed``: a column of a data source."""

    source: Name
    column: Name
    span: Span


@dataclass(frozen=True)
class Keyword:
    name: Name
    value: "Expr"
    span: Span


@dataclass(frozen=True)
class Call:
    func: Name
    args: tuple["Expr", ...]
    keywords: tuple[Keyword, ...]
    span: Span

    def keyword(self, name: str) -> Keyword | None:
        return next((k for k in self.keywords if k.name.id == name), None)


@dataclass(frozen=True)
class Evaluated:
    """A derivative evaluated at a point: ``der(u, x)(0, t)`` (Neumann and Robin conditions)."""

    target: Call
    args: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / ^
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    op: str  # - or +
    operand: "Expr"
    span: Span


Expr = Union[Number, String, Name, Index, Attribute, Call, Evaluated, ListExpr, BinOp, UnaryOp]


# ------------------------------------------------------------------- statements
@dataclass(frozen=True)
class ModelDecl:
    name: Name
    title: str | None
    span: Span


@dataclass(frozen=True)
class ConstDecl:
    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True)
class Interval:
    lower: Expr
    upper: Expr
    span: Span


@dataclass(frozen=True)
class TimeDecl:
    name: Name
    interval: Interval
    span: Span


@dataclass(frozen=True)
class SpaceVar:
    name: Name
    interval: Interval
    span: Span


@dataclass(frozen=True)
class SpaceDecl:
    variables: tuple[SpaceVar, ...]
    span: Span


@dataclass(frozen=True)
class StateDecl:
    names: tuple[Name, ...]
    span: Span


@dataclass(frozen=True)
class FieldDecl:
    name: Name
    arguments: tuple[Name, ...]
    representation: Call
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    name: Name
    size: int | None
    size_span: Span | None
    prior: Call
    bounds: tuple[Keyword, ...]
    span: Span
    per: Name | None = None        # ``per run``: one copy per experiment


@dataclass(frozen=True)
class UnknownDecl:
    name: Name
    inputs: tuple[Name, ...]
    representation: Call
    span: Span
    per: Name | None = None        # parsed so the checker can say why a term cannot be per experiment


@dataclass(frozen=True)
class EquationDecl:
    lhs: Expr
    rhs: Expr
    span: Span


@dataclass(frozen=True)
class InitDecl:
    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True)
class BoundaryDecl:
    lhs: Expr
    rhs: Expr
    span: Span


@dataclass(frozen=True)
class InitialDecl:
    lhs: Expr
    rhs: Expr
    span: Span


@dataclass(frozen=True)
class DataDecl:
    name: Name
    source: Call
    fidelity: Name | None
    span: Span


@dataclass(frozen=True)
class ExperimentDecl:
    """``experiment run = runs.run``: one ODE solve per distinct value of a data column."""

    name: Name
    column: Attribute
    span: Span


@dataclass(frozen=True)
class ObserveDecl:
    target: Attribute
    distribution: Call
    span: Span


@dataclass(frozen=True)
class FidelityDecl:
    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True)
class CollocationDecl:
    count: int
    method: Name | None
    options: tuple[Keyword, ...]
    span: Span


@dataclass(frozen=True)
class DeriveDecl:
    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True)
class Method:
    """``rk45(rtol=1e-6)`` or a bare ``bdf`` in solver/infer statements."""

    name: Name
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...]
    span: Span


@dataclass(frozen=True)
class SolverDecl:
    method: Method
    span: Span


@dataclass(frozen=True)
class InferDecl:
    method: Method
    span: Span


@dataclass(frozen=True)
class PhysicsDecl:
    name: Name
    distribution: Call
    span: Span


Statement = Union[ModelDecl, ConstDecl, TimeDecl, SpaceDecl, StateDecl, FieldDecl, ParamDecl,
                  UnknownDecl, EquationDecl, InitDecl, BoundaryDecl, InitialDecl, DataDecl, ExperimentDecl,
                  ObserveDecl, FidelityDecl, CollocationDecl, DeriveDecl, SolverDecl, InferDecl,
                  PhysicsDecl]

#: The keyword that starts each statement, for messages ("in 'param' statement").
STATEMENT_KEYWORDS = (
    "model", "const", "time", "space", "state", "field", "param", "unknown", "equation",
    "init", "boundary", "initial", "data", "experiment", "observe", "fidelity", "collocation", "derive",
    "solver", "infer", "physics",
)


@dataclass(frozen=True)
class Program:
    """A parsed model file."""

    statements: tuple[Statement, ...]
    file: str
    source: str

    def of_type(self, kind: type) -> list:
        return [s for s in self.statements if isinstance(s, kind)]
