"""Make burgers.csv: 2,000 noisy snapshots of the viscous Burgers equation, from its exact solution.

    u_t + lambda1 u u_x = lambda2 u_xx,  x in [-1, 1], t in [0, 1],
    u(x, 0) = -sin(pi x),  u(-1, t) = u(1, t) = 0,  lambda1 = 1, lambda2 = 0.01/pi.

The reference is the Cole-Hopf solution (Cole 1951, Hopf 1950) evaluated by Gauss-Hermite
quadrature, as in Basdevant et al. (1986) and Raissi et al. (2019):

    u(x, t) = - int sin(pi (x - e)) f(x - e) G(e) de / int f(x - e) G(e) de,
    f(y) = exp(-cos(pi y) / (2 pi nu)),  G(e) = exp(-e^2 / (4 nu t)).

It is exact up to the quadrature (200 nodes; 100 and 800 agree to 4e-15) and is not msml's.
Following Raissi et al., the 2,000 rows are drawn without replacement from the 256 x 100 grid
of x and t, and Normal noise with sd 1 % of the sampled values' standard deviation is added.

    python simulate.py              # writes burgers.csv
    python simulate.py --check-mol  # compares msml's method of lines with the reference (README)
    python simulate.py --exact-fit  # least squares of burgers.csv with the exact solution (README)
"""

from __future__ import annotations

import math
import sys

import numpy as np

LAMBDA1, NU = 1.0, 0.01 / math.pi
N_ROWS, NOISE = 2000, 0.01          # rows, noise sd as a fraction of the data's sd
SEED = 1234


def solution(x, t, lambda1: float = LAMBDA1, lambda2: float = NU, nodes: int = 200) -> np.ndarray:
    """The exact solution at the points (x, t) (arrays of one shape) for any lambda1 != 0, lambda2 > 0.

    w = lambda1 u solves w_t + w w_x = lambda2 w_xx with w(x, 0) = -lambda1 sin(pi x), so Cole-Hopf
    gives u = - int sin(pi (x - e)) f(x - e) G(e) de / int f(x - e) G(e) de with
    f(y) = exp(-lambda1 cos(pi y) / (2 pi lambda2)), G(e) = exp(-e^2 / (4 lambda2 t)).
    """
    from scipy.special import roots_hermite

    x, t = np.broadcast_arrays(np.asarray(x, float), np.asarray(t, float))
    s, w = roots_hermite(nodes)
    out = -np.sin(np.pi * x).ravel()
    xf, tf = x.ravel(), t.ravel()
    later = np.flatnonzero(tf > 0)
    for chunk in np.array_split(later, max(1, later.size // 4096)):
        eta = np.sqrt(4 * lambda2 * tf[chunk])[:, None] * s[None, :]      # (n, q)
        y = xf[chunk, None] - eta
        log_f = -lambda1 * np.cos(np.pi * y) / (2 * np.pi * lambda2)
        log_f -= log_f.max(axis=1, keepdims=True)             # a common factor cancels in the ratio
        f = np.exp(log_f) * w
        out[chunk] = -(np.sin(np.pi * y) * f).sum(1) / f.sum(1)
    return out.reshape(x.shape)


def reference(x: np.ndarray, t: np.ndarray, nu: float = NU, nodes: int = 200) -> np.ndarray:
    """Cole-Hopf solution (lambda1 = 1) on the grid x (nx,) by t (nt,), shape (nt, nx)."""
    X, T = np.meshgrid(np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(t, float)))
    return solution(X, T, 1.0, nu, nodes)


def exact_fit(path: str = "burgers.csv") -> dict:
    """Least squares of the data with the exact solution: the estimate the data allow without any
    solver error (with 2,000 rows the priors do not matter), and its asymptotic sd."""
    from scipy.optimize import least_squares

    x, t, u = np.loadtxt(path, delimiter=",", skiprows=1).T
    fit = least_squares(lambda p: solution(x, t, p[0], p[1]) - u, [LAMBDA1, NU], x_scale=[1.0, NU],
                        xtol=1e-14, ftol=1e-14)
    s2 = float(np.mean(fit.fun ** 2))
    sd = np.sqrt(np.diag(np.linalg.inv(fit.jac.T @ fit.jac) * s2))
    return {"lambda1": float(fit.x[0]), "lambda2": float(fit.x[1]), "sigma": math.sqrt(s2),
            "lambda1_sd": float(sd[0]), "lambda2_sd": float(sd[1])}


def grid():
    """The 256 x 100 grid of Raissi et al. and the reference on it, shape (100, 256)."""
    x = np.linspace(-1, 1, 256)
    t = np.linspace(0, 1, 100)
    return x, t, reference(x, t)


def snapshots(seed: int = SEED, rows: int = N_ROWS, noise: float = NOISE):
    x, t, u = grid()
    rng = np.random.default_rng(seed)
    X, T = np.meshgrid(x, t)
    idx = rng.choice(u.size, rows, replace=False)
    xs, ts, us = X.ravel()[idx], T.ravel()[idx], u.ravel()[idx]
    sd = noise * np.std(us)
    return xs, ts, us + sd * rng.standard_normal(us.size), sd


MOL_MODEL = """model burgers_mol "Burgers' equation by the method of lines (reference check)"
space x in [-1, 1]
time t in [0, 1]
field u(x, t) : mlp()
param lambda1 ~ Normal(0, 2)
param lambda2 ~ LogNormal(-4, 2)
param sigma ~ HalfNormal(0.01)
equation der(u, t) + lambda1 * u * der(u, x) = lambda2 * der(u, x, x)
boundary u(-1, t) = 0
boundary u(1, t) = 0
initial u(x, 0) = -sin(pi * x)
data probe = csv("{csv}")
observe probe.u ~ Normal(u, sigma)
solver mol(points={points}, method={method}, scheme={scheme}, rtol=1e-7, atol=1e-9)
"""


def mol_solution(nu: float, points: int, times=(0.25, 0.5, 0.75, 1.0), method: str = "auto", scheme: str = "central"):
    """msml's method-of-lines solution on its grid at ``times``: (x (points,), u (len(times), points)).

    ``scheme`` is that of ``solver mol(scheme=...)``: central, upwind1 or upwind2."""
    import tempfile
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])     # the repository, when msml is not installed
    if root not in sys.path:
        sys.path.insert(0, root)
    import msml_dsl

    with tempfile.TemporaryDirectory() as tmp:
        # one probe per output time (msml's MoL outputs the grid at the observed times)
        Path(tmp, "probe.csv").write_text("x,t,u\n" + "".join(f"0,{t!r},0\n" for t in times))
        model = msml_dsl.compile_source(MOL_MODEL.format(csv="probe.csv", points=points, method=method, scheme=scheme),
                                        "burgers_mol.msml", device="cpu", base_dir=tmp)
        values = {"lambda1": np.array([1.0]), "lambda2": np.array([nu]), "sigma": np.array([0.01])}
        out = model.program.evaluate_draws(values, seed=0, predictive=False)
        ode = model.ir.ode
    keep = np.isin(ode.output_times, np.asarray(times))
    x = np.array([float(str(s).split("[")[1].rstrip("]")) for s in ode.states])
    x = -1 + 2 * x / (points - 1)
    return x, out["solution"][0][keep]


def check_mol(cases=((0.1 / math.pi, (51, 101, 201)), (0.01 / math.pi, (401, 801)))) -> list[dict]:
    """Max and relative L2 error of msml's method of lines against Cole-Hopf at t = 0.25 ... 1."""
    import time

    rows = []
    times = (0.25, 0.5, 0.75, 1.0)
    for nu, grids in cases:
        for n in grids:
            t0 = time.perf_counter()
            x, u = mol_solution(nu, n, times)
            seconds = time.perf_counter() - t0
            ref = reference(x, np.array(times), nu)
            rows.append({"nu": nu, "points": n, "max_err": float(np.abs(u - ref).max()),
                         "rel_l2": float(np.linalg.norm(u - ref) / np.linalg.norm(ref)), "seconds": seconds})
            print(f"nu = {nu:.5f}, {n:5d} points: max error {rows[-1]['max_err']:.2e}, "
                  f"relative L2 {rows[-1]['rel_l2']:.2e} ({seconds:.0f} s incl. compilation)", flush=True)
    return rows


if __name__ == "__main__":
    if "--check-mol" in sys.argv:
        check_mol()
        sys.exit(0)
    if "--exact-fit" in sys.argv:
        print(exact_fit())
        sys.exit(0)
    xs, ts, us, sd = snapshots()
    with open("burgers.csv", "w") as fh:
        fh.write("x,t,u\n")
        for a, b, c in zip(xs, ts, us):
            fh.write(f"{a:.6f},{b:.6f},{c:.6f}\n")
    print(f"burgers.csv: {len(xs)} rows, noise sd {sd:.5f} (1 % of the data's sd)")
