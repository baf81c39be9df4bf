"""Make fisher_kpp.csv: a Fisher–KPP front observed with noise, from a fine independent solve.

The reference is an independent method-of-lines solve written here in numpy (1,001 nodes,
second-order central differences, zero-flux edges by ghost nodes) integrated by SciPy's
BDF with a sparse Jacobian at rtol 1e-10 — not msml's own solver, so the model's fit
also checks msml's discretisation. Run: python simulate.py
"""

import numpy as np
from scipy.integrate import solve_ivp
from scipy.sparse import diags

D_TRUE, R_TRUE, SIGMA_TRUE = 0.05, 0.3, 0.03     # mm^2/day, 1/day, cell fraction
L, N = 10.0, 1001
TIMES = [5.0, 10.0, 15.0, 20.0]
PROBES = np.arange(0.5, 10.0, 1.0)               # mm


def initial(x):
    return 0.8 * np.exp(-x ** 2 / 0.5)


def reference(times, d=D_TRUE, r=R_TRUE, n=N):
    x = np.linspace(0.0, L, n)
    h = x[1] - x[0]
    lap = diags([np.ones(n - 1), -2 * np.ones(n), np.ones(n - 1)], [-1, 0, 1], format="lil")
    lap[0, 1] = 2.0          # ghost node: u_x = 0 at both edges
    lap[n - 1, n - 2] = 2.0
    lap = (lap / h ** 2).tocsr()

    def rhs(_, u):
        return d * (lap @ u) + r * u * (1 - u)

    def jac(_, u):
        return d * lap + diags(r * (1 - 2 * u))

    sol = solve_ivp(rhs, (0.0, max(times)), initial(x), method="BDF", t_eval=times, jac=jac,
                    rtol=1e-10, atol=1e-12)
    return x, sol.y.T


if __name__ == "__main__":
    rng = np.random.default_rng(20261128)
    x, u = reference(TIMES)
    rows = []
    for k, t in enumerate(TIMES):
        truth = np.interp(PROBES, x, u[k])
        for xi, ui in zip(PROBES, truth):
            rows.append((t, xi, ui + SIGMA_TRUE * rng.normal()))
    with open("fisher_kpp.csv", "w") as fh:
        fh.write("day,position_mm,density\n")
        for t, xi, v in rows:
            fh.write(f"{t:g},{xi:g},{v:.5f}\n")
