"""The model's log density and its gradient as generated, compiled code.

The Pyro program defines the model; this module is its fast path for NUTS.
From the IR it writes the log prior, the initial values and every
observation's log likelihood as SymPy expressions, differentiates them
symbolically, prints them as numba kernels looping over the batch of chains,
and joins them to the ODE solver's forward sensitivities by the chain rule:

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


_KERNEL_HEADER = """# Generated by msml from a model's IR; compiled by numba and cached beside this file.
import math

import numba
import numpy as np

from msml_dsl.backends.pyro.compiled_density import digamma

"""


def load_kernels(source: str, names: tuple[str, ...]) -> list:
    """Compile generated functions with numba, cached on disk by the source's hash.

    The same model (same generated code) compiles once per machine; a new or edited model costs
    a few seconds of compilation. Without a writable cache folder the code compiles in memory.
    """
    # The kernels link digamma from this file: its text is part of the key, so an edit invalidates them.
    digest = hashlib.sha256(numba.__version__.encode() + Path(__file__).read_bytes() + source.encode()).hexdigest()[:20]
    module_name = f"msml_kernels_{digest}"
    decorated = source
    for name in names:
        decorated = decorated.replace(f"def {name}(", f"@numba.njit(cache=True, error_model='numpy')\ndef {name}(")
    try:
        module = import_generated_module(module_name, _KERNEL_HEADER + decorated)
        return [getattr(module, n) for n in names]
    except (OSError, RuntimeError):  # no writable cache folder (or no home directory): compile in memory
        namespace = {"np": np, "math": math, "digamma": digamma}
        exec(compile(source, "<msml-potential>", "exec"), namespace)
        jit = numba.njit(cache=False, error_model="numpy")
        return [jit(namespace[n]) for n in names]


def supported(ir: ModelIR) -> bool:
    """Whether the fast path covers this model (else the Pyro program's handlers are used)."""
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
        self._prior_lines = self._kernel(E, [("lp[_b]", lp)] +
                                         [(f"gx[_b, {i}]", g) for i, g in enumerate(grads) if g != 0], printer)
        self._inits_lines: list[str] = []

        # initial values of the ODE and their derivatives
        self.ode = ir.ode
        if ir.ode is not None:
            n = len(ir.ode.states)
            inits = [e.xreplace(to_x) for e in ir.ode.inits]
            targets = [(f"y0[_b, {j}]", e) for j, e in enumerate(inits)]
            targets += [(f"dy0[_b, {j}, {i}]", sympy.diff(e, xs[i])) for j, e in enumerate(inits)
                        for i in range(E) if sympy.diff(e, xs[i]) != 0]
            self._inits_lines = self._kernel(E, targets, printer)
            self.p_index = np.array([elements.index(s) for s in ir.ode.parameters], dtype=np.int64)
            self.n_states = n
            # Constant initial values need no sensitivities: for n states that saves n^2 equations.
            self.y0_depends_on_parameters = any(e.free_symbols for e in inits)
        # observations
        self._obs_meta = []
        self._obs_map_counts: list[int] = []
        self._obs_lines: list[list[str]] = []
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
            used_s = [j for j, y in enumerate(ys) if ll.has(y)]
            targets = [("_ll", ll)]
            targets += [(f"_gs{j}", sympy.diff(ll, ys[j])) for j in used_s]
            targets += [(f"_gm{q}", sympy.diff(ll, m)) for q, m in enumerate(ms)]
            targets += [(f"_gx{i}", sympy.diff(ll, x)) for i, x in enumerate(xs) if sympy.diff(ll, x) != 0]
            used_x = [i for i, x in enumerate(xs) if sympy.diff(ll, x) != 0]
            body = ["    for _b in range(x.shape[0]):"]
            body += [f"        _x{i} = x[_b, {i}]" for i in range(E)]
            body += [f"        for _r in range(ov{k}.shape[0]):",
                     f"            if not om{k}[_r]:", "                continue",
                     f"            _v = ov{k}[_r]"]
            if used_s or ms:
                body.append(f"            _t = ot{k}[_r]")
                body += [f"            _s{j} = Y[_b, _t, {j}]" for j in used_s]
            # a field between grid nodes: weights times the neighbouring states (method of lines)
            for q in range(len(ms)):
                body += [f"            _m{q} = 0.0",
                         f"            for _q in range(oc{k}m{q}.shape[1]):",
                         f"                _m{q} += ow{k}m{q}[_r, _q] * Y[_b, _t, oc{k}m{q}[_r, _q]]"]
            body += [f"            _c{j} = oc{k}[{j}, _r]" for j in range(len(cs))]
            body += emit_assignments(printer, targets, indent="            ", prefix="_cse")
            body.append("            lp[_b] += _ll")
            body += [f"            gY[_b, _t, {j}] += _gs{j}" for j in used_s]
            for q in range(len(ms)):
                body += [f"            for _q in range(oc{k}m{q}.shape[1]):",
                         f"                gY[_b, _t, oc{k}m{q}[_r, _q]] += ow{k}m{q}[_r, _q] * _gm{q}"]
            body += [f"            gx[_b, {i}] += _gx{i}" for i in used_x]
            self._obs_lines.append(body)
            cov = np.array([o.covariates[c] for c in cov_names]) if cov_names else np.zeros((0, o.values.size))
            tidx = o.time_index if o.time_index is not None else np.zeros(o.values.size, dtype=np.int64)
            maps = tuple(a for sym in map_symbols for a in (np.ascontiguousarray(o.state_maps[sym][0], dtype=np.int64),
                                                            np.ascontiguousarray(o.state_maps[sym][1], dtype=float)))
            self._obs_meta.append((np.ascontiguousarray(o.values, dtype=float), np.ascontiguousarray(o.mask),
                                   np.ascontiguousarray(tidx, dtype=np.int64), np.ascontiguousarray(cov, dtype=float))
                                  + maps)
            self._obs_map_counts.append(len(map_symbols))
        self._fuse()
        self._warm_up()
        self.compile_seconds = time.perf_counter() - t_start

    def _fuse(self):
        """Two compiled halves around the ODE solve: transform, prior and initial values before it;
        likelihood, chain rule and the final U, dU/dz after it.

        Each separate numpy or numba call costs microseconds, as much as the arithmetic of a small
        model, so everything but the solve is fused. The solver core is called from Python rather
        than from the fused code: linking it into generated code would cost seconds of compilation
        for every model.
        """
        K = len(self._obs_lines)
        ode = self.ode is not None
        n = self.n_states if ode else 0
        n0 = n if (ode and self.y0_depends_on_parameters) else 0
        before = ["def before(z, kinds, lo, hi, p_index):",
                  "    B, D = z.shape",
                  "    x = np.empty((B, D)); dx = np.ones((B, D)); ld = np.zeros(B); dld = np.zeros((B, D))",
                  "    for b in range(B):",
                  "        for i in range(D):",
                  "            u = z[b, i]; k = kinds[i]",
                  "            if k == 0:",
                  "                x[b, i] = u",
                  "            elif k == 1 or k == 2:",
                  "                e = math.exp(u)",
                  "                x[b, i] = lo[i] + e if k == 1 else hi[i] - e",
                  "                dx[b, i] = e if k == 1 else -e",
                  "                ld[b] += u; dld[b, i] = 1.0",
                  "            else:",
                  "                sg = 1.0 / (1.0 + math.exp(-u)); w = hi[i] - lo[i]",
                  "                x[b, i] = lo[i] + w * sg; dx[b, i] = w * sg * (1.0 - sg)",
                  "                ld[b] += math.log(w) + math.log(sg) + math.log1p(-sg) if 0.0 < sg < 1.0 else -math.inf",
                  "                dld[b, i] = 1.0 - 2.0 * sg",
                  "    lp = np.zeros(B); gx = np.zeros((B, D))"]
        before += self._prior_lines
        before += [f"    y0 = np.zeros((B, {n})); dy0 = np.zeros((B, {n}, D))"]
        before += self._inits_lines
        before += ["    P = p_index.shape[0]",
                   "    p = np.empty((B, P))",
                   "    for b in range(B):",
                   "        for j in range(P):",
                   "            p[b, j] = x[b, p_index[j]]",
                   "    return x, dx, ld, dld, lp, gx, y0, dy0, p", ""]
        obs_args = "".join(f", ov{k}, om{k}, ot{k}, oc{k}" + "".join(f", oc{k}m{q}, ow{k}m{q}"
                                                                    for q in range(self._obs_map_counts[k]))
                           for k in range(K))
        after = [f"def after(jacobian, U, G, x, dx, ld, dld, lp, gx, dy0, Y, SP, S0, ok, p_index{obs_args}):",
                 "    B, D = x.shape",
                 "    gY = np.zeros(Y.shape)"]
        for lines in self._obs_lines:
            after += lines
        if ode:
            after += ["    P = p_index.shape[0]",
                      "    for b in range(B):",
                      "        if not ok[b]:",
                      "            continue",
                      "        for t in range(Y.shape[1]):",
                      f"            for i in range({n}):",
                      "                gyi = gY[b, t, i]",
                      "                if gyi == 0.0:",
                      "                    continue",
                      "                for j in range(P):",
                      "                    gx[b, p_index[j]] += gyi * SP[b, t, i, j]",
                      f"                for m in range({n0}):",
                      "                    s0 = gyi * S0[b, t, i, m]",
                      "                    for e in range(D):",
                      "                        gx[b, e] += s0 * dy0[b, m, e]"]
        after += ["    for b in range(B):",
                  "        total = lp[b] + (ld[b] if jacobian else 0.0)",
                  "        good = ok[b] and math.isfinite(total)",
                  "        for i in range(D):",
                  "            gi = gx[b, i] * dx[b, i] + (dld[b, i] if jacobian else 0.0)",
                  "            G[b, i] = -gi",
                  "            if not math.isfinite(gi):",
                  "                good = False",
                  "        U[b] = -total",
                  "        if not good:",
                  "            U[b] = math.inf",
                  "            for i in range(D):",
                  "                G[b, i] = 0.0",
                  ""]
        self.fused_source = "\n".join(before + after)
        self.source = self.fused_source
        self._before, self._after = load_kernels(self.fused_source, ("before", "after"))
        self._transform_args = (np.ascontiguousarray(self.kinds, dtype=np.int64),
                                np.ascontiguousarray(self.lo, dtype=np.float64),
                                np.ascontiguousarray(self.hi, dtype=np.float64),
                                np.ascontiguousarray(self.p_index if ode else np.zeros(0), dtype=np.int64))
        self._obs_args = tuple(a for meta in self._obs_meta for a in meta)

    @staticmethod
    def _kernel(E, targets, printer) -> list[str]:
        """Lines of a loop over the batch computing ``targets`` from the parameter elements ``_x{i}``."""
        body = ["    for _b in range(x.shape[0]):"]
        body += [f"        _x{i} = x[_b, {i}]" for i in range(E)]
        return body + (emit_assignments(printer, targets, indent="        ", prefix="_cse") or ["        pass"])

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
        x, dx, ld, dld, lp, gx, y0, dy0, p = self._before(z, *self._transform_args)
        if self.ode is not None:
            solver = self.ode.solver
            Y, SP, S0, ok = self.system.solve(y0, p, self.ode.t0, self.ode.output_times, method=solver.method,
                                              rtol=solver.rtol, atol=solver.atol, max_steps=solver.max_steps,
                                              sensitivities=True, y0_sensitivities=self.y0_depends_on_parameters)
            if S0 is None:
                S0 = self._no_s0
        else:
            Y, SP, S0, ok = self._no_y, self._no_sp, self._no_s0, np.ones(B, dtype=np.bool_)
        u = np.empty(B)
        g = np.empty(z.shape)
        self._after(bool(jacobian), u, g, x, dx, ld, dld, lp, gx, dy0, Y, SP, S0, ok, self._transform_args[3],
                    *self._obs_args)
        return u, g
