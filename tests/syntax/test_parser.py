"""The parser: precedence, continuation, comments, spans, and syntax errors reported together."""

import pytest

from msml_dsl.errors import MsmlError
from msml_dsl.syntax import ast
from msml_dsl.syntax.parser import parse


def expr_of(text):
    program = parse(f"model m\nconst c = {text}\n")
    return program.statements[1].value


def show(e):
    if isinstance(e, ast.Number):
        return e.text
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.BinOp):
        return f"({show(e.left)} {e.op} {show(e.right)})"
    if isinstance(e, ast.UnaryOp):
        return f"({e.op}{show(e.operand)})"
    if isinstance(e, ast.Call):
        return f"{e.func.id}(" + ", ".join(show(a) for a in e.args) + ")"
    if isinstance(e, ast.Index):
        return f"{e.target.id}[{show(e.index)}]"
    raise AssertionError(type(e))


@pytest.mark.parametrize("text, tree", [
    ("1 + 2 * 3", "(1 + (2 * 3))"),
    ("1 - 2 - 3", "((1 - 2) - 3)"),
    ("8 / 4 / 2", "((8 / 4) / 2)"),
    ("2 ^ 3 ^ 2", "(2 ^ (3 ^ 2))"),
    ("-x ^ 2", "(-(x ^ 2))"),
    ("2 ^ -1", "(2 ^ (-1))"),
    ("-(a + b) * c", "((-(a + b)) * c)"),
    ("exp(-k * t) + k[2]", "(exp(((-k) * t)) + k[2])"),
    ("1e-3 + .5 + 2.", "((1e-3 + .5) + 2.)"),
])
def test_precedence(text, tree):
    assert show(expr_of(text)) == tree


def test_continuation_comments_and_spans():
    src = ("model m  # a comment\n"
           "equation der(x) = (a +\n"
           "    b)   # inside brackets\n"
           "equation der(y) = a \\\n"
           "    - b\n")
    program = parse(src)
    eq1, eq2 = program.statements[1], program.statements[2]
    assert show(eq1.rhs) == "(a + b)"
    assert show(eq2.rhs) == "(a - b)"
    assert (eq1.span.line, eq1.span.column, eq1.span.end_line) == (2, 1, 3)
    b = eq2.rhs.right
    assert (b.span.line, b.span.column) == (5, 7)


def test_vector_param_and_bounds():
    p = parse("model m\nparam k[3] ~ Normal(0, 1) [lower=-1, upper=2]\n").statements[1]
    assert p.size == 3 and p.prior.func.id == "Normal" and [b.name.id for b in p.bounds] == ["lower", "upper"]


def test_every_syntax_error_is_reported_at_once():
    src = "model m\nparm a ~ Normal(0, 1)\nconst b = 1 +\nconst c = (2\nstate x\n"
    with pytest.raises(MsmlError) as info:
        parse(src, "f.msml")
    codes = [(d.code, d.span.line) for d in info.value.diagnostics]
    assert codes == [("E103", 2), ("E101", 3), ("E102", 4)]
    text = str(info.value)
    assert "f.msml:2:1: error[E103]: unknown statement 'parm'" in text
    assert "did you mean 'param'?" in text
    assert "3 errors" in text


def test_keywords_are_contextual():
    program = parse('model m\ndata d = csv("x.csv", t = time)\n')
    assert program.statements[1].source.keywords[0].value.id == "time"
