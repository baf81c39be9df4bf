"""Make lorenz.csv: short Lorenz-63 trajectories on the attractor, observed with 1 % noise.

Truth: sigma = 10, rho = 28, beta = 8/3 (Lorenz 1963), so

    dx/dt = -10 x + 10 y
    dy/dt =  28 x -    y - x z
    dz/dt = -8/3 z + x y

A trajectory from (-8, 7, 27) is run for 20 time units to reach the attractor; the states it passes
at times 20, 25, 30, ... (every 5 time units) start the runs ("experiments") of one time unit each,
about 0.9 Lyapunov times (largest exponent 0.906). Each run is observed every 0.01 time units (101
rows); every state gets Gaussian noise whose sd is 1 % of that variable's sd over all runs.
The file is in long format, one row per run and time: columns run, t, x, y, z. Integration:
scipy's DOP853 with rtol = atol = 1e-12.

    python simulate.py                                  # lorenz.csv: 4 runs, every 0.01
    python simulate.py --runs 8 --dt 0.005 --out lorenz_8runs.csv
"""

import argparse

import numpy as np
from scipy.integrate import solve_ivp

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
RUNS, T_END, DT, NOISE, SEED = 4, 1.0, 0.01, 0.01, 20261129
START, BURN_IN, SPACING = (-8.0, 7.0, 27.0), 20.0, 5.0
TRUE_TERMS = {  # right-hand side -> {candidate: coefficient}, in the library's labels
    "fx": {"x": -SIGMA, "y": SIGMA},
    "fy": {"x": RHO, "y": -1.0, "x*z": -1.0},
    "fz": {"z": -BETA, "x*y": 1.0},
}
LABELS = ["1", "x", "y", "z", "x^2", "x*y", "x*z", "y^2", "y*z", "z^2"]


def rhs(_, s):
    x, y, z = s
    return [SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z]


def initial_states(runs: int = RUNS) -> np.ndarray:
    """The runs' initial states: points of one long trajectory, SPACING time units apart."""
    stops = BURN_IN + SPACING * np.arange(runs)
    sol = solve_ivp(rhs, (0.0, stops[-1]), START, t_eval=stops, method="DOP853", rtol=1e-12, atol=1e-12)
    return sol.y.T


def truth(times: np.ndarray, runs: int = RUNS) -> list[np.ndarray]:
    """Each run's states at ``times`` (rows) as (len(times), 3)."""
    return [solve_ivp(rhs, (0.0, float(max(times))), s0, t_eval=times, method="DOP853",
                      rtol=1e-12, atol=1e-12).y.T for s0 in initial_states(runs)]


def read_runs(path) -> tuple[np.ndarray, list[np.ndarray]]:
    """A long-format file back as (times of run 1, [each run's (rows, 3) states])."""
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    runs = [data[data[:, 0] == r] for r in np.unique(data[:, 0])]
    return runs[0][:, 1], [r[:, 2:5] for r in runs]


def simulate(runs: int = RUNS, dt: float = DT, t_end: float = T_END, seed: int = SEED):
    """(times, noisy runs, noise sds); with the defaults the draws of the original four-run file."""
    rng = np.random.default_rng(seed)
    times = np.round(np.arange(0.0, t_end + dt / 2, dt), 10)
    clean = truth(times, runs)
    noise_sd = NOISE * np.concatenate(clean).std(axis=0)
    return times, [r + noise_sd * rng.standard_normal(r.shape) for r in clean], noise_sd


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="simulate noisy Lorenz-63 runs (long-format CSV)")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--dt", type=float, default=DT)
    parser.add_argument("--out", default="lorenz.csv")
    args = parser.parse_args()
    times, noisy, noise_sd = simulate(args.runs, args.dt)
    with open(args.out, "w") as fh:
        fh.write("run,t,x,y,z\n")
        for r, run in enumerate(noisy):
            for i, t in enumerate(times):
                fh.write(f"{r + 1},{t:g}," + ",".join(f"{run[i, j]:.5f}" for j in range(3)) + "\n")
    print("initial states:", np.round(initial_states(args.runs), 4).tolist(), " noise sd:",
          np.round(noise_sd, 5).tolist())
