"""Make oxygen_probes.csv: steady oxygen in a tissue slice, measured by 25 probes with noise.

The reference is an independent finite-difference solve written here (401 x 401 nodes,
second-order, ghost nodes for the zero-flux edges) solved directly by SciPy's sparse LU —
not msml's own pseudo-time relaxation, so the fit also checks msml's discretisation.
Run: python simulate.py
"""

import numpy as np
from scipy.sparse import diags, identity, kron
from scipy.sparse.linalg import spsolve

D_TRUE, K_TRUE, SIGMA_TRUE = 1.0, 4.0, 0.02
N = 401
PROBES = np.arange(0.1, 1.0, 0.2)   # 5 x 5 probes, mm


def source(x, y):
    return 20 * np.exp(-((x - 0.6) ** 2 + (y - 0.5) ** 2) / 0.05)


def reference(d=D_TRUE, k=K_TRUE, n=N):
    g = np.linspace(0.0, 1.0, n)
    h = g[1] - g[0]
    # 1-D second differences: Dirichlet c = 1 at x = 0 (row 0 fixed), zero flux elsewhere (ghosts)
    second = diags([np.ones(n - 1), -2 * np.ones(n), np.ones(n - 1)], [-1, 0, 1], format="lil")
    second[0, 1] = 2.0
    second[n - 1, n - 2] = 2.0
    second = second.tocsr() / h ** 2
    eye = identity(n, format="csr")
    A = (d * (kron(second, eye) + kron(eye, second)) - k * kron(eye, eye)).tolil()   # index = i * n + j (x, y)
    X, Y = np.meshgrid(g, g, indexing="ij")
    b = -source(X, Y).ravel()
    for j in range(n):            # the perfused edge x = 0
        row = j
        A.rows[row], A.data[row] = [row], [1.0]
        b[row] = 1.0
    c = spsolve(A.tocsr(), b).reshape(n, n)
    return g, c


if __name__ == "__main__":
    from scipy.interpolate import RegularGridInterpolator

    rng = np.random.default_rng(20261128)
    g, c = reference()
    interp = RegularGridInterpolator((g, g), c)
    with open("oxygen_probes.csv", "w") as fh:
        fh.write("x_mm,y_mm,oxygen\n")
        for x in PROBES:
            for y in PROBES:
                fh.write(f"{x:.1f},{y:.1f},{interp([[x, y]])[0] + SIGMA_TRUE * rng.normal():.5f}\n")
