"""Time per gradient solve (Y and forward sensitivities) against the batch size: numba vs batched torch.

Run:  python benchmarks/ode_solver_batch.py [--batches 1 4 64 256 1024] [--min-time 1.0] [--threads N]

Lotka--Volterra (alpha, beta, gamma, delta; 2 states), t in [0, 20], 20 output
times, rtol 1e-6, atol 1e-8, rk45, sensitivities with respect to the 4 parameters
and the 2 initial values; every row has its own parameters (+-10 %).  The numba
solver (``ode_solver.py``) goes through the rows one after another on one core;
the torch solver (``ode_torch.py``) steps all rows in lockstep, on the CPU and,
when ``torch.cuda.is_available()``, on the GPU.  Prints a Markdown table: ms per
call, µs per row, and the torch/numba time ratio (below 1: torch is faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sympy as sp
import torch

from msml_dsl.backends.pyro.ode_solver import compile_ode_system
from msml_dsl.backends.pyro.ode_torch import compile_torch_ode_system

LV_P = np.array([0.55, 0.028, 0.80, 0.024])
LV_Y0 = np.array([34.0, 5.9])
TIMES = np.linspace(1.0, 20.0, 20)
OPTS = dict(method="rk45", rtol=1e-6, atol=1e-8, sensitivities=True, y0_sensitivities=True)


def seconds_per_call(fn, min_time, sync=lambda: None):
    """Best-of mean over repeats: one warm-up call, then calls until min_time has passed (at least 2)."""
    fn()
    sync()
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < min_time:
        fn()
        sync()
        n += 1
    return (time.perf_counter() - start) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 64, 256, 1024])
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of repeats per measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t = sp.Symbol("t")
    u, v = sp.symbols("u v")
    a, b, g, d = sp.symbols("alpha beta gamma delta")
    rhs = [(a - b * v) * u, (-g + d * u) * v]
    numba_sys = compile_ode_system(t, [u, v], [a, b, g, d], rhs)
    torch_sys = compile_torch_ode_system(t, [u, v], [a, b, g, d], rhs)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"Lotka-Volterra, {len(TIMES)} outputs on [0, 20], rk45 rtol 1e-6, sensitivities for 4 params + 2 y0; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)"
          + (f", GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else ", no GPU"))

    header = ["B", "steps/row", "numba ms", "numba µs/row"]
    for dev in devices:
        header += [f"torch-{dev} ms", f"torch-{dev} µs/row", f"torch-{dev} ÷ numba"]
    rows = []
    rng = np.random.default_rng(0)
    for B in args.batches:
        p = LV_P * rng.uniform(0.9, 1.1, size=(B, 4))
        y0 = np.tile(LV_Y0, (B, 1))
        t_numba = seconds_per_call(lambda: numba_sys.solve(y0, p, 0.0, TIMES, **OPTS), args.min_time)
        Yn = numba_sys.solve(y0, p, 0.0, TIMES, **OPTS)[0]
        row = [str(B), f"{numba_sys.last_nsteps.mean():.0f}", f"{t_numba * 1e3:.2f}", f"{t_numba / B * 1e6:.1f}"]
        for dev in devices:
            y0_t = torch.as_tensor(y0, device=dev)
            p_t = torch.as_tensor(p, device=dev)
            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            t_torch = seconds_per_call(lambda: torch_sys.solve(y0_t, p_t, 0.0, TIMES, **OPTS), args.min_time, sync)
            Yt, _, _, ok = torch_sys.solve(y0_t, p_t, 0.0, TIMES, **OPTS)
            assert bool(ok.all()) and np.allclose(Yt.cpu().numpy(), Yn, rtol=1e-8, atol=1e-8), "torch != numba"
            row += [f"{t_torch * 1e3:.2f}", f"{t_torch / B * 1e6:.1f}", f"{t_torch / t_numba:.2f}"]
        rows.append(row)
        print(" ".join(row), flush=True)

    print()
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---:" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
