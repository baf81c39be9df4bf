"""Make fisher_kpp_hidden.csv: a Fisher–KPP front, densely probed, for learning its reaction term.

Truth: u_t = D u_xx + r u (1 - u), D = 0.05 mm^2/day, r = 0.3 /day, zero-flux edges,
u(x, 0) = 0.8 exp(-x^2 / 0.5) — the reference solve of models/fisher_kpp (1,001 nodes, SciPy BDF,
rtol 1e-10, independent of msml's solver), imported from there. Probes every 0.5 mm (20 of them)
on days 2, 4, ..., 20, Normal noise with sd 0.02; the model treats the reaction r u (1 - u) as
unknown. Run: python simulate.py
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np


def _fisher_kpp_reference():
    """models/fisher_kpp/simulate.py, loaded under its own name (every model folder has a 'simulate')."""
    name = "simulate_fisher_kpp"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "fisher_kpp"
                                                      / "simulate.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


_reference = _fisher_kpp_reference()
D_TRUE, R_TRUE, reference = _reference.D_TRUE, _reference.R_TRUE, _reference.reference

SIGMA_TRUE = 0.02
TIMES = [float(d) for d in range(2, 21, 2)]
PROBES = np.arange(0.25, 10.0, 0.5)               # mm


def growth(u):
    """The reaction term the model learns."""
    return R_TRUE * u * (1 - u)


if __name__ == "__main__":
    rng = np.random.default_rng(20261129)
    x, u = reference(TIMES)
    with open(Path(__file__).resolve().parent / "fisher_kpp_hidden.csv", "w") as fh:
        fh.write("day,position_mm,density\n")
        for k, t in enumerate(TIMES):
            for xi, ui in zip(PROBES, np.interp(PROBES, x, u[k])):
                fh.write(f"{t:g},{xi:g},{ui + SIGMA_TRUE * rng.normal():.5f}\n")
    print(f"D = {D_TRUE}, r = {R_TRUE}, sigma = {SIGMA_TRUE}; {len(TIMES) * len(PROBES)} rows")
