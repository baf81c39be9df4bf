"""Plain-text rendering of a summary table and diagnostic warnings.

Output is plain text (no ANSI codes, no TTY needed): a ``rich`` table rendered
into a string, followed by the warnings, each with its remedy.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

from .checks import DiagnosticWarning

__all__ = ["format_summary", "format_warnings"]

_INT_COLUMNS = {"ess_bulk", "ess_tail", "ess_mean", "ess"}


def _is_location(column: str) -> bool:
    """Columns in the parameter's own units, printed to the precision its sd supports."""
    return column in ("mean", "median", "mode") or column.startswith(("hdi_", "eti_"))


def _row_decimals(sd, mean=0.0) -> int | None:
    """Decimals that show a value to two significant digits of its sd (Stan's convention).

    A viscosity of 0.0031813 with sd 1.5e-5 then reads 0.003181, not 0.003. A value whose sd
    is rounding noise (a weight held at the optimum, posterior=last_layer) is a constant: None.
    """
    try:
        sd, mean = float(sd), float(mean)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(sd) and sd > 1e-12 * abs(mean)) or sd == 0:
        return None
    return min(max(1 - math.floor(math.log10(sd)), 0), 12)


def _fmt_cell(column: str, value, decimals: int | None = None) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if column in _INT_COLUMNS:
        return f"{v:.0f}"
    if column == "r_hat":
        return f"{v:.3f}"
    if decimals is not None and _is_location(column) and abs(v) < 1e5:
        return f"{v:.{decimals}f}"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.3f}"


def format_warnings(warnings: Sequence[DiagnosticWarning], *, width: int = 100) -> str:
    """One block per warning: code, severity and message, then the remedy."""
    if not warnings:
        return "No convergence problems detected."
    blocks: list[str] = []
    for w in warnings:
        tag = "WARNING" if w.severity == "warning" else "info"
        name = f" {w.name}" if getattr(w, "name", "") else ""
        head = textwrap.fill(
            f"[{w.code}{name}] {tag}: {w.message}", width=width, subsequent_indent="    "
        )
        remedy = textwrap.fill(
            f"remedy: {w.remedy}", width=width, initial_indent="    ",
            subsequent_indent="        ",
        )
        blocks.append(head + "\n" + remedy)
    return "\n".join(blocks)


def format_summary(table, warnings: Sequence[DiagnosticWarning], *, width: int = 120) -> str:
    """Render ``table`` (from ``summary_table``) and ``warnings`` as plain text."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rt = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    rt.add_column("", justify="left", no_wrap=True)
    for col in table.columns:
        rt.add_column(Text(str(col)), justify="right", no_wrap=True)
    # Text objects, not str: labels like "theta[a]" must not be read as markup.
    for label, row in table.iterrows():
        decimals = _row_decimals(row["sd"], row["mean"] if "mean" in table.columns else 0.0) \
            if "sd" in table.columns else None
        rt.add_row(
            Text(str(label)), *(Text(_fmt_cell(str(c), row[c], decimals)) for c in table.columns)
        )

    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width,
        force_terminal=False,
        color_system=None,
        no_color=True,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )
    console.print(rt)
    text = "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
    return text.rstrip() + "\n\n" + format_warnings(warnings, width=width) + "\n"
