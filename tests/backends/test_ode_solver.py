"""Tests for the numba ODE solver with forward sensitivities and its torch wrapper."""

import ctypes

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp

from msml_dsl.backends.pyro.ode_autograd import solve_ode
from msml_dsl.backends.pyro.ode_solver import compile_ode_system

LV_P = np.array([0.55, 0.028, 0.80, 0.024])
LV_Y0 = np.array([34.0, 5.9])


def lv_rhs_np(t, y, p):
    a, b, g, d = p
    return np.array([(a - b * y[1]) * y[0], (-g + d * y[0]) * y[1]])


@pytest.fixture(scope="module")
def lv():
    t = sp.Symbol("t")
    u, v = sp.symbols("u v")
    a, b, g, d = sp.symbols("alpha beta gamma delta")
    return compile_ode_system(t, [u, v], [a, b, g, d], [(a - b * v) * u, (-g + d * u) * v])


@pytest.fixture(scope="module")
def decay():
    t, x, k = sp.symbols("t x k")
    return compile_ode_system(t, [x], [k], [-k * x])


@pytest.fixture(scope="module")
def robertson():
    t = sp.Symbol("t")
    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    rhs = [-k1 * y1 + k2 * y2 * y3, k1 * y1 - k2 * y2 * y3 - k3 * y2**2, k3 * y2**2]
    return compile_ode_system(t, [y1, y2, y3], [k1, k2, k3], rhs)


def ref_solution(fun, y0, times, t0=0.0):
    r = solve_ivp(fun, (t0, times[-1]), y0, method="DOP853", rtol=1e-10, atol=1e-12, t_eval=times)
    assert r.success
    return r.y.T


# --------------------------------------------------------------------------- (1) accuracy
@pytest.mark.parametrize("method", ["rk45", "stiff", "auto"])
def test_exponential_decay(decay, method):
    times = np.linspace(0.0, 5.0, 11)
    k = np.array([[0.7], [1.3]])
    y0 = np.array([[2.0], [0.5]])
    Y, SP, S0, ok = decay.solve(y0, k, 0.0, times, method=method, rtol=1e-8, atol=1e-10)
    assert ok.all()
    exact = y0[:, None, :] * np.exp(-k[:, None, :] * times[None, :, None])
    np.testing.assert_allclose(Y, exact, rtol=1e-6, atol=1e-9)
    # analytic sensitivities: dY/dk = -t y0 exp(-k t), dY/dy0 = exp(-k t)
    np.testing.assert_allclose(SP[..., 0, 0], -times * exact[..., 0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(S0[..., 0, 0], np.exp(-k * times), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("method,rtol,atol,tol", [("rk45", 1e-8, 1e-10, 1e-6), ("rk45", 1e-6, 1e-8, 1e-4),
                                                  ("stiff", 1e-8, 1e-10, 1e-5), ("auto", 1e-8, 1e-10, 1e-6)])
def test_lotka_volterra_vs_scipy(lv, method, rtol, atol, tol):
    times = np.linspace(0.0, 20.0, 21)
    ref = ref_solution(lambda t, y: lv_rhs_np(t, y, LV_P), LV_Y0, times)
    Y, _, _, ok = lv.solve(LV_Y0[None], LV_P[None], 0.0, times, method=method, rtol=rtol, atol=atol)
    assert ok.all()
    np.testing.assert_allclose(Y[0], ref, rtol=tol, atol=tol)


def test_time_equal_t0_and_nonzero_t0(lv):
    times = np.array([1.0, 1.0, 3.0])
    Y, SP, S0, ok = lv.solve(LV_Y0[None], LV_P[None], 1.0, times)
    assert ok.all()
    np.testing.assert_array_equal(Y[0, 0], LV_Y0)
    np.testing.assert_array_equal(Y[0, 1], LV_Y0)
    np.testing.assert_array_equal(SP[0, 0], 0.0)
    np.testing.assert_array_equal(S0[0, 0], np.eye(2))
    ref = ref_solution(lambda t, y: lv_rhs_np(t, y, LV_P), LV_Y0, np.array([3.0]), t0=1.0)
    np.testing.assert_allclose(Y[0, 2], ref[0], rtol=1e-5)


def test_codegen_functions_and_explicit_time():
    """Kernels (f, J_y, J_p, and time derivatives) against SymPy lambdify for many functions."""
    # real symbols so that SymPy's reference derivatives of Abs/Min/Max stay printable by lambdify
    # (the generator substitutes its own real symbols, so user assumptions do not matter there)
    t = sp.Symbol("t", real=True)
    a, b = sp.symbols("a b", real=True)
    k1, k2 = sp.symbols("k1 k2", real=True)
    rhs = [
        sp.exp(-k1 * a) + sp.log(1 + b**2) + sp.sqrt(1 + a**2) * sp.sin(t) - sp.cos(b) * sp.tan(a / 3),
        sp.tanh(a - b) + sp.Abs(a) ** sp.Rational(3, 2) + sp.Min(a, b) * sp.Max(k2, a) + (1 + b**2) ** 0.7
        + sp.Piecewise((a * k2, a > b), (b**2, True)) + t**2 * k1,
    ]
    sys_ = compile_ode_system(t, [a, b], [k1, k2], rhs, warmup=False)
    assert sys_.has_time
    P = ctypes.POINTER(ctypes.c_double)

    def call(cf, tt, *arrs):
        cf.ctypes(tt, *[x.ctypes.data_as(P) for x in arrs])

    f_np = sp.lambdify([t, a, b, k1, k2], rhs, "numpy")
    jy_np = sp.lambdify([t, a, b, k1, k2], sp.Matrix(rhs).jacobian([a, b]), "numpy")
    jp_np = sp.lambdify([t, a, b, k1, k2], sp.Matrix(rhs).jacobian([k1, k2]), "numpy")
    ft_np = sp.lambdify([t, a, b, k1, k2], sp.Matrix(rhs).diff(t), "numpy")
    for (tt, y, p) in [(0.3, [0.4, -0.2], [0.7, 1.1]), (1.7, [-0.5, 0.9], [1.3, -0.4])]:
        y = np.array(y)
        p = np.array(p)
        f = np.empty(2)
        jy = np.empty((2, 2))
        jp = np.empty((2, 2))
        call(sys_.f_only, tt, y, p, f)
        np.testing.assert_allclose(f, f_np(tt, *y, *p), rtol=1e-13)
        f[:] = 0
        call(sys_.f_jac, tt, y, p, f, jy, jp)
        np.testing.assert_allclose(f, f_np(tt, *y, *p), rtol=1e-13)
        np.testing.assert_allclose(jy, jy_np(tt, *y, *p), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(jp, jp_np(tt, *y, *p), rtol=1e-12, atol=1e-14)
        ft = np.empty(2)
        call(sys_.t_deriv, tt, y, p, ft, jy, jp)
        np.testing.assert_allclose(ft, np.ravel(ft_np(tt, *y, *p)), rtol=1e-12, atol=1e-14)


def test_explicit_time_rhs_all_methods():
    t, x, k = sp.symbols("t x k")
    sys_ = compile_ode_system(t, [x], [k], [k * sp.cos(t) * x + sp.sin(3 * t)])
    times = np.linspace(0.0, 6.0, 13)
    ref = ref_solution(lambda tt, y: [0.8 * np.cos(tt) * y[0] + np.sin(3 * tt)], [1.0], times)
    for method in ["rk45", "stiff", "auto"]:
        Y, SP, _, ok = sys_.solve(np.array([[1.0]]), np.array([[0.8]]), 0.0, times, method=method,
                                  rtol=1e-9, atol=1e-11)
        assert ok.all()
        np.testing.assert_allclose(Y[0], ref, rtol=1e-6, atol=1e-7)
        # sensitivity vs central differences
        e = 1e-5
        Yp, *_ = sys_.solve(np.array([[1.0]]), np.array([[0.8 + e]]), 0.0, times, method=method, rtol=1e-11,
                            atol=1e-13, sensitivities=False)
        Ym, *_ = sys_.solve(np.array([[1.0]]), np.array([[0.8 - e]]), 0.0, times, method=method, rtol=1e-11,
                            atol=1e-13, sensitivities=False)
        np.testing.assert_allclose(SP[0, :, 0, 0], ((Yp - Ym) / (2 * e))[0, :, 0], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- (2) sensitivities
@pytest.mark.parametrize("method", ["rk45", "stiff"])
def test_lv_sensitivities_vs_finite_differences(lv, method):
    times = np.linspace(0.0, 10.0, 11)
    kw = dict(method=method, rtol=1e-10, atol=1e-10)
    Y, SP, S0, ok = lv.solve(LV_Y0[None], LV_P[None], 0.0, times, **kw)
    assert ok.all()
    for k in range(4):
        e = 1e-6 * LV_P[k]
        pp = LV_P.copy()
        pp[k] += e
        pm = LV_P.copy()
        pm[k] -= e
        Yp, *_ = lv.solve(LV_Y0[None], pp[None], 0.0, times, sensitivities=False, **kw)
        Ym, *_ = lv.solve(LV_Y0[None], pm[None], 0.0, times, sensitivities=False, **kw)
        fd = (Yp - Ym)[0] / (2 * e)
        scale = np.abs(SP[0, :, :, k]).max()
        np.testing.assert_allclose(SP[0, :, :, k], fd, rtol=1e-4, atol=1e-5 * scale)
    for j in range(2):
        e = 1e-6 * LV_Y0[j]
        yp = LV_Y0.copy()
        yp[j] += e
        ym = LV_Y0.copy()
        ym[j] -= e
        Yp, *_ = lv.solve(yp[None], LV_P[None], 0.0, times, sensitivities=False, **kw)
        Ym, *_ = lv.solve(ym[None], LV_P[None], 0.0, times, sensitivities=False, **kw)
        fd = (Yp - Ym)[0] / (2 * e)
        scale = np.abs(S0[0, :, :, j]).max()
        np.testing.assert_allclose(S0[0, :, :, j], fd, rtol=1e-4, atol=1e-5 * scale)


def torch_rk4_lv(y0, p, times, dt):
    """Fixed-step RK4 in torch (differentiated by autograd)."""
    def f(y):
        return torch.stack([(p[0] - p[1] * y[1]) * y[0], (-p[2] + p[3] * y[0]) * y[1]])

    out = [y0]
    y = y0
    t = 0.0
    for t_next in times[1:]:
        nsub = int(round((t_next - t) / dt))
        h = (t_next - t) / nsub
        for _ in range(nsub):
            k1 = f(y)
            k2 = f(y + 0.5 * h * k1)
            k3 = f(y + 0.5 * h * k2)
            k4 = f(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t = t_next
        out.append(y)
    return torch.stack(out)


def test_lv_sensitivities_vs_torch_rk4(lv):
    times = np.linspace(0.0, 4.0, 5)
    y0 = torch.tensor(LV_Y0, requires_grad=True)
    p = torch.tensor(LV_P, requires_grad=True)
    Yt = torch_rk4_lv(y0, p, times, dt=0.004)
    w = torch.linspace(0.5, 1.5, Yt.numel(), dtype=torch.float64).reshape(Yt.shape)
    gy0, gp = torch.autograd.grad((Yt * w).sum(), [y0, p])
    Y, SP, S0, ok = lv.solve(LV_Y0[None], LV_P[None], 0.0, times, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(Y[0], Yt.detach().numpy(), rtol=1e-8)
    wn = w.numpy()
    np.testing.assert_allclose(np.einsum("ti,tik->k", wn, SP[0]), gp.numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.einsum("ti,tij->j", wn, S0[0]), gy0.numpy(), rtol=1e-6)
    # the same through solve_ode's backward
    y0b = torch.tensor(LV_Y0, requires_grad=True)
    pb = torch.tensor(LV_P, requires_grad=True)
    out = solve_ode(lv, y0b, pb, 0.0, times, rtol=1e-10, atol=1e-10)
    assert out.shape == (5, 2)
    (out * w).sum().backward()
    np.testing.assert_allclose(pb.grad.numpy(), gp.numpy(), rtol=1e-6)
    np.testing.assert_allclose(y0b.grad.numpy(), gy0.numpy(), rtol=1e-6)


# --------------------------------------------------------------------------- (3) gradcheck
def test_solve_ode_gradcheck(lv):
    times = torch.linspace(0.0, 3.0, 4, dtype=torch.float64)
    y0 = torch.tensor([[34.0, 5.9], [20.0, 8.0]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor(np.stack([LV_P, LV_P * 1.1]), dtype=torch.float64, requires_grad=True)
    # solver error ~1e-12 relative; finite differences with eps=1e-6 then carry ~1e-6 noise
    # relative to |Y| ~ 30, hence atol 1e-4 / rtol 1e-4 (analytic sensitivities are ~1e-9 accurate).
    fn = lambda a, b: solve_ode(lv, a, b, 0.0, times, rtol=1e-12, atol=1e-12)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (y0, p), eps=1e-6, atol=1e-4, rtol=1e-4)


def test_solve_ode_no_grad_path_and_dtype(lv):
    times = np.linspace(0.0, 2.0, 3)
    y0 = torch.tensor(LV_Y0[None])
    p = torch.tensor(LV_P[None])
    out = solve_ode(lv, y0, p, 0.0, times)
    assert out.shape == (1, 3, 2) and out.dtype == torch.float64 and not out.requires_grad
    # without sensitivities the error control covers y only (different steps, same tolerance)
    Y, *_ = lv.solve(LV_Y0[None], LV_P[None], 0.0, times, sensitivities=False)
    np.testing.assert_allclose(out.numpy(), Y, rtol=1e-12)


# --------------------------------------------------------------------------- (4) stiff
def test_robertson_stiff_vs_radau(robertson):
    k = np.array([0.04, 1e4, 3e7])
    times = np.concatenate([[0.0], np.logspace(-4, 5, 10)])

    def fun(t, y):
        return [-k[0] * y[0] + k[1] * y[1] * y[2], k[0] * y[0] - k[1] * y[1] * y[2] - k[2] * y[1] ** 2,
                k[2] * y[1] ** 2]

    def jac(t, y):
        return [[-k[0], k[1] * y[2], k[1] * y[1]],
                [k[0], -k[1] * y[2] - 2 * k[2] * y[1], -k[1] * y[1]],
                [0, 2 * k[2] * y[1], 0]]

    ref = solve_ivp(fun, (0, times[-1]), [1.0, 0.0, 0.0], method="Radau", jac=jac, rtol=1e-12, atol=1e-16,
                    t_eval=times).y.T
    y0 = np.array([[1.0, 0.0, 0.0]])
    for method in ["stiff", "auto"]:
        Y, SP, S0, ok = robertson.solve(y0, k[None], 0.0, times, method=method, rtol=1e-6, atol=1e-10,
                                        max_steps=20_000)
        assert ok.all(), method
        np.testing.assert_allclose(Y[0], ref, rtol=1e-4, atol=1e-10)
        assert np.isfinite(SP).all() and np.isfinite(S0).all()
        assert robertson.last_nsteps[0] < 5000
    # rk45 needs far more steps (stiffness); it must fail gracefully with a small budget
    Y, _, _, ok = robertson.solve(y0, k[None], 0.0, times, method="rk45", max_steps=2000)
    assert not ok[0] and np.isnan(Y).all()


def test_robertson_sensitivity_fd(robertson):
    k = np.array([0.04, 1e4, 3e7])
    times = np.array([0.0, 1.0, 10.0, 100.0])
    y0 = np.array([[1.0, 0.0, 0.0]])
    kw = dict(method="stiff", rtol=1e-9, atol=1e-14)
    Y, SP, _, ok = robertson.solve(y0, k[None], 0.0, times, **kw)
    assert ok.all()
    for j in range(3):
        e = 1e-5 * k[j]
        kp = k.copy()
        kp[j] += e
        km = k.copy()
        km[j] -= e
        Yp, *_ = robertson.solve(y0, kp[None], 0.0, times, sensitivities=False, **kw)
        Ym, *_ = robertson.solve(y0, km[None], 0.0, times, sensitivities=False, **kw)
        fd = (Yp - Ym)[0] / (2 * e)
        # relative accuracy per state column (states differ by many orders of magnitude)
        for i in range(3):
            scale = np.abs(fd[:, i]).max()
            np.testing.assert_allclose(SP[0, :, i, j], fd[:, i], rtol=2e-3, atol=2e-3 * scale)


def test_stiff_method_empirical_order():
    """Global error of ROS34PW2 vs work on a smooth nonlinear problem: slope ~ -3 (order 3)."""
    t, x, y, k = sp.symbols("t x y k")
    sys_ = compile_ode_system(t, [x, y], [k], [y, -k * sp.sin(x)], warmup=False)  # pendulum
    times = np.array([0.0, 5.0])
    ref = ref_solution(lambda tt, z: [z[1], -2.0 * np.sin(z[0])], [1.0, 0.0], times)[-1]
    errs, steps = [], []
    for tol in [1e-4, 1e-5, 1e-6, 1e-7, 1e-8]:
        Y, SP, _, ok = sys_.solve(np.array([[1.0, 0.0]]), np.array([[2.0]]), 0.0, times, method="stiff",
                                  rtol=tol, atol=tol, sensitivities=False)
        errs.append(np.abs(Y[0, -1] - ref).max())
        steps.append(sys_.last_nsteps[0])
    slope = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert -3.7 < slope < -2.5, (slope, steps, errs)
    # embedded estimate order 2 => tolerance proportionality exponent ~3/3 ... errors decrease monotonically
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:]))


def test_auto_switches_on_van_der_pol():
    t, x, y, mu = sp.symbols("t x y mu")
    sys_ = compile_ode_system(t, [x, y], [mu], [y, mu * (1 - x**2) * y - x], warmup=False)
    times = np.linspace(0.0, 1000.0, 6)
    y0 = np.array([[2.0, 0.0]])
    p = np.array([[1000.0]])
    ref = solve_ivp(lambda tt, z: [z[1], 1000 * (1 - z[0] ** 2) * z[1] - z[0]], (0, 1000), [2.0, 0.0],
                    method="Radau", rtol=1e-10, atol=1e-12, t_eval=times).y.T
    Ya, _, _, oka = sys_.solve(y0, p, 0.0, times, method="auto", rtol=1e-7, atol=1e-9, sensitivities=False)
    n_auto = sys_.last_nsteps[0]
    Ys, _, _, oks = sys_.solve(y0, p, 0.0, times, method="stiff", rtol=1e-7, atol=1e-9, sensitivities=False)
    assert oka.all() and oks.all()
    np.testing.assert_allclose(Ya[0, :, 0], ref[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(Ys[0, :, 0], ref[:, 0], rtol=1e-4, atol=1e-5)
    assert n_auto < 20_000  # rk45 alone needs ~10^6 steps here


# --------------------------------------------------------------------------- (5) failure
def test_failure_gives_nan_not_exception(lv):
    times = np.linspace(0.0, 20.0, 21)
    p = np.stack([LV_P, LV_P])
    y0 = np.stack([LV_Y0, LV_Y0])
    Y, SP, S0, ok = lv.solve(y0, p, 0.0, times, max_steps=3)
    assert not ok.any()
    assert np.isnan(Y).all() and np.isnan(SP).all() and np.isnan(S0).all()
    y0t = torch.tensor(y0, requires_grad=True)
    pt = torch.tensor(p, requires_grad=True)
    out = solve_ode(lv, y0t, pt, 0.0, times, max_steps=3)
    assert torch.isnan(out).all()
    out.nansum().backward()
    assert torch.equal(pt.grad, torch.zeros_like(pt)) and torch.equal(y0t.grad, torch.zeros_like(y0t))


def test_failure_nonfinite_and_mixed_batch():
    t, x, k = sp.symbols("t x k")
    sys_ = compile_ode_system(t, [x], [k], [k * x**2], warmup=False)  # blows up at t = 1/(k x0)
    times = np.array([0.0, 0.5, 2.0])
    Y, SP, S0, ok = sys_.solve(np.array([[1.0], [1.0]]), np.array([[1.0], [-1.0]]), 0.0, times)
    assert ok.tolist() == [False, True]
    assert np.isnan(Y[0]).all() and np.isfinite(Y[1]).all()
    np.testing.assert_allclose(Y[1, :, 0], 1.0 / (1.0 + times), rtol=1e-6)
    # torch: NaN row, zero gradient for the failed row, correct gradient for the good one
    pt = torch.tensor([[1.0], [-1.0]], dtype=torch.float64, requires_grad=True)
    out = solve_ode(sys_, torch.ones(2, 1, dtype=torch.float64), pt, 0.0, times)
    assert torch.isnan(out[0]).all()
    out[1].sum().backward()
    assert pt.grad[0, 0] == 0.0
    # d/dk of 1/(1 - k t) at k=-1: t/(1+t)^2
    np.testing.assert_allclose(pt.grad[1, 0].item(), np.sum(times / (1 + times) ** 2), rtol=1e-5)


# --------------------------------------------------------------------------- (6) batch independence
@pytest.mark.parametrize("method", ["rk45", "stiff", "auto"])
def test_batch_rows_independent(lv, method):
    times = np.linspace(0.0, 20.0, 21)
    rng = np.random.default_rng(0)
    p = LV_P * rng.uniform(0.8, 1.2, size=(4, 4))
    y0 = LV_Y0 * rng.uniform(0.8, 1.2, size=(4, 2))
    Y, SP, S0, ok = lv.solve(y0, p, 0.0, times, method=method)
    assert ok.all()
    for b in range(4):
        Yb, SPb, S0b, okb = lv.solve(y0[b:b + 1], p[b:b + 1], 0.0, times, method=method)
        np.testing.assert_array_equal(Yb[0], Y[b])
        np.testing.assert_array_equal(SPb[0], SP[b])
        np.testing.assert_array_equal(S0b[0], S0[b])


@pytest.mark.parametrize("method", ["rk45", "stiff"])
def test_parameter_sensitivities_without_initial_value_sensitivities(lv, method):
    """Skipping dY/dy0 (constant initial values) leaves Y and dY/dp as they were (to tolerance)."""
    y0 = np.array([[34.0, 5.9], [20.0, 8.0]])
    p = np.array([[0.55, 0.028, 0.80, 0.024], [0.6, 0.03, 0.7, 0.02]])
    times = np.linspace(0.0, 20.0, 21)
    Y1, SP1, S01, ok1 = lv.solve(y0, p, 0.0, times, method=method, rtol=1e-8, atol=1e-8)
    Y2, SP2, S02, ok2 = lv.solve(y0, p, 0.0, times, method=method, rtol=1e-8, atol=1e-8, y0_sensitivities=False)
    assert ok1.all() and ok2.all() and S02 is None and S01.shape == (2, 21, 2, 2)
    np.testing.assert_allclose(Y2, Y1, rtol=1e-5)
    np.testing.assert_allclose(SP2, SP1, rtol=1e-4, atol=1e-6 * np.abs(SP1).max())


# --------------------------------------------------------------------------- fused sensitivity kernel
def _chain(n):
    t, k, d = sp.symbols("t k d")
    xs = sp.symbols(f"x1:{n + 1}")
    rhs = [-k * xs[0]] + [k * xs[i - 1] - (k + d) * xs[i] + sp.sin(t) * xs[i] ** 2 / 100 for i in range(1, n)]
    return t, list(xs), [k, d], rhs


@pytest.mark.parametrize("y0_sensitivities", [False, True])
def test_fused_kernel_equals_jacobian_product(y0_sensitivities):
    """f_sens (f and J_y S + J_p as generated straight-line code) gives the solution and sensitivities
    of f_jac with the generic sparse product, to rounding, with and without initial-value columns."""
    t, xs, ps, rhs = _chain(6)
    columns = len(ps) + (len(xs) if y0_sensitivities else 0)
    fused = compile_ode_system(t, xs, ps, rhs, sens_columns=columns, warmup=False)
    generic = compile_ode_system(t, xs, ps, rhs, sens_columns=None, warmup=False)
    assert fused.f_sens is not None and generic.f_sens is None
    y0 = np.array([[10.0, 0, 0, 0, 0, 0], [8.0, 1.0, 0, 0, 0, 0.5]])
    p = np.array([[1.5, 0.1], [1.2, 0.3]])
    times = np.linspace(0.5, 8.0, 9)
    kw = dict(method="rk45", rtol=1e-9, atol=1e-11, y0_sensitivities=y0_sensitivities)
    Yf, SPf, S0f, okf = fused.solve(y0, p, 0.0, times, **kw)
    Yg, SPg, S0g, okg = generic.solve(y0, p, 0.0, times, **kw)
    assert okf.all() and okg.all()
    np.testing.assert_allclose(Yf, Yg, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(SPf, SPg, rtol=1e-9, atol=1e-12 * np.abs(SPg).max())
    if y0_sensitivities:
        np.testing.assert_allclose(S0f, S0g, rtol=1e-9, atol=1e-12)
    # the fused path against central differences of the solution itself
    e = 1e-6
    for k in range(2):
        pp, pm = p.copy(), p.copy()
        pp[:, k] += e
        pm[:, k] -= e
        Yp, *_ = fused.solve(y0, pp, 0.0, times, sensitivities=False, **kw)
        Ym, *_ = fused.solve(y0, pm, 0.0, times, sensitivities=False, **kw)
        np.testing.assert_allclose(SPf[..., k], (Yp - Ym) / (2 * e), rtol=1e-5, atol=1e-7)


def test_fused_kernel_skips_structurally_zero_sensitivities():
    """Two experiments as one block-diagonal system: each block's states carry no sensitivity to the
    other block's rate, so f_sens writes those entries once as zeros, and the solution and every
    sensitivity equal the generic path's."""
    from msml_dsl.backends.pyro.ode_solver import structural_sensitivities

    t, k1, k2, d = sp.symbols("t k1 k2 d")
    a1, b1, a2, b2 = sp.symbols("a1 b1 a2 b2")
    xs, ps = [a1, b1, a2, b2], [k1, k2, d]
    rhs = [-k1 * a1, k1 * a1 - d * b1, -k2 * a2, k2 * a2 - d * b2]
    assert structural_sensitivities([{0}, {0, 1}, {2}, {2, 3}], [{0}, {0, 2}, {1}, {1, 2}], 3, 3) == \
        [{0}, {0, 2}, {1}, {1, 2}]
    # initial-value columns 3..6: state l reaches itself and the states fed by it
    assert structural_sensitivities([{0}, {0, 1}, {2}, {2, 3}], [{0}, {0, 2}, {1}, {1, 2}], 3, 7)[1] == {0, 2, 3, 4}
    fused = compile_ode_system(t, xs, ps, rhs, sens_columns=3, warmup=False)
    generic = compile_ode_system(t, xs, ps, rhs, sens_columns=None, warmup=False)
    written = [line for line in fused.source.split("def f_sens(")[1].splitlines() if line.startswith("    out[")]
    assert len(written) == 4 + 6          # f, and 6 of the 12 sensitivities
    y0 = np.array([[1.0, 0.0, 2.0, 0.1]])
    p = np.array([[0.7, 0.3, 0.2]])
    times = np.linspace(0.5, 5.0, 6)
    Yf, SPf, _, okf = fused.solve(y0, p, 0.0, times, rtol=1e-9, atol=1e-11, y0_sensitivities=False)
    Yg, SPg, _, okg = generic.solve(y0, p, 0.0, times, rtol=1e-9, atol=1e-11, y0_sensitivities=False)
    assert okf.all() and okg.all()
    np.testing.assert_allclose(Yf, Yg, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(SPf, SPg, rtol=1e-9, atol=1e-13)
    assert not SPf[..., 0:2, 1].any() and not SPf[..., 2:4, 0].any()   # block 1 vs k2, block 2 vs k1


def test_kernels_compile_when_first_needed():
    """An explicit solve with the fused kernel compiles only f_sens; the stiff path adds f_jac and t_deriv."""
    t, xs, ps, rhs = _chain(4)
    system = compile_ode_system(t, xs, ps, rhs, methods=("rk45",), sensitivities=(True,))
    assert set(system.kernels.compiled) == {"f_sens"}
    system.solve(np.ones((1, 4)), np.ones((1, 2)), 0.0, np.array([1.0]), method="rk45", sensitivities=False)
    assert set(system.kernels.compiled) == {"f_sens", "f_only"}
    Y, SP, S0, ok = system.solve(np.ones((1, 4)), np.ones((1, 2)), 0.0, np.array([1.0]), method="stiff",
                                 y0_sensitivities=False)
    assert ok.all() and set(system.kernels.compiled) == {"f_sens", "f_only", "f_jac", "t_deriv"}


def test_no_fused_kernel_above_the_size_limit(monkeypatch):
    from msml_dsl.backends.pyro import ode_solver

    monkeypatch.setattr(ode_solver, "FUSED_OUTPUT_LIMIT", 10)
    t, xs, ps, rhs = _chain(4)   # 4 x (1 + 2) = 12 outputs
    system = compile_ode_system(t, xs, ps, rhs, sens_columns=2, warmup=False)
    assert system.f_sens is None and "def f_sens(" not in system.source
    Y, SP, S0, ok = system.solve(np.ones((1, 4)), np.ones((1, 2)), 0.0, np.array([1.0, 2.0]), y0_sensitivities=False)
    assert ok.all() and np.isfinite(SP).all()
