"""Reading CSV data and binding columns to model variables (the ``bind data`` stage).

Every problem names the file, the column and the row (as the line number in
the file, the header being line 1), and all problems are reported together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msml_dsl.errors import DiagnosticBag, did_you_mean
from msml_dsl.semantics.model import CheckedModel, DataSourceInfo
from msml_dsl.syntax import ast
from msml_dsl.syntax.evaluate import EvaluationError, evaluate
from msml_dsl.syntax.parser import iter_expr


@dataclass(frozen=True)
class DataTable:
    """One data source after validation."""

    name: str
    path: Path
    columns: dict[str, np.ndarray]          # float64, NaN where a cell is empty
    coordinates: dict[str, np.ndarray]      # bound model variables (e.g. time) per row
    file_lines: np.ndarray                  # line in the file of each row
    n_rows: int = field(default=0)
    experiment: np.ndarray | None = None    # the experiment column's cells as labels ("" where empty)


def experiment_label(cell: str) -> str:
    """A cell of the experiment column as the experiment's label: a number in one spelling
    (``1``, ``1.0`` and ``01`` are one experiment, ``1``), any other text as written, and ``""``
    for an empty cell (also ``NA``, ``nan``, as everywhere in the data).

    >>> [experiment_label(c) for c in ("1.0", "0.5", "1234567", "patient_A", " NA ")]
    ['1', '0.5', '1234567', 'patient_A', '']
    """
    text = cell.strip()
    if text.lower() in ("", "na", "nan"):
        return ""
    if not is_number(text):
        return text
    v = float(text)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def is_number(text: str) -> bool:
    """A decimal number as written in a data file (``12``, ``-0.5``, ``1e3``; not ``1_2`` or ``inf``)."""
    return _NUMBER.fullmatch(text) is not None


def _label_codes(labels: np.ndarray) -> np.ndarray:
    """One number per distinct label (NaN where empty): the groups the time order is checked in."""
    _, codes = np.unique(labels, return_inverse=True)
    return np.where(labels == "", np.nan, codes.astype(float))


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_data(model: CheckedModel) -> dict[str, DataTable]:
    """Read every data source of a checked model, validating what the model uses.

    >>> # load_data(check(parse_file("models/lotka_volterra/model.msml")))["pelts"].n_rows
    """
    import pandas as pd  # pandas costs ~0.3 s to import; only data-binding needs it

    bag = DiagnosticBag(file=model.file)
    tables: dict[str, DataTable] = {}
    for src in model.data_sources:
        path = (model.base_dir / src.path) if not src.path.is_absolute() else src.path
        shown = _display(path)
        if not path.is_file():
            nearby = sorted(p.name for p in path.parent.glob("*.csv")) if path.parent.is_dir() else []
            bag.error("E301", f"data file '{src.path}' does not exist (looked for {shown})", src.path_span,
                      help=did_you_mean(src.path.name, nearby, cutoff=0.8) or
                      (f"CSV files next to the model: {', '.join(nearby)}" if nearby else None))
            continue
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            bag.error("E302", f"cannot read '{shown}' as CSV: {str(exc).strip().splitlines()[0]}", src.path_span)
            continue
        frame.columns = [str(c).strip() for c in frame.columns]
        needed = _columns_used(model, src)
        missing = False
        for column, span in needed.items():
            if column not in frame.columns:
                bag.error("E303", f"'{shown}' has no column '{column}'", span,
                          help=did_you_mean(column, frame.columns) or f"its columns: {', '.join(frame.columns)}")
                missing = True
        if missing:
            continue
        columns: dict[str, np.ndarray] = {}
        experiment = model.experiment.column if model.experiment is not None else None
        as_labels = experiment in needed and needed[experiment] is model.experiment.column_span   # read only as IDs
        labels = None
        for column in needed:
            values = np.full(len(frame), np.nan)
            if column == experiment:   # experiments may be named by text (patient_A): read it as labels
                labels = np.array([experiment_label(c) for c in frame[column].tolist()], dtype=object)
            bad = []
            for i, cell in enumerate(frame[column].tolist()):
                text = cell.strip()
                if text == "" or text.lower() in ("na", "nan"):
                    continue
                try:
                    values[i] = float(text)
                except ValueError:
                    bad.append((i, text))
            if bad and not (column == experiment and as_labels):   # once per column: a text column has many
                (i, text), more = bad[0], len(bad) - 1
                bag.error("E304", f"'{shown}' line {i + 2}, column '{column}': '{text}' is not a number"
                          + (f" (nor are {more} more cells of the column)" if more else ""),
                          needed[column], help="use a number, or leave the cell empty for a missing value")
            columns[column] = values
        lines = np.arange(len(frame)) + 2
        coordinates = {}
        for var, expr in src.bindings:
            try:
                with np.errstate(all="ignore"):
                    coordinates[var] = np.asarray(evaluate(expr, columns), dtype=float) * np.ones(len(frame))
            except EvaluationError as exc:
                bag.error("E305", f"cannot compute '{var}' from the columns of '{shown}': {exc}", expr.span)
        tables[src.name] = DataTable(src.name, path, columns, coordinates, lines, len(frame), labels)
        if model.pde is not None:
            _bind_field_coordinates(bag, model, src, shown, frame, coordinates, lines)
            continue
        groups = _label_codes(labels) if labels is not None else None
        if model.time and model.time in coordinates:
            _check_time_column(bag, model, src, shown, coordinates[model.time], lines, groups=groups)
        elif model.time and any(o.source == src.name for o in model.observations) and model.states:
            if "t" not in frame.columns and model.time not in frame.columns:
                bag.error("E306", f"the data source '{src.name}' does not say which column is the time",
                          src.span, help=f"bind it: csv(\"{src.path}\", {model.time} = COLUMN)")
            else:
                col = model.time if model.time in frame.columns else "t"
                values = np.array([_to_float(c) for c in frame[col].tolist()])
                coordinates[model.time] = values
                _check_time_column(bag, model, src, shown, values, lines, column=col, groups=groups)
    _check_observed_values(bag, model, tables)
    bag.raise_if_errors({model.file: model.program.source})
    return tables


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _columns_used(model: CheckedModel, src: DataSourceInfo) -> dict[str, object]:
    needed: dict[str, object] = {}
    for _, expr in src.bindings:
        for node in iter_expr(expr):
            if isinstance(node, ast.Name):
                needed.setdefault(node.id, node.span)
    if model.experiment is not None and model.experiment.source == src.name:   # per-experiment covariates
        for expr in [*model.equations.values(), *model.inits.values(), *(v for _, v in model.derived)]:
            for node in iter_expr(expr):
                if isinstance(node, ast.Attribute) and node.source.id == src.name:
                    needed.setdefault(node.column.id, node.column.span)
    for obs in model.observations:
        if obs.source != src.name:
            continue
        needed.setdefault(obs.column, obs.column_span)
        for a in obs.args:
            for node in iter_expr(a):
                if isinstance(node, ast.Attribute):
                    needed.setdefault(node.column.id, node.column.span)
    if model.experiment is not None and any(o.source == src.name for o in model.observations):
        # every observed source says which experiment each row belongs to; last, so that a column
        # also read as a number above keeps that span (its text cells are then E304)
        needed.setdefault(model.experiment.column, model.experiment.column_span)
    return needed


def _bind_field_coordinates(bag, model, src, shown, frame, coordinates, lines) -> None:
    """PDE data: every row has each coordinate of the domain (bound, or a column of that name) inside it."""
    if not any(o.source == src.name for o in model.observations):
        return
    axes = dict(model.space)
    if model.time is not None and model.time_range is not None:
        axes[model.time] = model.time_range
    for axis, (lo, hi) in axes.items():
        span = next((e.span for v, e in src.bindings if v == axis), src.span)
        if axis not in coordinates:
            if axis not in frame.columns:
                bag.error("E306", f"the data source '{src.name}' does not say which column is '{axis}'", src.span,
                          help=f"name a column '{axis}', or bind one: csv(\"{src.path}\", {axis} = COLUMN)")
                continue
            coordinates[axis] = np.array([_to_float(c) for c in frame[axis].tolist()])
        values = coordinates[axis]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            bag.error("E307", f"'{shown}' line {lines[bad[0]]}: the coordinate '{axis}' is missing or not a number",
                      span, help="every row needs its coordinates")
            continue
        tol = 1e-9 * max(1.0, abs(hi - lo))
        outside = np.flatnonzero((values < lo - tol) | (values > hi + tol))
        if outside.size:
            i = outside[0]
            bag.error("E309", f"'{shown}' line {lines[i]}: {axis} = {values[i]:g} lies outside the domain "
                      f"{axis} in [{lo:g}, {hi:g}]", span, help="widen the domain or drop the row")


def _check_time_column(bag, model, src, shown, values, lines, column: str | None = None, groups=None) -> None:
    """Times present, inside the model's range and sorted (within each experiment when ``groups`` is given)."""
    span = next((e.span for v, e in src.bindings if v == model.time), src.span)
    label = f"column '{column}'" if column else f"the time ('{model.time}')"
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        bag.error("E307", f"'{shown}' line {lines[bad[0]]}: {label} is missing or not a number", span,
                  help="every row needs a time")
        return
    previous = np.arange(values.size) - 1
    if groups is not None:   # long format: each experiment's rows in time order, experiments interleaved or not
        for g in np.unique(groups[np.isfinite(groups)]):
            rows = np.flatnonzero(groups == g)
            previous[rows] = np.r_[-1, rows[:-1]]
    later = np.flatnonzero(previous >= 0)
    drops = later[values[later] < values[previous[later]]]
    if drops.size:
        i = drops[0]
        bag.error("E308", f"'{shown}' line {lines[i]}: {label} goes back in time "
                  f"({values[previous[i]]:g} then {values[i]:g}); rows must be sorted by time"
                  + (" within each experiment" if groups is not None else ""), span,
                  help="sort the file by time" + (" within each experiment" if groups is not None else ""))
    if model.time_range is not None:
        lo, hi = model.time_range
        outside = np.flatnonzero((values < lo) | (values > hi))
        if outside.size:
            i = outside[0]
            bag.error("E309", f"'{shown}' line {lines[i]}: time {values[i]:g} lies outside the model's time range "
                      f"[{lo:g}, {hi:g}]", span, help="widen the 'time' range or drop the row")


def _check_observed_values(bag, model: CheckedModel, tables: dict[str, DataTable]) -> None:
    for obs in model.observations:
        table = tables.get(obs.source)
        if table is None or obs.column not in table.columns:
            continue
        values = table.columns[obs.column]
        finite = np.isfinite(values)
        shown = _display(table.path)
        if obs.distribution in ("Poisson", "NegBinomial2"):
            bad = np.flatnonzero(finite & ((values < 0) | (values != np.round(values))))
            if bad.size:
                i = bad[0]
                bag.error("E310", f"'{shown}' line {table.file_lines[i]}, column '{obs.column}': {values[i]:g} is not a "
                          f"count, but {obs.distribution} observes counts (whole numbers >= 0)", obs.span)
        elif obs.distribution in ("LogNormal", "Gamma", "InverseGamma", "Exponential", "HalfNormal"):
            bad = np.flatnonzero(finite & (values <= 0))
            if bad.size:
                i = bad[0]
                bag.error("E310", f"'{shown}' line {table.file_lines[i]}, column '{obs.column}': {values[i]:g} is not "
                          f"positive, but {obs.distribution} observes positive values", obs.span)
        if not finite.any():
            bag.error("E311", f"'{shown}': column '{obs.column}' has no values", obs.column_span)
