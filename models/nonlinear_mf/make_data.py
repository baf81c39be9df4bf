"""Writes low.csv, high.csv and test.csv for the nonlinear two-level benchmark of Perdikaris et al. (2017):
f_low(x) = sin(8 pi x), f_high(x) = (x - sqrt(2)) f_low(x)^2, x in [0, 1], noise-free.

As in the paper: 50 low-fidelity points, 14 high-fidelity points among them (nested designs),
drawn uniformly at random (seed 1); test.csv holds 1,000 evenly spaced points of f_high.
"""

import numpy as np


def f_low(x):
    return np.sin(8 * np.pi * x)


def f_high(x):
    return (x - np.sqrt(2)) * f_low(x) ** 2


rng = np.random.default_rng(1)
x_low = np.sort(rng.uniform(0, 1, 50))
x_high = np.sort(rng.choice(x_low, 14, replace=False))
x_test = np.linspace(0, 1, 1000)
for name, x, f in (("low.csv", x_low, f_low), ("high.csv", x_high, f_high), ("test.csv", x_test, f_high)):
    with open(name, "w") as fh:
        fh.write("x,y\n" + "".join(f"{a:.10f},{f(a):.10f}\n" for a in x))
