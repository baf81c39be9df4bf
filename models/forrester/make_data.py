"""Writes low.csv and high.csv: the Forrester et al. (2008) pair at the classic design points.

high(x) = (6x - 2)^2 sin(12x - 4); low(x) = 0.5 high(x) + 10 (x - 0.5) - 5, x in [0, 1].
Low: x = 0, 0.1, ..., 1 (11 points); high: x = 0, 0.4, 0.6, 1 (4 points). Noise-free.
"""

import numpy as np


def high(x):
    return (6 * x - 2) ** 2 * np.sin(12 * x - 4)


def low(x):
    return 0.5 * high(x) + 10 * (x - 0.5) - 5


if __name__ == "__main__":
    for name, x, f in (("low.csv", np.linspace(0, 1, 11), low), ("high.csv", np.array([0.0, 0.4, 0.6, 1.0]), high)):
        with open(name, "w") as fh:
            fh.write("x,y\n" + "".join(f"{a:.2f},{f(a):.10f}\n" for a in x))
