"""Writes plasma.csv (nine sample times, each assayed in duplicate) and truth.csv (the noise-free curve) for pk_coarse_fine.

The truth is a two-compartment model with first-order absorption — richer than the
one-compartment model the .msml file declares — solved accurately by SciPy (LSODA, rtol 1e-10):

    dAg/dt = -ka Ag
    dA1/dt =  ka Ag - (k10 + k12) A1 + k21 A2        C = A1 / V
    dA2/dt =  k12 A1 - k21 A2

ka = 1.2 /h, k10 = 0.12 /h, k12 = 0.25 /h, k21 = 0.18 /h, V = 30 L, dose 320 mg at t = 0.
Sampling times follow a usual schedule, 0.5 to 24 h with a sample at 16 h in the 12-24 h interval the
predictions cover; each sample is assayed twice (duplicate analysis is routine in bioanalysis), each
assay with its own Normal(0, 0.2 mg/L) error, seed 7 (drawn as a 2 x 9 array: the first assays, then the
second). The pairs' differences carry the assay error alone, which separates it from the discrepancy.

    python make_data.py                 # plasma.csv and truth.csv here
    write_plasma(path, seed)            # the same design with other noise (benchmarks/multifidelity.py --replicates)
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


TIMES = np.array([0.5, 1, 2, 4, 6, 9, 12, 16, 24.0])       # h
ASSAYS = 2                                             # assay replicates per sample
SIGMA = 0.2                                            # mg/L, each assay's error


def write_plasma(path, seed=7):
    """plasma.csv: each sample time's two assays, rows ordered by time."""
    rng = np.random.default_rng(seed)
    conc = concentration(TIMES) + SIGMA * rng.standard_normal((ASSAYS, TIMES.size))
    rows = sorted((t, k, c) for k in range(ASSAYS) for t, c in zip(TIMES, conc[k]))
    with open(path, "w") as fh:
        fh.write("t,conc\n" + "".join(f"{t:g},{c:.4f}\n" for t, _, c in rows))


if __name__ == "__main__":
    write_plasma("plasma.csv")
    grid = np.linspace(0, 24, 481)
    with open("truth.csv", "w") as fh:
        fh.write("t,conc\n" + "".join(f"{a:.4f},{c:.8f}\n" for a, c in zip(grid, concentration(grid))))
