"""Diagnostics: errors and warnings as values, with source spans.

Every stage collects :class:`Diagnostic` values and raises one
:class:`MsmlError` holding all of them at the end of its pass, so a user sees
every problem of a pass at once.  :func:`format_diagnostic` renders one the way
compilers do::

    model.msml:4:7: error[E201]: unknown name 'betta'
       |
     4 | equation der(S) = -betta * S * I / N
       |                    ^^^^^
       = help: did you mean 'beta'?

Exit codes used by the command line (also in docs/errors.md):

====  =====================================================
code  meaning
====  =====================================================
0     success
1     finished, but convergence checks failed (``--strict``)
2     the model file or its data is wrong (located errors)
3     inference could not run (no finite starting point, ...)
4     the model uses a feature whose backend does not exist yet
70    internal error in msml (please report it)
130   interrupted; completed draws were kept
====  =====================================================
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

EXIT_OK = 0
EXIT_CONVERGENCE = 1
EXIT_USER_ERROR = 2
EXIT_INFERENCE_FAILED = 3
EXIT_UNSUPPORTED = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based, ends exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a model or its data."""

    code: str
    message: str
    span: Span | None = None
    file: str | None = None
    help: str | None = None
    severity: str = "error"
    notes: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class MsmlError(Exception):
    """Raised with every diagnostic of a failed stage.

    ``sources`` maps file names to their text so messages can quote lines.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: dict[str, str] | None = None,
                 exit_code: int = EXIT_USER_ERROR):
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        self.exit_code = exit_code
        super().__init__(format_diagnostics(self.diagnostics, self.sources))


class UnsupportedFeature(MsmlError):
    """The model parses and checks, but a statement has no backend yet."""

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: dict[str, str] | None = None):
        super().__init__(diagnostics, sources, exit_code=EXIT_UNSUPPORTED)


class InferenceFailed(MsmlError):
    """Inference could not start or finish (no finite log density, ...)."""

    def __init__(self, message: str, help: str | None = None):
        super().__init__([Diagnostic("E601", message, help=help)], exit_code=EXIT_INFERENCE_FAILED)


class InternalError(RuntimeError):
    """A broken invariant inside msml: a bug, never the user's fault."""


@dataclass
class DiagnosticBag:
    """Collects the diagnostics of one pass; ``raise_if_errors`` ends the pass."""

    file: str | None = None
    items: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span | None = None, help: str | None = None,
              file: str | None = None, notes: Iterable[str] = ()) -> None:
        self.items.append(Diagnostic(code, message, span, file or self.file, help, "error", tuple(notes)))

    def warning(self, code: str, message: str, span: Span | None = None, help: str | None = None,
                file: str | None = None) -> None:
        self.items.append(Diagnostic(code, message, span, file or self.file, help, "warning"))

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)

    def raise_if_errors(self, sources: dict[str, str] | None = None) -> None:
        if self.has_errors:
            ordered = sorted(self.items, key=_sort_key)
            raise MsmlError(ordered, sources)

    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if not d.is_error]


def _sort_key(d: Diagnostic):
    return (d.file or "", d.span.line if d.span else 10**9, d.span.column if d.span else 0, d.code)


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """A close spelling among ``candidates`` as a help sentence, or None.

    >>> did_you_mean("betta", ["beta", "gamma"])
    "did you mean 'beta'?"
    >>> did_you_mean("last", ["all", "last_layer"])     # the start of exactly one candidate
    "did you mean 'last_layer'?"
    """
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    if name.lower() in lowered and lowered[name.lower()] != name:
        return f"did you mean '{lowered[name.lower()]}'?"
    matches = difflib.get_close_matches(name, pool, n=1, cutoff=cutoff)
    if not matches and len(name) >= 3:
        matches = [c for c in pool if c.lower().startswith(name.lower())]
        matches = matches if len(matches) == 1 else []
    return f"did you mean '{matches[0]}'?" if matches else None


def format_diagnostic(d: Diagnostic, sources: dict[str, str] | None = None) -> str:
    """Render a diagnostic with its location, the quoted line and a caret."""
    where = d.file or "<model>"
    if d.span is not None:
        where += f":{d.span.line}:{d.span.column}"
    lines = [f"{where}: {d.severity}[{d.code}]: {d.message}"]
    text = (sources or {}).get(d.file or "")
    if d.span is not None and text is not None:
        source_lines = text.splitlines()
        if 1 <= d.span.line <= len(source_lines):
            src = source_lines[d.span.line - 1].expandtabs(1)
            gutter = str(d.span.line)
            pad = " " * len(gutter)
            width = (d.span.end_column - d.span.column) if d.span.end_line == d.span.line else len(src) - d.span.column + 1
            width = max(1, width)
            lines.append(f"{pad} |")
            lines.append(f"{gutter} | {src}")
            lines.append(f"{pad} | {' ' * (d.span.column - 1)}{'^' * width}")
    for note in d.notes:
        lines.append(f"  = note: {note}")
    if d.help:
        lines.append(f"  = help: {d.help}")
    return "\n".join(lines)


def format_diagnostics(diagnostics: Sequence[Diagnostic], sources: dict[str, str] | None = None) -> str:
    """Render several diagnostics, then a one-line count."""
    body = "\n\n".join(format_diagnostic(d, sources) for d in diagnostics)
    n_err = sum(d.is_error for d in diagnostics)
    n_warn = len(diagnostics) - n_err
    tail = []
    if n_err:
        tail.append(f"{n_err} error{'s' if n_err != 1 else ''}")
    if n_warn:
        tail.append(f"{n_warn} warning{'s' if n_warn != 1 else ''}")
    return body + ("\n\n" + ", ".join(tail) if tail else "")
