"""Micro-benchmark of the numba ODE solver with forward sensitivities (Lotka-Volterra).

Run:  python benchmarks/ode_solver_speed.py
Prints compile times (2-state and 20-state systems) and microseconds per batched solve
(B=4 rows, 21 output times) with and without sensitivities, and through solve_ode
forward+backward.
"""

import time

import numpy as np
import sympy as sp
import torch

t_import = time.perf_counter()
from msml_dsl.backends.pyro.ode_autograd import solve_ode  # noqa: E402
from msml_dsl.backends.pyro.ode_solver import compile_ode_system  # noqa: E402

print(f"import (solver core; compiled once, then cached on disk): {time.perf_counter() - t_import:.2f} s")


def timeit(fn, min_time=1.0):
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n * 1e6


def main():
    t = sp.Symbol("t")
    u, v = sp.symbols("u v")
    a, b, g, d = sp.symbols("alpha beta gamma delta")
    t0 = time.perf_counter()
    lv = compile_ode_system(t, [u, v], [a, b, g, d], [(a - b * v) * u, (-g + d * u) * v])
    print(f"compile 2-state LV (codegen + kernels + warm-up): {time.perf_counter() - t0:.2f} s")

    # 20-state chain with 20 parameters: x_i' = k_i (x_{i-1} - x_i) - 0.1 x_i^2 + sin(t) * 0.01
    xs = sp.symbols("x0:20")
    ks = sp.symbols("k0:20")
    rhs = [ks[i] * ((xs[i - 1] if i else 1) - xs[i]) - sp.Rational(1, 10) * xs[i] ** 2 + sp.sin(t) / 100
           for i in range(20)]
    t0 = time.perf_counter()
    big = compile_ode_system(t, list(xs), list(ks), rhs)
    print(f"compile 20-state chain (20 params): {time.perf_counter() - t0:.2f} s")

    B = 4
    p = np.tile([0.55, 0.028, 0.80, 0.024], (B, 1)) * np.linspace(0.95, 1.05, B)[:, None]
    y0 = np.tile([34.0, 5.9], (B, 1))
    times = np.linspace(0.0, 20.0, 21)
    for rtol, atol in [(1e-5, 1e-3), (1e-6, 1e-8)]:
        for method in ["rk45", "auto", "stiff"]:
            us_s = timeit(lambda: lv.solve(y0, p, 0.0, times, method=method, rtol=rtol, atol=atol))
            steps_s = lv.last_nsteps.mean()
            us_n = timeit(lambda: lv.solve(y0, p, 0.0, times, method=method, rtol=rtol, atol=atol,
                                           sensitivities=False))
            steps_n = lv.last_nsteps.mean()
            print(f"LV B={B} T=21 {method:5s} rtol={rtol:g} atol={atol:g}: "
                  f"solve+sens {us_s:8.1f} us ({steps_s:.0f} steps/row) | "
                  f"solve only {us_n:8.1f} us ({steps_n:.0f} steps/row)")
        y0t = torch.tensor(y0, requires_grad=True)
        pt = torch.tensor(p, requires_grad=True)

        def fwd_bwd():
            out = solve_ode(lv, y0t, pt, 0.0, times, rtol=rtol, atol=atol)
            out.sum().backward()

        print(f"LV solve_ode forward+backward rk45 rtol={rtol:g} atol={atol:g}: {timeit(fwd_bwd):8.1f} us")

    y0b = np.ones((B, 20))
    pb = np.tile(np.linspace(0.5, 2.0, 20), (B, 1))
    tb = np.linspace(0.0, 10.0, 21)
    for method in ["rk45", "stiff"]:
        us = timeit(lambda: big.solve(y0b, pb, 0.0, tb, method=method, rtol=1e-6, atol=1e-8))
        print(f"20-state B={B} T=21 {method}: solve+sens {us:8.1f} us ({big.last_nsteps.mean():.0f} steps/row)")


if __name__ == "__main__":
    main()
