"""Fast ODE solves with forward sensitivities, compiled by numba.

``compile_ode_system`` turns a SymPy right-hand side ``y' = f(t, y, p)`` into
small kernels generated with SymPy's own Python code printer (with
common-subexpression elimination), each compiled when a solve first needs it:

* ``f_only(t, y, p, f)``                  -- the right-hand side,
* ``f_sens(t, z, p, out)``                -- f and the sensitivity right-hand side
  J_y S + [J_p | 0] for one column count, as straight-line code (the explicit
  method's hot path; generated up to FUSED_OUTPUT_LIMIT outputs),
* ``f_jac(t, y, p, f, jy, jp)``           -- f together with J_y = df/dy and J_p = df/dp
  (the Rosenbrock method, and sensitivities without f_sens),
* ``t_deriv(t, y, p, ft, jyt, jpt)``      -- df/dt, dJ_y/dt, dJ_p/dt (only used by the
  Rosenbrock method when time appears explicitly).

The kernels are numba ``cfunc``s over raw float64 pointers (matrices flattened
row-major).  The solver core below is generic and compiled once (cached on
disk): it receives the kernels' addresses as integers and calls them through a
small LLVM intrinsic, so per model only the tiny kernels are compiled.  The augmented system integrated is

    z = [y, S],  S = [dy/dp | dy/dy0]  (n x (P + n)),
    y' = f,      S' = J_y S + [J_p | 0],
    y(t0) = y0,  S(t0) = [0 | I].

Methods
-------
``"rk45"``  Dormand--Prince 5(4), Hairer's initial step heuristic, PI step size
            control, error control (RMS norm) over all components of the
            augmented system, 4th-order dense output (scipy's RK45 coefficients)
            for the output times; the step is clipped only at the last output time.
``"stiff"`` ROS34PW2 (Rang & Angermann 2005): 4-stage, order-3 L-stable,
            stiffly accurate Rosenbrock-W method with an embedded order-2
            estimate.  Being a W-method it tolerates the block-diagonal
            approximation blockdiag(J_y, ..., J_y) of the augmented Jacobian, so
            a single n x n LU factorisation is needed per step.  Output times
            are hit exactly by clipping the step.
``"auto"``  Starts with rk45 and runs Hairer's DOPRI5 stiffness detection on the
            state part (h*|lambda| estimated from the last two stages, both at
            t+h); when it signals stiffness on 15 accepted steps (without 6
            consecutive non-stiff steps in between) the row switches to the
            stiff method from the current point onwards.

Failures (step count exceeded, step size underflow, non-finite values) never
raise: the row gets ``ok=False`` and NaN outputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import time as _time
from pathlib import Path
from dataclasses import dataclass, field

import numba
from llvmlite import ir as llvm_ir
from numba.core import cgutils
from numba.extending import intrinsic
import numpy as np
import sympy
from sympy.printing.pycode import PythonCodePrinter

__all__ = ["OdeSystem", "compile_ode_system", "METHODS"]

METHODS = {"rk45": 0, "stiff": 1, "auto": 2}

# status codes
_OK = 0
_MAX_STEPS = 1
_H_UNDERFLOW = 2
_NONFINITE = 3
_STIFF = 4  # internal: rk45 detected stiffness (auto mode)

# --------------------------------------------------------------------------
# Dormand-Prince 5(4) tableau
# --------------------------------------------------------------------------
_DP_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
_DP_A = np.zeros((7, 7))
_DP_A[1, :1] = [1 / 5]
_DP_A[2, :2] = [3 / 40, 9 / 40]
_DP_A[3, :3] = [44 / 45, -56 / 15, 32 / 9]
_DP_A[4, :4] = [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729]
_DP_A[5, :5] = [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]
_DP_A[6, :6] = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]
_DP_B = _DP_A[6].copy()  # FSAL
_DP_E = np.array([-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
# dense output: y(t + th*h) = y + h * sum_i K_i * sum_j P[i, j] th^(j+1)
_DP_P = np.array([
    [1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
    [0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
    [0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632],
    [0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
    [0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
])

# --------------------------------------------------------------------------
# ROS34PW2 (Rang & Angermann 2005), original (alpha, Gamma, b, bhat) form,
# converted to the "u-form" (Hairer & Wanner IV.7 (7.25)):
#   (I/(h gamma) - J) U_i = f(t + c_i h, y + sum_j A_ij U_j) + sum_j C_ij U_j / h + h d_i f_t
#   y_new = y + sum_i M_i U_i,  err = sum_i E_i U_i
# --------------------------------------------------------------------------
_RW_GAMMA = 4.3586652150845900e-01
_rw_alpha = np.zeros((4, 4))
_rw_alpha[1, 0] = 8.7173304301691801e-01
_rw_alpha[2, 0] = 8.4457060015369423e-01
_rw_alpha[2, 1] = -1.1299064236484185e-01
_rw_alpha[3, 2] = 1.0
_rw_G = np.eye(4) * _RW_GAMMA
_rw_G[1, 0] = -8.7173304301691801e-01
_rw_G[2, 0] = -9.0338057013044082e-01
_rw_G[2, 1] = 5.4180672388095326e-02
_rw_G[3, 0] = 2.4212380706095346e-01
_rw_G[3, 1] = -1.2232505839045147e00
_rw_G[3, 2] = 5.4526025533510214e-01
_rw_b = np.array([2.4212380706095346e-01, -1.2232505839045147e00, 1.5452602553351020e00, 4.3586652150845900e-01])
_rw_bhat = np.array([3.7810903145819369e-01, -9.6042292212423178e-02, 5.0e-01, 2.1793326075422950e-01])
_rw_Ginv = np.linalg.inv(_rw_G)
_RW_A = _rw_alpha @ _rw_Ginv
_RW_C = np.diag(np.diag(_rw_Ginv)) - _rw_Ginv  # strictly lower
_RW_M = _rw_b @ _rw_Ginv
_RW_E = (_rw_b - _rw_bhat) @ _rw_Ginv
_RW_c = _rw_alpha.sum(axis=1)
_RW_d = _rw_G.sum(axis=1)

# --------------------------------------------------------------------------
# generic numba helpers (cached)
# --------------------------------------------------------------------------
_jit = numba.njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
# small hot helpers are inlined at numba-IR level: calls between separately compiled
# functions pass arrays with atomic refcount traffic, which dominated the step cost.
_ijit = numba.njit(cache=True, fastmath=False, nogil=True, inline="always", error_model="numpy")
# the stepping loops allocate nothing (workspace comes from the caller) and are compiled
# without the NRT, so no reference counting happens inside the hot loop at all.
_njit_nrt_free = numba.njit(cache=True, fastmath=False, nogil=True, _nrt=False, error_model="numpy")


@_ijit
def _err_norm(err_y, err_S, y_old, y_new, S_old, S_new, rtol, atol):
    n = err_y.shape[0]
    m = err_S.shape[1]
    acc = 0.0
    for i in range(n):
        sc = atol + rtol * max(abs(y_old[i]), abs(y_new[i]))
        e = err_y[i] / sc
        acc += e * e
        for k in range(m):
            sc = atol + rtol * max(abs(S_old[i, k]), abs(S_new[i, k]))
            e = err_S[i, k] / sc
            acc += e * e
    return math.sqrt(acc / (n * (1 + m)))


@_jit
def _scaled_norm(vy, vS, y, S, rtol, atol):
    n = vy.shape[0]
    m = vS.shape[1]
    acc = 0.0
    for i in range(n):
        e = vy[i] / (atol + rtol * abs(y[i]))
        acc += e * e
        for k in range(m):
            e = vS[i, k] / (atol + rtol * abs(S[i, k]))
            acc += e * e
    return math.sqrt(acc / (n * (1 + m)))


@_ijit
def _all_finite(y, S):
    for i in range(y.shape[0]):
        if not math.isfinite(y[i]):
            return False
        for k in range(S.shape[1]):
            if not math.isfinite(S[i, k]):
                return False
    return True


@_ijit
def _all_finite_row(Fy, FS, row):
    for i in range(Fy.shape[1]):
        if not math.isfinite(Fy[row, i]):
            return False
        for k in range(FS.shape[2]):
            if not math.isfinite(FS[row, i, k]):
                return False
    return True


@_ijit
def _lu_solve_row(lu, piv, Uy, US, row, kl, ku):
    """Solve W x = b in place for Uy[row] (vector) and every column of US[row] (n x m).

    ``kl``/``ku`` are the bandwidths _lu_factor was given (n - 1 for a dense matrix); U's rows end
    kl + ku after the diagonal.
    """
    n = lu.shape[0]
    m = US.shape[2]
    for k in range(n):
        ip = piv[k]
        if ip != k:
            tmp = Uy[row, k]
            Uy[row, k] = Uy[row, ip]
            Uy[row, ip] = tmp
            for c in range(m):
                tmp = US[row, k, c]
                US[row, k, c] = US[row, ip, c]
                US[row, ip, c] = tmp
    for i in range(n):
        # L is not banded in this storage: rows move down with each pivot and keep their multipliers
        for j in range(i):
            l = lu[i, j]
            if l != 0.0:
                Uy[row, i] -= l * Uy[row, j]
                for c in range(m):
                    US[row, i, c] -= l * US[row, j, c]
    for i in range(n - 1, -1, -1):
        for j in range(i + 1, min(n, i + kl + ku + 1)):
            u = lu[i, j]
            if u != 0.0:
                Uy[row, i] -= u * Uy[row, j]
                for c in range(m):
                    US[row, i, c] -= u * US[row, j, c]
        inv = 1.0 / lu[i, i]
        Uy[row, i] *= inv
        for c in range(m):
            US[row, i, c] *= inv


@_ijit
def _sens_rhs(jy, jp, jsp, S, out):
    """out = J_y S + [J_p | 0], visiting only J_y's structural non-zeros (CSR pattern jsp)."""
    n = S.shape[0]
    m = S.shape[1]
    P = jp.shape[1]
    for i in range(n):
        # one register sum per column: `out[i, k] +=` in the non-zero loop was a load and a store
        # per term (numba cannot rule out that out aliases S), 5x slower on a 200-state chain
        for k in range(m):
            acc = jp[i, k] if k < P else 0.0
            for q in range(jsp[i], jsp[i + 1]):
                acc += jy[i, jsp[n + 1 + q]] * S[jsp[n + 1 + q], k]
            out[i, k] = acc


@_ijit
def _bandwidths(jsp, n):
    """Lower and upper bandwidths of J_y from its CSR pattern (a grid system's are small)."""
    kl = 0
    ku = 0
    for i in range(n):
        for q in range(jsp[i], jsp[i + 1]):
            j = jsp[n + 1 + q]
            if i - j > kl:
                kl = i - j
            if j - i > ku:
                ku = j - i
    return kl, ku


@_ijit
def _lu_factor(a, piv, kl, ku):
    """In-place LU with partial pivoting. Returns False when singular.

    Only the band is eliminated: with lower bandwidth kl, pivoting can widen the upper band to
    kl + ku, no further (LAPACK's gbtrf argument). A dense matrix has kl = ku = n - 1.
    """
    n = a.shape[0]
    for k in range(n):
        pmax = abs(a[k, k])
        ip = k
        last_row = min(n, k + kl + 1)
        last_col = min(n, k + kl + ku + 1)
        for i in range(k + 1, last_row):
            v = abs(a[i, k])
            if v > pmax:
                pmax = v
                ip = i
        piv[k] = ip
        if pmax == 0.0 or not math.isfinite(pmax):
            return False
        if ip != k:
            for j in range(n):
                tmp = a[k, j]
                a[k, j] = a[ip, j]
                a[ip, j] = tmp
        inv = 1.0 / a[k, k]
        for i in range(k + 1, last_row):
            a[i, k] *= inv
            lik = a[i, k]
            if lik != 0.0:
                for j in range(k + 1, last_col):
                    a[i, j] -= lik * a[k, j]
    return True


@_ijit
def _store(Y, SP, S0, b, idx, y, S, P, sens):
    n = y.shape[0]
    for i in range(n):
        Y[b, idx, i] = y[i]
    if sens:
        for i in range(n):
            for k in range(P):
                SP[b, idx, i, k] = S[i, k]
            for k in range(S0.shape[3]):
                S0[b, idx, i, k] = S[i, P + k]


# --------------------------------------------------------------------------
# solver core: compiled once (and cached on disk); the generated kernels come
# in as integer addresses of numba cfuncs with fixed C signatures and are called
# through the LLVM intrinsics below (no per-model recompilation of the core, no
# per-call dispatcher conversion cost).
# --------------------------------------------------------------------------
_f8_1 = numba.types.float64[::1]
_f8_2 = numba.types.float64[:, ::1]
_i8 = numba.types.int64
_f8 = numba.types.float64
_b1 = numba.types.boolean
_PTR = numba.types.CPointer(numba.types.float64)
# kernels are numba cfuncs over raw pointers (matrices flattened row-major)
_SIG_F = numba.types.void(_f8, _PTR, _PTR, _PTR)
_SIG_FJ = numba.types.void(_f8, _PTR, _PTR, _PTR, _PTR, _PTR)
_SIG_BATCH = numba.types.void(
    _i8, _i8, _i8, _i8, _b1, _b1, _f8_2, _f8_2, _f8, _f8_1, _i8, _f8, _f8, _i8, _b1,
    numba.types.float64[:, :, ::1], numba.types.float64[:, :, :, ::1], numba.types.float64[:, :, :, ::1],
    numba.types.boolean[::1], numba.types.int64[::1], numba.types.int64[::1])


def _call_codegen(n_arrays, row_arg):
    """Codegen calling `void fn(double t, double* a1, ...)` at an integer address.

    Argument `row_arg` (index into the array arguments) names the array whose data
    pointer is advanced by ``row * strides[0]``; the row index is the last argument.
    """

    def codegen(context, builder, signature, args):
        dbl = llvm_ir.DoubleType()
        fnty = llvm_ir.FunctionType(llvm_ir.VoidType(), [dbl] + [dbl.as_pointer()] * n_arrays)
        fptr = builder.inttoptr(args[0], fnty.as_pointer())
        ptrs = []
        row = args[-1]
        for j, (aty, val) in enumerate(zip(signature.args[2:2 + n_arrays], args[2:2 + n_arrays])):
            ary = context.make_array(aty)(context, builder, val)
            data = ary.data
            if j == row_arg:
                stride0 = cgutils.unpack_tuple(builder, ary.strides, aty.ndim)[0]
                off = builder.mul(stride0, row)
                raw = builder.bitcast(data, llvm_ir.IntType(8).as_pointer())
                data = builder.gep(raw, [off])
            ptrs.append(builder.bitcast(data, dbl.as_pointer()))
        builder.call(fptr, [args[1]] + ptrs)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _call_f(typingctx, addr, t, y, p, out, row):
    """Call the kernel at `addr` as f(t, y, p, &out[row]) (arrays C-contiguous)."""
    return numba.types.void(addr, t, y, p, out, row), _call_codegen(3, 2)


@intrinsic
def _call_fj(typingctx, addr, t, y, p, out, jy, jp, row):
    """Call the kernel at `addr` as f(t, y, p, &out[row], jy, jp)."""
    return numba.types.void(addr, t, y, p, out, jy, jp, row), _call_codegen(5, 2)


@_ijit
def _eval_aug(f_only, f_jac, t, y, S, p, Fy, FS, row, jy, jp, jsp, sens):
    """Fy[row] = f(t, y);  FS[row] = J_y S + [J_p | 0]  (Fy 2-D, FS 3-D stage arrays)."""
    if sens:
        _call_fj(f_jac, t, y, p, Fy, jy, jp, row)
        _sens_rhs(jy, jp, jsp, S, FS[row])
    else:
        _call_f(f_only, t, y, p, Fy, row)


@_ijit
def _trial_step(d0, d1, hmax):
    """Hairer's first trial step from the scaled norms of y (d0) and f (d1)."""
    return min(1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1, hmax)


@_ijit
def _initial_step_choice(h0, d1, d2, order, hmax):
    """Hairer's step from the trial step h0 and the scaled norms of f (d1) and of its change (d2)."""
    if not math.isfinite(d2):
        return h0 * 1e-3
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1, hmax)


@_ijit
def _initial_step(f_only, f_jac, t, y, S, p, fy0, fS0, jy, jp, jsp, sens, order, rtol, atol, hmax, wy, wS, Fy, FS):
    d0 = _scaled_norm(y, S, y, S, rtol, atol)
    d1 = _scaled_norm(fy0, fS0, y, S, rtol, atol)
    h0 = _trial_step(d0, d1, hmax)
    n = y.shape[0]
    m = S.shape[1]
    for i in range(n):
        wy[i] = y[i] + h0 * fy0[i]
        for k in range(m):
            wS[i, k] = S[i, k] + h0 * fS0[i, k]
    _eval_aug(f_only, f_jac, t + h0, wy, wS, p, Fy, FS, 0, jy, jp, jsp, sens)
    fy1 = Fy[0]
    fS1 = FS[0]
    for i in range(n):
        fy1[i] -= fy0[i]
        for k in range(m):
            fS1[i, k] -= fS0[i, k]
    d2 = _scaled_norm(fy1, fS1, y, S, rtol, atol) / h0
    return _initial_step_choice(h0, d1, d2, order, hmax)


# ---- the explicit path works on one flat augmented state z = [y (n), S (n x m) row-major] of
# length D = n (1 + m), and stage slopes K (7, D): every stage, error and dense-output loop runs
# over D contiguous numbers (vectorised), where loops over (state, column) pairs with two or
# three columns cost 5-7x more on a 200-state system. With the fused kernel, S holds only its
# structurally non-zero entries (row by row; the layout follows J_y's pattern in ``jsp``: row
# pointers, then columns), so D = n + non-zeros: experiments' blocks carry no sensitivities to
# each other's parameters. The generic path uses the full layout (every column of every row).
@_ijit
def _eval_flat(f_only, f_jac, f_sens, fused, t, z, p, K, row, n, m, jy, jp, jsp, sens):
    """K[row, :n] = f(t, y);  K[row, n:] = J_y S + [J_p | 0]  (y = z[:n], S = z[n:] as n x m)."""
    if fused:
        _call_f(f_sens, t, z, p, K, row)  # the generated f_sens writes the whole row
    elif sens:
        _call_fj(f_jac, t, z, p, K, jy, jp, row)  # the kernel reads z[:n] and writes K[row, :n]
        P = jp.shape[1]
        for i in range(n):
            for k in range(m):  # register sums over J_y's structural non-zeros (see _sens_rhs)
                acc = jp[i, k] if k < P else 0.0
                for q in range(jsp[i], jsp[i + 1]):
                    acc += jy[i, jsp[n + 1 + q]] * z[n + jsp[n + 1 + q] * m + k]
                K[row, n + i * m + k] = acc
    else:
        _call_f(f_only, t, z, p, K, row)


@_ijit
def _all_finite_flat(K, row):
    for x in range(K.shape[1]):
        if not math.isfinite(K[row, x]):
            return False
    return True


@_ijit
def _scaled_norm_flat(v, z, n, m, jsp, rtol, atol):
    """_scaled_norm over flat vectors, summed in the same order (state, then its columns); the
    sensitivities left out of z are zero throughout and count in the mean as zeros."""
    off = n + 1 + jsp[n]
    acc = 0.0
    for i in range(n):
        e = v[i] / (atol + rtol * abs(z[i]))
        acc += e * e
        for q in range(jsp[off + i], jsp[off + i + 1]):
            x = n + q
            e = v[x] / (atol + rtol * abs(z[x]))
            acc += e * e
    return math.sqrt(acc / (n * (1 + m)))


@_ijit
def _err_norm_flat(ez, z_old, z_new, n, m, jsp, rtol, atol):
    """_err_norm over flat vectors, summed in the same order (state, then its columns)."""
    off = n + 1 + jsp[n]
    acc = 0.0
    for i in range(n):
        e = ez[i] / (atol + rtol * max(abs(z_old[i]), abs(z_new[i])))
        acc += e * e
        for q in range(jsp[off + i], jsp[off + i + 1]):
            x = n + q
            e = ez[x] / (atol + rtol * max(abs(z_old[x]), abs(z_new[x])))
            acc += e * e
    return math.sqrt(acc / (n * (1 + m)))


@_ijit
def _initial_step_flat(f_only, f_jac, f_sens, fused, t, z, p, K, n, m, jy, jp, jsp, sens, order, rtol, atol, hmax,
                       wz, T1):
    """Hairer's starting step from f0 = K[0]; one extra evaluation into T1[0]."""
    D = z.shape[0]
    d0 = _scaled_norm_flat(z, z, n, m, jsp, rtol, atol)
    f0 = K[0]
    d1 = _scaled_norm_flat(f0, z, n, m, jsp, rtol, atol)
    h0 = _trial_step(d0, d1, hmax)
    for x in range(D):
        wz[x] = z[x] + h0 * f0[x]
    _eval_flat(f_only, f_jac, f_sens, fused, t + h0, wz, p, T1, 0, n, m, jy, jp, jsp, sens)
    f1 = T1[0]
    for x in range(D):
        f1[x] -= f0[x]
    d2 = _scaled_norm_flat(f1, z, n, m, jsp, rtol, atol) / h0
    return _initial_step_choice(h0, d1, d2, order, hmax)


@_ijit
def _dp_dense_flat(z, K, h, theta, Pm, out, w):
    for i in range(7):
        th = theta
        acc = 0.0
        for j in range(4):
            acc += Pm[i, j] * th
            th *= theta
        w[i] = h * acc
    for x in range(z.shape[0]):
        acc = z[x]
        for i in range(7):
            acc += w[i] * K[i, x]
        out[x] = acc


@_ijit
def _store_flat(Y, SP, S0, b, idx, z, n, m, P, sens, jsp):
    for i in range(n):
        Y[b, idx, i] = z[i]
    if sens:
        off = n + 1 + jsp[n]
        for i in range(n):
            for k in range(P):
                SP[b, idx, i, k] = 0.0
            for k in range(S0.shape[3]):
                S0[b, idx, i, k] = 0.0
            for q in range(jsp[off + i], jsp[off + i + 1]):
                k = jsp[off + n + 1 + q]
                if k < P:
                    SP[b, idx, i, k] = z[n + q]
                else:
                    S0[b, idx, i, k - P] = z[n + q]


@_njit_nrt_free
def _rk45_row(f_only, f_jac, f_sens, fused, b, t, z, n, m, p, times, idx, t_end, rtol, atol, max_steps, nsteps0,
              sens, detect_stiff, Y, SP, S0, Ca, Aa, Ea, Pm,
              K, jy, jp, jsp, zs, zn, ez, oz, T1, w7):
    """Integrates the flat augmented state z from t; writes outputs times[idx:].

    Returns (status, t, idx, nsteps).
    """
    D = z.shape[0]
    P = p.shape[0]
    T = times.shape[0]
    _eval_flat(f_only, f_jac, f_sens, fused, t, z, p, K, 0, n, m, jy, jp, jsp, sens)
    if not _all_finite_flat(K, 0):
        return _NONFINITE, t, idx, nsteps0
    span = t_end - t
    h = _initial_step_flat(f_only, f_jac, f_sens, fused, t, z, p, K, n, m, jy, jp, jsp, sens, 4, rtol, atol, span,
                           zs, T1)
    nsteps = nsteps0
    errold = 1e-4
    rejected = False
    beta = 0.04
    alpha = 0.2 - 0.75 * beta
    iasti = 0
    nonsti = 0
    while idx < T:
        if nsteps >= max_steps:
            return _MAX_STEPS, t, idx, nsteps
        if h < 10.0 * 2.220446049250313e-16 * max(abs(t), 1e-300) or h <= 0.0:
            return _H_UNDERFLOW, t, idx, nsteps
        last = False
        if t + h >= t_end or t + 1.0001 * h >= t_end:
            h = t_end - t
            last = True
        nsteps += 1
        for s in range(1, 7):
            # one pass per earlier stage, each a long loop that vectorises (a sum over the stages
            # inside a loop over D compiled to scalar code); the additions keep their order
            for x in range(D):
                zs[x] = z[x]
            for j in range(s):
                c = h * Aa[s, j]
                for x in range(D):
                    zs[x] += c * K[j, x]
            if s == 5 and detect_stiff:
                for i in range(n):
                    oz[i] = zs[i]  # stage-6 argument (for stiffness detection)
            if s == 6:
                for x in range(D):
                    zn[x] = zs[x]
            _eval_flat(f_only, f_jac, f_sens, fused, t + Ca[s] * h, zs, p, K, s, n, m, jy, jp, jsp, sens)
        for x in range(D):
            ez[x] = Ea[0] * K[0, x]
        for j in range(1, 7):
            e = Ea[j]
            for x in range(D):
                ez[x] += e * K[j, x]
        for x in range(D):
            ez[x] *= h
        err = _err_norm_flat(ez, z, zn, n, m, jsp, rtol, atol)
        if not math.isfinite(err) or not _all_finite_flat(K, 6):
            h *= 0.2
            rejected = True
            continue
        if err <= 1.0:
            # accepted
            t_new = t_end if last else t + h
            if detect_stiff:
                num = 0.0
                den = 0.0
                for i in range(n):
                    d = K[6, i] - K[5, i]
                    num += d * d
                    d = zn[i] - oz[i]
                    den += d * d
                if den > 0.0 and h * math.sqrt(num / den) > 3.25:
                    nonsti = 0
                    iasti += 1
                else:
                    nonsti += 1
                    if nonsti == 6:
                        iasti = 0
            # outputs in (t, t_new]
            while idx < T and times[idx] <= t_new:
                if times[idx] == t_new:
                    _store_flat(Y, SP, S0, b, idx, zn, n, m, P, sens, jsp)
                else:
                    theta = (times[idx] - t) / h
                    _dp_dense_flat(z, K, h, theta, Pm, oz, w7)
                    _store_flat(Y, SP, S0, b, idx, oz, n, m, P, sens, jsp)
                idx += 1
            t = t_new
            for x in range(D):
                z[x] = zn[x]
                K[0, x] = K[6, x]
            if detect_stiff and iasti >= 15 and idx < T:
                return _STIFF, t, idx, nsteps
            e = max(err, 1e-10)
            fac = 0.9 * e ** (-alpha) * errold ** beta
            fac = min(10.0, max(0.2, fac))
            if rejected:
                fac = min(1.0, fac)
            h *= fac
            errold = max(err, 1e-4)
            rejected = False
        else:
            fac = max(0.2, 0.9 * err ** (-alpha))
            h *= fac
            rejected = True
    return _OK, t, idx, nsteps


@_njit_nrt_free
def _ros_row(f_only, f_jac, t_deriv, has_t, b, t, y, S, p, times, idx, rtol, atol, max_steps, nsteps0,
             sens, Y, SP, S0, RA, RC, RM, RE, Rc, Rd, gam,
             Uy, US, jy, jp, jsp, jy0, jp0, fy0, fS0, ft, jyt, jpt, ftS, ys, Ss, yn, Sn, ey, eS, W, piv):
    n = y.shape[0]
    m = S.shape[1]
    P = p.shape[0]
    T = times.shape[0]
    t_end = times[T - 1]
    kl, ku = _bandwidths(jsp, n)
    for i in range(n):
        ft[i] = 0.0
        for k in range(m):
            ftS[i, k] = 0.0
    _call_fj(f_jac, t, y, p, fy0, jy0, jp0, 0)
    if sens:
        _sens_rhs(jy0, jp0, jsp, S, fS0)
    if not _all_finite(fy0, fS0):
        return _NONFINITE, t, idx, nsteps0
    h = _initial_step(f_only, f_jac, t, y, S, p, fy0, fS0, jy, jp, jsp, sens, 2, rtol, atol, t_end - t,
                      ys, Ss, Uy, US)
    nsteps = nsteps0
    rejected = False
    need_eval = False
    while idx < T:
        if nsteps >= max_steps:
            return _MAX_STEPS, t, idx, nsteps
        if h < 10.0 * 2.220446049250313e-16 * max(abs(t), 1e-300) or h <= 0.0:
            return _H_UNDERFLOW, t, idx, nsteps
        if need_eval:
            _call_fj(f_jac, t, y, p, fy0, jy0, jp0, 0)
            if sens:
                _sens_rhs(jy0, jp0, jsp, S, fS0)
            need_eval = False
        t_out = times[idx]
        clipped = False
        h_saved = h
        if t + h >= t_out or t + 1.0001 * h >= t_out:
            h = t_out - t
            clipped = True
        nsteps += 1
        if has_t:
            _call_fj(t_deriv, t, y, p, ft, jyt, jpt, 0)
            if sens:
                # d/dt of (J_y S + J_p) at fixed S
                _sens_rhs(jyt, jpt, jsp, S, ftS)
        inv_hg = 1.0 / (h * gam)
        for i in range(n):
            for j in range(n):
                W[i, j] = -jy0[i, j]
            W[i, i] += inv_hg
        if not _lu_factor(W, piv, kl, ku):
            h *= 0.25
            rejected = True
            continue
        for s in range(4):
            if s == 0:
                for i in range(n):
                    Uy[0, i] = fy0[i]
                    for k in range(m):
                        US[0, i, k] = fS0[i, k]
            else:
                for i in range(n):
                    acc = y[i]
                    for j in range(s):
                        acc += RA[s, j] * Uy[j, i]
                    ys[i] = acc
                    for k in range(m):
                        acc = S[i, k]
                        for j in range(s):
                            acc += RA[s, j] * US[j, i, k]
                        Ss[i, k] = acc
                _eval_aug(f_only, f_jac, t + Rc[s] * h, ys, Ss, p, Uy, US, s, jy, jp, jsp, sens)
            for i in range(n):
                acc = Uy[s, i]
                for j in range(s):
                    acc += RC[s, j] / h * Uy[j, i]
                if has_t:
                    acc += h * Rd[s] * ft[i]
                Uy[s, i] = acc
                for k in range(m):
                    acc = US[s, i, k]
                    for j in range(s):
                        acc += RC[s, j] / h * US[j, i, k]
                    if has_t:
                        acc += h * Rd[s] * ftS[i, k]
                    US[s, i, k] = acc
            _lu_solve_row(W, piv, Uy, US, s, kl, ku)
        for i in range(n):
            acc = y[i]
            acc_e = 0.0
            for j in range(4):
                acc += RM[j] * Uy[j, i]
                acc_e += RE[j] * Uy[j, i]
            yn[i] = acc
            ey[i] = acc_e
            for k in range(m):
                acc = S[i, k]
                acc_e = 0.0
                for j in range(4):
                    acc += RM[j] * US[j, i, k]
                    acc_e += RE[j] * US[j, i, k]
                Sn[i, k] = acc
                eS[i, k] = acc_e
        err = _err_norm(ey, eS, y, yn, S, Sn, rtol, atol)
        if not math.isfinite(err) or not _all_finite(yn, Sn):
            h *= 0.2
            rejected = True
            continue
        if err <= 1.0:
            t = t_out if clipped else t + h
            for i in range(n):
                y[i] = yn[i]
                for k in range(m):
                    S[i, k] = Sn[i, k]
            need_eval = True
            while idx < T and times[idx] <= t:
                _store(Y, SP, S0, b, idx, y, S, P, sens)
                idx += 1
            fac = 0.9 * max(err, 1e-10) ** (-1.0 / 3.0)
            fac = min(6.0, max(0.2, fac))
            if rejected:
                fac = min(1.0, fac)
            h_new = h * fac
            if clipped:
                h_new = max(h_new, min(h_saved, 10.0 * h_new))
            h = h_new
            rejected = False
        else:
            h *= max(0.2, 0.9 * err ** (-1.0 / 3.0))
            rejected = True
    return _OK, t, idx, nsteps


@numba.njit(_SIG_BATCH, cache=True, nogil=True, error_model="numpy")
def _solve_batch(f_only, f_jac, t_deriv, f_sens, fused, has_t, y0, p, t0, times, method, rtol, atol, max_steps, sens,
                 Y, SP, S0, ok, nsteps_out, jsp):
    Ca, Aa, Ea, Pm = _DP_C, _DP_A, _DP_E, _DP_P
    RA, RC, RM, RE, Rc, Rd, gam = _RW_A, _RW_C, _RW_M, _RW_E, _RW_c, _RW_d, _RW_GAMMA
    B = y0.shape[0]
    n = y0.shape[1]
    P = p.shape[1]
    T = times.shape[0]
    n0 = S0.shape[3] if sens else 0  # 0 when the initial values need no sensitivities
    m = (P + n0) if sens else 0
    # workspace (shared by rows); the sensitivity layout follows J_y's pattern in jsp
    off = n + 1 + jsp[n]
    D = n + (jsp[off + n] if sens else 0)
    z = np.empty(D)
    K = np.empty((7, D))
    zs = np.empty(D)
    zn = np.empty(D)
    ez = np.empty(D)
    oz = np.empty(D)
    T1 = np.empty((1, D))
    w7 = np.empty(7)
    # n x n matrices only where they are used: the explicit path with the fused kernel needs no
    # Jacobian, and the Rosenbrock workspace serves only the stiff and auto methods
    nr = n if method != 0 else 0
    nj = n if (method != 0 or (sens and not fused)) else 0
    jy = np.zeros((nj, nj))
    jp = np.empty((nj, P))
    ys = np.empty(nr)
    Ss = np.empty((nr, m))
    yn = np.empty(nr)
    Sn = np.empty((nr, m))
    ey = np.empty(nr)
    eS = np.empty((nr, m))
    Uy = np.empty((4, nr))
    US = np.empty((4, nr, m))
    jy0 = np.zeros((nr, nr))
    jp0 = np.empty((nr, P))
    fy0 = np.empty(nr)
    fS0 = np.empty((nr, m))
    ft = np.zeros(nr)
    jyt = np.zeros((nr, nr))
    jpt = np.zeros((nr, P))
    ftS = np.zeros((nr, m))
    W = np.empty((nr, nr))
    piv = np.empty(nr, dtype=np.int64)
    for b in range(B):
        y = y0[b].copy()
        S = np.zeros((n, m))
        if sens and n0 > 0:
            for i in range(n):
                S[i, P + i] = 1.0
        pb = p[b].copy()
        idx = 0
        while idx < T and times[idx] <= t0:
            _store(Y, SP, S0, b, idx, y, S, P, sens)
            idx += 1
        status = _OK
        t = t0
        nsteps = 0
        if idx < T:
            if method == 1:
                status, t, idx, nsteps = _ros_row(f_only, f_jac, t_deriv, has_t, b, t, y, S, pb, times, idx,
                                                  rtol, atol, max_steps, 0, sens, Y, SP, S0,
                                                  RA, RC, RM, RE, Rc, Rd, gam,
                                                  Uy, US, jy, jp, jsp, jy0, jp0, fy0, fS0, ft, jyt, jpt, ftS,
                                                  ys, Ss, yn, Sn, ey, eS, W, piv)
            else:
                for i in range(n):
                    z[i] = y[i]
                    for q in range(jsp[off + i], jsp[off + i + 1]):
                        z[n + q] = S[i, jsp[off + n + 1 + q]]
                status, t, idx, nsteps = _rk45_row(f_only, f_jac, f_sens, fused, b, t, z, n, m, pb, times, idx,
                                                   times[T - 1],
                                                   rtol, atol, max_steps, 0, sens, method == 2,
                                                   Y, SP, S0, Ca, Aa, Ea, Pm,
                                                   K, jy, jp, jsp, zs, zn, ez, oz, T1, w7)
                if status == _STIFF:
                    for i in range(n):
                        y[i] = z[i]
                        for k in range(m):
                            S[i, k] = 0.0
                        for q in range(jsp[off + i], jsp[off + i + 1]):
                            S[i, jsp[off + n + 1 + q]] = z[n + q]
                    status, t, idx, nsteps = _ros_row(f_only, f_jac, t_deriv, has_t, b, t, y, S, pb, times,
                                                      idx, rtol, atol, max_steps, nsteps, sens, Y, SP, S0,
                                                      RA, RC, RM, RE, Rc, Rd, gam,
                                                      Uy, US, jy, jp, jsp, jy0, jp0, fy0, fS0, ft, jyt, jpt, ftS,
                                                      ys, Ss, yn, Sn, ey, eS, W, piv)
        nsteps_out[b] = nsteps
        good = status == _OK
        if good:
            for k in range(T):
                for i in range(n):
                    if not math.isfinite(Y[b, k, i]):
                        good = False
                if sens and good:
                    for i in range(n):
                        for c in range(P):
                            if not math.isfinite(SP[b, k, i, c]):
                                good = False
                        for c in range(n0):
                            if not math.isfinite(S0[b, k, i, c]):
                                good = False
        ok[b] = good
        if not good:
            for k in range(T):
                for i in range(n):
                    Y[b, k, i] = np.nan
                    if sens:
                        for c in range(P):
                            SP[b, k, i, c] = np.nan
                        for c in range(n0):
                            S0[b, k, i, c] = np.nan


# --------------------------------------------------------------------------
# code generation
# --------------------------------------------------------------------------
class _KernelPrinter(PythonCodePrinter):
    """Python printer emitting numba-friendly scalar code (``math.*`` functions)."""

    def _print_Piecewise(self, expr):
        # nested conditional expressions; a missing final `True` branch gives NaN
        result = "math.nan"
        for e, c in reversed(expr.args):
            if c == sympy.true:
                result = self._print(e)
            else:
                result = "(({}) if ({}) else ({}))".format(self._print(e), self._print(c), result)
        return result

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = "min({}, {})".format(out, a)
        return out

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = "max({}, {})".format(out, a)
        return out

    def _print_Heaviside(self, expr):
        x = self._print(expr.args[0])
        h0 = "0.5" if len(expr.args) == 1 else self._print(expr.args[1])
        return "((1.0) if ({x}) > 0 else ((0.0) if ({x}) < 0 else ({h0})))".format(x=x, h0=h0)

    def _print_sign(self, expr):
        x = self._print(expr.args[0])
        return "((1.0) if ({x}) > 0 else ((-1.0) if ({x}) < 0 else (0.0)))".format(x=x)

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Pow(self, expr, rational=False):
        # numba raises ZeroDivisionError for 0.0 ** -k even under the numpy error model;
        # a division gives inf instead, which the caller treats as a rejected point.
        base, exp = expr.args
        if exp.is_Number and exp < 0:
            positive = sympy.Pow(base, -exp, evaluate=False) if exp != -1 else base
            return "(1.0 / ({}))".format(self._print(positive))
        return super()._print_Pow(expr, rational=rational)

    def _print_Rational(self, expr):
        return repr(float(expr.p) / float(expr.q))

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"


def _emit_assignments(printer, exprs_targets, indent="    ", prefix="_x"):
    """cse over all expressions, emit `target = expr` lines (temporaries named prefix0, prefix1, ...)."""
    exprs = [e for _, e in exprs_targets]
    if not exprs:
        return []
    repl, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols(prefix), optimizations=None)
    lines = [f"{indent}{printer.doprint(s)} = {printer.doprint(e)}" for s, e in repl]
    for (target, _), e in zip(exprs_targets, reduced):
        lines.append(f"{indent}{target} = {printer.doprint(e)}")
    return lines


def _header(name, args, n, P, states="y"):
    lines = [f"def {name}({', '.join(args)}):"]
    lines.append("    _t = t")
    lines += [f"    _y{i} = {states}[{i}]" for i in range(n)]
    lines += [f"    _p{k} = p[{k}]" for k in range(P)]
    return lines


# The fused kernel f_sens writes f and J_y S + [J_p | 0] as straight-line code: 0.7 us on a
# 200-state chain where f_jac and a sparse product over J_y take 8 us. numba compiles its lines
# at a few ms each, so it is generated only up to this many outputs (f and the structurally
# non-zero sensitivities); larger systems keep f_jac and the product.
FUSED_OUTPUT_LIMIT = 2000


def structural_sensitivities(state_uses: list[set[int]], param_uses: list[set[int]], P: int, m: int) -> list[set[int]]:
    """The columns k where S_ik = dy_i/d(column k) can be non-zero, from which states and parameters
    each equation uses: column k < P from the equations that use p_k, column P + l (an initial value;
    S(0) = [0 | I]) from state l, each spread along the Jacobian's pattern to every state that
    depends on one already reached. In a block-diagonal system (experiments) a state's
    sensitivities to another block's parameters stay zero; in a chain, state i reaches p_1..p_i."""
    n = len(state_uses)
    reach = [{k for k in param_uses[i] if k < m} | ({P + i} if m > P else set()) for i in range(n)]
    changed = True
    while changed:
        changed = False
        for i in range(n):
            for j in state_uses[i]:
                if not reach[j] <= reach[i]:
                    reach[i] |= reach[j]
                    changed = True
    return reach


def _fused_sensitivity_lines(printer, n, P, m, f, yy, pp, used):
    """Body of f_sens(t, z, p, out) on the compressed layout, and that layout (row pointers, then
    columns): out[:n] = f, out[n + q] = (J_p)_ik + sum_j (J_y)_ij S_jk for the q-th structurally
    non-zero S_ik (row by row, columns ascending)."""
    ss = [[sympy.Symbol(f"_s{j}_{k}", real=True) for k in range(m)] for j in range(n)]
    zero = sympy.Integer(0)
    reach = structural_sensitivities([{j for j in range(n) if yy[j] in used[i]} for i in range(n)],
                                     [{k for k in range(P) if pp[k] in used[i]} for i in range(n)], P, m)
    position = {}
    for i in range(n):
        for k in sorted(reach[i]):
            position[i, k] = len(position)
    targets = []
    loads = set()
    for i in range(n):
        targets.append((f"out[{i}]", f[i]))
        states = [j for j in range(n) if yy[j] in used[i]]
        jy_row = [(j, sympy.diff(f[i], yy[j])) for j in states]
        for k in sorted(reach[i]):
            e = sympy.diff(f[i], pp[k]) if k < P and pp[k] in used[i] else zero
            for j, a in jy_row:
                if a != 0 and k in reach[j]:
                    e = e + a * ss[j][k]
                    loads.add((j, k))
            targets.append((f"out[{n + position[i, k]}]", e))
    lines = [f"    _s{j}_{k} = z[{n + position[j, k]}]" for j, k in sorted(loads)]
    layout = np.concatenate([np.cumsum([0] + [len(r) for r in reach]), [k for r in reach for k in sorted(r)]])
    return lines + _emit_assignments(printer, targets), np.asarray(layout, dtype=np.int64)


def full_sensitivity_layout(n: int, m: int) -> np.ndarray:
    """Every column of every row (the generic path's layout): row pointers, then columns."""
    return np.concatenate([np.arange(n + 1) * m, np.tile(np.arange(m), n)]).astype(np.int64)


def _fused_output_count(states, params, rhs, m: int) -> int:
    """How many outputs f_sens writes (f and the structurally non-zero sensitivities)."""
    index_y = {s: i for i, s in enumerate(states)}
    index_p = {s: k for k, s in enumerate(params)}
    free = [sympy.sympify(e).free_symbols for e in rhs]
    reach = structural_sensitivities([{index_y[s] for s in u if s in index_y} for u in free],
                                     [{index_p[s] for s in u if s in index_p} for u in free], len(params), m)
    return len(states) + sum(len(r) for r in reach)


def _generate_source(tsym, ysyms, psyms, rhs, sens_columns=None):
    n, P = len(ysyms), len(psyms)
    ty = sympy.Symbol("_t", real=True)
    yy = [sympy.Symbol(f"_y{i}", real=True) for i in range(n)]
    pp = [sympy.Symbol(f"_p{k}", real=True) for k in range(P)]
    subs = {tsym: ty}
    subs.update(dict(zip(ysyms, yy)))
    subs.update(dict(zip(psyms, pp)))
    f = [sympy.sympify(e).xreplace(subs) for e in rhs]
    free = set().union(*[e.free_symbols for e in f]) if f else set()
    unknown = free - set(yy) - set(pp) - {ty}
    if unknown:
        raise ValueError(f"rhs contains unknown symbols: {sorted(map(str, unknown))}")
    # Differentiate only by the symbols each component uses: a grid system's Jacobian is sparse.
    zero = sympy.Integer(0)
    used = [fi.free_symbols for fi in f]
    Jy = [[sympy.diff(fi, yj) if yj in u else zero for yj in yy] for fi, u in zip(f, used)]
    Jp = [[sympy.diff(fi, pk) if pk in u else zero for pk in pp] for fi, u in zip(f, used)]
    has_t = ty in free
    printer = _KernelPrinter({"fully_qualified_modules": True, "standard": "python3"})

    src = []
    # f_only
    src += _header("f_only", ["t", "y", "p", "out"], n, P)
    src += _emit_assignments(printer, [(f"out[{i}]", f[i]) for i in range(n)])
    src.append("")
    # f_jac
    src += _header("f_jac", ["t", "y", "p", "out", "jy", "jp"], n, P)
    if P:
        src.append(f"    for _i in range({n * P}):\n        jp[_i] = 0.0")
    targets = [(f"out[{i}]", f[i]) for i in range(n)]
    targets += [(f"jy[{i * n + j}]", Jy[i][j]) for i in range(n) for j in range(n) if Jy[i][j] != 0]
    targets += [(f"jp[{i * P + k}]", Jp[i][k]) for i in range(n) for k in range(P) if Jp[i][k] != 0]
    src += _emit_assignments(printer, targets)
    src.append("")
    # t_deriv
    src += _header("t_deriv", ["t", "y", "p", "ft", "jyt", "jpt"], n, P)
    src.append(f"    for _i in range({n}):\n        ft[_i] = 0.0")
    if P:
        src.append(f"    for _i in range({n * P}):\n        jpt[_i] = 0.0")
    targets = []
    if has_t:
        targets += [(f"ft[{i}]", sympy.diff(f[i], ty)) for i in range(n)]
        targets += [(f"jyt[{i * n + j}]", sympy.diff(Jy[i][j], ty)) for i in range(n) for j in range(n)]
        targets += [(f"jpt[{i * P + k}]", sympy.diff(Jp[i][k], ty)) for i in range(n) for k in range(P)]
        targets = [(a, e) for a, e in targets if e != 0]
    src += _emit_assignments(printer, targets)
    src.append("    return")
    src.append("")
    if sens_columns is not None:
        src += _header("f_sens", ["t", "z", "p", "out"], n, P, states="z")
        lines, sens_layout = _fused_sensitivity_lines(printer, n, P, sens_columns, f, yy, pp, used)
        src += lines
        src.append("")
    else:
        sens_layout = np.zeros(0, dtype=np.int64)
    pattern = [[j for j in range(n) if Jy[i][j] != 0] for i in range(n)]
    indptr = np.cumsum([0] + [len(r) for r in pattern])
    jac_pattern = np.ascontiguousarray(np.concatenate([indptr, [j for r in pattern for j in r]]), dtype=np.int64)
    return "\n".join(src), has_t, jac_pattern, sens_layout


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
@dataclass
class OdeSystem:
    """y' = f(t, y, p) compiled from SymPy; f's Jacobians come from SymPy too."""

    n_states: int
    n_params: int
    has_time: bool
    source: str
    kernels: "_Kernels" = field(repr=False)
    compile_seconds: float = 0.0
    # the sensitivity column count the fused kernel f_sens was generated for (None: no f_sens)
    sens_columns: int | None = None
    last_nsteps: np.ndarray | None = field(default=None, repr=False)
    # J_y's structural non-zeros as CSR (indptr of n+1, then column indices): the sensitivity
    # products cost O(non-zeros) rather than O(n^2) per stage.
    jac_pattern: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64), repr=False)
    # the fused kernel's compressed sensitivity layout (row pointers, then columns; see _eval_flat)
    sens_layout: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    _patterns: dict = field(default_factory=dict, repr=False)

    def _pattern(self, fused: bool, m: int) -> np.ndarray:
        """J_y's pattern followed by the sensitivity layout of this path (what the core calls jsp)."""
        key = (fused, m)
        if key not in self._patterns:
            layout = self.sens_layout if fused else full_sensitivity_layout(self.n_states, m)
            self._patterns[key] = np.ascontiguousarray(np.concatenate([self.jac_pattern, layout]), dtype=np.int64)
        return self._patterns[key]

    # Each kernel is compiled (or loaded from the disk cache) when a solve first needs it: an
    # explicit model with the fused kernel never compiles f_jac, whose numba compilation is most
    # of a large system's start-up.
    @property
    def f_only(self):
        return self._kernel("f_only")

    @property
    def f_jac(self):
        return self._kernel("f_jac")

    @property
    def t_deriv(self):
        """df/dt and its Jacobians; without explicit time the core never calls it and f_jac stands in."""
        return self._kernel("t_deriv" if self.has_time else "f_jac")

    @property
    def f_sens(self):
        return self._kernel("f_sens") if self.sens_columns is not None else None

    def _kernel(self, name):
        seconds = self.kernels.seconds
        kernel = self.kernels.get(name)
        self.compile_seconds += self.kernels.seconds - seconds
        return kernel

    def warmup(self, methods=("auto", "stiff"), sensitivities=(True, False)) -> float:
        """Compile the kernels and load the solver core for these paths; returns seconds.

        Example::

            >>> system.warmup(methods=("rk45",), sensitivities=(True,))   # what a fit calls: f_sens only
        """
        t_start = _time.perf_counter()
        before = self.compile_seconds
        y0 = np.ones((1, self.n_states))
        p = np.ones((1, self.n_params))
        times = np.array([0.0, 1e-3])
        for sens in sensitivities:
            for method in methods:
                self.solve(y0, p, 0.0, times, method=method, sensitivities=sens, max_steps=50,
                           y0_sensitivities=self.sens_columns != self.n_params)
        dt = _time.perf_counter() - t_start
        self.compile_seconds = before + dt  # kernel compilation inside is part of dt
        return dt

    def solve(self, y0, p, t0, times, *, method="rk45", rtol=1e-6, atol=1e-8, max_steps=100_000,
              sensitivities=True, y0_sensitivities=True):
        """y0 (B,n), p (B,P) float64; times (T,) sorted ascending, all >= t0.

        Returns Y (B,T,n), dY/dp (B,T,n,P), dY/dy0 (B,T,n,n), ok (B,) bool.
        Failed rows get ok=False and NaN outputs (no exception).  The number of
        steps per row is left in ``self.last_nsteps``.
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
        y0 = np.ascontiguousarray(y0, dtype=np.float64)
        p = np.ascontiguousarray(p, dtype=np.float64)
        times = np.ascontiguousarray(times, dtype=np.float64).reshape(-1)
        n, P = self.n_states, self.n_params
        if y0.ndim != 2 or y0.shape[1] != n:
            raise ValueError(f"y0 must have shape (B, {n}), got {y0.shape}")
        B = y0.shape[0]
        if p.ndim != 2 or p.shape != (B, P):
            raise ValueError(f"p must have shape ({B}, {P}), got {p.shape}")
        if times.size and (np.any(np.diff(times) < 0) or times[0] < t0):
            raise ValueError("times must be sorted ascending and >= t0")
        T = times.shape[0]
        sens = bool(sensitivities)
        Y = np.empty((B, T, n))
        if sens:
            SP = np.empty((B, T, n, P))
            S0 = np.empty((B, T, n, n if y0_sensitivities else 0))
        else:
            SP = np.empty((0, 0, 0, 0))
            S0 = np.empty((0, 0, 0, 0))
        ok = np.zeros(B, dtype=np.bool_)
        nsteps = np.zeros(B, dtype=np.int64)
        if B and T:
            m = P + (n if y0_sensitivities else 0)
            fused = sens and method != "stiff" and self.sens_columns == m
            # only the kernels this path calls are compiled (address 0 for the others); self holds
            # the cfunc objects, so the addresses stay valid while the core calls them
            _solve_batch(0 if sens else self.f_only.address,
                         self.f_jac.address if (method != "rk45" or (sens and not fused)) else 0,
                         self.t_deriv.address if method != "rk45" else 0,
                         self.f_sens.address if fused else 0, fused, self.has_time,
                         y0, p, float(t0), times, METHODS[method], float(rtol), float(atol),
                         int(max_steps), sens, Y, SP, S0, ok, nsteps, self._pattern(fused, m if sens else 0))
        elif B:
            ok[:] = True
        self.last_nsteps = nsteps
        if not sens:
            return Y, None, None, ok
        return Y, SP, (S0 if y0_sensitivities else None), ok


_CFUNC_HEADER = """# Generated by msml from a model's right-hand side; compiled by numba and cached beside this file.
import math

import numba

from msml_dsl.backends.pyro.ode_solver import _SIG_F, _SIG_FJ

"""


def kernel_cache_dir() -> Path:
    """Where generated kernels and numba's compiled code are kept (``MSML_CACHE_DIR`` overrides)."""
    return Path(os.environ.get("MSML_CACHE_DIR") or Path.home() / ".cache" / "msml") / "kernels"


def import_generated_module(module_name: str, text: str):
    """Write generated code to the kernel cache (once, atomically) and import it from there.

    numba's ``cache=True`` needs a real file, and finds the functions' globals through
    ``sys.modules``. Raises OSError or RuntimeError without a writable cache folder.
    """
    folder = kernel_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module_name}.py"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _cached_source(time, states, params, rhs, sens_columns=None):
    """_generate_source, cached on disk: SymPy's Jacobian of a large grid takes seconds."""
    import json

    key = "\n".join([str(time), repr([str(s) for s in states]), repr([str(p) for p in params]), repr(sens_columns)]
                    + [sympy.srepr(r) for r in rhs])
    digest = hashlib.sha256(Path(__file__).read_bytes() + key.encode()).hexdigest()[:20]
    try:
        path = kernel_cache_dir() / f"msml_ode_source_{digest}.json"
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            return (data["source"], data["has_t"], np.asarray(data["jac_pattern"], dtype=np.int64),
                    np.asarray(data["sens_layout"], dtype=np.int64))
    except (OSError, ValueError, KeyError):
        pass
    src, has_t, jac_pattern, sens_layout = _generate_source(time, states, params, rhs, sens_columns)
    try:
        folder = kernel_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"source": src, "has_t": bool(has_t), "jac_pattern": jac_pattern.tolist(),
                       "sens_layout": sens_layout.tolist()}, fh)
        os.replace(tmp, folder / f"msml_ode_source_{digest}.json")
    except OSError:
        pass
    return src, has_t, jac_pattern, sens_layout


class _Kernels:
    """The generated kernels as numba cfuncs, each compiled when first asked for.

    Each kernel is its own module in the kernel cache, named by its text's hash, so numba's disk
    cache makes a large system's compilation (a method-of-lines grid: tens of seconds) a
    once-per-machine cost, and a kernel no solve calls is never compiled.
    """

    SIGNATURES = {"f_only": "_SIG_F", "f_sens": "_SIG_F", "f_jac": "_SIG_FJ", "t_deriv": "_SIG_FJ"}

    def __init__(self, src: str):
        self.blocks = {}
        for block in ("\n" + src).split("\ndef ")[1:]:
            self.blocks[block[:block.index("(")]] = "def " + block.rstrip() + "\n"
        self.compiled = {}
        self.seconds = 0.0

    def get(self, name: str):
        if name not in self.compiled:
            t_start = _time.perf_counter()
            self.compiled[name] = self._compile(name, self.blocks[name])
            self.seconds += _time.perf_counter() - t_start
        return self.compiled[name]

    def _compile(self, name, text):
        sig = self.SIGNATURES[name]
        decorated = f"@numba.cfunc({sig}, nopython=True, error_model='numpy', cache=True)\n" + text
        digest = hashlib.sha256(numba.__version__.encode() + _CFUNC_HEADER.encode() + decorated.encode()).hexdigest()
        try:
            return getattr(import_generated_module(f"msml_ode_{digest[:20]}", _CFUNC_HEADER + decorated), name)
        except (OSError, RuntimeError):  # no writable cache folder: compile in memory
            ns = {"math": math, "min": min, "max": max, "abs": abs}
            exec(compile(text, "<msml-ode-kernels>", "exec"), ns)
            return numba.cfunc(globals()[sig], nopython=True, error_model="numpy")(ns[name])


def compile_ode_system(time: sympy.Symbol, states: list, params: list, rhs: list, *,
                       warmup: bool = True, sens_columns: int | None = -1,
                       methods: tuple = ("auto", "stiff"), sensitivities: tuple = (True, False)) -> OdeSystem:
    """rhs[i] is d states[i]/dt as a SymPy expression in time, states and params.

    Constants must already be substituted as numbers.  ``sens_columns``: the sensitivity
    columns the caller's solves will ask for (P, or P + n with initial-value sensitivities;
    the default -1 means P); for that count a fused kernel computes f and the sensitivity
    right-hand side as straight-line code (None: never).  With ``warmup=True`` the numba
    compilation for ``methods`` with and without ``sensitivities`` happens here (its duration
    is in ``compile_seconds``); other kernels compile when a solve first needs them.

    Example::

        >>> lv = compile_ode_system(t, [u, v], [a, b, g, d], [(a - b * v) * u, (-g + d * u) * v],
        ...                         sens_columns=6, methods=("rk45",))   # y0 sensitivities too
    """
    if len(rhs) != len(states):
        raise ValueError("need one rhs expression per state")
    t_start = _time.perf_counter()
    if sens_columns == -1:
        sens_columns = len(params)
    if sens_columns is not None and len(states) * (1 + sens_columns) > FUSED_OUTPUT_LIMIT \
            and _fused_output_count(states, params, rhs, sens_columns) > FUSED_OUTPUT_LIMIT:
        sens_columns = None
    src, has_t, jac_pattern, sens_layout = _cached_source(time, list(states), list(params), list(rhs), sens_columns)
    kernels = _Kernels(src)
    system = OdeSystem(n_states=len(states), n_params=len(params), has_time=has_t, source=src, kernels=kernels,
                       jac_pattern=jac_pattern, sens_columns=sens_columns, sens_layout=sens_layout)
    system.compile_seconds = _time.perf_counter() - t_start
    if warmup:
        system.warmup(methods, sensitivities)
    return system
