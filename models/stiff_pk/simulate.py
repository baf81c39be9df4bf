"""Regenerate stiff_pk.csv: simulated data for the stiff two-compartment PK model.

Run:  python simulate.py      (needs numpy and scipy)

True parameters (also stated in README.md and model.msml):
    CL = 5 L/h, V1 = 5 L, Q = 300 L/h, V2 = 50 L, sigma = 0.1 (log-scale sd)
IV bolus of 100 mg into the central compartment at t = 0.
"""
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

DOSE = 100.0                                   # mg
TRUE = dict(CL=5.0, V1=5.0, Q=300.0, V2=50.0)  # L/h, L, L/h, L
SIGMA = 0.1
SEED = 20240601
TIMES = np.array([0.033, 0.083, 0.167, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0,
                  12.0, 16.0, 24.0, 36.0, 48.0])   # hours


def rhs(t, a, CL, V1, Q, V2):
    a_c, a_p = a
    c, cp = a_c / V1, a_p / V2
    return [-CL * c - Q * (c - cp), Q * (c - cp)]


def main():
    sol = solve_ivp(rhs, (0.0, TIMES[-1]), [DOSE, 0.0], method="Radau",
                    t_eval=TIMES, args=tuple(TRUE.values()), rtol=1e-10, atol=1e-12)
    assert sol.success, sol.message
    conc_true = sol.y[0] / TRUE["V1"]
    rng = np.random.default_rng(SEED)
    conc_obs = conc_true * np.exp(SIGMA * rng.standard_normal(TIMES.size))
    out = Path(__file__).with_name("stiff_pk.csv")
    with out.open("w") as f:
        f.write("time_h,conc\n")
        for t, c in zip(TIMES, conc_obs):
            f.write(f"{t:g},{c:.4f}\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
