"""The model's log density and its gradient as generated, compiled code.

The Pyro program defines the model; this module is its fast path for NUTS.
From the IR it writes the log prior, the initial values and every
observation's log likelihood as SymPy expressions, differentiates them
symbolically and prints them as small scalar numba cfuncs; the generic part —
parameter transforms, the loops over chains and data, the chain rule through
the ODE solver's forward sensitivities — is ``density_core``, compiled once per
installation:

    dU/du = dx/du * (d log prior/dx + d log lik/dx + (d log lik/dY) (dY/dθ) (dθ/dx)) + d log|J|/du

One gradient of Lotka–Volterra for four chains then costs about the price of
the ODE solve (a few hundred microseconds) rather than the milliseconds Pyro's
effect handlers take. ``tests/backends/test_compiled_density.py`` checks that
both paths give the same density and gradient.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numba
import numpy as np
import sympy

from msml_dsl.backends.pyro.density_core import density_after, density_before
from msml_dsl.backends.pyro.ode_solver import _emit_assignments as emit_assignments
from msml_dsl.backends.pyro.ode_solver import _KernelPrinter, import_generated_module, kernel_cache_dir  # noqa: F401
from msml_dsl.ir.model_ir import ModelIR

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _Printer(_KernelPrinter):
    def _print_loggamma(self, expr):
        return f"math.lgamma({self._print(expr.args[0])})"

    def _print_erfc(self, expr):
        return f"math.erfc({self._print(expr.args[0])})"

    def _print_erf(self, expr):
        return f"math.erf({self._print(expr.args[0])})"

    def _print_polygamma(self, expr):
        order, arg = expr.args
        if order != 0:
            return self._print_not_supported(expr)
        return f"digamma({self._print(arg)})"


@numba.njit(cache=True)
def digamma(x):
    """psi(x) by recurrence to x >= 6 and the asymptotic series (|error| < 1e-13)."""
    if not x > 0.0:
        return math.nan
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    result += math.log(x) - 0.5 * inv - inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (
        1.0 / 240 - inv2 / 132))))
    return result


def log_pdf(name: str, x, a) -> sympy.Expr:
    """The log density (or mass) of a language distribution, as SymPy, matching torch's."""
    log, lg = sympy.log, sympy.loggamma
    if name == "Normal":
        m, s = a
        return -((x - m) / s) ** 2 / 2 - log(s) - _HALF_LOG_2PI
    if name == "LogNormal":
        m, s = a
        return -((log(x) - m) / s) ** 2 / 2 - log(s) - _HALF_LOG_2PI - log(x)
    if name == "HalfNormal":
        (s,) = a
        return math.log(2) - (x / s) ** 2 / 2 - log(s) - _HALF_LOG_2PI
    if name == "HalfCauchy":
        (s,) = a
        return math.log(2) - math.log(math.pi) - log(s) - log(1 + (x / s) ** 2)
    if name == "Exponential":
        (r,) = a
        return log(r) - r * x
    if name == "Gamma":
        k, r = a
        return k * log(r) + (k - 1) * log(x) - r * x - lg(k)
    if name == "InverseGamma":
        k, r = a
        return k * log(r) - (k + 1) * log(x) - r / x - lg(k)
    if name == "Beta":
        c1, c0 = a
        return (c1 - 1) * log(x) + (c0 - 1) * log(1 - x) - lg(c1) - lg(c0) + lg(c1 + c0)
    if name == "StudentT":
        nu, m, s = a
        return (lg((nu + 1) / 2) - lg(nu / 2) - log(s) - log(nu * math.pi) / 2
                - (nu + 1) / 2 * log(1 + ((x - m) / s) ** 2 / nu))
    if name == "Laplace":
        m, b = a
        return -sympy.Abs(x - m) / b - log(2 * b)
    if name == "SpikeSlab":
        p, slab, spike = a
        def normal(s):
            return sympy.exp(-(x / s) ** 2 / 2) / (s * sympy.sqrt(2 * sympy.pi))
        return log(p * normal(slab) + (1 - p) * normal(spike))
    if name == "Cauchy":
        m, s = a
        return -math.log(math.pi) - log(s) - log(1 + ((x - m) / s) ** 2)
    if name == "Uniform":
        lo, hi = a
        return -log(hi - lo)
    if name == "Poisson":
        (r,) = a
        return x * log(r) - r - lg(x + 1)
    if name == "NegBinomial2":
        mu, phi = a
        return (lg(x + phi) - lg(x + 1) - lg(phi) + phi * (log(phi) - log(mu + phi))
                + x * (log(mu) - log(mu + phi)))
    raise KeyError(name)


def _log_cdf_difference(name: str, args, lo: float, hi: float):
    """log(F(hi) - F(lo)) as SymPy for parameter-dependent truncation (Normal family only)."""
    def ncdf(z):
        return sympy.erfc(-z / math.sqrt(2)) / 2

    if name == "Normal":
        m, s = args
        F = lambda v: ncdf((v - m) / s)  # noqa: E731
    elif name == "LogNormal":
        m, s = args
        F = lambda v: ncdf((math.log(v) - m) / s) if v > 0 else 0  # noqa: E731
    elif name == "Exponential":
        (r,) = args
        F = lambda v: 1 - sympy.exp(-r * v) if v > 0 else 0  # noqa: E731
    elif name == "Cauchy":
        m, s = args
        F = lambda v: sympy.atan((v - m) / s) / math.pi + sympy.Rational(1, 2)  # noqa: E731
    else:
        return None
    upper = 1 if hi == math.inf else F(hi)
    lower = 0 if lo == -math.inf else F(lo)
    return sympy.log(upper - lower)


_CFUNC_HEADER = """# Generated by msml from a model's IR: scalar kernels for density_core, cached beside this file.
import math

import numba

from msml_dsl.backends.pyro.compiled_density import digamma
from msml_dsl.backends.pyro.density_core import SIG_KERNEL

"""


def load_cfuncs(source: str, names: tuple[str, ...]) -> list:
    """The generated kernels as numba cfuncs (``density_core.SIG_KERNEL``), cached on disk by the source's hash.

    They are scalar code over raw pointers — no arrays to allocate, no tuples to return — so numba
    compiles them in a fraction of the time a full njit function takes. Without a writable cache folder
    they compile in memory.
    """
    from msml_dsl.backends.pyro import density_core

    key = numba.__version__.encode() + Path(__file__).read_bytes() + Path(density_core.__file__).read_bytes()
    digest = hashlib.sha256(key + source.encode()).hexdigest()[:20]
    decorated = source
    for name in names:
        decorated = decorated.replace(f"def {name}(", "@numba.cfunc(SIG_KERNEL, nopython=True, error_model='numpy', "
                                                      f"cache=True)\ndef {name}(")
    try:
        module = import_generated_module(f"msml_density_{digest}", _CFUNC_HEADER + decorated)
        return [getattr(module, n) for n in names]
    except (OSError, RuntimeError):  # no writable cache folder (or no home directory): compile in memory
        namespace = {"math": math, "digamma": digamma}
        exec(compile(source, "<msml-density>", "exec"), namespace)
        return [numba.cfunc(density_core.SIG_KERNEL, nopython=True, error_model="numpy")(namespace[n])
                for n in names]


def _kernel_source(name, args, E, xs, targets, printer, loads=()) -> str:
    """A kernel ``name(args)`` assigning ``targets`` (cse'd) from the parameter elements it uses."""
    used = set().union(*[e.free_symbols for _, e in targets]) if targets else set()
    lines = [f"def {name}({', '.join(args)}):"]
    lines += [f"    _x{i} = x[{i}]" for i in range(E) if xs[i] in used]
    lines += list(loads)
    lines += emit_assignments(printer, targets, indent="    ", prefix="_cse")
    lines += ["    return", ""]
    return "\n".join(lines)


class _ObservationPack:
    """Every observation statement's data as flat arrays with offsets, for ``density_core.density_after``."""

    def __init__(self):
        self.rows = [0]
        self.width, self.dstart, self.data, self.mask, self.t = [], [], [], [], []
        self.s, self.soff, self.x, self.xoff = [], [0], [], [0]
        self.moff, self.m_width, self.m_off, self.m_cols, self.m_wts = [0], [], [], [], []
        self._dlen = self._mlen = 0

    def add(self, values, mask, tidx, cov, used_s, used_x, maps):
        R = values.size
        block = np.concatenate([values.reshape(R, 1), cov.T.reshape(R, -1)], axis=1) if R else np.zeros((0, 1))
        self.rows.append(self.rows[-1] + R)
        self.width.append(block.shape[1])
        self.dstart.append(self._dlen)
        self.data.append(block.reshape(-1))
        self._dlen += block.size
        self.mask.append(mask.reshape(-1))
        self.t.append(tidx.reshape(-1))
        self.s += used_s
        self.soff.append(len(self.s))
        self.x += used_x
        self.xoff.append(len(self.x))
        for cols, wts in maps:
            cols = np.asarray(cols, dtype=np.int64).reshape(R, -1)
            wts = np.asarray(wts, dtype=float).reshape(R, -1)
            self.m_width.append(cols.shape[1])
            self.m_off.append(self._mlen)
            self.m_cols.append(cols.reshape(-1))
            self.m_wts.append(wts.reshape(-1))
            self._mlen += cols.size
        self.moff.append(len(self.m_width))

    def arrays(self, kernels) -> tuple:
        def ints(v):
            return np.ascontiguousarray(np.concatenate(v) if v and isinstance(v[0], np.ndarray) else v, dtype=np.int64)

        def floats(v):
            return np.ascontiguousarray(np.concatenate(v) if v else np.zeros(0), dtype=np.float64)

        return (ints(kernels), ints(self.rows), ints(self.width), ints(self.dstart), floats(self.data),
                np.ascontiguousarray(np.concatenate(self.mask) if self.mask else np.zeros(0), dtype=np.bool_),
                ints(self.t), ints(self.s), ints(self.soff), ints(self.x), ints(self.xoff), ints(self.moff),
                ints(self.m_width), ints(self.m_off), ints(self.m_cols), floats(self.m_wts))


def supported(ir: ModelIR) -> bool:
    """Whether the fast path covers this model (else the Pyro program's handlers are used)."""
    if any(t.exact is not None for t in getattr(ir, "unknowns", ())):
        return False   # an exact GP's Cholesky is not a scalar expression
    for p in ir.parameters:
        if p.support is None:
            return False
        if p.truncated and any(a.free_symbols for a in p.args) and p.distribution not in (
                "Normal", "LogNormal", "Exponential", "Cauchy"):
            return False
    return True


class CompiledDensity:
    """Batched U(z) = -log density and dU/dz, generated from the IR."""

    def __init__(self, ir: ModelIR, system=None, log_normalizers: dict | None = None):
        t_start = time.perf_counter()
        self.ir = ir
        self.system = system
        elements = [e for p in ir.parameters for e in p.elements]
        self.n_elements = E = len(elements)
        xs = [sympy.Symbol(f"_x{i}", real=True) for i in range(E)]
        to_x = dict(zip(elements, xs))

        # transforms: kinds 0 real, 1 lower, 2 upper, 3 interval
        kinds, lo, hi = [], [], []
        for p in ir.parameters:
            a, b = p.support
            kind = 0 if (a == -math.inf and b == math.inf) else 1 if b == math.inf else 2 if a == -math.inf else 3
            for _ in p.elements:
                kinds.append(kind)
                lo.append(a)
                hi.append(b)
        self.kinds, self.lo, self.hi = np.array(kinds), np.array(lo), np.array(hi)

        printer = _Printer()

        # log prior
        prior_terms = []
        offset = 0
        for p in ir.parameters:
            args = [a.xreplace(to_x) for a in p.args]
            for i, _ in enumerate(p.elements):
                prior_terms.append(log_pdf(p.distribution, xs[offset + i], args))
                if p.truncated:
                    const = (log_normalizers or {}).get(p.name)
                    if const is not None:
                        prior_terms.append(-float(const))
                    else:
                        norm = _log_cdf_difference(p.distribution, args, *p.support)
                        prior_terms.append(-norm)
            offset += len(p.elements)
        lp = sympy.Add(*prior_terms)
        grads = [sympy.diff(lp, x) for x in xs]
        kernels = [_kernel_source("prior", ("x", "lp", "gx", "_a3", "_a4"), E, xs,
                                  [("lp[0]", lp)] + [(f"gx[{i}]", g) for i, g in enumerate(grads) if g != 0],
                                  printer)]

        # initial values of the ODE and their derivatives
        self.ode = ir.ode
        self.n_states = 0
        self.y0_depends_on_parameters = False
        y0_const = np.zeros(0)
        if ir.ode is not None:
            n = len(ir.ode.states)
            inits = [e.xreplace(to_x) for e in ir.ode.inits]
            targets = [(f"y0[{j}]", e) for j, e in enumerate(inits)]
            for j, e in enumerate(inits):
                for i in range(E):
                    d = sympy.diff(e, xs[i]) if xs[i] in e.free_symbols else 0
                    if d != 0:
                        targets.append((f"dy0[{j * E + i}]", d))
            self.p_index = np.array([elements.index(s) for s in ir.ode.parameters], dtype=np.int64)
            self.n_states = n
            # Constant initial values need no sensitivities (for n states that saves n^2 equations)
            # and no compiled kernel.
            self.y0_depends_on_parameters = any(e.free_symbols for e in inits)
            y0_const = np.zeros(n)
            if self.y0_depends_on_parameters:
                kernels.append(_kernel_source("inits", ("x", "y0", "dy0", "_a3", "_a4"), E, xs, targets, printer))
            else:
                y0_const = np.array([float(e) for e in inits], dtype=np.float64)
        # observations: one kernel per kind of statement, for one data point
        obs = _ObservationPack()
        obs_kernels: dict[str, str] = {}  # kernel text -> name
        obs_names: list[str] = []  # each statement's kernel
        for k, o in enumerate(ir.observations):
            v = sympy.Symbol("_v", real=True)
            ys = [sympy.Symbol(f"_s{j}", real=True) for j in range(len(ir.ode.states))] if ir.ode else []
            cov_names = sorted(o.covariates)
            cs = [sympy.Symbol(f"_c{j}", real=True) for j in range(len(cov_names))]
            sub = dict(to_x)
            if ir.ode:
                sub.update(dict(zip(ir.ode.states, ys)))
            sub.update({sympy.Symbol(name, real=True): c for name, c in zip(cov_names, cs)})
            map_symbols = list(o.state_maps)
            ms = [sympy.Symbol(f"_m{q}", real=True) for q in range(len(map_symbols))]
            sub.update(dict(zip(map_symbols, ms)))
            args = [a.xreplace(sub) for a in o.args]
            ll = log_pdf(o.distribution, v, args)
            # Only the states this observation uses are loaded and differentiated (a large ODE system
            # would otherwise put n lines per observation into the compiled code).
            # The core gathers the used states into a short vector, so the kernel numbers them locally:
            # statements that differ only in which state they observe share one compiled kernel.
            free = ll.free_symbols
            used_s = [j for j, y in enumerate(ys) if y in free]
            local_s = [sympy.Symbol(f"_s{a}", real=True) for a in range(len(used_s))]
            ll = ll.xreplace({ys[j]: local_s[a] for a, j in enumerate(used_s)})
            used_x = [i for i, x in enumerate(xs) if x in free]
            grads_x = [(i, sympy.diff(ll, xs[i])) for i in used_x]
            grads_x = [(i, g) for i, g in grads_x if g != 0]
            ns, nq = len(used_s), len(ms)
            targets = [("out[0]", ll)]
            targets += [(f"out[{1 + a}]", sympy.diff(ll, s_)) for a, s_ in enumerate(local_s)]
            targets += [(f"out[{1 + ns + q}]", sympy.diff(ll, m)) for q, m in enumerate(ms)]
            targets += [(f"out[{1 + ns + nq + a}]", g) for a, (i, g) in enumerate(grads_x)]
            loads = ["    _v = vc[0]"] + [f"    _c{j} = vc[{1 + j}]" for j in range(len(cs))]
            loads += [f"    _s{a} = y[{a}]" for a in range(ns)] + [f"    _m{q} = m[{q}]" for q in range(nq)]
            text = _kernel_source("obs", ("x", "vc", "y", "m", "out"), E, xs, targets, printer, loads)
            if text not in obs_kernels:
                obs_kernels[text] = f"obs{len(obs_kernels)}"
                kernels.append(text.replace("def obs(", f"def {obs_kernels[text]}(", 1))
            obs_names.append(obs_kernels[text])
            cov = np.array([o.covariates[c] for c in cov_names]) if cov_names else np.zeros((0, o.values.size))
            tidx = o.time_index if o.time_index is not None else np.zeros(o.values.size, dtype=np.int64)
            obs.add(np.asarray(o.values, dtype=float), np.asarray(o.mask, dtype=bool), np.asarray(tidx, dtype=np.int64),
                    np.asarray(cov, dtype=float), used_s, [i for i, _ in grads_x],
                    [o.state_maps[sym] for sym in map_symbols])
        self._obs = obs
        self.source = "\n".join(kernels)
        names = (["prior"] + (["inits"] if self.y0_depends_on_parameters else [])
                 + list(obs_kernels.values()))
        self._kernels = dict(zip(names, load_cfuncs(self.source, tuple(names))))
        self._transform_args = (np.ascontiguousarray(self.kinds, dtype=np.int64),
                                np.ascontiguousarray(self.lo, dtype=np.float64),
                                np.ascontiguousarray(self.hi, dtype=np.float64),
                                np.ascontiguousarray(self.p_index if ir.ode is not None else np.zeros(0),
                                                     dtype=np.int64),
                                self._kernels["prior"].address,
                                self._kernels["inits"].address if self.y0_depends_on_parameters else 0,
                                y0_const)
        self._obs_args = obs.arrays([self._kernels[name].address for name in obs_names])
        # steps of the recent successful solves (a ring buffer) and the cap they give the next solve
        self._steps_seen = np.zeros(self._STEP_HISTORY, dtype=np.int64)
        self.reset_step_budget()
        self._warm_up()
        self.compile_seconds = time.perf_counter() - t_start

    # Step budget. A leapfrog trajectory that diverges, a step-size trial or an optimiser's line
    # search can ask for a solve far outside the posterior (a rate of 1e15), where an explicit
    # solver grinds through the whole max_steps: on a 200-state chain each such solve took 20-90 s,
    # a third of a fit. A solve that needs more than STEP_BUDGET_FACTOR times the median steps of
    # the recent successful solves (and more than STEP_BUDGET_FLOOR) is abandoned: its density is
    # -inf, so NUTS counts a divergence and the step-size search or line search backs off -- what
    # Stan does when a solve exceeds max_num_steps. The file's max_steps stays the hard limit.
    STEP_BUDGET_FACTOR = 50
    STEP_BUDGET_FLOOR = 5000
    _STEP_HISTORY = 256

    def reset_step_budget(self) -> None:
        """Start the budget afresh (each fit calls this first: the same seed gives the same draws)."""
        self._n_steps_seen = 0
        self.abandoned_solves = 0           # solves given up at the step budget
        self.step_cap = self.ode.solver.max_steps if self.ode is not None else 0

    def _record_steps(self, ok: np.ndarray) -> None:
        """Count the solves the cap gave up, remember the successful ones' steps, set the next cap."""
        limit = self.ode.solver.max_steps
        steps = self.system.last_nsteps
        if self.step_cap < limit:
            self.abandoned_solves += int(np.count_nonzero(~ok & (steps >= self.step_cap)))
        good = steps[ok][-self._STEP_HISTORY:]
        if not good.size:
            return
        H, k = self._STEP_HISTORY, good.size
        start = self._n_steps_seen % H
        first = min(k, H - start)                 # ring buffer: up to the end, then from the front
        self._steps_seen[start:start + first] = good[:first]
        self._steps_seen[:k - first] = good[first:]
        self._n_steps_seen += k
        n = min(self._n_steps_seen, H)
        middle = np.partition(self._steps_seen[:n], [(n - 1) // 2, n // 2])   # np.median's value, 6x cheaper:
        median = 0.5 * (middle[(n - 1) // 2] + middle[n // 2])               # this runs at every gradient
        self.step_cap = int(min(limit, max(self.STEP_BUDGET_FLOOR, self.STEP_BUDGET_FACTOR * median)))

    _no_y = np.zeros((1, 1, 0))
    _no_sp = np.zeros((1, 1, 0, 0))
    _no_s0 = np.zeros((1, 1, 0, 0))

    def _warm_up(self) -> None:
        z = np.zeros((1, self.n_elements))
        self.potential_and_grad(z)

    # ------------------------------------------------------------------ eval
    def potential_and_grad(self, z: np.ndarray, jacobian: bool = True) -> tuple[np.ndarray, np.ndarray]:
        z = np.ascontiguousarray(np.atleast_2d(z), dtype=np.float64)
        B = z.shape[0]
        x, dx, ld, dld, lp, gx, y0, dy0, p = density_before(z, *self._transform_args)
        if self.ode is not None:
            solver = self.ode.solver
            Y, SP, S0, ok = self.system.solve(y0, p, self.ode.t0, self.ode.output_times, method=solver.method,
                                              rtol=solver.rtol, atol=solver.atol, max_steps=self.step_cap,
                                              sensitivities=True, y0_sensitivities=self.y0_depends_on_parameters)
            self._record_steps(ok)
            if S0 is None:
                S0 = self._no_s0
        else:
            Y, SP, S0, ok = self._no_y, self._no_sp, self._no_s0, np.ones(B, dtype=np.bool_)
        u = np.empty(B)
        g = np.empty(z.shape)
        density_after(bool(jacobian), u, g, x, dx, ld, dld, lp, gx, dy0, Y, SP, S0, ok, self._transform_args[3],
                      *self._obs_args)
        return u, g
