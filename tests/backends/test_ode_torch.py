"""Tests for the batched torch ODE solver (ode_torch.py) and its dispatch in solve_ode.

References: the numba solver (same methods and controllers, so agreement is close
to rounding), scipy's solve_ivp at tight tolerances, analytic solutions and
central finite differences.  Finite differences run as extra rows of one batch.
"""

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp

from msml_dsl.backends.pyro.ode_autograd import solve_ode
from msml_dsl.backends.pyro.ode_solver import compile_ode_system
from msml_dsl.backends.pyro.ode_torch import TorchOdeSystem, compile_torch_ode_system

LV_P = np.array([0.55, 0.028, 0.80, 0.024])
LV_Y0 = np.array([34.0, 5.9])
ROB_K = np.array([0.04, 1e4, 3e7])


def lv_rhs(t, y, p=LV_P):
    a, b, g, d = p
    return [(a - b * y[1]) * y[0], (-g + d * y[0]) * y[1]]


def scipy_ref(fun, y0, times, t0=0.0, method="DOP853", **kw):
    r = solve_ivp(fun, (t0, times[-1]), y0, method=method, rtol=1e-12, atol=1e-12, t_eval=times, **kw)
    assert r.success
    return r.y.T


def both(states, params, rhs):
    """The same system for both solvers: (numba OdeSystem, TorchOdeSystem).

    states, params: names separated by spaces; rhs(t, y, p) builds the SymPy right-hand side.
    """
    t = sp.Symbol("t")
    y, p = sp.symbols(states, seq=True), sp.symbols(params, seq=True)
    f = rhs(t, y, p)
    return compile_ode_system(t, y, p, f, warmup=False), compile_torch_ode_system(t, y, p, f)


@pytest.fixture(scope="module")
def lv():
    return both("u v", "alpha beta gamma delta",
                lambda t, y, p: [(p[0] - p[1] * y[1]) * y[0], (-p[2] + p[3] * y[0]) * y[1]])


@pytest.fixture(scope="module")
def decay():
    return both("x", "k", lambda t, y, p: [-p[0] * y[0]])


@pytest.fixture(scope="module")
def robertson():
    def rhs(t, y, k):
        r1, r2, r3 = k[0] * y[0], k[1] * y[1] * y[2], k[2] * y[1] ** 2
        return [-r1 + r2, r1 - r2 - r3, r3]

    return both("y1 y2 y3", "k1 k2 k3", rhs)


def tt(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# --------------------------------------------------------------------------- code generation
def test_generated_functions_match_lambdify():
    t = sp.Symbol("t", real=True)
    a, b = sp.symbols("a b", real=True)
    k1, k2 = sp.symbols("k1 k2", real=True)
    rhs = [
        sp.exp(-k1 * a) + sp.log(1 + b**2) + sp.sqrt(1 + a**2) * sp.sin(t) - sp.cos(b) * sp.tan(a / 3)
        + sp.exp(2) * k2,  # a constant function value: folded to a float
        sp.tanh(a - b) + sp.Abs(a) ** sp.Rational(3, 2) + sp.Min(a, b) * sp.Max(k2, a) + sp.Max(a, 0)
        + (1 + b**2) ** 0.7 + sp.Piecewise((a * k2, a > b), (b**2, True)) + t**2 * k1 + 3
        + sp.Piecewise((a, sp.And(a > 0, b < 1)), (b, sp.Or(b > 1, sp.Not(a < 2))), (1, True)),
    ]
    sys_ = compile_torch_ode_system(t, [a, b], [k1, k2], rhs)
    assert sys_.has_time
    M = sp.Matrix(rhs)
    refs = [sp.lambdify([t, a, b, k1, k2], e, "numpy")
            for e in (M, M.jacobian([a, b]), M.jacobian([k1, k2]), M.diff(t),
                      M.jacobian([a, b]).diff(t), M.jacobian([k1, k2]).diff(t))]
    pts = np.array([[0.3, 0.4, -0.2, 0.7, 1.1], [1.7, -0.5, 0.9, 1.3, -0.4], [0.0, 2.0, 2.0, 0.1, 3.0]])
    tv, y, p = tt(pts[:, 0]), tt(pts[:, 1:3]), tt(pts[:, 3:])
    f = sys_.f_only(tv, y, p)
    f2, jy, jp = sys_.f_jac(tv, y, p, 3)  # J_p padded to m=3 columns
    ft, jyt, jpt = sys_.t_deriv(tv, y, p, 2)
    assert f.shape == (3, 2, 1) and jy.shape == (3, 2, 2) and jp.shape == (3, 2, 3)
    assert torch.all(jp[:, :, 2] == 0)
    for r, row in enumerate(pts):
        want = [np.asarray(g(*row), dtype=float) for g in refs]
        np.testing.assert_allclose(f[r].numpy(), want[0], rtol=1e-13)
        np.testing.assert_allclose(f2[r].numpy(), want[0], rtol=1e-13)
        np.testing.assert_allclose(jy[r].numpy(), want[1], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(jp[r, :, :2].numpy(), want[2], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ft[r].numpy(), want[3], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(jyt[r].numpy(), want[4], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(jpt[r].numpy(), want[5], rtol=1e-12, atol=1e-14)


def test_unknown_symbol_and_bad_inputs(decay):
    t, x, k, q = sp.symbols("t x k q")
    with pytest.raises(ValueError, match="unknown symbols"):
        compile_torch_ode_system(t, [x], [k], [-k * x * q])
    _, ts = decay
    with pytest.raises(ValueError, match="method"):
        ts.solve(tt([[1.0]]), tt([[1.0]]), 0.0, [1.0], method="euler")
    with pytest.raises(ValueError, match="sorted"):
        ts.solve(tt([[1.0]]), tt([[1.0]]), 0.0, [2.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        ts.solve(tt([[1.0, 2.0]]), tt([[1.0]]), 0.0, [1.0])


# --------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("method,rtol", [("rk45", 1e-8), ("stiff", 1e-7), ("auto", 1e-8)])
def test_exponential_decay_analytic(decay, method, rtol):
    _, ts = decay
    times = np.linspace(0.0, 5.0, 11)
    k = np.array([[0.7], [1.3]])
    y0 = np.array([[2.0], [0.5]])
    Y, SP, S0, ok = ts.solve(tt(y0), tt(k), 0.0, times, method=method, rtol=rtol, atol=rtol * 1e-2)
    assert ok.all() and Y.dtype == torch.float64
    exact = y0[:, None, :] * np.exp(-k[:, None, :] * times[None, :, None])
    np.testing.assert_allclose(Y.numpy(), exact, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(SP[..., 0, 0].numpy(), -times * exact[..., 0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(S0[..., 0, 0].numpy(), np.exp(-k * times), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("method,t_end,rtol,tol", [("rk45", 20.0, 1e-8, 1e-6), ("auto", 20.0, 1e-8, 1e-6),
                                                  ("stiff", 5.0, 1e-6, 1e-4)])
def test_lotka_volterra_vs_scipy_and_numba(lv, method, t_end, rtol, tol):
    ns, ts = lv
    times = np.linspace(0.0, t_end, 21)
    kw = dict(method=method, rtol=rtol, atol=rtol * 1e-2)
    Y, SP, S0, ok = ts.solve(tt(LV_Y0[None]), tt(LV_P[None]), 0.0, times, **kw)
    assert ok.all()
    ref = scipy_ref(lv_rhs, LV_Y0, times)
    np.testing.assert_allclose(Y[0].numpy(), ref, rtol=tol, atol=tol)
    # same method, tableau and controller as the numba solver: the same steps, values to rounding
    Yn, SPn, S0n, okn = ns.solve(LV_Y0[None], LV_P[None], 0.0, times, **kw)
    assert int(ts.last_nsteps[0]) == int(ns.last_nsteps[0])
    np.testing.assert_allclose(Y.numpy(), Yn, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(SP.numpy(), SPn, rtol=1e-8, atol=1e-8 * np.abs(SPn).max())
    np.testing.assert_allclose(S0.numpy(), S0n, rtol=1e-8, atol=1e-8 * np.abs(S0n).max())


def test_time_dependent_forcing_and_sensitivity():
    ns, ts = both("x", "k", lambda t, y, p: [p[0] * sp.cos(t) * y[0] + sp.sin(3 * t)])
    assert ts.has_time
    times = np.linspace(0.0, 3.0, 7)
    ref = scipy_ref(lambda s, y: [0.8 * np.cos(s) * y[0] + np.sin(3 * s)], [1.0], times)
    Y, SP, _, ok = ts.solve(tt([[1.0]]), tt([[0.8]]), 0.0, times, rtol=1e-9, atol=1e-11)
    assert ok.all()
    np.testing.assert_allclose(Y[0].numpy(), ref, rtol=1e-6, atol=1e-7)
    e = 1e-5  # central differences, both perturbations in one batch
    Yfd, *_ = ts.solve(tt([[1.0], [1.0]]), tt([[0.8 + e], [0.8 - e]]), 0.0, times, rtol=1e-11,
                       atol=1e-13, sensitivities=False)
    np.testing.assert_allclose(SP[0, :, 0, 0].numpy(), ((Yfd[0] - Yfd[1]) / (2 * e))[:, 0].numpy(),
                               rtol=1e-4, atol=1e-6)
    # the Rosenbrock method with df/dt terms: against scipy and the numba solver's sensitivities
    kw = dict(method="stiff", rtol=1e-7, atol=1e-9)
    Y, SP, _, ok = ts.solve(tt([[1.0]]), tt([[0.8]]), 0.0, times, **kw)
    assert ok.all()
    np.testing.assert_allclose(Y[0].numpy(), ref, rtol=1e-5, atol=1e-6)
    Yn, SPn, _, _ = ns.solve(np.array([[1.0]]), np.array([[0.8]]), 0.0, times, **kw)
    np.testing.assert_allclose(Y.numpy(), Yn, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(SP.numpy(), SPn, rtol=1e-8, atol=1e-10)


def test_robertson_stiff_vs_radau_and_numba(robertson):
    ns, ts = robertson
    k = ROB_K
    times = np.concatenate([[0.0], np.logspace(-4, 1, 6)])

    def fun(s, y):
        return [-k[0] * y[0] + k[1] * y[1] * y[2], k[0] * y[0] - k[1] * y[1] * y[2] - k[2] * y[1] ** 2,
                k[2] * y[1] ** 2]

    ref = solve_ivp(fun, (0, times[-1]), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-16,
                    t_eval=times).y.T
    y0 = np.array([[1.0, 0.0, 0.0]])
    kw = dict(method="stiff", rtol=1e-6, atol=1e-10, max_steps=5000)
    Y, SP, S0, ok = ts.solve(tt(y0), tt(k[None]), 0.0, times, **kw)
    assert ok.all()
    np.testing.assert_allclose(Y[0].numpy(), ref, rtol=1e-4, atol=1e-10)
    assert int(ts.last_nsteps[0]) < 2000  # rk45 needs far more (see test_rk45_budget_exceeded_on_stiff_problem)
    Yn, SPn, _, _ = ns.solve(y0, k[None], 0.0, times, **kw)
    np.testing.assert_allclose(Y.numpy(), Yn, rtol=1e-7, atol=1e-12)
    for i in range(3):  # per state: the states differ by orders of magnitude
        scale = np.abs(SPn[0, :, i]).max()
        np.testing.assert_allclose(SP[0, :, i].numpy(), SPn[0, :, i], rtol=1e-5, atol=1e-5 * scale)


def test_auto_switches_stiff_rows_only():
    """y' = -lam (y - sin t) + cos t: rk45 needs ~lam/3.3 steps per time unit; auto switches the stiff row."""
    ns, ts = both("y", "lam", lambda t, y, p: [-p[0] * (y[0] - sp.sin(t)) + sp.cos(t)])
    times = np.linspace(0.0, 2.0, 5)
    y0, p = np.array([[1.0], [1.0]]), np.array([[1e4], [1.0]])  # row 0 stiff, row 1 not
    kw = dict(method="auto", rtol=1e-6, atol=1e-8)
    Y, SP, _, ok = ts.solve(tt(y0), tt(p), 0.0, times, **kw)
    assert ok.all()
    exact = np.sin(times)[None, :] + np.exp(-p * times[None, :])  # y(0) = 1
    np.testing.assert_allclose(Y[..., 0].numpy(), exact, rtol=1e-4, atol=1e-6)
    assert int(ts.last_nsteps[0]) < 1000  # rk45 alone: ~6000
    Yn, SPn, _, _ = ns.solve(y0, p, 0.0, times, **kw)
    np.testing.assert_array_equal(ts.last_nsteps.numpy(), ns.last_nsteps)
    np.testing.assert_allclose(Y.numpy(), Yn, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(SP.numpy(), SPn, rtol=1e-7, atol=1e-12)


# --------------------------------------------------------------------------- sensitivities
def test_lv_sensitivities_vs_finite_differences(lv):
    _, ts = lv
    times = np.linspace(0.0, 10.0, 11)
    kw = dict(method="rk45", rtol=1e-10, atol=1e-10)
    Y, SP, S0, ok = ts.solve(tt(LV_Y0[None]), tt(LV_P[None]), 0.0, times, **kw)
    assert ok.all()
    # rows: +-e for each of the 4 parameters, then +-e for each of the 2 initial values
    y0s, ps, eps = [], [], []
    for j in range(6):
        for sign in (1.0, -1.0):
            y0, p = LV_Y0.copy(), LV_P.copy()
            target, i = (p, j) if j < 4 else (y0, j - 4)
            e = 1e-6 * target[i]
            target[i] += sign * e
            y0s.append(y0)
            ps.append(p)
        eps.append(e)
    Yfd, *_ = ts.solve(tt(y0s), tt(ps), 0.0, times, sensitivities=False, **kw)
    Yfd = Yfd.numpy()
    for j in range(6):
        fd = (Yfd[2 * j] - Yfd[2 * j + 1]) / (2 * eps[j])
        an = SP[0, :, :, j].numpy() if j < 4 else S0[0, :, :, j - 4].numpy()
        np.testing.assert_allclose(an, fd, rtol=1e-4, atol=1e-5 * np.abs(an).max())


def test_solve_ode_torch_backend_gradcheck(decay):
    _, ts = decay
    times = torch.linspace(0.0, 2.0, 3, dtype=torch.float64)
    y0 = torch.tensor([[2.0], [0.5]], dtype=torch.float64, requires_grad=True)
    k = torch.tensor([[0.7], [1.3]], dtype=torch.float64, requires_grad=True)
    # solver error ~1e-10; differences over eps=1e-4 then carry ~1e-6 of noise
    fn = lambda a, b: solve_ode(ts, a, b, 0.0, times, rtol=1e-10, atol=1e-10)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (y0, k), eps=1e-4, atol=1e-5, rtol=1e-5)


def test_solve_ode_gradients_torch_vs_numba(lv):
    ns, ts = lv
    times = np.linspace(0.0, 6.0, 7)
    w = torch.linspace(0.5, 1.5, 7 * 2, dtype=torch.float64).reshape(7, 2)
    grads = {}
    for backend in ("numba", "torch"):
        y0 = torch.tensor(LV_Y0, requires_grad=True)
        p = torch.tensor(LV_P, requires_grad=True)
        out = solve_ode(ns, y0, p, 0.0, times, rtol=1e-9, atol=1e-9, backend=backend, torch_system=ts)
        assert out.shape == (7, 2) and out.device == y0.device
        (out * w).sum().backward()
        grads[backend] = (out.detach(), y0.grad, p.grad)
    for a, b in zip(grads["numba"], grads["torch"]):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-7)
    # parameters only: no sensitivities for the initial values; the no-grad path
    p = torch.tensor(LV_P[None], requires_grad=True)
    out = solve_ode(ts, torch.tensor(LV_Y0[None]), p, 0.0, times, rtol=1e-9, atol=1e-9)
    (out * w).sum().backward()
    np.testing.assert_allclose(p.grad[0].numpy(), grads["numba"][2].numpy(), rtol=1e-7)
    with torch.no_grad():
        out = solve_ode(ts, torch.tensor(LV_Y0[None]), p, 0.0, times, rtol=1e-9, atol=1e-9)
    assert not out.requires_grad and out.shape == (1, 7, 2)


def test_backend_dispatch(lv):
    ns, ts = lv
    y0, p = torch.tensor(LV_Y0[None]), torch.tensor(LV_P[None])
    times = [0.0, 1.0]
    with pytest.raises(ValueError, match="torch_system"):
        solve_ode(ns, y0, p, 0.0, times, backend="torch")
    with pytest.raises(ValueError, match="backend"):
        solve_ode(ns, y0, p, 0.0, times, backend="jax")
    # auto on CPU tensors: the numba solver, even when a torch system is at hand
    ts.last_nsteps = None
    out = solve_ode(ns, y0, p, 0.0, times, torch_system=ts)
    assert ts.last_nsteps is None
    Yn, *_ = ns.solve(LV_Y0[None], LV_P[None], 0.0, np.array(times), sensitivities=False)
    np.testing.assert_array_equal(out.numpy(), Yn)
    out_t = solve_ode(ns, y0, p, 0.0, times, torch_system=ts, backend="torch")
    assert ts.last_nsteps is not None
    np.testing.assert_allclose(out_t.numpy(), Yn, rtol=1e-6)


# --------------------------------------------------------------------------- failures and batches
def test_failed_rows_are_nan_and_leave_others_alone():
    t, x = sp.symbols("t x")
    c = sp.Symbol("c")
    ts = compile_torch_ode_system(t, [x], [c], [c * x**2])  # x(t) = x0 / (1 - c x0 t): blows up at 1/(c x0)
    times = np.array([0.5, 1.0, 1.5])
    y0 = tt([[1.0], [0.1], [0.5], [0.2]])
    p = tt([[1.0], [1.0], [1.0], [float("nan")]])
    for method in ["rk45", "stiff", "auto"]:
        # the blow-up row ends by step-size underflow (rk45: 360 steps) or by the step budget (stiff)
        Y, SP, S0, ok = ts.solve(y0, p, 0.0, times, method=method, rtol=1e-6, atol=1e-8, max_steps=400,
                                 sync_every=16 if method == "auto" else None)  # auto: as on a GPU
        assert ok.tolist() == [False, True, True, False], method
        assert torch.isnan(Y[0]).all() and torch.isnan(SP[0]).all() and torch.isnan(S0[3]).all()
        for r, x0 in [(1, 0.1), (2, 0.5)]:
            np.testing.assert_allclose(Y[r, :, 0].numpy(), x0 / (1 - x0 * times), rtol=1e-4)
            np.testing.assert_allclose(SP[r, :, 0, 0].numpy(), (x0 / (1 - x0 * times)) ** 2 * times, rtol=1e-3)
    # a step budget too small for one row: that row fails, the easy one finishes
    Y, _, _, ok = ts.solve(tt([[0.1], [0.95]]), tt([[1.0], [1.0]]), 0.0, [1.0], max_steps=40, rtol=1e-10)
    assert ok.tolist() == [True, False] and torch.isnan(Y[1]).all() and not torch.isnan(Y[0]).any()


def test_rk45_budget_exceeded_on_stiff_problem(robertson):
    _, ts = robertson
    Y, _, _, ok = ts.solve(tt([[1.0, 0.0, 0.0]]), tt(ROB_K[None]), 0.0, [10.0], method="rk45", max_steps=300)
    assert not ok[0] and torch.isnan(Y).all()


def test_batch_of_64_matches_row_by_row(lv):
    ns, ts = lv
    B = 64
    rng = np.random.default_rng(0)
    p = LV_P * rng.uniform(0.8, 1.2, size=(B, 4))
    y0 = LV_Y0 * rng.uniform(0.8, 1.2, size=(B, 2))
    times = np.linspace(0.0, 10.0, 11)
    kw = dict(rtol=1e-7, atol=1e-9)
    Y, SP, S0, ok = ts.solve(tt(y0), tt(p), 0.0, times, **kw)
    assert ok.all()
    steps = ts.last_nsteps.clone()
    for r in (0, 17, 63):  # single-row torch solves: the same steps, the same values
        Yr, SPr, S0r, _ = ts.solve(tt(y0[r:r + 1]), tt(p[r:r + 1]), 0.0, times, **kw)
        assert int(ts.last_nsteps[0]) == int(steps[r])
        np.testing.assert_allclose(Y[r].numpy(), Yr[0].numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(SP[r].numpy(), SPr[0].numpy(), rtol=1e-10, atol=1e-12)
    # the GPU setting: "all done?" read every 16 steps; the idle steps in between change nothing
    Y16, SP16, S016, ok16 = ts.solve(tt(y0), tt(p), 0.0, times, sync_every=16, **kw)
    assert torch.equal(ts.last_nsteps, steps) and ok16.all()
    assert torch.equal(Y16, Y) and torch.equal(SP16, SP) and torch.equal(S016, S0)
    Yn, SPn, S0n, _ = ns.solve(y0, p, 0.0, times, **kw)  # every row, solved one at a time by numba
    np.testing.assert_array_equal(steps.numpy(), ns.last_nsteps)
    np.testing.assert_allclose(Y.numpy(), Yn, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(SP.numpy(), SPn, rtol=1e-7, atol=1e-7 * np.abs(SPn).max())


def test_output_times_device_and_flags(decay):
    _, ts = decay
    times = np.array([1.0, 1.0, 2.0, 2.0, 3.0])  # repeated times, the first equal to t0
    y0 = torch.tensor([[2.0]], dtype=torch.float32)  # computed in float64, on y0's device
    Y, SP, S0, ok = ts.solve(y0, tt([[0.5]]), 1.0, times, rtol=1e-9, atol=1e-12)
    for out in (Y, SP, S0, ok):
        assert out.device == y0.device
    assert Y.dtype == torch.float64 and Y.shape == (1, 5, 1) and SP.shape == (1, 5, 1, 1)
    np.testing.assert_allclose(Y[0, :, 0].numpy(), 2.0 * np.exp(-0.5 * (times - 1.0)), rtol=1e-8)
    assert Y[0, 0, 0] == 2.0 and SP[0, 0, 0, 0] == 0.0 and S0[0, 0, 0, 0] == 1.0
    assert Y[0, 1, 0] == Y[0, 0, 0] and Y[0, 2, 0] == Y[0, 3, 0]
    Y2, SP2, S02, _ = ts.solve(y0, tt([[0.5]]), 1.0, times, y0_sensitivities=False)
    assert SP2 is not None and S02 is None
    Y3, SP3, S03, ok3 = ts.solve(y0, tt([[0.5]]), 1.0, times, sensitivities=False)
    assert SP3 is None and S03 is None and ok3.all()
    Y4, _, _, ok4 = ts.solve(torch.zeros((0, 1)), torch.zeros((0, 1)), 0.0, times)
    assert Y4.shape == (0, 5, 1) and ok4.shape == (0,)
    Y5, _, _, ok5 = ts.solve(y0, tt([[0.5]]), 0.0, [])
    assert Y5.shape == (1, 0, 1) and ok5.all()
    assert isinstance(ts, TorchOdeSystem)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(lv):
    _, ts = lv
    rng = np.random.default_rng(1)
    p = LV_P * rng.uniform(0.8, 1.2, size=(32, 4))
    y0 = np.tile(LV_Y0, (32, 1))
    times = np.linspace(0.0, 20.0, 21)
    for method in ["rk45", "stiff", "auto"]:
        cpu = ts.solve(tt(y0), tt(p), 0.0, times, method=method)
        gpu = ts.solve(tt(y0).cuda(), tt(p).cuda(), 0.0, times, method=method)
        for a, b in zip(cpu, gpu):
            assert b.device.type == "cuda"
            np.testing.assert_allclose(b.cpu().numpy(), a.numpy(), rtol=1e-8, atol=1e-8)
    y0g = tt(LV_Y0[None]).cuda()
    pg = tt(LV_P[None]).cuda().requires_grad_()
    out = solve_ode(None, y0g, pg, 0.0, times, torch_system=ts)
    out.sum().backward()
    assert out.is_cuda and pg.grad.is_cuda and torch.isfinite(pg.grad).all()


def test_pyro_program_with_the_torch_solver_matches_numba():
    """The GPU path (torch solver inside the Pyro model) gives the CPU path's density and gradient."""
    from pathlib import Path

    import msml_dsl

    model_file = Path(__file__).resolve().parents[2] / "models" / "lotka_volterra" / "model.msml"
    numba_program = msml_dsl.compile_file(model_file, device="cpu").program
    torch_program = msml_dsl.compile_file(model_file, device="cpu").program
    torch_program.use_torch_solver()
    values = {"alpha": [0.55, 0.6], "beta": [0.028, 0.03], "gamma": [0.80, 0.7], "delta": [0.024, 0.02],
              "H0": [34.0, 30.0], "L0": [5.9, 6.5], "sigma_H": [0.25, 0.3], "sigma_L": [0.25, 0.2]}
    z = numba_program.to_unconstrained({k: np.array(v) for k, v in values.items()})
    assert np.allclose(numba_program.to_constrained(z)["alpha"], [0.55, 0.6])
    u_ref, g_ref = numba_program.reference_potential_and_grad(z)
    u_torch, g_torch = torch_program.reference_potential_and_grad(z)
    np.testing.assert_allclose(u_torch, u_ref, rtol=1e-7)
    np.testing.assert_allclose(g_torch, g_ref, rtol=1e-5, atol=1e-7)
