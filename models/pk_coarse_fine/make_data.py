"""Writes plasma.csv (eight noisy concentrations) and truth.csv (the noise-free curve) for pk_coarse_fine.

The truth is a two-compartment model with first-order absorption — richer than the
one-compartment model the .msml file declares — solved accurately by SciPy (LSODA, rtol 1e-10):

    dAg/dt = -ka Ag
    dA1/dt =  ka Ag - (k10 + k12) A1 + k21 A2        C = A1 / V
    dA2/dt =  k12 A1 - k21 A2

ka = 1.2 /h, k10 = 0.12 /h, k12 = 0.25 /h, k21 = 0.18 /h, V = 30 L, dose 320 mg at t = 0.
Sampling times follow a usual sparse schedule (0.5 to 24 h); the noise is Normal(0, 0.2 mg/L), seed 7.
"""

import numpy as np
from scipy.integrate import solve_ivp

KA, K10, K12, K21, V, DOSE = 1.2, 0.12, 0.25, 0.18, 30.0, 320.0


def concentration(t):
    def rhs(_, y):
        ag, a1, a2 = y
        return [-KA * ag, KA * ag - (K10 + K12) * a1 + K21 * a2, K12 * a1 - K21 * a2]

    sol = solve_ivp(rhs, (0, 24), [DOSE, 0, 0], t_eval=t, method="LSODA", rtol=1e-10, atol=1e-12)
    return sol.y[1] / V


if __name__ == "__main__":
    times = np.array([0.5, 1, 2, 4, 6, 9, 12, 24.0])
    rng = np.random.default_rng(7)
    conc = concentration(times) + 0.2 * rng.standard_normal(times.size)
    with open("plasma.csv", "w") as fh:
        fh.write("t,conc\n" + "".join(f"{a:g},{c:.4f}\n" for a, c in zip(times, conc)))
    grid = np.linspace(0, 24, 481)
    with open("truth.csv", "w") as fh:
        fh.write("t,conc\n" + "".join(f"{a:.4f},{c:.8f}\n" for a, c in zip(grid, concentration(grid))))
