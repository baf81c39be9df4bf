"""Batched ODE solves with forward sensitivities in plain torch (the GPU path).

``compile_torch_ode_system`` turns a SymPy right-hand side ``y' = f(t, y, p)``
into three small torch functions, printed from SymPy with common-subexpression
elimination (the expressions are SymPy objects, no user text is evaluated):

* ``f_only(t, y, p)``       -> f (B, n, 1) (a column: it is the first column of the augmented system),
* ``f_jac(t, y, p, m)``     -> f, J_y = df/dy (B, n, n), J_p = df/dp padded with zeros to (B, n, m),
* ``t_deriv(t, y, p, m)``   -> df/dt, dJ_y/dt, dJ_p/dt (only when time appears explicitly).

Every symbol is a column of a batch: ``t`` (B,), ``y`` (B, n), ``p`` (B, P), so
one call evaluates all B rows (chains, draws) at once.  The solver integrates
the same augmented system as the numba solver in ``ode_solver.py``

    Z = [y | S] (B, n, 1+m),  S = [dy/dp | dy/dy0],
    y' = f,  S' = J_y S + [J_p | 0]   (one ``torch.baddbmm`` per stage),

with the same methods, tableaus and step-size controllers (``"rk45"``:
Dormand--Prince 5(4) with dense output; ``"stiff"``: the Rosenbrock-W method
ROS34PW2, one batched ``lu_factor`` per step; ``"auto"``: see below).

Design
------
*Lockstep with masks.*  All rows take a step together, each with its own
time ``t`` (B,) and step size ``h`` (B,).  A row that rejects its step, has
finished, or has failed simply keeps its old values: every update is a
``torch.where`` on a per-row mask.  There is no per-row Python control flow,
so the work per step is a fixed sequence of batched kernels whatever the rows
do, and the loop runs unchanged on a GPU.  The price is that finished rows
still compute (their results are discarded) until the slowest row is done.

*Host synchronisation every K steps.*  Reading a GPU value on the host (``if
mask.any():``) stalls the launch queue until the device has caught up; doing
it every step would serialise CPU and GPU.  The loop therefore tests "all rows
done" only every ``sync_every`` (default 16 on a GPU; every step on the CPU,
where the check is free) steps; in between it queues kernels blindly, which
costs at most K-1 idle (fully masked) steps at the end.
Failure conditions (step count exceeded, step-size underflow, non-finite
values) are recorded per row on the device, without a synchronisation.

*Outputs.*  rk45 interpolates the output times crossed by a step with the
DOPRI dense output; a step may cross at most ``_OUT_WINDOW`` output times
(it is shortened to land on the last one otherwise), so interpolation is a
fixed-size batched matrix product and the values are copied into an output
buffer with one ``index_copy_`` (slot ``U`` is a dummy slot for rows that write
nothing).  The
Rosenbrock method has no dense output and shortens its step to land on each
output time, like the numba solver.

*auto.*  Every row starts with rk45 and runs Hairer's DOPRI5 stiffness
detection (as the numba solver does); a row that signals stiffness on 15
accepted steps leaves the rk45 loop, and when the rk45 loop is over those
rows alone (a gathered sub-batch) continue with the Rosenbrock method from
where they stopped.

Failures never raise: the row gets ``ok=False`` and NaN outputs.
Known difference from the numba solver: J_y S is a dense batched product
(O(n^2 m) per stage and row), where the numba solver visits only J_y's
structural non-zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import sympy
import torch

# One source of truth for the tableaus and the printing of numbers and cse assignments: the numba module's.
from .ode_solver import (
    _DP_A, _DP_C, _DP_E, _DP_P, _RW_A, _RW_C, _RW_E, _RW_GAMMA, _RW_M, _RW_c, _RW_d, _emit_assignments,
    _KernelPrinter,
)

__all__ = ["TorchOdeSystem", "compile_torch_ode_system", "TORCH_METHODS"]

TORCH_METHODS = ("rk45", "stiff", "auto")

# per-row status codes (kept on the device)
_RUNNING = 0
_DONE = 1
_MAX_STEPS = 2
_H_UNDERFLOW = 3
_NONFINITE = 4
_STIFF = 5  # rk45 detected stiffness (auto): continue with the Rosenbrock method

_EPS = 2.220446049250313e-16
# output times one rk45 step may interpolate; with more the step is shortened.  8 is far
# more than an adaptive step crosses on typical data grids, and keeps the dense output cheap.
_OUT_WINDOW = 8


# --------------------------------------------------------------------------
# code generation
# --------------------------------------------------------------------------
_TORCH_FUNCS = {
    "exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan", "tanh": "tanh",
    "sinh": "sinh", "cosh": "cosh", "asin": "asin", "acos": "acos", "atan": "atan", "asinh": "asinh",
    "acosh": "acosh", "atanh": "atanh", "erf": "erf", "erfc": "erfc", "expm1": "expm1", "log1p": "log1p",
    "log2": "log2", "log10": "log10", "floor": "floor", "ceiling": "ceil", "Abs": "abs", "sign": "sign",
    "loggamma": "lgamma", "Sqrt": "sqrt", "atan2": "atan2", "hypot": "hypot",
}


def _rt_where(cond, a, b, ref):
    """Piecewise selection; `cond` may be a Python bool when it does not depend on a symbol."""
    if not isinstance(cond, torch.Tensor):
        return a if cond else b
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        # a fill on the device (no host-to-device copy), in the solve's dtype (exact float64 constants)
        a = torch.full_like(cond, a, dtype=ref.dtype)
    return torch.where(cond, a, b)


def _rt_min(a, b):
    if not isinstance(a, torch.Tensor):
        a, b = b, a  # symmetric: a tensor (if any) first
    if not isinstance(a, torch.Tensor):
        return min(a, b)
    return torch.minimum(a, b) if isinstance(b, torch.Tensor) else torch.clamp(a, max=b)


def _rt_max(a, b):
    return -_rt_min(-a, -b)


def _rt_and(a, b):
    if not isinstance(a, torch.Tensor):
        a, b = b, a  # a tensor (if any) first
    if not isinstance(b, torch.Tensor):
        return a if b else False  # a Python bool decides without touching the device
    return torch.logical_and(a, b)


def _rt_or(a, b):
    return _rt_not(_rt_and(_rt_not(a), _rt_not(b)))


def _rt_not(a):
    return torch.logical_not(a) if isinstance(a, torch.Tensor) else not a


_RUNTIME = {"torch": torch, "math": math, "_where": _rt_where, "_min": _rt_min, "_max": _rt_max,
            "_and": _rt_and, "_or": _rt_or, "_not": _rt_not}


class _TorchPrinter(_KernelPrinter):
    """Prints SymPy as batched torch code; every symbol stands for a (B,) tensor.

    Numbers print as in the numba kernels.  Constant sub-expressions are folded
    to floats before printing (see `_fold_constants`), so every function argument
    is a tensor.  Min/Max, Piecewise and logic go through small helpers that
    accept Python numbers too (a Python ``if`` cannot branch on a batch).
    """

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self.known_functions.update({k: "torch." + v for k, v in _TORCH_FUNCS.items()})

    def _print_torch_func(self, expr):
        name = self.known_functions[type(expr).__name__]
        return "{}({})".format(name, ", ".join(self._print(a) for a in expr.args))

    def _as_ordered_terms(self, expr, order=None):
        # positive terms first: `b*y - a` is two kernels, `-a + b*y` three
        terms = super()._as_ordered_terms(expr, order=order)
        return sorted(terms, key=lambda term: term.could_extract_minus_sign())

    def _hprint_Pow(self, expr, rational=False, sqrt="torch.sqrt"):
        return super()._hprint_Pow(expr, rational=rational, sqrt="torch.sqrt")

    def _print_Piecewise(self, expr):
        # nested selections from the last branch outwards; without a `True` branch, NaN elsewhere
        *branches, (last, cond) = expr.args
        out = self._print(last)
        if cond != sympy.true:
            out = f"_where({self._print(cond)}, {out}, math.nan, _ref)"
        for e, c in reversed(branches):
            out = f"_where({self._print(c)}, {self._print(e)}, {out}, _ref)"
        return out

    def _print_Heaviside(self, expr):
        x = self._print(expr.args[0])
        at_zero = self._print(expr.args[1]) if len(expr.args) > 1 else "0.5"
        return f"_where(({x}) > 0, 1.0, _where(({x}) < 0, 0.0, {at_zero}, _ref), _ref)"

    def _fold_call(self, helper, args):
        out = self._print(args[0])
        for a in args[1:]:
            out = "{}({}, {})".format(helper, out, self._print(a))
        return out

    def _print_Min(self, expr):
        return self._fold_call("_min", expr.args)

    def _print_Max(self, expr):
        return self._fold_call("_max", expr.args)

    def _print_And(self, expr):
        return self._fold_call("_and", expr.args)

    def _print_Or(self, expr):
        return self._fold_call("_or", expr.args)

    def _print_Not(self, expr):
        return "_not({})".format(self._print(expr.args[0]))

    def _print_DiracDelta(self, expr):
        return "0.0"  # the derivative of a Heaviside or sign almost everywhere


for _name in _TORCH_FUNCS:
    setattr(_TorchPrinter, f"_print_{_name}", _TorchPrinter._print_torch_func)


def _fold_constants(expr):
    """Replace symbol-free sub-expressions (``exp(2)``, ``sqrt(3)``) by floats: torch functions need tensors."""

    def numeric(e):
        if e.is_Atom or not e.is_number:
            return False
        try:
            float(e)
        except (TypeError, ValueError):
            return False
        return True

    return expr.replace(numeric, lambda e: sympy.Float(float(e)))


class _Layout:
    """Places a generated function's non-zero entries into a zero (B, rows, cols) tensor.

    One ``torch.stack`` and one ``index_copy_`` per output instead of an indexed
    assignment per entry (each of which is a kernel launch).  The column count is
    given at call time (J_p is padded to the m sensitivity columns); the index
    tensor is built once per device and column count, so no host-to-device copy
    happens in the stepping loop.
    """

    def __init__(self, n_rows, positions):
        self.n_rows, self.positions = n_rows, list(positions)
        self._index = {}

    def __call__(self, ref, n_cols, values):
        B = ref.shape[0]
        if not values or not n_cols:  # n_cols = 0: J_p of a solve without sensitivities, not needed
            return ref.new_zeros((B, self.n_rows, n_cols))
        cols = torch.stack([v if isinstance(v, torch.Tensor) else ref.new_full((B,), float(v)) for v in values], 1)
        if len(values) == self.n_rows * n_cols:  # every entry, in row-major order: nothing to place
            return cols.view(B, self.n_rows, n_cols)
        key = (ref.device, n_cols)
        if key not in self._index:
            flat = [r * n_cols + c for r, c in self.positions]
            self._index[key] = torch.tensor(flat, dtype=torch.long, device=ref.device)
        out = ref.new_zeros((B, self.n_rows * n_cols))
        out.index_copy_(1, self._index[key], cols)
        return out.view(B, self.n_rows, n_cols)


def _torch_source(time, states, params, rhs):
    """Source of ``f_only``, ``f_jac`` and ``t_deriv``, the `_Layout`s it refers to, and whether time appears."""
    n, P = len(states), len(params)
    # real symbols: derivatives of Abs/Min/Max come out as sign/Heaviside, not re/im parts
    t_ = sympy.Symbol("_t", real=True)
    y_ = [sympy.Symbol(f"_y{i}", real=True) for i in range(n)]
    p_ = [sympy.Symbol(f"_p{k}", real=True) for k in range(P)]
    rename = {time: t_, **dict(zip(states, y_)), **dict(zip(params, p_))}
    f = [sympy.sympify(e).xreplace(rename) for e in rhs]
    unknown = set().union(set(), *(e.free_symbols for e in f)) - set(y_) - set(p_) - {t_}
    if unknown:
        raise ValueError(f"rhs contains unknown symbols: {sorted(map(str, unknown))}")
    has_t = any(t_ in e.free_symbols for e in f)
    # differentiate only by the symbols a component uses: large systems have sparse Jacobians
    jy = [[sympy.diff(fi, yj) if yj in fi.free_symbols else sympy.S.Zero for yj in y_] for fi in f]
    jp = [[sympy.diff(fi, pk) if pk in fi.free_symbols else sympy.S.Zero for pk in p_] for fi in f]
    printer = _TorchPrinter()
    layouts = {}

    def function(name, args, outputs):
        """outputs: (variable, columns expression, matrix as nested lists) in return order."""
        lines = [f"def {name}({', '.join(args)}):", "    _t = t", "    _ref = y"]
        if n:
            lines.append(f"    {', '.join(map(str, y_))}, = y.unbind(1)")
        if P:
            lines.append(f"    {', '.join(map(str, p_))}, = p.unbind(1)")
        pairs, calls = [], []
        for var, n_cols, matrix in outputs:
            entries = [(r, c, _fold_constants(e)) for r, row in enumerate(matrix) for c, e in enumerate(row)]
            entries = [(r, c, e) for r, c, e in entries if e != 0]
            layout = f"_L_{name}_{var}"
            layouts[layout] = _Layout(len(matrix), [(r, c) for r, c, _ in entries])
            names = [f"_{var}_{k}" for k in range(len(entries))]
            pairs += [(v, e) for v, (_, _, e) in zip(names, entries)]
            calls.append(f"    {var} = {layout}(y, {n_cols}, [{', '.join(names)}])")
        lines += _emit_assignments(printer, pairs)
        lines += calls
        lines.append(f"    return {', '.join(var for var, _, _ in outputs)}")
        return lines

    f_col = [[e] for e in f]
    src = function("f_only", ["t", "y", "p"], [("f", 1, f_col)])
    src += [""] + function("f_jac", ["t", "y", "p", "m"], [("f", 1, f_col), ("jy", n, jy), ("jp", "m", jp)])
    d_dt = (lambda e: sympy.diff(e, t_)) if has_t else (lambda e: sympy.S.Zero)
    src += [""] + function("t_deriv", ["t", "y", "p", "m"], [
        ("f", 1, [[d_dt(e)] for e in f]),
        ("jy", n, [[d_dt(e) for e in row] for row in jy]),
        ("jp", "m", [[d_dt(e) for e in row] for row in jp]),
    ])
    return "\n".join(src) + "\n", layouts, has_t


# --------------------------------------------------------------------------
# solver pieces (all batched over rows, all on the inputs' device)
# --------------------------------------------------------------------------
class _Coefficients:
    """The tableaus as tensors on one device/dtype (built once per device and dtype)."""

    _cache: dict = {}

    def __init__(self, device, dtype):
        def T(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=device)

        self.dp_a, self.dp_e, self.dp_pt = T(_DP_A), T(_DP_E), T(_DP_P.T.copy())
        self.rw_a, self.rw_c, self.rw_m, self.rw_e = T(_RW_A), T(_RW_C), T(_RW_M), T(_RW_E)
        # node fractions as Python floats (from numpy: reading a device tensor would synchronise)
        self.dp_cc, self.rw_cc, self.rw_d = _DP_C.tolist(), _RW_c.tolist(), _RW_d.tolist()
        self.window = torch.arange(_OUT_WINDOW, device=device)

    @classmethod
    def get(cls, device, dtype):
        key = (str(device), dtype)
        if key not in cls._cache:
            cls._cache[key] = cls(device, dtype)
        return cls._cache[key]


@dataclass
class _Rows:
    """Per-row integration state; Z is the flattened augmented state [y | S] (B, n*(1+m))."""

    t: torch.Tensor        # (B,)
    Z: torch.Tensor        # (B, D)
    idx: torch.Tensor      # (B,) next output slot (long)
    status: torch.Tensor   # (B,) long
    nsteps: torch.Tensor   # (B,) long
    buf: torch.Tensor      # (B, U+1, D) outputs; slot U is a dummy for rows that write nothing
    p: torch.Tensor        # (B, P)

    @property
    def offsets(self):
        """(B, 1) start of each row in the flattened output buffer (computed once)."""
        if getattr(self, "_offsets", None) is None:
            B, U1 = self.buf.shape[:2]
            self._offsets = U1 * torch.arange(B, device=self.buf.device)[:, None]
        return self._offsets

    def take(self, sel):
        return _Rows(*(getattr(self, k)[sel] for k in self.__dataclass_fields__))

    def put(self, sel, other):
        for k in self.__dataclass_fields__:
            if k != "p":  # read-only (it may share memory with the caller's tensor)
                getattr(self, k)[sel] = getattr(other, k)


def _rms(v, sc):
    return torch.sqrt(torch.mean(torch.square(v / sc), dim=1))


def _err_norm(err, Z, Zn, rtol, atol):
    """RMS norm over all augmented components (as the numba solver's `_err_norm`)."""
    return _rms(err, atol + rtol * torch.maximum(Z.abs(), Zn.abs()))


def _mark(status, mask, code):
    """Gives running rows where `mask` the status `code` (a failure, done, or stiff)."""
    return torch.where(mask & (status == _RUNNING), code, status)


class _Integrator:
    """One solve: the system, the options and the augmented right-hand side."""

    def __init__(self, system, n, m, sens, rtol, atol, max_steps, sync_every, co):
        self.sys, self.n, self.m, self.sens = system, n, m, sens
        self.rtol, self.atol, self.max_steps, self.sync_every, self.co = rtol, atol, max_steps, sync_every, co

    def aug(self, t, Z, p):
        """F(t, Z) for the flattened augmented state; J_y S + [J_p | 0] by one baddbmm."""
        B, n = Z.shape[0], self.n
        Z3 = Z.view(B, n, 1 + self.m)
        if not self.sens:
            return self.sys.f_only(t, Z3[:, :, 0], p).view(B, -1)
        f, jy, jp = self.sys.f_jac(t, Z3[:, :, 0], p, self.m)
        return torch.cat([f, torch.baddbmm(jp, jy, Z3[:, :, 1:])], dim=2).view(B, -1)

    def initial_step(self, rows, F0, order, hmax):
        """Hairer's starting step size, row by row (as the numba solver's `_initial_step`)."""
        t, Z = rows.t, rows.Z
        sc = self.atol + self.rtol * Z.abs()
        d0, d1 = _rms(Z, sc), _rms(F0, sc)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = torch.minimum(h0, hmax)
        d2 = _rms(self.aug(t + h0, Z + h0[:, None] * F0, rows.p) - F0, sc) / h0
        tiny = (d1 <= 1e-15) & (d2 <= 1e-15)
        h1 = torch.where(tiny, torch.clamp(h0 * 1e-3, min=1e-6),
                         (0.01 / torch.maximum(d1, d2)) ** (1.0 / (order + 1)))
        h = torch.minimum(torch.minimum(100 * h0, h1), hmax)
        return torch.where(torch.isfinite(d2), h, h0 * 1e-3)

    def loop(self, rows, step):
        """Runs `step` until no row is running; "all done" is read on the host every K steps only."""
        it = 0
        while True:
            if it % self.sync_every == 0 and not bool((rows.status == _RUNNING).any()):
                break
            if it > self.max_steps + self.sync_every:  # cannot happen (nsteps grows every step); a guard
                rows.status = _mark(rows.status, torch.ones_like(rows.status, dtype=torch.bool), _MAX_STEPS)
                break
            it += 1
            # per-row failure checks, recorded on the device
            h = step.h
            tiny = ~(h >= 10.0 * _EPS * torch.clamp(rows.t.abs(), min=1e-300)) | (h <= 0.0)  # NaN h too
            code = torch.where(rows.nsteps >= self.max_steps, _MAX_STEPS, torch.where(tiny, _H_UNDERFLOW, _RUNNING))
            rows.status = torch.where(rows.status == _RUNNING, code, rows.status)
            step(rows)

    @staticmethod
    def store(rows, write, slots, values):
        """Copy values (B, J, D) into the output slots (B, J) where `write`; others hit the dummy slot."""
        B, U1, D = rows.buf.shape
        # one row copy per (row, slot) into the flattened buffer; faster than scatter_ over elements
        index = torch.where(write, slots, U1 - 1) + rows.offsets
        rows.buf.view(B * U1, D).index_copy_(0, index.reshape(-1), values.reshape(-1, D))
        rows.idx = rows.idx + write.sum(1)


class _Rk45Step:
    """Dormand--Prince 5(4) with PI control and dense output, all rows in lockstep."""

    def __init__(self, ig, rows, times, detect_stiff):
        co = ig.co
        self.ig, self.times, self.detect_stiff = ig, times, detect_stiff
        B, D = rows.Z.shape
        # stage-major: a stage combination sum_j a_j K_j is one matrix-vector product over all rows
        self.K = rows.Z.new_empty((7, B, D))
        F0 = ig.aug(rows.t, rows.Z, rows.p)
        rows.status = _mark(rows.status, ~torch.isfinite(F0).all(1), _NONFINITE)
        self.K[0] = F0
        self.h = ig.initial_step(rows, F0, 4, times[-1] - rows.t)
        self.errold = torch.full_like(rows.t, 1e-4)
        self.rejected = torch.zeros_like(rows.t, dtype=torch.bool)
        self.iasti = torch.zeros_like(rows.idx)
        self.nonsti = torch.zeros_like(rows.idx)
        self.a, self.c, self.e, self.pt = co.dp_a, co.dp_cc, co.dp_e, co.dp_pt
        self.window = co.window[: min(_OUT_WINDOW, times.shape[0])]

    def __call__(self, rows):
        ig, K, times = self.ig, self.K, self.times
        U = times.shape[0]
        run = rows.status == _RUNNING
        t, Z, h = rows.t, rows.Z, self.h
        # the output times this step may reach; it lands on the last one rather than pass it
        slots = rows.idx[:, None] + self.window
        t_out = times[slots.clamp(max=U - 1)]
        t_cap = t_out[:, -1]
        clip = t + 1.0001 * h >= t_cap
        hs = torch.where(clip, t_cap - t, h)
        hs = torch.where(run, hs, 1.0)  # idle rows: any harmless finite step
        rows.nsteps = rows.nsteps + run
        hcol = hs[:, None]
        B, D = Z.shape
        Kf = K.view(7, B * D)
        for s in range(1, 7):
            Zs = torch.addcmul(Z, hcol, torch.matmul(self.a[s, :s], Kf[:s]).view(B, D))
            if s == 5:
                Z5 = Zs  # stage-6 argument (stiffness detection)
            K[s] = ig.aug(torch.add(t, hs, alpha=self.c[s]), Zs, rows.p)
        Zn = Zs
        err = _err_norm(hcol * torch.matmul(self.e, Kf).view(B, D), Z, Zn, ig.rtol, ig.atol)
        finite = torch.isfinite(err) & torch.isfinite(Zn).all(1) & torch.isfinite(K[6]).all(1)
        accept = run & finite & (err <= 1.0)
        reject = run & ~accept
        t_new = torch.where(clip, t_cap, t + hs)
        # dense output at the crossed output times: y + h sum_j theta^(j+1) sum_i P[i, j] K_i
        write = accept[:, None] & (slots < U) & (t_out <= t_new[:, None])
        theta = (t_out - t[:, None]) / hcol
        powers = torch.stack([theta, theta**2, theta**3, theta**4], dim=2)
        coef = torch.matmul(self.pt, Kf).view(4, B, D).transpose(0, 1)  # (B, 4, D)
        dense = Z[:, None, :] + hs[:, None, None] * torch.bmm(powers, coef)
        dense = torch.where((t_out == t_new[:, None])[:, :, None], Zn[:, None, :], dense)
        ig.store(rows, write, slots, dense)
        if self.detect_stiff:
            self._stiffness(rows, accept, hs, Zn, Z5)
        acc_col = accept[:, None]
        rows.Z = torch.where(acc_col, Zn, Z)
        K[0] = torch.where(acc_col, K[6], K[0])
        rows.t = torch.where(accept, t_new, t)
        rows.status = _mark(rows.status, accept & (rows.idx >= U), _DONE)
        # PI step-size control (beta = 0.04), as the numba rk45
        beta = 0.04
        alpha = 0.2 - 0.75 * beta
        e = torch.clamp(err, min=1e-10)
        fac = torch.clamp(0.9 * e ** (-alpha) * self.errold**beta, 0.2, 10.0)
        fac = torch.where(self.rejected, torch.clamp(fac, max=1.0), fac)
        h_acc = hs * fac
        # a step shortened to land on an output time does not shrink the next one
        h_acc = torch.where(clip, torch.maximum(h_acc, torch.minimum(h, 10.0 * h_acc)), h_acc)
        fac_rej = torch.where(finite, torch.clamp(0.9 * e ** (-alpha), min=0.2), 0.2)
        self.h = torch.where(accept, h_acc, torch.where(reject, hs * fac_rej, h))
        self.errold = torch.where(accept, torch.clamp(err, min=1e-4), self.errold)
        self.rejected = torch.where(accept, False, torch.where(reject, True, self.rejected))

    def _stiffness(self, rows, accept, hs, Zn, Z5):
        """Hairer's DOPRI5 test h*|lambda| > 3.25 on the state part; 15 stiff steps switch the row."""
        B, n = Zn.shape[0], self.ig.n
        K = self.K.view(7, B, n, -1)
        num = torch.sum(torch.square(K[6, :, :, 0] - K[5, :, :, 0]), dim=1)
        den = torch.sum(torch.square(Zn.view(B, n, -1)[:, :, 0] - Z5.view(B, n, -1)[:, :, 0]), dim=1)
        stiff = (den > 0) & (hs * torch.sqrt(num / den) > 3.25)
        self.nonsti = torch.where(accept, torch.where(stiff, 0, self.nonsti + 1), self.nonsti)
        self.iasti = torch.where(accept & stiff, self.iasti + 1, self.iasti)
        self.iasti = torch.where(accept & ~stiff & (self.nonsti == 6), 0, self.iasti)
        rows.status = _mark(rows.status, accept & (self.iasti >= 15) & (rows.idx < self.times.shape[0]), _STIFF)


class _RosenbrockStep:
    """ROS34PW2 (Rosenbrock-W, order 3(2)) in u-form, one batched LU of I/(h gamma) - J_y per step.

    Being a W-method it tolerates the block-diagonal approximation of the augmented
    Jacobian, so the same n x n factorisation solves for the state and all sensitivities.
    """

    def __init__(self, ig, rows, times):
        self.ig, self.times = ig, times
        F0 = ig.aug(rows.t, rows.Z, rows.p)
        rows.status = _mark(rows.status, ~torch.isfinite(F0).all(1), _NONFINITE)
        self.h = ig.initial_step(rows, F0, 2, times[-1] - rows.t)
        self.rejected = torch.zeros_like(rows.t, dtype=torch.bool)
        self.eye = torch.eye(ig.n, dtype=rows.Z.dtype, device=rows.Z.device)

    def _jacobians(self, rows):
        """F(t, Z) (B, D), J_y (B, n, n) and, with explicit time, dF/dt at fixed S."""
        ig = self.ig
        B, n, m = rows.Z.shape[0], ig.n, ig.m
        Z3 = rows.Z.view(B, n, 1 + m)
        y, S = Z3[:, :, 0], Z3[:, :, 1:]
        f, jy, jp = ig.sys.f_jac(rows.t, y, rows.p, m)
        F0 = torch.cat([f, torch.baddbmm(jp, jy, S)], dim=2).view(B, -1)
        Ft = None
        if ig.sys.has_time:
            ft, jyt, jpt = ig.sys.t_deriv(rows.t, y, rows.p, m)
            Ft = torch.cat([ft, torch.baddbmm(jpt, jyt, S)], dim=2).view(B, -1)
        return F0, jy, Ft

    def __call__(self, rows):
        ig, co, times = self.ig, self.ig.co, self.times
        U = times.shape[0]
        B, D = rows.Z.shape
        n = ig.n
        run = rows.status == _RUNNING
        t, Z, h = rows.t, rows.Z, self.h
        F0, jy, Ft = self._jacobians(rows)
        slot = rows.idx.clamp(max=U - 1)
        t_out = times[slot]
        clip = t + 1.0001 * h >= t_out
        hs = torch.where(clip, t_out - t, h)
        hs = torch.where(run, hs, 1.0)
        rows.nsteps = rows.nsteps + run
        hcol = hs[:, None]
        W = self.eye / (hs * _RW_GAMMA)[:, None, None] - jy
        LU, piv, info = torch.linalg.lu_factor_ex(W)
        singular = info != 0
        Us = Z.new_empty((4, B, D))  # stage-major, as the rk45 stages
        Uf = Us.view(4, B * D)
        for s in range(4):
            if s == 0:
                R = F0
            else:
                Zs = Z + torch.matmul(co.rw_a[s, :s], Uf[:s]).view(B, D)
                R = ig.aug(torch.add(t, hs, alpha=co.rw_cc[s]), Zs, rows.p)
                R = R + torch.matmul(co.rw_c[s, :s], Uf[:s]).view(B, D) / hcol
            if Ft is not None:
                R = torch.addcmul(R, hcol, Ft, value=co.rw_d[s])
            Us[s] = torch.linalg.lu_solve(LU, piv, R.view(B, n, -1)).reshape(B, D)
        Zn = Z + torch.matmul(co.rw_m, Uf).view(B, D)
        err = _err_norm(torch.matmul(co.rw_e, Uf).view(B, D), Z, Zn, ig.rtol, ig.atol)
        finite = torch.isfinite(err) & torch.isfinite(Zn).all(1) & ~singular
        accept = run & finite & (err <= 1.0)
        reject = run & ~accept
        ig.store(rows, (accept & clip)[:, None], slot[:, None], Zn[:, None, :])
        rows.Z = torch.where(accept[:, None], Zn, Z)
        rows.t = torch.where(accept, torch.where(clip, t_out, t + hs), t)
        rows.status = _mark(rows.status, accept & (rows.idx >= U), _DONE)
        e = torch.clamp(err, min=1e-10)
        fac = torch.clamp(0.9 * e ** (-1.0 / 3.0), 0.2, 6.0)
        fac = torch.where(self.rejected, torch.clamp(fac, max=1.0), fac)
        h_acc = hs * fac
        h_acc = torch.where(clip, torch.maximum(h_acc, torch.minimum(h, 10.0 * h_acc)), h_acc)
        fac_rej = torch.where(finite, torch.clamp(0.9 * e ** (-1.0 / 3.0), min=0.2), 0.2)
        fac_rej = torch.where(singular, 0.25, fac_rej)
        self.h = torch.where(accept, h_acc, torch.where(reject, hs * fac_rej, h))
        self.rejected = torch.where(accept, False, torch.where(reject, True, self.rejected))


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
@dataclass
class TorchOdeSystem:
    """y' = f(t, y, p) as batched torch functions generated from SymPy (see the module docstring).

    Example::

        >>> import sympy as sp, torch
        >>> t, x, k = sp.symbols("t x k")
        >>> sys_ = compile_torch_ode_system(t, [x], [k], [-k * x])
        >>> Y, dY_dk, dY_dx0, ok = sys_.solve(torch.ones(2, 1), torch.tensor([[1.0], [2.0]]), 0.0, [1.0])
        >>> Y.shape, dY_dk.shape, bool(ok.all())
        (torch.Size([2, 1, 1]), torch.Size([2, 1, 1, 1]), True)
    """

    n_states: int
    n_params: int
    has_time: bool
    source: str
    f_only: object = field(repr=False)
    f_jac: object = field(repr=False)
    t_deriv: object = field(repr=False)
    last_nsteps: torch.Tensor | None = field(default=None, repr=False)

    def solve(self, y0, p, t0, times, *, method="rk45", rtol=1e-6, atol=1e-8, max_steps=100_000,
              sensitivities=True, y0_sensitivities=True, dtype=torch.float64, sync_every=None):
        """Solve all rows at once on the inputs' device.

        y0 (B, n), p (B, P) tensors (or arrays); times (T,) sorted ascending, all >= t0.
        Returns Y (B, T, n), dY/dp (B, T, n, P), dY/dy0 (B, T, n, n) (None without
        ``y0_sensitivities``; both None without ``sensitivities``) and ok (B,) bool, all
        torch tensors in ``dtype`` on y0's device.  Failed rows get ok=False and NaN
        outputs, never an exception.  Steps per row (accepted and rejected) are left in
        ``self.last_nsteps``.  ``sync_every``: steps between host checks for "all rows
        done" (default: 16 on a GPU, every step on the CPU, where the check is free).

        Example::

            >>> Y, SP, S0, ok = sys_.solve(y0, p, 0.0, torch.linspace(0, 5, 11), method="stiff")
        """
        if method not in TORCH_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {list(TORCH_METHODS)}")
        device = y0.device if isinstance(y0, torch.Tensor) else (
            p.device if isinstance(p, torch.Tensor) else torch.device("cpu"))
        if sync_every is None:  # a check costs nothing on the CPU, a stall of the launch queue on a GPU
            sync_every = 1 if device.type == "cpu" else 16
        y0 = torch.as_tensor(y0, device=device).detach().to(dtype)
        p = torch.as_tensor(p, device=device).detach().to(dtype)
        # the output times are read on the host once (checks, distinct values), before any stepping
        times = (times.detach() if isinstance(times, torch.Tensor) else torch.as_tensor(times)).cpu()
        times = times.to(dtype).reshape(-1)
        t0 = float(t0)
        n, P = self.n_states, self.n_params
        if y0.dim() != 2 or y0.shape[1] != n:
            raise ValueError(f"y0 must have shape (B, {n}), got {tuple(y0.shape)}")
        B = y0.shape[0]
        if p.dim() != 2 or tuple(p.shape) != (B, P):
            raise ValueError(f"p must have shape ({B}, {P}), got {tuple(p.shape)}")
        if times.numel() and (bool((times.diff() < 0).any()) or float(times[0]) < t0):
            raise ValueError("times must be sorted ascending and >= t0")
        sens = bool(sensitivities)
        n0 = n if (sens and y0_sensitivities) else 0
        m = P + n0 if sens else 0
        with torch.no_grad():
            out, status, nsteps = self._integrate(y0, p, t0, times, method, float(rtol),
                                                  float(atol), int(max_steps), sens, n0, m, int(sync_every))
        self.last_nsteps = nsteps
        ok = (status == _DONE) & torch.isfinite(out.flatten(1)).all(1)
        out = torch.where(ok[:, None, None, None], out, math.nan)
        Y = out[..., 0].contiguous()
        if not sens:
            return Y, None, None, ok
        SP = out[..., 1:1 + P].contiguous()
        S0 = out[..., 1 + P:].contiguous() if n0 else None
        return Y, SP, S0, ok

    def _integrate(self, y0, p, t0, times, method, rtol, atol, max_steps, sens, n0, m, sync_every):
        """Returns outputs (B, T, n, 1+m), status (B,) and steps (B,)."""
        B, n = y0.shape
        P = p.shape[1]
        T = times.shape[0]
        dev, dt = y0.device, y0.dtype
        # solve at the distinct output times; repeated times are copies of one slot
        uniq, inverse = torch.unique_consecutive(times, return_inverse=True)
        U = uniq.shape[0]
        S = torch.zeros((B, n, m), dtype=dt, device=dev)
        if n0:
            S[:, :, P:] = torch.eye(n, dtype=dt, device=dev)
        Z = torch.cat([y0.unsqueeze(2), S], dim=2).reshape(B, n * (1 + m))
        D = Z.shape[1]
        buf = torch.full((B, U + 1, D), math.nan, dtype=dt, device=dev)
        start = int((uniq <= t0).sum())  # 0 or 1: an output at t0 itself is the initial value
        if start:
            buf[:, 0] = Z
        status = torch.full((B,), _RUNNING if start < U else _DONE, dtype=torch.long, device=dev)
        rows = _Rows(t=torch.full((B,), t0, dtype=dt, device=dev), Z=Z,
                     idx=torch.full((B,), start, dtype=torch.long, device=dev), status=status,
                     nsteps=torch.zeros(B, dtype=torch.long, device=dev), buf=buf, p=p)
        if B and start < U:
            ig = _Integrator(self, n, m, sens, rtol, atol, max_steps, sync_every, _Coefficients.get(dev, dt))
            times_u = uniq.to(device=dev, dtype=dt)
            if method == "stiff":
                ig.loop(rows, _RosenbrockStep(ig, rows, times_u))
            else:
                ig.loop(rows, _Rk45Step(ig, rows, times_u, detect_stiff=method == "auto"))
                if method == "auto":
                    sel = torch.nonzero(rows.status == _STIFF).squeeze(1)
                    if sel.numel():
                        sub = rows.take(sel)
                        sub.status = torch.full_like(sub.status, _RUNNING)
                        ig.loop(sub, _RosenbrockStep(ig, sub, times_u))
                        rows.put(sel, sub)
        out = rows.buf[:, inverse.to(dev)].view(B, T, n, 1 + m)
        return out, rows.status, rows.nsteps


def compile_torch_ode_system(time: sympy.Symbol, states: list, params: list, rhs: list) -> TorchOdeSystem:
    """rhs[i] is d states[i]/dt as a SymPy expression in time, states and params.

    Constants must already be substituted as numbers.  Generation takes milliseconds to
    a few seconds (SymPy differentiation and cse); nothing is compiled.

    Example::

        >>> t = sp.Symbol("t"); u, v = sp.symbols("u v"); a, b, g, d = sp.symbols("alpha beta gamma delta")
        >>> lv = compile_torch_ode_system(t, [u, v], [a, b, g, d], [(a - b * v) * u, (-g + d * u) * v])
        >>> lv.n_states, lv.n_params
        (2, 4)
    """
    if len(rhs) != len(states):
        raise ValueError("need one rhs expression per state")
    src, layouts, has_t = _torch_source(time, list(states), list(params), list(rhs))
    ns = dict(_RUNTIME, **layouts)
    # the source is printed from SymPy expression trees (no user text), as in ode_solver.py
    exec(compile(src, "<msml-torch-ode>", "exec"), ns)
    return TorchOdeSystem(n_states=len(states), n_params=len(params), has_time=has_t, source=src,
                          f_only=ns["f_only"], f_jac=ns["f_jac"], t_deriv=ns["t_deriv"])
