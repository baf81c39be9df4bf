"""System identification read back: a library term as an equation, and the model rewritten with it.

A library's candidate k is *included* with the posterior probability that its typical contribution
``|c_k| s_k`` (the coefficient times the candidate's standard deviation over the data, in the
units of the equation) exceeds the term's ``threshold`` (default 0.1). The identified equation keeps
the candidates included with probability above 0.5, at their posterior medians; the rewritten model
replaces every call of the term by that expression and drops its ``unknown`` line.

>>> # terms = identify_terms(fit.model.ir, fit.posterior); print(format_identified(terms))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import sympy

from msml_dsl.syntax import ast


@dataclass(frozen=True)
class IdentifiedCandidate:
    label: str
    median: float
    lower: float                 # 5 % quantile (the MAP value for a point estimate)
    upper: float                 # 95 % quantile
    inclusion: float             # P(|c| s > threshold); 0 or 1 for a point estimate


@dataclass(frozen=True)
class IdentifiedTerm:
    name: str
    inputs: tuple[str, ...]
    candidates: tuple[IdentifiedCandidate, ...]
    threshold: float

    @property
    def included(self) -> tuple[IdentifiedCandidate, ...]:
        return tuple(c for c in self.candidates if c.inclusion > 0.5)

    def expression(self, digits: int = 4) -> str:
        """The identified term in the model's syntax: ``0.5213 * H*L - 0.0102 * H^2``."""
        parts = []
        for c in self.included:
            value = f"{abs(c.median):.{digits}g}"
            body = value if c.label == "1" else f"{value} * {c.label}"
            parts.append(("- " if c.median < 0 else "+ ") + body)
        if not parts:
            return "0"
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else "-" + text[1:]


def identify_terms(ir, draws: dict[str, np.ndarray]) -> list[IdentifiedTerm]:
    """The library terms of a fitted model; ``draws`` maps ``f[label]`` to its draws (any shape)."""
    out = []
    for term in ir.unknowns:
        if term.kind != "library":
            continue
        candidates = []
        for c in term.candidates:
            v = np.asarray(draws[f"{term.name}[{c.label}]"], dtype=float).reshape(-1)
            included = float(np.mean(np.abs(v) * c.scale > term.threshold))
            candidates.append(IdentifiedCandidate(c.label, float(np.median(v)), float(np.quantile(v, 0.05)),
                                                  float(np.quantile(v, 0.95)), included))
        out.append(IdentifiedTerm(term.name, term.input_names, tuple(candidates), term.threshold))
    return out


def format_identified(terms: list[IdentifiedTerm]) -> str:
    """A table per library term, then its identified equation."""
    lines = []
    for t in terms:
        lines.append(f"identified: {t.name}({', '.join(t.inputs)}) = {t.expression()}")
        lines.append(f"  {'candidate':<22} {'median':>11} {'5%':>11} {'95%':>11} {'P(included)':>12}")
        for c in t.candidates:
            mark = "*" if c.inclusion > 0.5 else " "
            lines.append(f"{mark} {c.label:<22} {c.median:>11.4g} {c.lower:>11.4g} {c.upper:>11.4g} "
                         f"{c.inclusion:>12.2f}")
        lines.append(f"  (* included: P(|coefficient| x candidate sd > {t.threshold:g}) above 0.5)")
    return "\n".join(lines)


def rewrite_model(program: ast.Program, terms: list[IdentifiedTerm]) -> str:
    """The model's source with each library term made explicit (its ``unknown`` line removed)."""
    from msml_dsl.syntax.parser import iter_expr

    by_name = {t.name: t for t in terms}
    lines = program.source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, int, str]] = []   # (line, col, end_line, end_col, text), 1-based
    for s in program.statements:
        if isinstance(s, ast.UnknownDecl) and s.name.id in by_name:
            t = by_name[s.name.id]
            edits.append((s.span.line, s.span.column, s.span.end_line, s.span.end_column,
                          f"# identified by msml: {t.name}({', '.join(t.inputs)}) = {t.expression()}"))
            continue
        for e in _expressions(s):
            for node in iter_expr(e):
                if isinstance(node, ast.Call) and node.func.id in by_name:
                    t = by_name[node.func.id]
                    args = [_source_of(lines, a.span) for a in node.args]
                    edits.append((node.span.line, node.span.column, node.span.end_line, node.span.end_column,
                                  "(" + _substitute(t.expression(), t.inputs, args) + ")"))
    text = "".join(lines)
    offsets = np.cumsum([0] + [len(x) for x in lines])
    for line, col, end_line, end_col, replacement in sorted(edits, reverse=True):
        start = offsets[line - 1] + col - 1
        stop = offsets[end_line - 1] + end_col - 1
        text = text[:start] + replacement + text[stop:]
    return text


def _expressions(s) -> list:
    if isinstance(s, ast.EquationDecl):
        return [s.lhs, s.rhs]
    if isinstance(s, (ast.InitDecl, ast.DeriveDecl)):
        return [s.value]
    if isinstance(s, ast.ObserveDecl):
        return list(s.distribution.args)
    return []


def _source_of(lines: list[str], span) -> str:
    if span.line == span.end_line:
        return lines[span.line - 1][span.column - 1:span.end_column - 1]
    parts = [lines[span.line - 1][span.column - 1:]] + lines[span.line:span.end_line - 1] + \
        [lines[span.end_line - 1][:span.end_column - 1]]
    return "".join(parts)


def _substitute(expression: str, inputs, args) -> str:
    """Inputs by the call's arguments (parenthesised when they are not the input's own name)."""
    mapping = {name: (arg if arg.strip() == name else f"({arg.strip()})") for name, arg in zip(inputs, args)}
    if all(v == k for k, v in mapping.items()):
        return expression
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in inputs) + r")\b")
    return pattern.sub(lambda m: mapping[m.group(1)], expression)


def term_values(term, draws: dict[str, np.ndarray], grid: list[np.ndarray], max_draws: int = 400,
                seed: int = 0) -> np.ndarray:
    """An unknown term evaluated on input points for posterior draws: (draws, points)."""
    symbols = [e for p in term.parameters for e in p.elements]
    fn = sympy.lambdify(list(term.inputs) + symbols, term.expression, "numpy")
    columns = []
    for p in term.parameters:
        v = np.asarray(draws[p.name], dtype=float)
        v = v.reshape((-1,) + p.shape) if p.shape else v.reshape(-1, 1)
        columns.append(v.reshape(v.shape[0], -1))
    values = np.concatenate(columns, axis=1)
    rng = np.random.default_rng(seed)
    if values.shape[0] > max_draws:
        values = values[rng.choice(values.shape[0], max_draws, replace=False)]
    out = np.empty((values.shape[0], grid[0].size))
    for i, row in enumerate(values):
        out[i] = np.asarray(fn(*grid, *row), dtype=float) * np.ones(grid[0].size)
    return out
