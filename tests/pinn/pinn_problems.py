"""Problems with analytic solutions shared by the PINN tests."""

import math

import numpy as np
import sympy as sp

from msml_dsl.ir.pde import (CollocationSettings, FieldCondition, FieldSpec, PdeProblem, PdeResidual,
                             PdeSolverSettings, PhysicsTerm, SpaceAxis)

X, T = sp.symbols("x t", real=True)
U = sp.Function("u", real=True)(X, T)


def heat_problem(k=0.1, interior=500, method="sobol", solver=(), physics=(), hidden=(20, 20, 20), k_symbol=None,
                 boundary=0, initial=0):
    """u_t = k u_xx on [0, 1] x [0, 1], u(x, 0) = sin(pi x), u(0, t) = u(1, t) = 0."""
    kk = k_symbol if k_symbol is not None else k
    return PdeProblem(
        space=(SpaceAxis(X, 0.0, 1.0),), time=T, time_range=(0.0, 1.0),
        fields=(FieldSpec("u", (X, T), hidden=hidden),),
        equations=(PdeResidual("pde", sp.Derivative(U, T) - kk * sp.Derivative(U, (X, 2)), 1),),
        conditions=(FieldCondition("initial", "initial", "u", U - sp.sin(sp.pi * X), ((T, 0.0),), 2),
                    FieldCondition("boundary", "dirichlet", "u", U, ((X, 0.0),), 3),
                    FieldCondition("boundary", "dirichlet", "u", U, ((X, 1.0),), 4)),
        collocation=CollocationSettings(interior=interior, method=method, boundary=boundary, initial=initial),
        physics=tuple(physics), solver=PdeSolverSettings("pinn", tuple(solver)),
        parameters=(k_symbol,) if k_symbol is not None else ())


def heat_solution(x, t, k=0.1):
    return np.exp(-k * math.pi ** 2 * t) * np.sin(math.pi * x)
