"""The symbolic stage builds SymPy from the AST: right-hand sides, residuals, Jacobian, derived."""

import sympy

from msml_dsl.semantics.checker import check
from msml_dsl.symbolic.builder import build_symbolic
from msml_dsl.syntax.parser import parse

SRC = """model sir
const N = 100
time t in [0, 10]
state S, I
param beta ~ Normal(2, 1) [lower=0]
param k[2] ~ Normal(0, 1)
equation der(S) = -beta * S * I / N
equation der(I) = beta * S * I / N - k[1]^2 * I + sigmoid(k[2])
init S = N - 1
init I = 1
derive R0 = beta / k[1]^2
derive twice = 2 * R0
"""


def test_rhs_jacobian_residuals_and_derived():
    sm = build_symbolic(check(parse(SRC)))
    S, I = sm.states
    beta = sm.symbols["beta"]
    k1, k2 = sm.parameter_elements["k"]
    assert sympy.simplify(sm.numeric(sm.rhs[0]) - (-beta * S * I / 100)) == 0
    J = sm.jacobian
    assert sympy.simplify(J[0, 0] + beta * I / 100) == 0
    assert sympy.simplify(J[1, 1] - (beta * S / 100 - k1 ** 2)) == 0
    assert sympy.simplify(sm.rhs[1].diff(k2) - sympy.exp(-k2) / (1 + sympy.exp(-k2)) ** 2) == 0
    assert len(sm.residuals) == 2 and sm.residuals[0].has(sympy.Derivative)
    derived = dict(sm.derived)
    assert sympy.simplify(derived["twice"] - 2 * beta / k1 ** 2) == 0
    assert float(sm.numeric(sm.inits[0])) == 99.0
