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
    python simulate.py --runs 8 --dt 0.001 --out lorenz_8runs.csv     # model_8runs.msml (not in git)
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


def initial_states(runs: int = RUNS, box: int = 0) -> np.ndarray:
    """The runs' initial states: points of one long trajectory, SPACING time units apart; the last
    ``box`` runs instead start from random states in [-20, 20] x [-25, 25] x [0, 50] (off the attractor)."""
    stops = BURN_IN + SPACING * np.arange(runs - box)
    sol = solve_ivp(rhs, (0.0, max(stops[-1], BURN_IN) if stops.size else BURN_IN), START, t_eval=stops,
                    method="DOP853", rtol=1e-12, atol=1e-12)
    rng = np.random.default_rng(7)
    extra = np.c_[rng.uniform(-20, 20, box), rng.uniform(-25, 25, box), rng.uniform(0, 50, box)]
    return np.vstack([sol.y.T.reshape(-1, 3), extra])


def truth(times: np.ndarray, runs: int = RUNS, box: int = 0) -> list[np.ndarray]:
    """Each run's states at ``times`` (rows) as (len(times), 3)."""
    return [solve_ivp(rhs, (0.0, float(max(times))), s0, t_eval=times, method="DOP853",
                      rtol=1e-12, atol=1e-12).y.T for s0 in initial_states(runs, box)]


def read_runs(path) -> tuple[np.ndarray, list[np.ndarray]]:
    """A long-format file back as (times of run 1, [each run's (rows, 3) states])."""
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    runs = [data[data[:, 0] == r] for r in np.unique(data[:, 0])]
    return runs[0][:, 1], [r[:, 2:5] for r in runs]


def write_runs(path, times: np.ndarray, runs: list[np.ndarray]) -> None:
    """The long-format file: one row per run and time (run, t, x, y, z)."""
    with open(path, "w") as fh:
        fh.write("run,t,x,y,z\n")
        for r, run in enumerate(runs):
            for i, t in enumerate(times):
                fh.write(f"{r + 1},{t:g}," + ",".join(f"{run[i, j]:.5f}" for j in range(3)) + "\n")


def simulate(runs: int = RUNS, dt: float = DT, t_end: float = T_END, seed: int = SEED, box: int = 0):
    """(times, noisy runs, noise sds); with the defaults the draws of the original four-run file."""
    rng = np.random.default_rng(seed)
    times = np.round(np.arange(0.0, t_end + dt / 2, dt), 10)
    clean = truth(times, runs, box)
    noise_sd = NOISE * np.concatenate(clean).std(axis=0)
    return times, [r + noise_sd * rng.standard_normal(r.shape) for r in clean], noise_sd


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="simulate noisy Lorenz-63 runs (long-format CSV)")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--dt", type=float, default=DT)
    parser.add_argument("--t-end", type=float, default=T_END, help="length of each run")
    parser.add_argument("--box", type=int, default=0, help="how many runs start off the attractor")
    parser.add_argument("--out", default="lorenz.csv")
    args = parser.parse_args()
    times, noisy, noise_sd = simulate(args.runs, args.dt, args.t_end, box=args.box)
    write_runs(args.out, times, noisy)
    print("initial states:", np.round(initial_states(args.runs, args.box), 4).tolist(), " noise sd:",
          np.round(noise_sd, 5).tolist())
