"""Splitting a model into experiments (``experiment run = runs.run``), after the data are bound.

Which experiments exist is a fact of the data (the distinct values of a column), so this stage
runs between ``load_data`` and ``build_symbolic``: it rewrites the checked model into the
block-diagonal model the later stages already know, and every stage after it is unchanged.

- the experiments are the distinct cells of the column: numbers sorted by value (``run=2``),
  otherwise text labels in order of first appearance (``subject=patient_A``; characters that
  would break names become ``_``, E315 when two labels then clash);
- every state ``x`` becomes one state per experiment, ``x[run=1]``, ``x[run=2]``, ... with the
  same equation and initial value, in which the experiment's copies replace the names;
- a parameter declared ``per run`` (and a derived quantity that uses one) becomes one copy per
  experiment, ``x0[run=3]`` (a vector stays a vector: ``k[run=3]``, elements ``k[run=3][1]``),
  with the same prior; every other parameter, unknown term and noise scale is shared;
- each observation becomes one observation per experiment, ``runs.x[run=2]``, over that
  experiment's rows of the data (each experiment may have its own times); a column in its
  arguments is read row by row, over those rows;
- a column of the experiment's source in an equation, initial value or derived quantity
  (``init C = runs.dose``, ``derive k = k0 * runs.temp``) is a covariate: the experiment's one
  value of it, as a number (a derived quantity that reads one is per experiment).

The model's source (``CheckedModel.program``) is left as written, so what is reported about the
model itself (identified equations, the rewritten model) speaks of ``der(x)``, once.

>>> # checked, tables = split_experiments(checked, load_data(checked))
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from msml_dsl.data.csv_source import DataTable, _display, is_number
from msml_dsl.errors import DiagnosticBag
from msml_dsl.semantics.model import CheckedModel, ExperimentInfo, ParameterInfo
from msml_dsl.syntax import ast
from msml_dsl.syntax.parser import iter_expr

_UNSAFE = re.compile(r"[^\w.+-]+")   # what a label may not keep in names (see _label_names)


def split_experiments(model: CheckedModel, tables: dict[str, DataTable]) -> tuple[CheckedModel, dict[str, DataTable]]:
    """The model and its data with one copy of the ODE per experiment (unchanged without ``experiment``)."""
    exp = model.experiment
    if exp is None or exp.copies:
        return model, tables
    bag = DiagnosticBag(file=model.file)
    observed = [s.name for s in model.data_sources if any(o.source == s.name for o in model.observations)]
    if exp.source not in observed:
        bag.error("E312", f"the experiments are read from '{exp.source}', which is never observed", exp.span,
                  help=f"observe a column of '{exp.source}', or read the experiments from an observed source")
    keys = {}
    for name in observed:
        table = tables[name]
        column = table.experiment
        missing = np.flatnonzero(column == "")
        if missing.size:
            bag.error("E312", f"'{_display(table.path)}' line {table.file_lines[missing[0]]}: the experiment column "
                      f"'{exp.column}' is empty; every row must say which experiment it belongs to",
                      exp.column_span, help="fill in the cell, or drop the row")
        keys[name] = column
    bag.raise_if_errors({model.file: model.program.source})
    values = _experiment_order([keys[n] for n in observed])
    labels = _label_names(bag, model, values, [(tables[n], keys[n]) for n in observed])
    bag.raise_if_errors({model.file: model.program.source})
    rows = {(name, label): np.flatnonzero(keys[name] == v) for name in observed for v, label in zip(values, labels)}

    for label in labels:
        observed_cells = sum(int(np.isfinite(tables[o.source].columns[o.column][rows[o.source, label]]).sum())
                             for o in model.observations)
        if not observed_cells:
            where = next(f"'{_display(tables[n].path)}' line {tables[n].file_lines[rows[n, label]][0]}"
                         for n in observed if rows[n, label].size)
            bag.error("E313", f"the experiment {exp.name}={label} has no observations: every observed column is "
                      f"empty in its rows (the first is {where})", exp.span,
                      help="fill in its observations, or drop its rows from the data")
    bag.raise_if_errors({model.file: model.program.source})

    per = {p.name for p in model.parameters if p.per}
    for name, value in model.derived:   # in file order: a derived quantity of a per-experiment one is one too,
        if _reads(value, per, exp.source):   # and so is one of a covariate (``derive k = k0 * runs.temp``)
            per.add(name)
    copied = list(model.states) + [p.name for p in model.parameters if p.name in per] + \
        [n for n, _ in model.derived if n in per]
    names = {label: {n: exp.copy_name(n, label) for n in copied} for label in labels}
    sources = {label: {n: exp.copy_name(n, label) for n in observed} for label in labels}

    def each(name: str, make):
        return [make(label, names[label], sources[label]) for label in labels] if name in per else None

    parameters = []
    for p in model.parameters:
        parameters += each(p.name, lambda label, nm, _: replace(
            p, name=nm[p.name], args=tuple(_rename(a, nm, {}) for a in p.args),
            depends_on=tuple(nm.get(d, d) for d in p.depends_on))) or [p]
    reported: set[str] = set()
    covariates = {label: _covariates(bag, model, tables[exp.source], rows[exp.source, label], label, reported)
                  for label in labels}
    bag.raise_if_errors({model.file: model.program.source})
    derived = []
    for name, value in model.derived:
        derived += each(name, lambda label, nm, _: (nm[name], _rename(value, nm, covariates[label]))) or \
            [(name, value)]
    states, equations, inits, observations = [], {}, {}, []
    for label in labels:
        nm, src = names[label], sources[label]
        for s in model.states:
            states.append(nm[s])
            equations[nm[s]] = _rename(model.equations[s], nm, covariates[label])
            inits[nm[s]] = _rename(model.inits[s], nm, covariates[label])
        for o in model.observations:
            if np.isfinite(tables[o.source].columns[o.column][rows[o.source, label]]).any():
                observations.append(replace(o, source=src[o.source], args=tuple(_rename(a, nm, src) for a in o.args),
                                            label=exp.copy_name(o.name, label)))
    data_sources, split_tables = [], {n: t for n, t in tables.items() if n not in observed}
    for s in model.data_sources:
        if s.name not in observed:
            data_sources.append(s)
            continue
        for label in labels:
            r, t = rows[s.name, label], tables[s.name]
            data_sources.append(replace(s, name=sources[label][s.name]))
            split_tables[sources[label][s.name]] = DataTable(
                sources[label][s.name], t.path, {c: v[r] for c, v in t.columns.items()},
                {c: v[r] for c, v in t.coordinates.items()}, t.file_lines[r], int(r.size), t.experiment[r])
    copies = tuple((n, tuple(names[label][n] for label in labels)) for n in copied)
    split = replace(model, states=tuple(states), parameters=tuple(parameters), equations=equations, inits=inits,
                    data_sources=tuple(data_sources), observations=tuple(observations), derived=tuple(derived),
                    experiment=replace(exp, labels=labels, copies=copies))
    return split, split_tables


def describe_experiments(exp: ExperimentInfo, shown: int = 8) -> str:
    """How many experiments the data hold, and their labels (up to ``shown``; beyond, the first
    five and the last).

    >>> describe_experiments(ExperimentInfo("run", "d", "run", None, None, labels=("A", "B")))
    '2 experiments (run = A, B)'
    >>> describe_experiments(ExperimentInfo("id", "d", "id", None, None, labels=tuple(map(str, range(1, 41)))))
    '40 experiments (id = 1, 2, 3, 4, 5, ..., 40)'
    """
    labels = exp.labels if len(exp.labels) <= shown else (*exp.labels[:5], "...", exp.labels[-1])
    n = len(exp.labels)
    return f"{n} experiment{'s' if n != 1 else ''} ({exp.name} = {', '.join(labels)})"


def _experiment_order(columns: list[np.ndarray]) -> list[str]:
    """The experiments' labels in order: by value when every label is a number (``1, 2, 10``),
    otherwise in order of first appearance (the sources in file order, each from its first row)."""
    seen = list(dict.fromkeys(v for c in columns for v in c.tolist()))
    return sorted(seen, key=float) if all(is_number(v) for v in seen) else seen


def _label_names(bag, model: CheckedModel, values: list[str], columns) -> tuple[str, ...]:
    """Each experiment's label as it appears in names (``x0[run=patient_A]``): characters other
    than letters, digits and ``_ . + -`` become ``_`` (a ``/`` or ``]`` would break the names in
    saved results, a ``|`` the report tables); two labels that become one name are E315."""
    exp, names, first = model.experiment, tuple(_UNSAFE.sub("_", v) for v in values), {}
    for value, name in zip(values, names):
        if name not in first:
            first[name] = value
            continue
        lines = [next(f"'{_display(t.path)}' line {t.file_lines[np.flatnonzero(c == v)[0]]}"
                      for t, c in columns if (c == v).any()) for v in (first[name], value)]
        bag.error("E315", f"the experiments '{first[name]}' ({lines[0]}) and '{value}' ({lines[1]}) would both be "
                  f"named {exp.name}={name}: a label keeps letters, digits and _ . + -, and other characters "
                  "become _", exp.column_span, help="rename one of them in the data")
    return names


def _reads(e: ast.Expr, names: set[str], source: str) -> bool:
    """Whether ``e`` uses one of ``names`` (an element ``k[2]`` included) or a column of ``source``."""
    return any((isinstance(n, ast.Name) and n.id in names) or (isinstance(n, ast.Index) and n.target.id in names)
               or (isinstance(n, ast.Attribute) and n.source.id == source) for n in iter_expr(e))


def _covariates(bag, model: CheckedModel, table: DataTable, rows: np.ndarray, label: str,
                reported: set[str]) -> dict[str, ast.Number]:
    """The experiment's value of each column its equations, initial values and derived quantities
    read (``runs.dose``), as a number; a column must hold one value within an experiment."""
    exp, out = model.experiment, {}
    for expr in [*model.equations.values(), *model.inits.values(), *(v for _, v in model.derived)]:
        for node in iter_expr(expr):
            if not isinstance(node, ast.Attribute) or node.source.id != exp.source:
                continue
            key = f"{node.source.id}.{node.column.id}"
            values = table.columns[node.column.id][rows]
            distinct = np.unique(values[np.isfinite(values)])
            if key in out or distinct.size == 1:
                out.setdefault(key, ast.Number(float(distinct[0]), repr(float(distinct[0])), node.span))
                continue
            out[key] = ast.Number(0.0, "0.0", node.span)   # reported below (once per column); the split stops
            if key in reported:
                continue
            reported.add(key)
            line = table.file_lines[rows][0]
            what = "is empty" if not distinct.size else \
                f"takes {distinct.size} values ({', '.join(f'{v:g}' for v in distinct[:3])}" + \
                (", ...)" if distinct.size > 3 else ")")
            bag.error("E314", f"'{_display(table.path)}': the column '{node.column.id}' {what} in the rows of "
                      f"{exp.name}={label} (from line {line}); an equation, initial value or derived quantity reads "
                      "one value per experiment", node.span,
                      help="give the column one value in every row of each experiment, or observe it instead")
    return out


def _rename(e: ast.Expr, names: dict[str, str], sources: dict[str, object]) -> ast.Expr:
    """``e`` with names and data sources replaced by one experiment's copies (function names untouched);
    ``sources`` maps a data source to its copy's name, or ``source.column`` to a number (a covariate)."""
    def go(x):
        return _rename(x, names, sources)

    if isinstance(e, ast.Name):
        return replace(e, id=names[e.id]) if e.id in names else e
    if isinstance(e, ast.Attribute):
        key = f"{e.source.id}.{e.column.id}"
        if key in sources:
            return sources[key]
        return replace(e, source=replace(e.source, id=sources[e.source.id])) if e.source.id in sources else e
    if isinstance(e, ast.Call):
        return replace(e, args=tuple(go(a) for a in e.args),
                       keywords=tuple(replace(k, value=go(k.value)) for k in e.keywords))
    if isinstance(e, ast.BinOp):
        return replace(e, left=go(e.left), right=go(e.right))
    if isinstance(e, ast.UnaryOp):
        return replace(e, operand=go(e.operand))
    if isinstance(e, ast.Index):   # an element of a vector copied per experiment: k[run=2][1]
        return replace(e, target=go(e.target), index=go(e.index))
    if isinstance(e, ast.ListExpr):
        return replace(e, items=tuple(go(a) for a in e.items))
    if isinstance(e, ast.Evaluated):
        return replace(e, target=go(e.target), args=tuple(go(a) for a in e.args))
    return e


__all__ = ["split_experiments", "describe_experiments"]
