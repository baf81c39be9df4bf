"""Make predator_prey.csv: Lotka–Volterra populations with 5 % log-normal noise, observed for 12 years.

Truth: alpha = 0.55, beta = 0.028, gamma = 0.80, delta = 0.024 (the posterior means of the Hudson's
Bay lynx-hare fit, Carpenter 2018), H(0) = 34, L(0) = 5.9; the interaction beta*H*L is what the model
treats as unknown. Rows for years 12.5-20 have empty cells: the model forecasts them.
Run: python simulate.py
"""

import numpy as np
from scipy.integrate import solve_ivp

ALPHA, BETA, GAMMA, DELTA = 0.55, 0.028, 0.80, 0.024
H0, L0, SIGMA = 34.0, 5.9, 0.05
OBSERVED_UNTIL = 12.0


def truth(times):
    def rhs(_, y):
        h, l = y
        return [ALPHA * h - BETA * h * l, -GAMMA * l + DELTA * h * l]

    sol = solve_ivp(rhs, (0.0, float(max(times))), [H0, L0], t_eval=times, rtol=1e-11, atol=1e-11)
    return sol.y.T


if __name__ == "__main__":
    rng = np.random.default_rng(20261128)
    times = np.arange(0.0, 20.01, 0.5)
    states = truth(times)
    with open("predator_prey.csv", "w") as fh:
        fh.write("year,hare,lynx\n")
        for t, (h, l) in zip(times, states):
            if t <= OBSERVED_UNTIL:
                fh.write(f"{t:g},{h * np.exp(SIGMA * rng.normal()):.4f},{l * np.exp(SIGMA * rng.normal()):.4f}\n")
            else:
                fh.write(f"{t:g},,\n")
