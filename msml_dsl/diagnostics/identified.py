"""System identification read back: a library term as an equation, and the model rewritten with it.

A library's candidate k is *included* with the posterior probability that its typical contribution
``|c_k| s_k`` (the coefficient times the candidate's standard deviation over the data, in the
units of the equation) exceeds the term's ``threshold`` (default 0.1). The identified equation keeps
the candidates included with probability above 0.5, at their posterior medians; the rewritten model
replaces every call of the term by that expression and drops its ``unknown`` line.

>>> # terms = identify_terms(fit.model.ir, fit.posterior); print(format_identified(terms))
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy

from msml_dsl.errors import Span
from msml_dsl.syntax import ast


@dataclass(frozen=True)
class IdentifiedCandidate:
    label: str
    median: float
    lower: float                 # 5 % quantile (the MAP value for a point estimate)
    upper: float                 # 95 % quantile
    inclusion: float             # P(|c| s > threshold); 0 or 1 for a point estimate
    scale: float = 1.0           # s: the candidate's sd over the data


@dataclass(frozen=True)
class IdentifiedTerm:
    name: str
    inputs: tuple[str, ...]
    candidates: tuple[IdentifiedCandidate, ...]
    threshold: float
    slab: float | None = None    # prior sd of a kept contribution c s (spike_slab, normal, laplace); None: horseshoe

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
                                                  float(np.quantile(v, 0.95)), included, float(c.scale)))
        out.append(IdentifiedTerm(term.name, term.input_names, tuple(candidates), term.threshold, _slab(term)))
    return out


def _slab(term) -> float | None:
    """The sd the sparsity prior gives an included candidate's contribution ``c s``: the slab of
    ``spike_slab(p, slab)``, ``s`` of ``normal(s)``, the sd ``b sqrt(2)`` of ``laplace(b)``; None for
    a horseshoe (no fixed scale)."""
    if any(p.distribution == "HalfCauchy" for p in term.parameters):
        return None
    for p in term.parameters:
        if p.distribution == "SpikeSlab":
            return float(p.args[1])
        if p.distribution == "Normal" and p.name == f"{term.name}_z":
            return float(p.args[1])
        if p.distribution == "Laplace":
            return float(p.args[1]) * float(np.sqrt(2.0))
    return None


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


REFIT_FORMS = ("library", "parameters")


def rewrite_model(program: ast.Program, terms: list[IdentifiedTerm], refit: str | None = None,
                  folder: str | Path | None = None) -> str:
    """The model's source with each library term made explicit (its ``unknown`` line removed).

    By default the kept candidates enter at their posterior medians (numbers). ``refit`` writes the
    *select, then refit* model instead, whose fit re-estimates the kept coefficients on the selected
    structure alone, each with the prior the sparsity prior gives an included candidate: the
    contribution ``c_k s_k`` (``s_k`` the candidate's sd over the data) ~ Normal(0, slab), centred on
    zero, not on the estimate.

    - ``refit="library"``: each term stays a library, of its kept candidates only, with
      ``sparsity=normal(slab)``; the coefficients keep their names (``fy[x]``) and ``init=derivatives``
      its derivative fit (``msml run``'s ``identified_refit.msml``).
    - ``refit="parameters"``: each kept coefficient a parameter ``f_LABEL ~ Normal(0, slab / s_k)``
      (``fy_x_z`` for ``x*z``) in a plain equation; with no unknown term left, ``init=derivatives``
      becomes ``init=map``, which starts from prior draws (too far for a chaotic system).

    A term with no kept candidate becomes 0. With ``folder`` (where the text will be written),
    relative data paths are rewritten to resolve from there.
    """
    from msml_dsl.syntax.parser import iter_expr

    if refit is not None and refit not in REFIT_FORMS:
        raise ValueError(f"refit must be one of {REFIT_FORMS}, not {refit!r}")
    by_name = {t.name: t for t in terms}
    names = _parameter_names(program, terms) if refit == "parameters" else {}
    explicit = {n: t for n, t in by_name.items() if refit != "library" or not t.included}   # calls rewritten
    lines = program.source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, int, str]] = []   # (line, col, end_line, end_col, text), 1-based
    for s in program.statements:
        if isinstance(s, ast.UnknownDecl) and s.name.id in by_name:
            t = by_name[s.name.id]
            text = f"# identified by msml: {t.name}({', '.join(t.inputs)}) = {t.expression()}"
            if refit and t.included:
                text += "\n" + _refit_declaration(t, refit, names.get(t.name), _slab_scale(s, t))
            edits.append((s.span.line, s.span.column, s.span.end_line, s.span.end_column, text))
            continue
        if folder is not None and isinstance(s, ast.DataDecl):
            edits += _relocated_path(s, program.file, folder)
        if refit and isinstance(s, ast.InferDecl):
            edits += _without_derivative_start(s, program, by_name, explicit)
        for e in _expressions(s):
            for node in iter_expr(e):
                if isinstance(node, ast.Call) and node.func.id in explicit:
                    t = explicit[node.func.id]
                    body = _parametrised(t, names[t.name]) if names else t.expression()
                    args = [_source_of(lines, a.span) for a in node.args]
                    edits.append((node.span.line, node.span.column, node.span.end_line, node.span.end_column,
                                  "(" + _substitute(body, t.inputs, args) + ")"))
    text = "".join(lines)
    offsets = np.cumsum([0] + [len(x) for x in lines])
    for line, col, end_line, end_col, replacement in sorted(edits, reverse=True):
        start = offsets[line - 1] + col - 1
        stop = offsets[end_line - 1] + end_col - 1
        text = text[:start] + replacement + text[stop:]
    return text


def _relocated_path(s: ast.DataDecl, model_file: str, folder) -> list[tuple]:
    """A relative file path of a data source, relative to ``folder`` instead of the model's folder
    (absolute when the two share nothing but the root)."""
    arg = s.source.args[0] if s.source.args else None
    if not isinstance(arg, ast.String) or Path(arg.value).is_absolute():
        return []
    target = Path(model_file).resolve().parent / arg.value
    here = Path(folder).resolve()
    moved = target.as_posix() if os.path.commonpath([target, here]) == target.anchor else \
        Path(os.path.relpath(target, here)).as_posix()
    span = arg.span
    return [] if moved == arg.value else [(span.line, span.column, span.end_line, span.end_column, f'"{moved}"')]


def _parameter_names(program: ast.Program, terms: list[IdentifiedTerm]) -> dict[str, dict[str, str]]:
    """``f_LABEL`` per kept candidate (``fy_x_z`` for ``x*z``, ``fx_const`` for the constant), made
    unique against the model's other names."""
    taken = {n.id for s in program.statements for n in _declared(s)}
    out: dict[str, dict[str, str]] = {}
    for t in terms:
        out[t.name] = {}
        for c in t.included:
            stem = "const" if c.label == "1" else re.sub(r"[^A-Za-z0-9]+", "_", c.label.replace("^", "")).strip("_")
            name, k = f"{t.name}_{stem}", 2
            while name in taken:
                name, k = f"{t.name}_{stem}_{k}", k + 1
            taken.add(name)
            out[t.name][c.label] = name
    return out


def _declared(s) -> list:
    names = [getattr(s, "name", None)] + list(getattr(s, "names", ()) or ())
    return [n for n in names if isinstance(n, ast.Name)]


def _slab_scale(decl: ast.UnknownDecl, t: IdentifiedTerm) -> tuple[float, str]:
    """The prior sd of a kept contribution ``c s`` and where it comes from."""
    if t.slab is not None:
        return t.slab, "the slab of the sparsity prior"
    sparsity = decl.representation.keyword("sparsity")
    slab = sparsity.value.keyword("slab_scale") if isinstance(getattr(sparsity, "value", None), ast.Call) else None
    if slab is not None and isinstance(slab.value, ast.Number):
        return float(slab.value.value), "the horseshoe's slab_scale"
    largest = max((abs(c.median) * c.scale for c in t.included), default=1.0)
    return 10 * largest, "10 x the largest kept contribution (a horseshoe has no slab)"


def _refit_declaration(t: IdentifiedTerm, refit: str, names: dict[str, str] | None,
                       slab: tuple[float, str]) -> str:
    """The refit's declaration of a term: a library of its kept candidates, or one parameter each."""
    scale, source = slab
    if refit == "library":
        candidates = ", ".join("1" if c.label == "1" else c.label for c in t.included)
        return (f"# refit by msml: {t.name}'s kept candidates, each contribution c_k s_k ~ Normal(0, {scale:g}) "
                f"({source})\nunknown {t.name}({', '.join(t.inputs)}) : library({candidates}, "
                f"sparsity=normal({scale:g}), threshold={t.threshold:g})")
    lines = [f"# refit by msml: each kept coefficient c_k a parameter, c_k ~ Normal(0, {scale:g} / s_k),",
             f"# {scale:g} the sd of a kept contribution c_k s_k ({source}), s_k the candidate's sd over the data"]
    for c in t.included:
        lines.append(f"param {names[c.label]} ~ Normal(0, {scale / c.scale:.4g})".ljust(40)
                     + f"# {c.label}: s_k = {c.scale:.4g}; {c.median:.4g} in the selection fit")
    return "\n".join(lines)


def _parametrised(t: IdentifiedTerm, names: dict[str, str]) -> str:
    """The kept candidates with parameter coefficients: ``fy_x * x + fy_y * y + fy_x_z * x*z``."""
    parts = [names[c.label] if c.label == "1" else f"{names[c.label]} * {c.label}" for c in t.included]
    return " + ".join(parts) if parts else "0"


def _without_derivative_start(s: ast.InferDecl, program: ast.Program, by_name, explicit) -> list[tuple]:
    """``init=derivatives`` becomes ``init=map`` when the refit leaves no unknown term to start from."""
    init = next((k for k in s.method.keywords if k.name.id == "init"), None)
    if init is None or not (isinstance(init.value, ast.Name) and init.value.id == "derivatives"):
        return []
    if any(isinstance(u, ast.UnknownDecl) and u.name.id not in explicit for u in program.statements):
        return []
    v, end = init.value.span, s.span
    rest = _source_of(program.source.splitlines(keepends=True),
                      Span(v.end_line, v.end_column, end.end_line, end.end_column))
    return [(v.line, v.column, end.end_line, end.end_column,
             f"map{rest}   # init=derivatives starts from library fits; the refit has none")]


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
    if getattr(term, "exact", None) is not None:   # an exact GP: a draw from its conditional given its values at the data
        from msml_dsl.symbolic.unknown_terms import exact_gp_values

        n = np.asarray(draws[term.exact.amplitude]).size
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, max_draws, replace=False)) if n > max_draws else np.arange(n)
        return exact_gp_values(term, draws, np.stack([np.ravel(g) for g in grid], axis=1), rng, rows)
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
