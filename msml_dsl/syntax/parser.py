"""Source text → :class:`~msml_dsl.syntax.ast.Program` (the ``parse`` stage).

The file is first cut into logical lines (a newline inside brackets or after a
trailing backslash continues a line); each logical line is parsed on its own
with the LALR ``statement`` rule, so every syntax error of a file is reported,
not just the first.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from msml_dsl.errors import DiagnosticBag, MsmlError, Span, did_you_mean
from msml_dsl.syntax import ast

_CLOSERS = {"(": ")", "[": "]"}

# Human names for grammar terminals in "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name", "NUMBER": "a number", "INT": "a whole number", "STRING": "a string",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "EQUAL": "'='",
    "TILDE": "'~'", "COLON": "':'", "DOT": "'.'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "CIRCUMFLEX": "'^'", "$END": "end of line",
}


def grammar_text() -> str:
    """The Lark grammar: shipped in the wheel, or read from the source tree."""
    packaged = resources.files("msml_dsl").joinpath("grammar/msml.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammar" / "msml.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(grammar_text(), start="statement", parser="lalr", lexer="contextual",
                propagate_positions=True, maybe_placeholders=True)


@dataclass(frozen=True)
class LogicalLine:
    text: str       # the statement, padded so that Lark's positions are the file's
    line: int       # first physical line (1-based)
    column: int     # column of the first character
    unclosed: bool = False  # already reported: an opening bracket is never closed


def split_logical_lines(source: str, bag: DiagnosticBag) -> list[LogicalLine]:
    """Cut the source into statements; report unclosed and stray brackets."""
    chunks: list[LogicalLine] = []
    stack: list[tuple[str, int, int]] = []
    start: tuple[int, int, int] | None = None  # offset, line, column
    line, col = 1, 1
    i, n = 0, len(source)
    in_string = False

    def close_chunk(end: int, unclosed: bool = False) -> None:
        nonlocal start
        if start is not None:
            off, l0, c0 = start
            text = source[off:end]
            if text.strip():
                padded = "\n" * (l0 - 1) + " " * (c0 - 1) + text
                chunks.append(LogicalLine(padded, l0, c0, unclosed))
        start = None

    while i < n:
        ch = source[i]
        if in_string and ch == "\n":
            in_string = False  # the parser reports the broken string
        if in_string:
            if ch == '"':
                in_string = False
        elif ch == "#":
            j = source.find("\n", i)
            j = n if j < 0 else j
            col += j - i
            i = j
            continue
        elif ch == "\\" and re.match(r"\\[ \t\f]*\r?\n", source[i:]):
            j = source.index("\n", i)
            i = j + 1
            line += 1
            col = 1
            continue
        elif ch == "\n":
            if stack and _next_line_starts_statement(source, i + 1):
                opener, ol, oc = stack[-1]
                bag.error("E102", f"'{opener}' is never closed",
                          Span(ol, oc, ol, oc + 1), help=f"add '{_CLOSERS[opener]}' before the end of the statement")
                stack.clear()
                close_chunk(i, unclosed=True)
            elif not stack:
                close_chunk(i)
        else:
            if start is None and not ch.isspace():
                start = (i, line, col)
            if ch == '"':
                in_string = True
            elif ch in _CLOSERS:
                stack.append((ch, line, col))
            elif ch in (")", "]"):
                if stack and _CLOSERS[stack[-1][0]] == ch:
                    stack.pop()
                # an unmatched closer is left for the parser to report in context
        if ch == "\n":
            line += 1
            col = 1
        else:
            col += 1
        i += 1
    if stack:
        opener, ol, oc = stack[-1]
        bag.error("E102", f"'{opener}' is never closed", Span(ol, oc, ol, oc + 1),
                  help=f"add '{_CLOSERS[opener]}' before the end of the statement")
    close_chunk(n, unclosed=bool(stack))
    return chunks


def _next_line_starts_statement(source: str, offset: int) -> bool:
    m = re.match(r"([A-Za-z_]+)[ \t]", source[offset:])
    return bool(m) and m.group(1) in ast.STATEMENT_KEYWORDS


def parse(source: str, file: str = "<model>") -> ast.Program:
    """Parse model text into a Program, raising MsmlError with every syntax error.

    >>> parse('model m "demo"\\nconst N = 3\\n').statements[1].name.id
    'N'
    """
    bag = DiagnosticBag(file=file)
    statements: list = []
    if not source.strip():
        bag.error("E100", "the model file is empty", None,
                  help="a model starts with a line such as: model my_model \"A title\"")
        raise MsmlError(bag.items, {file: source})
    for chunk in split_logical_lines(source, bag):
        if chunk.unclosed:
            continue
        try:
            tree = _lark().parse(chunk.text)
            statements.append(_ToAst().transform(tree))
        except UnexpectedInput as exc:
            _report_syntax_error(exc, chunk, bag)
        except VisitError as exc:  # a transformer check on a literal
            if isinstance(exc.orig_exc, _LiteralError):
                bag.error("E108", exc.orig_exc.message, exc.orig_exc.span)
            else:
                raise
    bag.raise_if_errors({file: source})
    return ast.Program(tuple(statements), file, source)


def parse_file(path: str | Path) -> ast.Program:
    """Read and parse a model file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        bag = DiagnosticBag(file=str(path))
        bag.error("E001", f"model file '{path}' does not exist")
        raise MsmlError(bag.items)
    except UnicodeDecodeError as exc:
        bag = DiagnosticBag(file=str(path))
        bag.error("E002", f"model file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})")
        raise MsmlError(bag.items)
    return parse(text, str(path))


# ------------------------------------------------------------------ error text
def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "the end of the line"
    return f"'{token.value}'"


def _expected_text(expected: set[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(e, f"'{e.lower()}'" if e.isupper() and not e.startswith("_") else e)
                    for e in expected if not e.startswith("__")})
    keywords = sorted(e for e in names if e.strip("'") in ast.STATEMENT_KEYWORDS)
    if len(keywords) > 5:
        names = [n for n in names if n not in keywords] + ["a statement keyword (param, state, equation, ...)"]
    if not names:
        return "something else"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _filter_expected(expected: set[str], before: str) -> set[str]:
    """Drop closers that cannot match the innermost open bracket (LALR merges states)."""
    depth: list[str] = []
    for ch in re.sub(r'"[^"\n]*"', "", before):
        if ch in "([":
            depth.append(ch)
        elif ch in ")]" and depth:
            depth.pop()
    if not depth:
        return expected - {"RPAR", "RSQB", "COMMA"}
    keep = expected - ({"RSQB"} if depth[-1] == "(" else {"RPAR"})
    if not re.search(r"[A-Za-z_][A-Za-z_0-9]*\s*$", before):
        keep.discard("EQUAL")
    return keep


def _report_syntax_error(exc: UnexpectedInput, chunk: LogicalLine, bag: DiagnosticBag) -> None:
    line = exc.line if isinstance(exc.line, int) and exc.line > 0 else chunk.line
    col = exc.column if isinstance(exc.column, int) and exc.column > 0 else chunk.column
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        # Point just past the last character of the statement.
        last = chunk.text.rstrip()
        line = last.count("\n") + 1
        col = len(last) - (last.rfind("\n") + 1) + 1
        span = Span(line, col, line, col + 1)
        bag.error("E101", "the statement ends too early", span,
                  help=f"expected {_expected_text(set(exc.expected))}")
        return
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        width = max(1, len(str(token.value)))
        span = Span(line, col, line, col + width)
        first = line == chunk.line and col == chunk.column
        if first:
            word = str(token.value)
            hint = did_you_mean(word, ast.STATEMENT_KEYWORDS)
            bag.error("E103", f"unknown statement '{word}'", span,
                      help=hint or "a statement starts with one of: " + ", ".join(ast.STATEMENT_KEYWORDS))
            return
        expected = _filter_expected(set(exc.expected), chunk.text[:exc.pos_in_stream])
        bag.error("E101", f"unexpected {_describe_token(token)}", span,
                  help=f"expected {_expected_text(expected)}")
        return
    if isinstance(exc, UnexpectedCharacters):
        ch = chunk.text[exc.pos_in_stream] if exc.pos_in_stream < len(chunk.text) else "?"
        span = Span(line, col, line, col + 1)
        if ch == '"':
            bag.error("E104", "this string is never closed", span, help="add '\"' at the end of the string")
        elif ch in ")]":
            bag.error("E102", f"'{ch}' has no matching opening bracket", span)
        else:
            allowed = _filter_expected(set(exc.allowed or ()), chunk.text[:exc.pos_in_stream])
            bag.error("E105", f"unexpected character '{ch}'", span,
                      help=f"expected {_expected_text(allowed)}" if allowed else None)
        return
    if isinstance(exc, UnexpectedEOF):
        bag.error("E101", "the statement ends too early", Span(line, col, line, col + 1),
                  help=f"expected {_expected_text(set(exc.expected))}")
        return
    bag.error("E101", "syntax error", Span(line, col, line, col + 1))


# ----------------------------------------------------------------- tree → AST
class _LiteralError(Exception):
    def __init__(self, message: str, span: Span):
        super().__init__(message)
        self.message = message
        self.span = span


def _span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _name(tok: Token) -> ast.Name:
    return ast.Name(str(tok), _tok_span(tok))


def _merge(a: Span, b: Span) -> Span:
    return Span(a.line, a.column, b.end_line, b.end_column)


@v_args(meta=True)
class _ToAst(Transformer):
    # expressions
    def number(self, meta, children):
        tok = children[0]
        return ast.Number(float(tok), str(tok), _tok_span(tok))

    def string(self, meta, children):
        tok = children[0]
        return ast.String(str(tok)[1:-1], _tok_span(tok))

    def name(self, meta, children):
        return _name(children[0])

    def index(self, meta, children):
        return ast.Index(_name(children[0]), children[1], _span(meta))

    def attribute(self, meta, children):
        return ast.Attribute(_name(children[0]), _name(children[1]), _span(meta))

    def keyword(self, meta, children):
        return ast.Keyword(_name(children[0]), children[1], _span(meta))

    def call_args(self, meta, children):
        items = [c for c in children if c is not None]
        args = tuple(c for c in items if not isinstance(c, ast.Keyword))
        keywords = tuple(c for c in items if isinstance(c, ast.Keyword))
        seen_kw = False
        for c in items:
            if isinstance(c, ast.Keyword):
                seen_kw = True
            elif seen_kw:
                raise _LiteralError("a positional argument follows a keyword argument", _expr_span(c))
        return (args, keywords, _span(meta))

    def call(self, meta, children):
        args, keywords, _ = children[1]
        return ast.Call(_name(children[0]), args, keywords, _span(meta))

    def evaluated(self, meta, children):
        args, keywords, span = children[1]
        if keywords:
            raise _LiteralError("a point is given by positional coordinates, e.g. der(u, x)(0, t)", keywords[0].span)
        return ast.Evaluated(children[0], args, _span(meta))

    def list(self, meta, children):
        return ast.ListExpr(tuple(c for c in children if c is not None), _span(meta))

    def _bin(op):  # noqa: N805 - helper building methods
        def method(self, meta, children):
            return ast.BinOp(op, children[0], children[1], _span(meta))
        return method

    add, sub, mul, div, pow = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("^")

    def neg(self, meta, children):
        return ast.UnaryOp("-", children[0], _span(meta))

    def pos(self, meta, children):
        return children[0]

    # statements
    def model_decl(self, meta, c):
        title = str(c[1])[1:-1] if c[1] is not None else None
        return ast.ModelDecl(_name(c[0]), title, _span(meta))

    def const_decl(self, meta, c):
        return ast.ConstDecl(_name(c[0]), c[1], _span(meta))

    def interval(self, meta, c):
        return ast.Interval(c[0], c[1], _span(meta))

    def time_decl(self, meta, c):
        return ast.TimeDecl(_name(c[0]), c[1], _span(meta))

    def space_var(self, meta, c):
        return ast.SpaceVar(_name(c[0]), c[1], _span(meta))

    def space_decl(self, meta, c):
        return ast.SpaceDecl(tuple(c), _span(meta))

    def state_decl(self, meta, c):
        return ast.StateDecl(tuple(_name(t) for t in c), _span(meta))

    def name_list(self, meta, c):
        return tuple(_name(t) for t in c)

    def field_decl(self, meta, c):
        return ast.FieldDecl(_name(c[0]), c[1], c[2], _span(meta))

    def size(self, meta, c):
        tok = c[0]
        return (int(tok), _tok_span(tok))

    def bounds(self, meta, c):
        return tuple(c)

    def param_decl(self, meta, c):
        size, size_span = c[1] if c[1] is not None else (None, None)
        return ast.ParamDecl(_name(c[0]), size, size_span, c[2], c[3] or (), _span(meta), c[4])

    def per(self, meta, c):
        return _name(c[0])

    def unknown_decl(self, meta, c):
        return ast.UnknownDecl(_name(c[0]), c[1], c[2], _span(meta), c[3])

    def experiment_decl(self, meta, c):
        return ast.ExperimentDecl(_name(c[0]), c[1], _span(meta))

    def equation_decl(self, meta, c):
        return ast.EquationDecl(c[0], c[1], _span(meta))

    def init_decl(self, meta, c):
        return ast.InitDecl(_name(c[0]), c[1], _span(meta))

    def boundary_decl(self, meta, c):
        return ast.BoundaryDecl(c[0], c[1], _span(meta))

    def initial_decl(self, meta, c):
        return ast.InitialDecl(c[0], c[1], _span(meta))

    def fidelity_tag(self, meta, c):
        return _name(c[0])

    def data_decl(self, meta, c):
        return ast.DataDecl(_name(c[0]), c[1], c[2], _span(meta))

    def observe_decl(self, meta, c):
        return ast.ObserveDecl(c[0], c[1], _span(meta))

    def fidelity_decl(self, meta, c):
        return ast.FidelityDecl(_name(c[0]), c[1], _span(meta))

    def collocation_decl(self, meta, c):
        method = _name(c[1]) if c[1] is not None else None
        options = c[2][1] if c[2] is not None else ()
        if c[2] is not None and c[2][0]:
            raise _LiteralError("collocation options must be named, e.g. boundary=200", _expr_span(c[2][0][0]))
        return ast.CollocationDecl(int(c[0]), method, options, _span(meta))

    def derive_decl(self, meta, c):
        return ast.DeriveDecl(_name(c[0]), c[1], _span(meta))

    def method(self, meta, c):
        args, keywords = (c[1][0], c[1][1]) if c[1] is not None else ((), ())
        return ast.Method(_name(c[0]), args, keywords, _span(meta))

    def solver_decl(self, meta, c):
        return ast.SolverDecl(c[0], _span(meta))

    def infer_decl(self, meta, c):
        return ast.InferDecl(c[0], _span(meta))

    def physics_decl(self, meta, c):
        return ast.PhysicsDecl(_name(c[0]), c[1], _span(meta))


def _expr_span(e) -> Span:
    return e.span


def iter_expr(e):
    """Yield an expression and all its sub-expressions, depth first."""
    yield e
    if isinstance(e, ast.BinOp):
        yield from iter_expr(e.left)
        yield from iter_expr(e.right)
    elif isinstance(e, ast.UnaryOp):
        yield from iter_expr(e.operand)
    elif isinstance(e, ast.Call):
        for a in e.args:
            yield from iter_expr(a)
        for k in e.keywords:
            yield from iter_expr(k.value)
    elif isinstance(e, ast.Evaluated):
        yield from iter_expr(e.target)
        for a in e.args:
            yield from iter_expr(a)
    elif isinstance(e, ast.Index):
        yield from iter_expr(e.index)
    elif isinstance(e, ast.ListExpr):
        for a in e.items:
            yield from iter_expr(a)


__all__ = ["parse", "parse_file", "grammar_text", "iter_expr", "Tree"]
