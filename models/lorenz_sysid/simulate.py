"""Make lorenz.csv: four short Lorenz-63 trajectories on the attractor, observed with 1 % noise.

Truth: sigma = 10, rho = 28, beta = 8/3 (Lorenz 1963), so

    dx/dt = -10 x + 10 y
    dy/dt =  28 x -    y - x z
    dz/dt = -8/3 z + x y

A trajectory from (-8, 7, 27) is run for 20 time units to reach the attractor; the states it passes
at times 20, 25, 30 and 35 start four runs ("experiments") of one time unit each, about 0.9
Lyapunov times (largest exponent 0.906). Each run is observed every 0.01 time units (101 rows);
every state gets Gaussian noise whose sd is 1 % of that variable's sd over all four runs.
Columns x, y, z are run 1, x2, y2, z2 run 2, and so on. Integration: scipy's DOP853 with
rtol = atol = 1e-12.
Run: python simulate.py
"""

import numpy as np
from scipy.integrate import solve_ivp

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
RUNS, T_END, DT, NOISE = 4, 1.0, 0.01, 0.01
START, BURN_IN, SPACING = (-8.0, 7.0, 27.0), 20.0, 5.0
SUFFIXES = [""] + [str(r + 1) for r in range(1, RUNS)]
TRUE_TERMS = {  # right-hand side -> {candidate: coefficient}, in the library's labels
    "fx": {"x": -SIGMA, "y": SIGMA},
    "fy": {"x": RHO, "y": -1.0, "x*z": -1.0},
    "fz": {"z": -BETA, "x*y": 1.0},
}
LABELS = ["1", "x", "y", "z", "x^2", "x*y", "x*z", "y^2", "y*z", "z^2"]


def rhs(_, s):
    x, y, z = s
    return [SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z]


def initial_states() -> np.ndarray:
    """The four runs' initial states: points of one long trajectory, SPACING time units apart."""
    stops = BURN_IN + SPACING * np.arange(RUNS)
    sol = solve_ivp(rhs, (0.0, stops[-1]), START, t_eval=stops, method="DOP853", rtol=1e-12, atol=1e-12)
    return sol.y.T


def truth(times: np.ndarray) -> list[np.ndarray]:
    """Each run's states at ``times`` (rows) as (len(times), 3)."""
    return [solve_ivp(rhs, (0.0, float(max(times))), s0, t_eval=times, method="DOP853",
                      rtol=1e-12, atol=1e-12).y.T for s0 in initial_states()]


if __name__ == "__main__":
    rng = np.random.default_rng(20261129)
    times = np.round(np.arange(0.0, T_END + DT / 2, DT), 10)
    runs = truth(times)
    noise_sd = NOISE * np.concatenate(runs).std(axis=0)
    noisy = [r + noise_sd * rng.standard_normal(r.shape) for r in runs]
    with open("lorenz.csv", "w") as fh:
        fh.write("t," + ",".join(f"{v}{s}" for s in SUFFIXES for v in "xyz") + "\n")
        for i, t in enumerate(times):
            fh.write(f"{t:g}," + ",".join(f"{run[i, j]:.5f}" for run in noisy for j in range(3)) + "\n")
    print("initial states:", np.round(initial_states(), 4).tolist(), " noise sd:", np.round(noise_sd, 5).tolist())
