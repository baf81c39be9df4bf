"""Make predator_prey.csv: Lotka–Volterra populations with 5 % log-normal noise, counted monthly for 12 years.

Truth: alpha = 0.55, beta = 0.028, gamma = 0.80, delta = 0.024 (the posterior means of the Hudson's
Bay lynx-hare fit, Carpenter 2018), H(0) = 34, L(0) = 5.9; the interaction beta*H*L is what the model
treats as unknown. Rows after year 12 (every half year to year 20) have empty cells: the model forecasts them.

Monthly counts, not half-yearly: with 25 half-yearly points even the correctly specified
four-parameter model's least-squares beta has a 2.8 % standard error (and is 5.6 % low on the
half-yearly draw this script used to make), so no method could be expected to hold the learned
term within 5 %; 145 monthly points give about 1.2 % (see benchmarks/lotka_volterra_unknown.py).
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
    observed = np.arange(0, 12 * 12 + 1) / 12.0           # monthly, years 0-12
    forecast = np.arange(12.5, 20.01, 0.5)                  # half-yearly, years 12.5-20 (empty)
    times = np.concatenate([observed, forecast])
    states = truth(times)
    with open("predator_prey.csv", "w") as fh:
        fh.write("year,hare,lynx\n")
        for t, (h, l) in zip(times, states):
            if t <= OBSERVED_UNTIL + 1e-9:
                fh.write(f"{t:.6g},{h * np.exp(SIGMA * rng.normal()):.4f},{l * np.exp(SIGMA * rng.normal()):.4f}\n")
            else:
                fh.write(f"{t:g},,\n")
