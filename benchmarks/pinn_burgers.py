"""Burgers' equation with physics-informed networks: the forward and the inverse problem.

    u_t + lambda1 u u_x = lambda2 u_xx,  x in [-1, 1], t in [0, 1],
    u(x, 0) = -sin(pi x),  u(-1, t) = u(1, t) = 0,  lambda1 = 1, lambda2 = nu = 0.01/pi.

The reference solution is the Cole-Hopf formula evaluated by Gauss-Hermite quadrature (Basdevant
et al. 1986, the reference Raissi et al. 2019 used):

    u(x, t) = - int sin(pi (x - e)) f(x - e) G(e) de / int f(x - e) G(e) de,
    f(y) = exp(-cos(pi y) / (2 pi nu)),  G(e) = exp(-e^2 / (4 nu t)),

on the 256 x 100 grid of x and t of Raissi et al.  Forward: the relative L2 error of the trained
network on that grid.  Inverse: 2,000 points drawn from the grid (noise-free, then with Gaussian
noise of 1 % of the solution's standard deviation), lambda1 and lambda2 inferred with the network.

    python benchmarks/pinn_burgers.py [forward|inverse|inverse-noisy|all] [--threads 1] [--device cpu]

Prints one block per problem; the numbers in benchmarks/README.md ("PINN") come from this script.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import sympy as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from msml_dsl.backends.pinn.inference import run_pinn  # noqa: E402
from msml_dsl.backends.pinn.manual import latent, observation, pde_model_ir  # noqa: E402
from msml_dsl.ir.pde import (CollocationSettings, FieldCondition, FieldSpec, PdeProblem, PdeResidual,  # noqa: E402
                             PdeSolverSettings, PhysicsTerm, SpaceAxis)

NU = 0.01 / math.pi
X, T = sp.symbols("x t", real=True)
U = sp.Function("u", real=True)(X, T)


def burgers_reference(x: np.ndarray, t: np.ndarray, nu: float = NU, nodes: int = 200) -> np.ndarray:
    """Cole-Hopf solution on the grid x (nx,) by t (nt,), shape (nt, nx); Gauss-Hermite quadrature."""
    from scipy.special import roots_hermite

    s, w = roots_hermite(nodes)
    out = np.empty((t.size, x.size))
    for i, ti in enumerate(t):
        if ti == 0:
            out[i] = -np.sin(np.pi * x)
            continue
        eta = math.sqrt(4 * nu * ti) * s                      # (q,)
        y = x[:, None] - eta[None, :]                         # (nx, q)
        log_f = -np.cos(np.pi * y) / (2 * np.pi * nu)
        log_f -= log_f.max(axis=1, keepdims=True)             # common factor cancels in the ratio
        f = np.exp(log_f) * w
        out[i] = -(np.sin(np.pi * y) * f).sum(1) / f.sum(1)
    return out


def grid():
    x = np.linspace(-1, 1, 256)
    t = np.linspace(0, 1, 100)
    return x, t, burgers_reference(x, t)


def field(hidden):
    return FieldSpec("u", (X, T), hidden=hidden, activation="tanh")


def forward_problem(args) -> dict:
    x, t, ref = grid()
    residual = sp.Derivative(U, T) + U * sp.Derivative(U, X) - NU * sp.Derivative(U, (X, 2))
    pde = PdeProblem(
        space=(SpaceAxis(X, -1.0, 1.0),), time=T, time_range=(0.0, 1.0), fields=(field((20,) * 8),),
        equations=(PdeResidual("pde", residual, 1),),
        conditions=(FieldCondition("initial", "initial", "u", U + sp.sin(sp.pi * X), ((T, 0.0),), 2),
                    FieldCondition("boundary", "dirichlet", "u", U, ((X, -1.0),), 3),
                    FieldCondition("boundary", "dirichlet", "u", U, ((X, 1.0),), 4)),
        collocation=CollocationSettings(interior=args.points, boundary=200, initial=200, method="sobol"),
        physics=(PhysicsTerm("pde", sp.Float(0.01), True), PhysicsTerm("initial", sp.Float(0.002), True),
                 PhysicsTerm("boundary", sp.Float(0.002), True)),
        solver=PdeSolverSettings("pinn", (("adam_steps", args.adam), ("lbfgs_steps", args.lbfgs), ("lr", 1e-3),
                                          ("tol", 1e-9), ("dtype", args.dtype))))
    ir = pde_model_ir("burgers_forward", pde, method="map")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fit = run_pinn(ir, device=args.device, progress=report(args))
    seconds = time.perf_counter() - t0
    X_, T_ = np.meshgrid(x, t)
    pred = fit.predict({"x": X_.ravel(), "t": T_.ravel()})["u"].reshape(ref.shape)
    err = float(np.linalg.norm(pred - ref) / np.linalg.norm(ref))
    pde_row = next(r for r in fit.term_weights if r["term"] == "pde")
    out = {"problem": "forward", "rel_l2": err, "seconds": seconds, "mean_sq_pde_residual": pde_row["mean_sq_residual"],
           "adam": fit.history.adam_steps, "lbfgs": fit.history.lbfgs_steps, "peak_memory_mib": peak_memory(args)}
    print(fit.summary())
    return out


def inverse_problem(args, noise: float) -> dict:
    x, t, ref = grid()
    rng = np.random.default_rng(1234)
    X_, T_ = np.meshgrid(x, t)
    idx = rng.choice(ref.size, 2000, replace=False)
    xs, ts, us = X_.ravel()[idx], T_.ravel()[idx], ref.ravel()[idx]
    us = us + noise * np.std(us) * rng.standard_normal(us.size)
    lam1 = latent("lambda1", "Normal", 0, 2)
    lam2 = latent("lambda2", "LogNormal", -4, 2)
    sigma = latent("sigma", "HalfNormal", args.sigma_prior)
    l1, l2 = lam1.elements[0], lam2.elements[0]
    residual = sp.Derivative(U, T) + l1 * U * sp.Derivative(U, X) - l2 * sp.Derivative(U, (X, 2))
    pde = PdeProblem(
        space=(SpaceAxis(X, -1.0, 1.0),), time=T, time_range=(0.0, 1.0), fields=(field((20,) * 8),),
        equations=(PdeResidual("pde", residual, 1),), conditions=(),
        collocation=CollocationSettings(interior=args.points, method="sobol"),
        physics=(PhysicsTerm("pde", sp.Float(args.pde_scale), True),),
        solver=PdeSolverSettings("pinn", (("adam_steps", args.adam), ("lbfgs_steps", args.lbfgs), ("lr", 1e-3),
                                          ("tol", 1e-9), ("dtype", args.dtype))),
        parameters=(l1, l2))
    obs = observation("snaps.u", "Normal", (U, sigma.elements[0]), us, {"x": xs, "t": ts})
    ir = pde_model_ir("burgers_inverse", pde, [lam1, lam2, sigma], [obs], method=args.method,
                      options={"draws": 1000} if args.method == "laplace" else {})
    t0 = time.perf_counter()
    fit = run_pinn(ir, device=args.device, progress=report(args))
    seconds = time.perf_counter() - t0
    print(fit.summary())
    m1, m2 = float(fit.map_values["lambda1"]), float(fit.map_values["lambda2"])
    out = {"problem": f"inverse, noise {noise:.0%}", "lambda1": m1, "lambda2": m2,
           "lambda1_err": abs(m1 - 1) / 1, "lambda2_err": abs(m2 - NU) / NU, "seconds": seconds,
           "adam": fit.history.adam_steps, "lbfgs": fit.history.lbfgs_steps, "peak_memory_mib": peak_memory(args)}
    if args.method != "map":
        for name in ("lambda1", "lambda2"):
            d = fit.parameters[name].ravel()
            out[f"{name}_94"] = (float(np.quantile(d, 0.03)), float(np.quantile(d, 0.97)))
    return out


def peak_memory(args) -> float:
    if args.device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # process peak RSS, MiB


def report(args):
    def progress(step, total, loss):
        if step % args.every == 0 or step == total:
            print(f"  step {step}/{total}  loss {loss:.6g}", flush=True)
    return progress


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="?", default="all", choices=["forward", "inverse", "inverse-noisy", "all"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--points", type=int, default=10000, help="interior collocation points")
    ap.add_argument("--adam", type=int, default=2000)
    ap.add_argument("--lbfgs", type=int, default=5000)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--pde-scale", type=float, default=0.01)
    ap.add_argument("--sigma-prior", type=float, default=0.01, help="scale of the HalfNormal prior on the noise sd")
    ap.add_argument("--method", default="laplace", help="inference for the inverse problems")
    ap.add_argument("--every", type=int, default=500, help="progress lines every so many steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    if args.which in ("forward", "all"):
        rows.append(forward_problem(args))
    if args.which in ("inverse", "all"):
        rows.append(inverse_problem(args, 0.0))
    if args.which in ("inverse-noisy", "all"):
        rows.append(inverse_problem(args, 0.01))
    print(f"\n{args.device}, {args.threads} thread(s), {args.dtype}, {args.points} interior points, "
          f"Adam {args.adam} + L-BFGS {args.lbfgs} at most")
    for r in rows:
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
