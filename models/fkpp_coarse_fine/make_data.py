"""Writes scans.csv (noisy densities) and truth.csv (held-out noise-free field) for fkpp_coarse_fine.

The truth is the Fisher–KPP front of models/fisher_kpp (D = 0.05 mm^2/day, r = 0.3 /day,
u(x, 0) = 0.8 exp(-x^2 / 0.5), zero flux at x = 0 and 10 mm) from that folder's independent
reference solve (numpy method of lines on 1,001 nodes, SciPy BDF at rtol 1e-10).

Scans: on days 4, 8, 12, 16 and 20, the densities at 20 positions drawn uniformly over [0, 10] mm,
anew for each session (rounded to 0.01 mm; positions seed 1129): a scanner's voxels are not aligned
with the model's grid, and a patient is repositioned between sessions, so the positions fall at every
phase of the coarse grid. Noise Normal(0, 0.03), seed 20261129 (its own generator, so that other
noise seeds keep the positions). truth.csv: the noise-free field on 41 positions x 20 days (1 to 20),
held out.

    python make_data.py                 # scans.csv and truth.csv here
    write_scans(path, seed)             # the same design with other noise (benchmarks/multifidelity.py --replicates)
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fisher_kpp"))
from simulate import reference  # noqa: E402

SIGMA = 0.03
SCAN_DAYS = [4.0, 8.0, 12.0, 16.0, 20.0]
PROBES_PER_SCAN = 20
TRUTH_DAYS = [float(d) for d in range(1, 21)]
TRUTH_X = np.linspace(0.0, 10.0, 41)


def positions():
    """Each session's probe positions (mm), sorted."""
    rng = np.random.default_rng(1129)
    return [np.sort(rng.uniform(0.0, 10.0, PROBES_PER_SCAN)).round(2) for _ in SCAN_DAYS]


def write_scans(path, seed=20261129):
    rng = np.random.default_rng(seed)
    x, u = reference(SCAN_DAYS)
    with open(path, "w") as fh:
        fh.write("day,position_mm,density\n")
        for d, field, xs in zip(SCAN_DAYS, u, positions()):
            for xi, ui in zip(xs, np.interp(xs, x, field)):
                fh.write(f"{d:g},{xi:g},{ui + SIGMA * rng.normal():.5f}\n")


if __name__ == "__main__":
    write_scans("scans.csv")
    x, u = reference(TRUTH_DAYS)
    with open("truth.csv", "w") as fh:
        fh.write("day,position_mm,density\n")
        for d, field in zip(TRUTH_DAYS, u):
            for xi, ui in zip(TRUTH_X, np.interp(TRUTH_X, x, field)):
                fh.write(f"{d:g},{xi:g},{ui:.8f}\n")
