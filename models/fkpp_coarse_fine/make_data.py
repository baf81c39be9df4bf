"""Writes scans.csv (noisy densities) and truth.csv (held-out noise-free field) for fkpp_coarse_fine.

The truth is the Fisher–KPP front of models/fisher_kpp (D = 0.05 mm^2/day, r = 0.3 /day,
u(x, 0) = 0.8 exp(-x^2 / 0.5), zero flux at x = 0 and 10 mm) from that folder's independent
reference solve (numpy method of lines on 1,001 nodes, SciPy BDF at rtol 1e-10). Scans: the
densities at 10 probes (0.5 to 9.5 mm) on days 4, 8, 12, 16 and 20 with Normal(0, 0.03) noise,
seed 20261129. truth.csv: the noise-free field on 41 positions x 20 days (1 to 20), held out.
Run: python make_data.py
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fisher_kpp"))
from simulate import PROBES, reference  # noqa: E402

SIGMA = 0.03
SCAN_DAYS = [4.0, 8.0, 12.0, 16.0, 20.0]
TRUTH_DAYS = [float(d) for d in range(1, 21)]
TRUTH_X = np.linspace(0.0, 10.0, 41)

if __name__ == "__main__":
    rng = np.random.default_rng(20261129)
    days = sorted(set(SCAN_DAYS) | set(TRUTH_DAYS))
    x, u = reference(days)
    field = {d: u[k] for k, d in enumerate(days)}
    with open("scans.csv", "w") as fh:
        fh.write("day,position_mm,density\n")
        for d in SCAN_DAYS:
            for xi, ui in zip(PROBES, np.interp(PROBES, x, field[d])):
                fh.write(f"{d:g},{xi:g},{ui + SIGMA * rng.normal():.5f}\n")
    with open("truth.csv", "w") as fh:
        fh.write("day,position_mm,density\n")
        for d in TRUTH_DAYS:
            for xi, ui in zip(TRUTH_X, np.interp(TRUTH_X, x, field[d])):
                fh.write(f"{d:g},{xi:g},{ui:.8f}\n")
