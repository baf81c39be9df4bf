"""Which Lorenz data design pins fy[y] to 2 %?  A Laplace approximation per design.

For a design (number of runs, sampling interval, run length, runs started off the attractor),
``models/lorenz_sysid/simulate.py`` makes the data (same seed and 1 % noise), the model file of
that folder (its ``experiment run = runs.run`` takes any number of runs) is compiled, its MAP is
found from the derivative warm start, and the Hessian of the log density there (central
differences of the compiled gradient) gives the posterior covariance. Printed per true
coefficient: MAP error and posterior sd (both relative to the truth); then the coordinates fy[y]
is most correlated with, and fy[y]'s sd if the 23 spurious candidates were known to be zero.
On the four-run file the Laplace sd of fy[y] (6.96 %) matches NUTS's 7 % (the model README).

    python benchmarks/lorenz_design.py --runs 8 --dt 0.001          # minutes: compile, MAP, Hessian
    python benchmarks/lorenz_design.py --runs 8 --box 4             # 4 runs from random states
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lorenz_sysid"
sys.path.insert(0, str(ROOT))


def laplace(model, z: np.ndarray, h: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """(Hessian, covariance) of the potential (no Jacobian: the mode's own scale) at ``z``."""
    program = model.program
    H = np.zeros((z.size, z.size))
    for i in range(z.size):
        e = np.zeros(z.size)
        e[i] = h
        H[i] = (program.potential_and_grad((z + e)[None], jacobian=False)[1][0]
                - program.potential_and_grad((z - e)[None], jacobian=False)[1][0]) / (2 * h)
    H = 0.5 * (H + H.T)
    return H, np.linalg.inv(H)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--dt", type=float, default=0.01)
    parser.add_argument("--t-end", type=float, default=1.0)
    parser.add_argument("--box", type=int, default=0, help="runs started from random states off the attractor")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import msml_dsl
    from msml_dsl.inference.runner import map_estimate
    from tests.support.model_scripts import load_model_script

    sim = load_model_script(MODEL)
    folder = Path(tempfile.mkdtemp(prefix="lorenz_design_"))
    times, noisy, _ = sim.simulate(args.runs, args.dt, args.t_end, box=args.box)
    sim.write_runs(folder / "lorenz.csv", times, noisy)
    text = (MODEL / "model.msml").read_text().replace("time t in [0, 1]", f"time t in [0, {args.t_end:g}]")
    (folder / "model.msml").write_text(text)
    t0 = time.perf_counter()
    model = msml_dsl.compile_file(folder / "model.msml")
    program = model.program
    t1 = time.perf_counter()
    result, _ = map_estimate(program, {"seed": 1, "init": "derivatives"})
    t2 = time.perf_counter()
    z = result.z.astype(float)
    H, cov = laplace(model, z)
    print(f"{args.runs} runs ({args.box} off the attractor) x {times.size} rows every {args.dt:g} over "
          f"[0, {args.t_end:g}]: compile {t1 - t0:.0f} s, MAP {t2 - t1:.0f} s, Laplace {time.perf_counter() - t2:.0f} s")
    labels, scale = {}, {}
    for term in model.ir.unknowns:
        zp = next(p for p in term.parameters if p.name == f"{term.name}_z")
        offset = program.layout[zp.name].offset
        for k, (c, zk) in enumerate(zip(term.candidates, zp.elements)):
            labels[offset + k] = (term.name, c.label)
            scale[offset + k] = float(c.coefficient.diff(zk))   # spike-and-slab: c_k is linear in z_k
    true = [i for i, (t, lab) in labels.items() if lab in sim.TRUE_TERMS[t]]
    for i in true:
        t, lab = labels[i]
        truth = sim.TRUE_TERMS[t][lab]
        value, sd = scale[i] * z[i], abs(scale[i]) * np.sqrt(cov[i, i])
        print(f"  {t}[{lab}]: truth {truth:8.4f}  MAP {value:9.4f}  error {100 * abs(value / truth - 1):5.2f} %  "
              f"posterior sd {100 * sd / abs(truth):5.2f} %")
    iy = next(i for i, key in labels.items() if key == ("fy", "y"))
    sd = np.sqrt(np.diag(cov))
    corr = cov[iy] / (sd[iy] * sd)
    names = [n for p in model.ir.parameters for n in ([f"{p.name}[{j + 1}]" for j in range(p.shape[0])]
                                                      if p.shape else [p.name])]
    top = np.argsort(-np.abs(corr))[1:5]
    print("  fy[y] correlates with " + ", ".join(
        f"{'%s[%s]' % labels[j] if j in labels else names[j]} {corr[j]:+.2f}" for j in top))
    keep = [i for i in range(z.size) if i in true or i not in labels]
    oracle = np.linalg.inv(H[np.ix_(keep, keep)])[keep.index(iy), keep.index(iy)]
    print(f"  fy[y] sd with the spurious candidates fixed at zero: {100 * abs(scale[iy]) * np.sqrt(oracle):.2f} %")


if __name__ == "__main__":
    main()
