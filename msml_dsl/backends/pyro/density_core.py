"""The generic half of the compiled log density: compiled once per installation and cached.

``compiled_density`` used to print the whole density (parameter transforms, batch loops, array
allocation, the likelihood loops over the data, the chain rule through the ODE sensitivities) as
one numba function per model. Most of that code is the same for every model, yet numba typed and
compiled all of it for each new model, and typing numpy's array constructors alone costs seconds
in a fresh process. Here that generic code is compiled once, with explicit signatures, into
numba's on-disk cache (like the ODE solver core). Per model only small scalar cfuncs remain —
the log prior and its gradient, the initial values and their derivatives, and one function per
observation statement giving the log likelihood of one data point and its derivatives — which the
core calls through their addresses:

* ``prior(x, lp, gx, -, -)``:   lp[0] = log prior(x); gx[i] = d/dx_i (only non-zeros are written)
* ``inits(x, y0, dy0, -, -)``:  y0[j] = y_j(0); dy0[j * E + i] = d y_j(0)/dx_i (non-zeros); only
  for initial values that depend on parameters (constant ones are passed as numbers)
* ``obs(x, vc, y, m, out)``:   for the value vc[0] with covariates vc[1:], the states it uses
  at its time (y, gathered by the core) and the interpolated fields m: out = [log lik, d/dy for
  the used states, d/dm_q, d/dx_i for the used parameter elements]. Statements that differ only
  in which states they observe share one kernel.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.extending import intrinsic

_f8 = numba.types.float64
_i8 = numba.types.int64
_b1 = numba.types.boolean
_PTR = numba.types.CPointer(_f8)
F1, F2, F3, F4 = (numba.types.Array(_f8, d, "C") for d in (1, 2, 3, 4))
I1 = numba.types.Array(_i8, 1, "C")
B1 = numba.types.Array(_b1, 1, "C")

# every generated kernel: void f(double*, double*, double*, double*, double*)
SIG_KERNEL = numba.types.void(_PTR, _PTR, _PTR, _PTR, _PTR)


@intrinsic
def _call5(typingctx, addr, a0, o0, a1, o1, a2, o2, a3, o3, a4, o4):
    """Call the kernel at ``addr`` with &a0[o0], ..., &a4[o4] (C-contiguous float64 arrays, flat offsets)."""
    sig = numba.types.void(addr, a0, o0, a1, o1, a2, o2, a3, o3, a4, o4)

    def codegen(context, builder, signature, args):
        dbl = llvm_ir.DoubleType()
        fnty = llvm_ir.FunctionType(llvm_ir.VoidType(), [dbl.as_pointer()] * 5)
        fptr = builder.inttoptr(args[0], fnty.as_pointer())
        ptrs = []
        for j in range(5):
            aty = signature.args[1 + 2 * j]
            ary = context.make_array(aty)(context, builder, args[1 + 2 * j])
            off = context.cast(builder, args[2 + 2 * j], signature.args[2 + 2 * j], _i8)
            ptrs.append(builder.gep(ary.data, [off]))
        builder.call(fptr, ptrs)
        return context.get_dummy_value()

    return sig, codegen


_SIG_BEFORE = numba.types.Tuple((F2, F2, F1, F2, F1, F2, F2, F3, F2))(F2, I1, F1, F1, I1, _i8, _i8, F1)


@numba.njit(_SIG_BEFORE, cache=True, nogil=True, error_model="numpy")
def density_before(z, kinds, lo, hi, p_index, prior_fn, inits_fn, y0_const):
    """Transform z to the constrained x (kinds 0 real, 1 lower, 2 upper, 3 interval), the log prior and
    its gradient, the ODE's initial values and their derivatives, and the ODE parameters p.

    Initial values that depend on no parameter come as ``y0_const`` with ``inits_fn`` = 0 (its length
    is the number of states either way)."""
    B, D = z.shape
    n = y0_const.shape[0]
    x = np.empty((B, D))
    dx = np.ones((B, D))
    ld = np.zeros(B)
    dld = np.zeros((B, D))
    for b in range(B):
        for i in range(D):
            u = z[b, i]
            k = kinds[i]
            if k == 0:
                x[b, i] = u
            elif k == 1 or k == 2:
                e = math.exp(u)
                x[b, i] = lo[i] + e if k == 1 else hi[i] - e
                dx[b, i] = e if k == 1 else -e
                ld[b] += u
                dld[b, i] = 1.0
            else:
                sg = 1.0 / (1.0 + math.exp(-u))
                w = hi[i] - lo[i]
                x[b, i] = lo[i] + w * sg
                dx[b, i] = w * sg * (1.0 - sg)
                ld[b] += math.log(w) + math.log(sg) + math.log1p(-sg) if 0.0 < sg < 1.0 else -math.inf
                dld[b, i] = 1.0 - 2.0 * sg
    lp = np.zeros(B)
    gx = np.zeros((B, D))
    for b in range(B):
        _call5(prior_fn, x, b * D, lp, b, gx, b * D, lp, b, lp, b)
    y0 = np.zeros((B, n))
    dy0 = np.zeros((B, n, D))
    if inits_fn != 0:
        for b in range(B):
            _call5(inits_fn, x, b * D, y0, b * n, dy0, b * n * D, lp, b, lp, b)
    else:
        for b in range(B):
            for j in range(n):
                y0[b, j] = y0_const[j]
    P = p_index.shape[0]
    p = np.empty((B, P))
    for b in range(B):
        for j in range(P):
            p[b, j] = x[b, p_index[j]]
    return x, dx, ld, dld, lp, gx, y0, dy0, p


_SIG_AFTER = numba.types.void(
    _b1, F1, F2, F2, F2, F1, F2, F1, F2, F3, F3, F4, F4, B1, I1,
    # observations: kernels, row offsets, data (value and covariates per row), mask, time index
    I1, I1, I1, I1, F1, B1, I1,
    # used states, used parameter elements, maps (fields between grid nodes)
    I1, I1, I1, I1, I1, I1, I1, I1, F1)


@numba.njit(_SIG_AFTER, cache=True, nogil=True, error_model="numpy")
def density_after(jacobian, U, G, x, dx, ld, dld, lp, gx, dy0, Y, SP, S0, ok, p_index,
                  o_fn, o_rows, o_width, o_dstart, o_data, o_mask, o_t,
                  o_s, o_soff, o_x, o_xoff, o_moff, m_width, m_off, m_cols, m_wts):
    """Add the likelihood to lp and gx (d/dY through the sensitivities), then U = -log density and
    G = dU/dz; a row whose solve failed or whose result is not finite gets U = inf and G = 0."""
    B, D = x.shape
    T = Y.shape[1]
    n = Y.shape[2]
    K = o_fn.shape[0]
    gY = np.zeros(Y.shape)
    width = 1
    for k in range(K):
        width = max(width, 1 + (o_soff[k + 1] - o_soff[k]) + (o_moff[k + 1] - o_moff[k])
                    + (o_xoff[k + 1] - o_xoff[k]))
    out = np.zeros(width)
    sv = np.zeros(max(1, o_s.shape[0]))
    mv = np.zeros(max(1, m_width.shape[0]))
    for k in range(K):
        fn = o_fn[k]
        s0, s1 = o_soff[k], o_soff[k + 1]
        q0, q1 = o_moff[k], o_moff[k + 1]
        x0, x1 = o_xoff[k], o_xoff[k + 1]
        ns = s1 - s0
        nq = q1 - q0
        for b in range(B):
            for r in range(o_rows[k + 1] - o_rows[k]):
                row = o_rows[k] + r
                if not o_mask[row]:
                    continue
                t = o_t[row]
                # a field between grid nodes: weights times the neighbouring states (method of lines)
                for q in range(nq):
                    mi = q0 + q
                    w = m_width[mi]
                    base = m_off[mi] + r * w
                    acc = 0.0
                    for c in range(w):
                        acc += m_wts[base + c] * Y[b, t, m_cols[base + c]]
                    mv[q] = acc
                for j in range(ns):
                    sv[j] = Y[b, t, o_s[s0 + j]]
                _call5(fn, x, b * D, o_data, o_dstart[k] + r * o_width[k], sv, 0, mv, 0, out, 0)
                lp[b] += out[0]
                for j in range(ns):
                    gY[b, t, o_s[s0 + j]] += out[1 + j]
                for q in range(nq):
                    mi = q0 + q
                    w = m_width[mi]
                    base = m_off[mi] + r * w
                    gm = out[1 + ns + q]
                    for c in range(w):
                        gY[b, t, m_cols[base + c]] += m_wts[base + c] * gm
                for i in range(x1 - x0):
                    gx[b, o_x[x0 + i]] += out[1 + ns + nq + i]
    P = p_index.shape[0]
    n0 = S0.shape[3]
    if n > 0:
        for b in range(B):
            if not ok[b]:
                continue
            for t in range(T):
                for i in range(n):
                    gyi = gY[b, t, i]
                    if gyi == 0.0:
                        continue
                    for j in range(P):
                        gx[b, p_index[j]] += gyi * SP[b, t, i, j]
                    for m in range(n0):
                        s0v = gyi * S0[b, t, i, m]
                        for e in range(D):
                            gx[b, e] += s0v * dy0[b, m, e]
    for b in range(B):
        total = lp[b] + (ld[b] if jacobian else 0.0)
        good = ok[b] and math.isfinite(total)
        for i in range(D):
            gi = gx[b, i] * dx[b, i] + (dld[b, i] if jacobian else 0.0)
            G[b, i] = -gi
            if not math.isfinite(gi):
                good = False
        U[b] = -total
        if not good:
            U[b] = math.inf
            for i in range(D):
                G[b, i] = 0.0
