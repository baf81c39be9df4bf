"""A FidelityProblem compiled to torch: levels as means plus weighted GP instances, and exact GP blocks.

Every level at a set of inputs is written as ``mean + sum_i c_i * g_{k(i)}(z_i)``: a mean (the
deterministic part of its link: parameters, simulations, networks, plugged-in lower levels)
plus *instances* of the unknown GP terms ``g_k``, each with a coefficient ``c_i`` and input rows
``z_i``. A linear link ``high = rho * low + delta(x)`` multiplies the lower level's instances by
``rho`` and adds its own, so the joint covariance of all levels follows by recursion
(Kennedy & O'Hagan 2000). A :class:`Block` is a set of data rows with the parameters fitted on
them; its log marginal likelihood is the exact Gaussian one, from a Cholesky factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy
import torch

from msml_dsl.backends.pinn.expressions import TORCH_FUNCTIONS
from msml_dsl.backends.pinn.parameters import PhysicalParameters
from msml_dsl.ir.fidelity import decompose, term_calls

DTYPE = torch.float64


class few_threads:
    """One torch thread while the work is small matrices: on a shared CPU the thread pool's
    synchronisation costs milliseconds per call (a 15 x 15 Cholesky: 3.6 ms on two threads,
    8 us on one). Restores the previous setting on exit."""

    def __init__(self, n_rows: int, limit: int = 1500):
        self.active = n_rows <= limit

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.active:
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
        return False


# ------------------------------------------------------------------------- kernels
def kernel(kind: str, A: torch.Tensor, B: torch.Tensor, ell: torch.Tensor, amp: torch.Tensor,
           period: float | None = None, diag: bool = False) -> torch.Tensor:
    """k(A, B) for scaled inputs (n, d), (m, d); ``diag=True``: k(A_i, B_i) for equal n."""
    d = (A - B) if diag else (A[:, None, :] - B[None, :, :])
    if kind == "periodic":
        s = torch.sin(math.pi * d / period)
        return amp ** 2 * torch.exp(-2.0 * (s ** 2 / ell ** 2).sum(-1))
    r2 = ((d / ell) ** 2).sum(-1)
    if kind == "rbf":
        return amp ** 2 * torch.exp(-0.5 * r2)
    r = torch.sqrt(torch.clamp(r2, min=1e-30))
    if kind == "matern32":
        return amp ** 2 * (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
    return amp ** 2 * (1 + math.sqrt(5) * r + 5.0 / 3.0 * r2) * torch.exp(-math.sqrt(5) * r)


def mlp_forward(x: torch.Tensor, w: torch.Tensor, sizes: list[int], activation: str) -> torch.Tensor:
    """A small dense network (n, k) -> (n,), its weights unpacked from one vector."""
    act = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "sin": torch.sin,
           "gelu": torch.nn.functional.gelu, "softplus": torch.nn.functional.softplus,
           "silu": torch.nn.functional.silu, "elu": torch.nn.functional.elu}[activation]
    h, off = x, 0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = w[off:off + a * b].reshape(a, b) / math.sqrt(a)
        off += a * b
        bias = w[off:off + b]
        off += b
        h = h @ W + bias
        if i < len(sizes) - 2:
            h = act(h)
    return h[:, 0]


# ------------------------------------------------------------------- parameters
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log(a):
    return torch.log(a) if torch.is_tensor(a) else math.log(a)


def _closed_form(dist: str, a: list):
    """log density of a prior as a torch function, or None; the arguments are numbers or (for a
    scale that depends on another parameter, see ``FastParameters``) tensors."""
    if dist == "Normal":
        m, s = a
        return lambda v: -0.5 * ((v - m) / s) ** 2 - _log(s) - _LOG_SQRT_2PI
    if dist == "HalfNormal":
        (s,) = a
        return lambda v: -0.5 * (v / s) ** 2 - _log(s) - _LOG_SQRT_2PI + math.log(2)
    if dist == "LogNormal":
        m, s = a
        return lambda v: -0.5 * ((torch.log(v) - m) / s) ** 2 - _log(s) - _LOG_SQRT_2PI - torch.log(v)
    if dist == "Exponential":
        (r,) = a
        return lambda v: _log(r) - r * v
    if dist == "HalfCauchy":
        (s,) = a
        return lambda v: math.log(2 / math.pi) - _log(s) - torch.log1p((v / s) ** 2)
    if dist == "Cauchy":
        m, s = a
        return lambda v: -math.log(math.pi) - _log(s) - torch.log1p(((v - m) / s) ** 2)
    if dist == "Gamma" and not any(torch.is_tensor(x) for x in a):
        k, r = a
        return lambda v: k * math.log(r) - math.lgamma(k) + (k - 1) * torch.log(v) - r * v
    if dist == "InverseGamma" and not any(torch.is_tensor(x) for x in a):
        k, r = a
        return lambda v: k * math.log(r) - math.lgamma(k) - (k + 1) * torch.log(v) - r / v
    return None


DEPENDENT = ("Normal", "HalfNormal", "LogNormal", "Exponential", "HalfCauchy", "Cauchy")


class FastParameters:
    """The latent parameters' transform and log prior for one unconstrained point.

    Priors with constant arguments and no bounds (every GP hyperparameter, most user priors)
    are evaluated in closed form, which costs a few tensor operations instead of building torch
    distributions on each call; anything else goes through ``PhysicalParameters`` (the Pyro
    backend's exact priors, truncation included)."""

    def __init__(self, physical: PhysicalParameters):
        self.physical = physical
        self.fast = []
        self.slow = False
        earlier: set = set()
        for p in physical.parameters:
            const = all(not a.free_symbols for a in p.args)
            logp = _closed_form(p.distribution, [float(a) for a in p.args]) if const and not p.truncated else None
            args = None
            if (not const and not p.truncated and p.distribution in DEPENDENT and not p.shape
                    and set().union(*(a.free_symbols for a in p.args)) <= earlier):
                # arguments that are expressions of earlier scalar or vector elements (the default
                # amplitude of a link term scales with its lengthscale: lower_fidelity)
                syms = sorted(set().union(*(a.free_symbols for a in p.args)), key=lambda q: q.name)
                fn = sympy.lambdify(syms, list(p.args), modules=[TORCH_FUNCTIONS, "math"], dummify=True)
                args = (fn, [q.name for q in syms])
                logp = True
            if logp is None:
                self.slow = True
                break
            positive = p.distribution in ("HalfNormal", "LogNormal", "Exponential", "HalfCauchy", "Gamma", "InverseGamma")
            off, size = physical.offsets[p.name]
            self.fast.append((p, off, size, positive, logp, args))
            earlier.update(p.elements)

    def transform(self, z: torch.Tensor):
        """z (D,) -> (values by parameter, values by element name, log prior + log|J|)."""
        if self.slow:
            values, elements, log_det, log_prior = self.physical.transform(z[None])
            return ({k: v[0] for k, v in values.items()}, {k: v[0] for k, v in elements.items()},
                    (log_det + log_prior)[0])
        values, elements = {}, {}
        total = torch.zeros((), dtype=DTYPE, device=z.device)
        for p, off, size, positive, logp, args in self.fast:
            u = z[off:off + size] if p.shape else z[off]
            if positive:
                v = torch.exp(u)
                total = total + u.sum()
            else:
                v = u
            if args is not None:
                fn, names = args
                logp = _closed_form(p.distribution, fn(*[elements[n] for n in names]))
            total = total + logp(v).sum()
            values[p.name] = v
            if p.shape:
                for i, e in enumerate(p.elements):
                    elements[e.name] = v[i]
            else:
                elements[p.elements[0].name] = v
        return values, elements, total


# ---------------------------------------------------------------------- compiled
class Fn:
    """A SymPy expression as a torch function of an environment (name -> tensor)."""

    def __init__(self, expr: sympy.Expr, functions: dict):
        expr = sympy.sympify(expr)
        self.expr = expr
        syms = sorted(expr.free_symbols, key=lambda s: s.name)
        self.names = [s.name for s in syms]
        self.fn = sympy.lambdify(syms, expr, modules=[{**functions, **TORCH_FUNCTIONS}], dummify=True)

    def __call__(self, env: dict, n: int, device) -> torch.Tensor:
        out = self.fn(*[env[name] for name in self.names])
        if not torch.is_tensor(out):
            out = torch.tensor(float(out), dtype=DTYPE, device=device)
        return out.expand(n) if out.ndim == 0 else out


@dataclass
class Instance:
    """Values of ``coef * g_term(z)`` at n rows."""

    term: str
    key: str            # the call's arguments, to merge repeated calls
    coef: torch.Tensor  # (n,)
    z: torch.Tensor     # (n, k), scaled


@dataclass
class _Form:
    mean: Fn
    gp: list            # [(term, key, coef Fn, [arg Fn])]
    lower: list         # [(level, rho Fn)]: stochastic lower levels entering linearly (joint form)


class CompiledLevel:
    def __init__(self, level, problem, functions):
        self.level = level
        self.name = level.name
        terms = problem.terms
        expr = level.expression
        calls = [c for c in term_calls(expr, terms) if terms[type(c).__name__].kind == "gp"]
        dummies = {c: sympy.Dummy(f"G{i}") for i, c in enumerate(calls)}
        replaced = expr.xreplace(dummies)
        self.calls = calls

        def form(lower_symbols):
            parts = decompose(replaced, list(dummies.values()) + lower_symbols)
            if parts is None:
                return None
            mean, coefs = parts
            gp = [(type(c).__name__, sympy.sstr(c.args), Fn(coefs[i], functions), [Fn(a, functions) for a in c.args])
                  for i, c in enumerate(calls)]
            lower = [(s.name, Fn(coefs[len(calls) + j], functions)) for j, s in enumerate(lower_symbols)]
            return _Form(Fn(mean, functions), gp, lower)

        stochastic = [problem.level(n).symbol for n in level.lower if problem.level(n).stochastic]
        self.joint = form(stochastic) if level.linear else None
        self.plugged = form([])       # lower levels as plugged-in values (recursive scheme)


ADAPTIVE = ("rk45", "stiff", "auto")   # simulate(method=...) solved by the compiled solver at rtol/atol


class Simulator:
    """The model's ODE (or another file's ODE or PDE grid) solved cheaply: on a fixed grid by rk4,
    midpoint or euler in torch, or by the compiled adaptive solver at loose tolerances; the output
    interpolated linearly in time (and in space for a field)."""

    def __init__(self, sim, functions):
        self.sim = sim
        # the right-hand side as one function of (time, states..., parameters...) -> list
        rhs = [sympy.sympify(r) for r in sim.rhs]
        used = set().union(*(r.free_symbols for r in rhs)) - set(sim.states) - {sim.time}
        self.rhs_names = sorted({u.name for u in used})
        self.rhs = sympy.lambdify([sim.time, *sim.states, *[sympy.Symbol(n, real=True) for n in self.rhs_names]],
                                  rhs, modules=[{**functions, **TORCH_FUNCTIONS}], dummify=True)
        self.inits = [Fn(i, functions) for i in sim.inits]
        self.system = None
        if sim.method in ADAPTIVE:   # the compiled solver with forward sensitivities, at sim.rtol/atol
            from msml_dsl.backends.pyro.ode_solver import compile_ode_system

            self.system = compile_ode_system(sim.time, list(sim.states),
                                             [sympy.Symbol(n, real=True) for n in self.rhs_names], rhs)
        self.field = sim.space is not None          # a PDE level: the output is a field on grid nodes
        if self.field:
            self.columns = [sim.states.index(s) for s in sim.output]
        else:
            self.output = Fn(sim.output, functions)

    def __call__(self, env: dict, inputs: dict) -> torch.Tensor:
        """The output at the inputs' rows (``inputs``: coordinate name -> (n,) tensor)."""
        s = self.sim
        t = inputs[s.time.name]
        dev = t.device
        h = (s.t1 - s.t0) / s.steps
        y = torch.stack([f(env, 1, dev).reshape(()) for f in self.inits])
        params = [env[n] for n in self.rhs_names]
        path = self._adaptive(y, params, dev) if self.system is not None else self._fixed(y, params, h, dev)
        pos = torch.clamp((t - s.t0) / h, 0, s.steps)
        i = torch.clamp(torch.floor(pos).long(), max=s.steps - 1)
        w = pos - i
        if self.field:
            return self._field(path[:, self.columns], i, w, inputs[s.space])
        grid = torch.tensor(np.linspace(s.t0, s.t1, s.steps + 1), dtype=DTYPE, device=dev)
        local = dict(env)
        local[s.time.name] = grid
        for k, x in enumerate(s.states):
            local[x.name] = path[:, k]
        out = self.output(local, s.steps + 1, dev)
        return out[i] * (1 - w) + out[i + 1] * w

    def _fixed(self, y, params, h, dev):
        """The states at the steps + 1 grid times by the fixed-step method (rk4, midpoint, euler)."""
        s = self.sim
        zero = torch.zeros((), dtype=DTYPE, device=dev)

        def f(time, y):
            out = self.rhs(torch.tensor(time, dtype=DTYPE, device=dev), *y.unbind(), *params)
            return torch.stack([v.reshape(()) if torch.is_tensor(v) else zero + float(v) for v in out])

        path = [y]
        time = s.t0
        for _ in range(s.steps):
            if s.method == "euler":
                y = y + h * f(time, y)
            elif s.method == "midpoint":
                y = y + h * f(time + h / 2, y + h / 2 * f(time, y))
            else:
                k1 = f(time, y)
                k2 = f(time + h / 2, y + h / 2 * k1)
                k3 = f(time + h / 2, y + h / 2 * k2)
                k4 = f(time + h, y + h * k3)
                y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            time += h
            path.append(y)
        return torch.stack(path)                     # (steps + 1, states)

    def _adaptive(self, y0, params, dev):
        """The states at the output grid by the compiled adaptive solver (rk45, stiff or auto) at the
        level's tolerances; gradients from its forward sensitivities."""
        from msml_dsl.backends.pyro.ode_autograd import solve_ode

        s = self.sim
        p = torch.stack([v.reshape(()) for v in params]) if params else torch.zeros(0, dtype=DTYPE, device=dev)
        times = np.linspace(s.t0, s.t1, s.steps + 1)
        Y = solve_ode(self.system, y0, p, s.t0, times, method=s.method, rtol=s.rtol, atol=s.atol)
        if not bool(torch.isfinite(Y).all()):
            raise ValueError("the coarse solve failed")
        return Y
        i = torch.clamp(torch.floor(pos).long(), max=s.steps - 1)
        w = pos - i
        if self.field:
            return self._field(path[:, self.columns], i, w, inputs[s.space])
        grid = torch.tensor(np.linspace(s.t0, s.t1, s.steps + 1), dtype=DTYPE, device=dev)
        local = dict(env)
        local[s.time.name] = grid
        for k, name in enumerate(names):
            local[name] = path[:, k]
        out = self.output(local, s.steps + 1, dev)
        return out[i] * (1 - w) + out[i + 1] * w

    def _field(self, U, i, w, x):
        """A field on the grid U (steps + 1, nodes), interpolated bilinearly in time and space."""
        s = self.sim
        n = len(s.nodes)
        lo = s.nodes[0]
        hx = s.nodes[1] - s.nodes[0]
        limit = n if s.periodic else n - 1
        u = torch.clamp((x - lo) / hx, 0, limit)
        j = torch.clamp(torch.floor(u).long(), max=limit - 1)
        v = u - j
        j1 = (j + 1) % n if s.periodic else j + 1
        at = (U[i, j] * (1 - v) + U[i, j1] * v) * (1 - w)
        return at + (U[i + 1, j] * (1 - v) + U[i + 1, j1] * v) * w


class FidelityModel:
    """The compiled problem: parameters, levels, simulators, networks and term input scalings."""

    def __init__(self, ir, device: str = "cpu"):
        self.ir = ir
        self.problem = ir.fidelity
        self.device = torch.device(device)
        self.params = PhysicalParameters(ir.parameters, device)
        self.fast = FastParameters(self.params)
        self._values: dict = {}
        functions = {}
        for t in self.problem.terms.values():
            if t.kind == "mlp":
                functions[t.name] = self._network(t)
        self.functions = functions
        self.levels = {lv.name: CompiledLevel(lv, self.problem, functions) for lv in self.problem.levels}
        self.simulators = {s.symbol.name: Simulator(s, functions) for s in self.problem.simulations}
        self.noise = {d.name: Fn(d.noise, functions) for lv in self.problem.levels for d in lv.data}
        self.axes = {a.name: i for i, a in enumerate(self.problem.inputs)}
        self.domain = {a.name: (a.lower, a.upper) for a in self.problem.inputs}
        self.scaling: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.n_rows = sum(d.values.size for lv in self.problem.levels for d in lv.data)

    # -------------------------------------------------------------- parameters
    def unpack(self, z: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """Unconstrained z (D,) -> (environment by element name, log prior + log|det J|)."""
        values, env, log_density = self.fast.transform(z)
        self._values = values
        return env, log_density

    def _network(self, term):
        sizes = [term.arity, *term.hidden, 1]

        def g(*args):
            n = max(a.numel() if torch.is_tensor(a) else 1 for a in args)
            x = torch.stack([a.expand(n) if torch.is_tensor(a) else torch.full((n,), float(a), dtype=DTYPE,
                                                                               device=self.device) for a in args], -1)
            if term.name not in self.scaling:
                self.set_network_scaling(term.name, x)
            shift, scale = self.scaling[term.name]
            return mlp_forward((x - shift) / scale, self._values[f"{term.name}_w"], sizes, term.activation)
        return g

    # ------------------------------------------------------------------ levels
    def evaluate(self, name: str, X: torch.Tensor, env: dict, fixed: dict, joint: bool, memo=None):
        """Level ``name`` at inputs X (n, d): (mean (n,), [Instance]).

        ``fixed`` maps levels to plugged-in values at X (the recursive scheme); with ``joint`` the
        stochastic levels below enter through their own mean and instances (affine links).
        """
        memo = {} if memo is None else memo
        if name in fixed:
            return fixed[name], []
        if name in memo:
            return memo[name]
        cl = self.levels[name]
        n = X.shape[0]
        local = dict(env)
        for axis, i in self.axes.items():
            local[axis] = X[:, i]
        for sym, sim in self.simulators.items():
            if sym in {s.name for s in cl.level.expression.free_symbols}:
                local[sym] = sim(env, {a: X[:, k] for a, k in self.axes.items()})
        lower_parts = {}
        for lower in cl.level.lower:
            mean, inst = self.evaluate(lower, X, env, fixed, joint, memo)
            lower_parts[lower] = (mean, inst)
            local[lower] = mean
        form = cl.plugged
        if joint and any(inst for _, inst in lower_parts.values()):
            form = cl.joint
        mean = form.mean(local, n, self.device)
        instances: dict[tuple, Instance] = {}

        def add(inst: Instance):
            key = (inst.term, inst.key)
            if key in instances:
                instances[key] = Instance(inst.term, inst.key, instances[key].coef + inst.coef, inst.z)
            else:
                instances[key] = inst

        for lower, rho in form.lower:
            r = rho(local, n, self.device)
            lm, linst = lower_parts[lower]
            mean = mean + r * lm
            for inst in linst:
                add(Instance(inst.term, inst.key, r * inst.coef, inst.z))
        for term, key, coef, args in form.gp:
            z = torch.stack([a(local, n, self.device) for a in args], -1)
            add(Instance(term, key, coef(local, n, self.device), self.scale(term, z, args)))
        out = (mean, list(instances.values()))
        memo[name] = out
        return out

    def scale(self, term: str, z: torch.Tensor, args) -> torch.Tensor:
        """Inputs of a term on [0, 1]: a coordinate by its declared range, anything else by the
        range of its values where first met (the training rows)."""
        if term not in self.scaling:
            shift, width = [], []
            for j, a in enumerate(args):
                names = a.names
                if len(names) == 1 and names[0] in self.domain and a.expr == sympy.Symbol(names[0], real=True):
                    lo, hi = self.domain[names[0]]
                else:
                    col = z[:, j].detach()
                    lo, hi = float(col.min()), float(col.max())
                    if not hi > lo:
                        lo, hi = lo - 0.5, lo + 0.5
                shift.append(lo)
                width.append(hi - lo)
            self.scaling[term] = (torch.tensor(shift, dtype=DTYPE, device=self.device),
                                  torch.tensor(width, dtype=DTYPE, device=self.device))
        shift, width = self.scaling[term]
        return (z - shift) / width

    def set_network_scaling(self, term: str, x: torch.Tensor) -> None:
        """A network's inputs scaled by their training range."""
        if term not in self.scaling:
            lo, hi = x.min(0).values.detach(), x.max(0).values.detach()
            width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
            self.scaling[term] = (lo, width)

    def hyper(self, term: str):
        t = self.problem.terms[term]
        amp = self._values[f"{term}_amplitude"]
        ell = self._values[f"{term}_lengthscale"]
        period = None
        if t.kernel == "periodic":
            shift, width = self.scaling[term]
            period = torch.as_tensor(float(t.period or 1.0), dtype=DTYPE) / width
        return t.kernel, ell.reshape(-1), amp, period


# -------------------------------------------------------------------------- blocks
@dataclass
class Rows:
    """The data rows of one observed column, at one level."""

    level: str
    name: str                  # source.column
    X: torch.Tensor            # (n, d)
    y: torch.Tensor            # (n,)


def _gather(instances: list, offsets: list, n: int):
    """Per term: (coefficients (M,), inputs (M, k), row of each (M,) or None when the rows are 0..n-1)."""
    by_term: dict[str, list] = {}
    for inst, off in zip(instances, offsets):
        by_term.setdefault(inst.term, []).append((inst, off))
    out = {}
    for term, items in by_term.items():
        coef = torch.cat([i.coef for i, _ in items])
        z = torch.cat([i.z for i, _ in items])
        rows = np.concatenate([np.arange(off, off + i.coef.shape[0]) for i, off in items])
        out[term] = (coef, z, None if (rows.size == n and (rows == np.arange(n)).all()) else rows)
    return out


def _scatter(block: torch.Tensor, rows_a, rows_b, n_a: int, n_b: int) -> torch.Tensor:
    """Sum a kernel block over instances into rows (a one-hot product; identity rows skip it)."""
    if rows_a is not None:
        P = torch.zeros(n_a, block.shape[0], dtype=DTYPE, device=block.device)
        P[torch.as_tensor(rows_a), torch.arange(block.shape[0])] = 1.0
        block = P @ block
    if rows_b is not None:
        P = torch.zeros(n_b, block.shape[1], dtype=DTYPE, device=block.device)
        P[torch.as_tensor(rows_b), torch.arange(block.shape[1])] = 1.0
        block = block @ P.T
    return block


def covariance(model: FidelityModel, inst_a: list, rows_a: list, n_a: int,
               inst_b: list | None = None, rows_b: list | None = None, n_b: int | None = None,
               diag: bool = False) -> torch.Tensor:
    """Sum over terms of c_i c_j k(z_i, z_j) between two sets of instances.

    ``rows_x[i]`` is the row offset of instance i in its set. With ``diag`` (a == b) only the
    diagonal, as a vector.
    """
    same = inst_b is None
    ga = _gather(inst_a, rows_a, n_a)
    gb = ga if same else _gather(inst_b, rows_b, n_b)
    n_b = n_a if same else n_b
    dev = model.device
    out = torch.zeros(n_a, dtype=DTYPE, device=dev) if diag else torch.zeros(n_a, n_b, dtype=DTYPE, device=dev)
    for term, (ca, za, ra) in ga.items():
        if term not in gb:
            continue
        cb, zb, rb = gb[term]
        kind, ell, amp, period = model.hyper(term)
        trend = model.problem.terms[term].trend
        if diag and ra is None:
            k = kernel(kind, za, za, ell, amp, period, diag=True)
            if trend:
                k = k + trend ** 2 * (1 + ((za - 0.5) ** 2).sum(-1))
            out = out + ca * ca * k
        else:
            zb_ = za if diag else zb
            k = kernel(kind, za, zb_, ell, amp, period)
            if trend:   # a linear trend with Normal(0, trend^2) coefficients, integrated out
                k = k + trend ** 2 * (1 + (za - 0.5) @ (zb_ - 0.5).T)
            full = ca[:, None] * k * (ca if diag else cb)[None, :]
            if diag:
                out = out + torch.diagonal(_scatter(full, ra, ra, n_a, n_a))
            else:
                out = out + _scatter(full, ra, rb, n_a, n_b)
    return out


class Block:
    """Data rows fitted together, with the parameters they determine.

    The joint scheme has one block (all levels, Kennedy–O'Hagan covariance); the recursive
    scheme has one per level with data, the levels below plugged in (``fixed``).
    """

    def __init__(self, model: FidelityModel, rows: list[Rows], free: list[str], joint: bool,
                 fixed_train: dict[str, dict[str, torch.Tensor]] | None = None):
        self.model, self.rows, self.joint = model, rows, joint
        self.free = free                       # parameter names fitted here
        self.fixed_train = fixed_train or {}   # per Rows name: level -> plugged values at its X
        self.y = torch.cat([r.y for r in rows])
        self.offsets = np.cumsum([0] + [r.y.shape[0] for r in rows])
        idx = []
        for p in model.params.parameters:
            off, size = model.params.offsets[p.name]
            if p.name in free:
                idx += list(range(off, off + size))
        self.index = torch.tensor(idx, dtype=torch.long)
        self.dim = len(idx)

    def full_z(self, z_block: torch.Tensor, z_base: torch.Tensor) -> torch.Tensor:
        z = z_base.clone()
        z[self.index] = z_block
        return z

    def parts(self, env: dict):
        """Mean (N,), instances with their row offsets, noise variances (N,)."""
        means, instances, offsets, noise = [], [], [], []
        for r, off in zip(self.rows, self.offsets[:-1]):
            mean, inst = self.model.evaluate(r.level, r.X, env, self.fixed_train.get(r.name, {}), self.joint)
            means.append(mean)
            instances += inst
            offsets += [int(off)] * len(inst)
            s = self.model.noise[r.name](env, r.y.shape[0], self.model.device)
            noise.append(s ** 2)
        return torch.cat(means), instances, offsets, torch.cat(noise)

    def factor(self, env: dict):
        """(L, alpha, residual, mean, instances, offsets, noise) at the parameters in env."""
        mean, inst, offs, noise = self.parts(env)
        N = self.y.shape[0]
        K = covariance(self.model, inst, offs, N) if inst else torch.zeros(N, N, dtype=DTYPE, device=self.model.device)
        scale = torch.clamp(torch.diagonal(K).mean().detach(), min=1e-12) if inst else torch.ones((), dtype=DTYPE)
        C = K + torch.diag(noise + self.model.problem.jitter * scale + 1e-12)
        L, info = torch.linalg.cholesky_ex(C)
        if int(info) != 0:
            return None
        r = self.y - mean
        alpha = torch.cholesky_solve(r[:, None], L)[:, 0]
        return L, alpha, r, mean, inst, offs, noise

    def log_likelihood(self, env: dict) -> torch.Tensor:
        f = self.factor(env)
        if f is None:
            return torch.tensor(-math.inf, dtype=DTYPE)
        L, alpha, r = f[0], f[1], f[2]
        N = r.shape[0]
        return -0.5 * (r * alpha).sum() - torch.log(torch.diagonal(L)).sum() - 0.5 * N * math.log(2 * math.pi)

    def potential(self, z_base: torch.Tensor, gradient: bool = True):
        """U(z_block) = -(log likelihood + log prior + log|J|) and its gradient (zero without
        ``gradient``, which skips autograd), for rows of a batch."""
        def fn(Z: np.ndarray):
            U = np.empty(Z.shape[0])
            G = np.zeros_like(Z)
            for i, zb in enumerate(Z):
                zt = torch.tensor(zb, dtype=DTYPE, device=self.model.device, requires_grad=gradient)
                try:
                    with torch.set_grad_enabled(gradient):
                        env, lp = self.model.unpack(self.full_z(zt, z_base))
                        u = -(self.log_likelihood(env) + lp)
                    if not torch.isfinite(u):
                        raise ValueError
                    U[i] = float(u.detach())
                    if not gradient:
                        continue
                    (g,) = torch.autograd.grad(u, zt)
                    G[i] = g.cpu().numpy()
                    if not np.isfinite(G[i]).all():
                        raise ValueError
                except (ValueError, RuntimeError):
                    U[i], G[i] = np.inf, 0.0
            return U, G
        return fn
