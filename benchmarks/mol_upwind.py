"""Upwind schemes of the method of lines (``solver mol(scheme=central|upwind1|upwind2)``).

1. Convergence against an analytic solution: u_t + u_x = 0.001 u_xx on [-1, 1], periodic,
   u(x, 0) = sin(pi x), so u = exp(-0.001 pi^2 t) sin(pi (x - t)); max error at t = 0.5 on 40,
   80 and 160 nodes and the observed orders log2(e_n / e_2n).
2. Burgers at low viscosity (nu = 0.01/pi, the front 1/600 of the domain wide) against the
   Cole-Hopf solution (models/burgers/simulate.py) at t = 0.25, 0.5, 0.75, 1 on coarse grids:
   max error, relative L2 error, and the overshoot max(u) - max(u_exact) over the four times
   (the oscillations central differences make behind an unresolved front).

    python benchmarks/mol_upwind.py [--part convergence|burgers|all] [--burgers-points 101,201]

Compilation of each grid's kernels is included in the times (cached on disk afterwards).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCHEMES = ("central", "upwind1", "upwind2")

ADVECTION = """
model adv
space x in [-1, 1]
time t in [0, 0.5]
field u(x, t) : mlp()
param a ~ Normal(1, 1)
param nu ~ LogNormal(-6, 1)
equation der(u, t) + {advection} = nu * der(u, x, x)
boundary u(-1, t) = u(1, t)
initial u(x, 0) = sin(pi * x)
data d = csv("d.csv")
observe d.u ~ Normal(u, 0.1)
solver mol(points={n}, scheme={scheme}, method=rk45, rtol=1e-10, atol=1e-12)
"""


def advection_model(folder, n: int, scheme: str, advection: str = "a * der(u, x)"):
    """The periodic advection-diffusion model on n nodes (a one-row data file is written to folder)."""
    import msml_dsl

    Path(folder, "d.csv").write_text("x,t,u\n0.0,0.5,0.5\n")
    return msml_dsl.compile_source(ADVECTION.format(n=n, scheme=scheme, advection=advection), base_dir=folder)


def convergence(grids=(40, 80, 160)) -> dict:
    """{scheme: (max errors at t = 0.5 per grid, observed orders)}."""

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in SCHEMES:
            errors = []
            for n in grids:
                t0 = time.perf_counter()
                m = advection_model(tmp, n, scheme)
                sol = m.program.evaluate_draws({"a": np.array([1.0]), "nu": np.array([0.001])}, seed=1,
                                               predictive=False)["solution"][0][-1]
                x = -1 + 2 * np.arange(n) / n
                T = m.ir.ode.output_times[-1]
                errors.append(float(np.abs(sol - np.exp(-0.001 * math.pi ** 2 * T) * np.sin(math.pi * (x - T))).max()))
                print(f"  {scheme:<8} {n:4d} nodes: max error {errors[-1]:.3e} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
            out[scheme] = (errors, np.log2(np.array(errors[:-1]) / np.array(errors[1:])).tolist())
    return out


def burgers(points=(101, 201)) -> list[dict]:
    spec = importlib.util.spec_from_file_location("burgers_simulate", ROOT / "models" / "burgers" / "simulate.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    nu, times = 0.01 / math.pi, (0.25, 0.5, 0.75, 1.0)
    rows = []
    for n in points:
        for scheme in SCHEMES:
            t0 = time.perf_counter()
            x, u = sim.mol_solution(nu, n, times, method="rk45", scheme=scheme)
            ref = sim.reference(x, np.array(times), nu)
            rows.append({"points": n, "scheme": scheme, "max_err": float(np.abs(u - ref).max()),
                         "rel_l2": float(np.linalg.norm(u - ref) / np.linalg.norm(ref)),
                         "overshoot": float(u.max() - ref.max()), "seconds": time.perf_counter() - t0})
            r = rows[-1]
            print(f"  {n:4d} nodes {scheme:<8}: max error {r['max_err']:.3e}, rel L2 {r['rel_l2']:.3e}, "
                  f"overshoot {r['overshoot']:+.3e} ({r['seconds']:.0f} s)", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="all", choices=("convergence", "burgers", "all"))
    ap.add_argument("--burgers-points", default="101,201")
    args = ap.parse_args()
    if args.part in ("convergence", "all"):
        print("1. u_t + u_x = 0.001 u_xx, periodic: max error at t = 0.5")
        res = convergence()
        print(f"\n{'scheme':<9} {'40':>10} {'80':>10} {'160':>10}   orders")
        for s, (e, o) in res.items():
            print(f"{s:<9} " + " ".join(f"{v:10.3e}" for v in e) + "   " + ", ".join(f"{v:.2f}" for v in o))
    if args.part in ("burgers", "all"):
        print("\n2. Burgers, nu = 0.01/pi, against Cole-Hopf at t = 0.25, 0.5, 0.75, 1")
        rows = burgers(tuple(int(p) for p in args.burgers_points.split(",")))
        print(f"\n{'nodes':>5} {'scheme':<9} {'max error':>10} {'rel L2':>10} {'overshoot':>10} {'s':>6}")
        for r in rows:
            print(f"{r['points']:>5} {r['scheme']:<9} {r['max_err']:10.3e} {r['rel_l2']:10.3e} "
                  f"{r['overshoot']:+10.3e} {r['seconds']:6.0f}")


if __name__ == "__main__":
    main()
