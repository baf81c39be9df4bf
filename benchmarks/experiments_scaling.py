"""Cost of a gradient as the number of experiments grows, with and without structural pruning.

Experiments are solved as one block-diagonal ODE system (data/experiments.py): E copies of the
states, each experiment's `per` parameters. Every state used to carry sensitivities to every
experiment's parameters, most of them zero by structure, so the fused kernel's work grew as
E^2. The kernel now writes only the structurally non-zero sensitivities
(ode_solver.structural_sensitivities); the baseline row of each size is the same model with
that pruning switched off, compiled and timed in this process.

    python benchmarks/experiments_scaling.py [--experiments 2,4,8,16] [--repeats 30]

Model: one-compartment elimination, per-subject k and V (so the initial value 100 / V depends
on a parameter and the initial-value columns are tracked too), a shared noise sd; 8 samples per
subject; 4 chains at a prior draw.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = """model pk "One compartment, per-subject elimination"
time t in [0, 24]
state C
param k ~ LogNormal(-1.5, 0.5) per subject
param V ~ LogNormal(2, 0.3) per subject
param sigma ~ HalfNormal(0.5)
experiment subject = d.subject
equation der(C) = -k * C
init C = 100 / V
data d = csv("d.csv")
observe d.C ~ LogNormal(log(C), sigma)
infer nuts(chains=4)
"""


def _write_data(folder: Path, experiments: int) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for s in range(1, experiments + 1):
        k, V = np.exp(rng.normal(-1.5, 0.3)), np.exp(rng.normal(2, 0.2))
        for t in np.linspace(1, 24, 8):
            rows.append(f"{s},{t},{100 / V * np.exp(-k * t) * np.exp(0.1 * rng.normal()):.6g}\n")
    (folder / "d.csv").write_text("subject,t,C\n" + "".join(rows))
    (folder / "model.msml").write_text(MODEL)


def _time_gradient(folder: Path, repeats: int, pruned: bool) -> tuple[float, float, int]:
    import msml_dsl
    from msml_dsl.backends.pyro import ode_solver

    original = ode_solver.structural_sensitivities
    if not pruned:   # every state carries every column, as before
        ode_solver.structural_sensitivities = lambda states, params, P, m: [set(range(m)) for _ in states]
    os.environ["MSML_CACHE_DIR"] = tempfile.mkdtemp(prefix="msml_bench_")   # fresh kernels per variant
    try:
        t0 = time.perf_counter()
        model = msml_dsl.compile_file(folder / "model.msml", device="cpu")
        program = model.program
        z = program.to_unconstrained(program.sample_prior(4, seed=3))
        program.potential_and_grad(z)      # compiles the kernels it needs
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t1 = time.perf_counter()
            program.potential_and_grad(z)
            times.append(time.perf_counter() - t1)
        written = program.system.source.split("def f_sens(")[1].count("\n    out[") if program.system.f_sens else 0   # assignment lines
        return float(np.median(times)), compile_s, written
    finally:
        ode_solver.structural_sensitivities = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", default="2,4,8,16")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print("| experiments | states | columns | f_sens assignment lines (all → pruned) | gradient, all columns | "
          "gradient, pruned | speed-up | compile, all → pruned |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for E in [int(x) for x in args.experiments.split(",")]:
        folder = Path(tempfile.mkdtemp(prefix=f"msml_exp{E}_"))
        _write_data(folder, E)
        full, c_full, w_full = _time_gradient(folder, args.repeats, pruned=False)
        pruned, c_pruned, w_pruned = _time_gradient(folder, args.repeats, pruned=True)
        columns = 2 * E + E   # k and V per subject, and the initial-value columns
        print(f"| {E} | {E} | {columns} | {w_full} → {w_pruned} | {full * 1e6:,.0f} µs | {pruned * 1e6:,.0f} µs | "
              f"{full / pruned:.2f}× | {c_full:.1f} s → {c_pruned:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
