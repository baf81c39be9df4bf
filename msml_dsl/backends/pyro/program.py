"""IR → Pyro program (the ``emit`` stage).

The Pyro model is vectorised over a leading batch of draws (``n``): NUTS runs
its chains as that batch, predictive checks run thousands of draws at once.
The ODE is solved by a compiled integrator with forward sensitivities wrapped
as one autograd node (see ``ode_autograd``), so a gradient costs one call
rather than thousands of tiny torch operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import sympy
import torch
from pyro.poutine.messenger import Messenger
from torch.distributions import biject_to

from msml_dsl.backends.pyro.distributions import Truncated, constant_log_normalizer, make_distribution
from msml_dsl.errors import Diagnostic, UnsupportedFeature
from msml_dsl.ir.model_ir import LatentParameter, ModelIR

DTYPE = torch.float64

def _tensor_fn(fn):
    # SymPy keeps numbers such as log(2) unevaluated; torch functions need tensors.
    return lambda x: fn(x if torch.is_tensor(x) else torch.tensor(float(x), dtype=DTYPE))


_TORCH_FUNCTIONS = {
    **{name: _tensor_fn(getattr(torch, name)) for name in ("exp", "log", "sqrt", "sin", "cos", "tan", "tanh")},
    "Abs": _tensor_fn(torch.abs), "pi": math.pi, "E": math.e,
    "Min": lambda *a: _reduce(torch.minimum, a), "Max": lambda *a: _reduce(torch.maximum, a),
}


def _reduce(op, args):
    out = torch.as_tensor(args[0], dtype=DTYPE)
    for a in args[1:]:
        out = op(out, torch.as_tensor(a, dtype=DTYPE))
    return out


class TorchExpressions:
    """Several SymPy expressions evaluated together on tensors (via SymPy's code printer)."""

    def __init__(self, exprs):
        self.exprs = list(exprs)
        # Constant expressions (e.g. log(10)) are folded to numbers once.
        self.constants = {i: float(sympy.N(e)) for i, e in enumerate(self.exprs) if not e.free_symbols}
        variable = [e for i, e in enumerate(self.exprs) if i not in self.constants]
        self.symbols = sorted(set().union(*(e.free_symbols for e in variable)) if variable else set(),
                              key=lambda s: s.name)
        self._fn = sympy.lambdify(self.symbols, variable, modules=[_TORCH_FUNCTIONS], dummify=True)
        self._cache: dict = {}

    def __call__(self, env: dict, device) -> list[torch.Tensor]:
        computed = iter(self._fn(*[env[s] for s in self.symbols]))
        out = []
        for i in range(len(self.exprs)):
            if i in self.constants:
                key = (i, device)
                if key not in self._cache:
                    self._cache[key] = torch.tensor(self.constants[i], dtype=DTYPE, device=device)
                out.append(self._cache[key])
            else:
                v = next(computed)
                out.append(v if torch.is_tensor(v) else torch.tensor(float(v), dtype=DTYPE, device=device))
        return out


@dataclass(frozen=True)
class SiteLayout:
    name: str
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


class _Unconstrained(Messenger):
    """Supplies latent sites from an unconstrained batch ``z`` and records log|det J|."""

    def __init__(self, z: torch.Tensor, layout: dict[str, SiteLayout]):
        super().__init__()
        self.z = z
        self.layout = layout
        self.log_det = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["name"] not in self.layout:
            return
        site = self.layout[msg["name"]]
        zs = self.z[:, site.offset:site.offset + site.size].reshape((self.z.shape[0],) + site.shape)
        if not site.shape:
            zs = zs.reshape(self.z.shape[0])
        transform = biject_to(msg["fn"].support)
        value = transform(zs)
        ld = transform.log_abs_det_jacobian(zs, value)
        while ld.ndim > 1:
            ld = ld.sum(-1)
        self.log_det = self.log_det + ld
        msg["value"] = value
        msg["done"] = True


def _valid_arguments(name: str, args: list[torch.Tensor]):
    """Arguments with out-of-domain entries replaced by 1, and where they were (None if nowhere)."""
    from msml_dsl.semantics.distributions import DISTRIBUTIONS

    spec = DISTRIBUTIONS[name]
    invalid = None
    for pname, a in zip(spec.parameters, args):
        bad = ~torch.isfinite(a)
        if pname in spec.positive:
            bad = bad | (a <= 0)
        invalid = bad if invalid is None else invalid | bad
    if invalid is None or not bool(invalid.any()):
        return args, None
    return [torch.where(invalid, torch.ones_like(a), a) for a in args], invalid


class PyroProgram:
    """A compiled model: its Pyro model plus the batched log density NUTS uses.

    >>> # program = build_pyro_program(ir); trace = pyro.poutine.trace(program.model).get_trace(4)
    """

    def __init__(self, ir: ModelIR, device: str = "cpu", fast: bool = True):
        torch.distributions.Distribution.set_default_validate_args(False)
        pyro.enable_validation(False)
        self.ir = ir
        self.device = torch.device(device)
        self.layout: dict[str, SiteLayout] = {}
        offset = 0
        for p in ir.parameters:
            self.layout[p.name] = SiteLayout(p.name, offset, p.shape)
            offset += self.layout[p.name].size
        self.dim = offset
        self._prior_args = {p.name: TorchExpressions(p.args) for p in ir.parameters}
        self._log_normalizers = {p.name: self._truncation_normalizer(p) for p in ir.parameters}
        self._obs = []
        for o in ir.observations:
            self._obs.append((o, TorchExpressions(o.args),
                              torch.as_tensor(o.values, dtype=DTYPE, device=self.device),
                              torch.as_tensor(o.mask, device=self.device),
                              {k: torch.as_tensor(v, dtype=DTYPE, device=self.device) for k, v in o.covariates.items()},
                              None if o.time_index is None else torch.as_tensor(o.time_index, device=self.device),
                              {sym: (torch.as_tensor(cols, device=self.device),
                                     torch.as_tensor(w, dtype=DTYPE, device=self.device))
                               for sym, (cols, w) in o.state_maps.items()}))
        self._derived = TorchExpressions([e for _, e in ir.derived]) if ir.derived else None
        # exact GP terms: the standardised differences between their points, fixed by the data
        self._exact_gps = []
        for term in getattr(ir, "unknowns", ()):
            spec = term.exact
            if spec is None:
                continue
            x = spec.standardised(spec.points)
            diff = torch.as_tensor(x[:, None, :] - x[None, :, :], dtype=DTYPE, device=self.device)
            symbols = {tp.name: tp.elements for tp in term.parameters}
            self._exact_gps.append((term.name, spec, diff, symbols[spec.amplitude][0], symbols[spec.lengthscale][0],
                                    symbols[spec.z]))
        self._centred = {g[1].z: g for g in self._exact_gps if g[1].centred}
        self.system = None
        if ir.ode is not None:
            from msml_dsl.backends.pyro.ode_solver import compile_ode_system

            # the solves' sensitivity columns: the parameters, and the states too when an initial value
            # depends on a parameter; the fused kernel is generated for that count
            y0_sensitivities = any(sympy.sympify(e).free_symbols for e in ir.ode.inits)
            self.system = compile_ode_system(
                ir.ode.time, list(ir.ode.states), list(ir.ode.parameters), list(ir.ode.rhs),
                sens_columns=len(ir.ode.parameters) + (len(ir.ode.states) if y0_sensitivities else 0),
                methods=(ir.ode.solver.method,), sensitivities=(True,),
                warmup=self.device.type == "cpu")   # on a GPU the torch solver integrates; kernels compile if used
            self.torch_system = None
            self.ode_backend = "torch" if self.device.type == "cuda" else "numba"
            if self.ode_backend == "torch":
                self.use_torch_solver()
            self._inits = TorchExpressions(ir.ode.inits)
            self._times = np.asarray(ir.ode.output_times, dtype=float)
        self.fast = None
        if fast:
            from msml_dsl.backends.pyro.compiled_density import CompiledDensity, supported

            if supported(ir):
                self.fast = CompiledDensity(ir, self.system, self._log_normalizers)

    def use_torch_solver(self) -> None:
        """Solve with the batched torch solver (the GPU path; also usable on the CPU, e.g. to test it)."""
        from msml_dsl.backends.pyro.ode_torch import compile_torch_ode_system

        ode = self.ir.ode
        self.torch_system = compile_torch_ode_system(ode.time, list(ode.states), list(ode.parameters), list(ode.rhs))
        self.ode_backend = "torch"

    # ------------------------------------------------------------------ build
    def _truncation_normalizer(self, p: LatentParameter):
        if p.lower is None and p.upper is None:
            return None
        if all(not a.free_symbols for a in p.args):
            return constant_log_normalizer(p.distribution, [float(a) for a in p.args], p.lower, p.upper)
        if p.distribution not in ("Normal", "LogNormal", "Cauchy", "Exponential", "HalfNormal", "HalfCauchy",
                                  "Uniform"):
            raise UnsupportedFeature([Diagnostic(
                "E402", f"a bounded {p.distribution} prior whose arguments depend on other parameters is not "
                        f"supported (torch has no {p.distribution} CDF to renormalise it)", None, self.ir.file,
                help="use constant arguments, or a Normal/LogNormal prior")])
        return None  # computed per draw from the base CDF

    def _prior(self, p: LatentParameter, env: dict, n: int):
        args = self._prior_args[p.name](env, self.device)
        if p.shape:
            args = [a.unsqueeze(-1) if a.ndim == 1 else a for a in args]
        d = make_distribution(p.distribution, args)
        if p.truncated:
            lo, hi = p.support if p.support is not None else (p.lower, p.upper)
            d = Truncated(d, None if lo is None or lo == -math.inf else lo,
                          None if hi is None or hi == math.inf else hi, self._log_normalizers[p.name])
        if p.shape:
            return d.expand((n,) + p.shape).to_event(len(p.shape))
        return d.expand((n,))

    # ------------------------------------------------------------------ model
    def model(self, n: int = 1, predictive: bool = False):
        """The Pyro model over a batch of ``n`` draws; returns the ODE solution (n, T, states)."""
        env: dict = {}
        with pyro.plate("draws", n, dim=-1):
            for p in self.ir.parameters:
                prior = self._centred_gp_prior(p.name, env, n) if p.name in self._centred else self._prior(p, env, n)
                value = pyro.sample(p.name, prior)
                if p.shape:
                    for i, e in enumerate(p.elements):
                        env[e] = value[..., i]
                else:
                    env[p.elements[0]] = value
            gp_values = self._exact_gp_values(env)
            solution = self.solve(env, n)
            for o, fn, values, mask, covariates, index, state_maps in self._obs:
                # Parameters become (n, 1), states (n, rows), covariates (rows,): broadcasting gives (n, rows).
                local = {k: v.unsqueeze(-1) for k, v in env.items()}
                for key, col in covariates.items():
                    local[sympy.Symbol(key, real=True)] = col
                if solution is not None:
                    for j, s in enumerate(self.ir.ode.states):
                        local[s] = solution[:, index, j]
                    for sym, (cols, w) in state_maps.items():  # a field interpolated between grid states
                        local[sym] = (solution[:, index[:, None], cols] * w).sum(-1)
                for sym, (term_name, rows) in o.gathers.items():   # an exact GP at each row's inputs
                    local[sym] = gp_values[term_name][:, torch.as_tensor(rows, device=self.device)]
                rows = values.shape[0]
                args = [a.expand(n, rows) for a in fn(local, self.device)]
                if predictive:
                    # Draws far in the prior's tails can give arguments outside the distribution's domain
                    # (a negative rate); those rows predict NaN instead of stopping the run.
                    args, invalid = _valid_arguments(o.distribution, args)
                    value = pyro.sample(o.name, make_distribution(o.distribution, args).mask(mask).to_event(1))
                    if invalid is not None and bool(invalid.any()):
                        value.masked_fill_(invalid, float("nan"))
                    continue
                d = make_distribution(o.distribution, args).mask(mask).to_event(1)
                pyro.sample(o.name, d, obs=values)
            if self._derived is not None:
                for (name, _), v in zip(self.ir.derived, self._derived(env, self.device)):
                    pyro.deterministic(name, v.expand(n) if v.ndim == 0 else v)
        return solution

    def _exact_gp_factor(self, spec, diff, ell) -> torch.Tensor:
        """chol(C + jitter I) per draw (n, P, P); NaN where the factorisation fails (the draw is rejected)."""
        from msml_dsl.symbolic.unknown_terms import kernel_from_differences

        C = kernel_from_differences(spec.kernel, diff, ell.reshape(-1, 1, 1), spec.period, torch)
        C = C + spec.jitter * torch.eye(diff.shape[0], dtype=DTYPE, device=self.device)
        L, info = torch.linalg.cholesky_ex(C)
        return torch.where((info > 0).reshape(-1, 1, 1), torch.full_like(L, float("nan")), L)

    def _centred_gp_prior(self, name: str, env: dict, n: int):
        """A centred exact GP's values: MultivariateNormal(0, amplitude^2 (C + jitter I)) per draw."""
        _, spec, diff, amp, ell, _ = self._centred[name]
        L = self._exact_gp_factor(spec, diff, env[ell])
        scale = env[amp].reshape(-1, 1, 1) * L
        return dist.MultivariateNormal(torch.zeros(L.shape[:-1], dtype=DTYPE, device=self.device),
                                       scale_tril=scale.expand(n, *scale.shape[1:]))

    def _exact_gp_values(self, env: dict) -> dict[str, torch.Tensor]:
        """Each exact GP's values at its points (n, P): NAME_z itself when centred, else
        ``amplitude * chol(C + jitter I) z``; also put in ``env`` as the ``NAME_at[i]`` symbols that
        dynamics and derived quantities read."""
        out = {}
        for name, spec, diff, amp, ell, z_elements in self._exact_gps:
            z = torch.stack([env[e] for e in z_elements], dim=-1)
            if spec.centred:
                values = z
            else:
                L = self._exact_gp_factor(spec, diff, env[ell])
                values = env[amp].unsqueeze(-1) * (L @ z.unsqueeze(-1)).squeeze(-1)
            out[name] = values
            for i, symbol in enumerate(spec.value_symbols):
                env[symbol] = values[..., i]
        return out

    def solve(self, env: dict, n: int):
        if self.system is None:
            return None
        from msml_dsl.backends.pyro.ode_autograd import solve_ode

        y0 = torch.stack([v.expand(n) if v.ndim == 0 else v for v in self._inits(env, self.device)], dim=-1)
        if self.ir.ode.parameters:
            p = torch.stack([env[s] for s in self.ir.ode.parameters], dim=-1)
        else:
            p = torch.zeros((n, 0), dtype=DTYPE, device=self.device)
        solver = self.ir.ode.solver
        return solve_ode(self.system, y0, p, self.ir.ode.t0, self._times, method=solver.method,
                         rtol=solver.rtol, atol=solver.atol, max_steps=solver.max_steps,
                         backend=self.ode_backend, torch_system=self.torch_system)

    # --------------------------------------------------------- log density
    def log_density(self, z: torch.Tensor, jacobian: bool = True) -> torch.Tensor:
        """Log joint density at unconstrained points z (n, dim); one value per row."""
        n = z.shape[0]
        handler = _Unconstrained(z, self.layout)
        with handler:
            trace = pyro.poutine.trace(self.model).get_trace(n)
        total = handler.log_det if jacobian else torch.zeros(n, dtype=DTYPE, device=self.device)
        for site in trace.nodes.values():
            if site["type"] == "sample":
                total = total + site["fn"].log_prob(site["value"])
        return total

    def reset_step_budget(self) -> None:
        """Forget the solves seen so far, so that each fit's step budget (and so its draws for a given
        seed) does not depend on what ran before it in the same process."""
        if self.fast is not None:
            self.fast.reset_step_budget()

    def potential_and_grad(self, z_np: np.ndarray, jacobian: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """U(z) = -log density and its gradient for a batch of unconstrained points (numpy in, numpy out).

        Uses the compiled log density when the model allows it, else the Pyro model's own trace.
        """
        if self.fast is not None:
            return self.fast.potential_and_grad(z_np, jacobian)
        return self.reference_potential_and_grad(z_np, jacobian)

    def reference_potential_and_grad(self, z_np: np.ndarray, jacobian: bool = True):
        """U and dU/dz computed through the Pyro model with torch autograd (the reference semantics)."""
        z = torch.as_tensor(np.atleast_2d(z_np), dtype=DTYPE, device=self.device).requires_grad_(True)
        lp = self.log_density(z, jacobian)
        finite = torch.isfinite(lp)
        (grad,) = torch.autograd.grad(torch.where(finite, lp, torch.zeros_like(lp)).sum(), z)
        u = (-lp).detach().cpu().numpy()
        g = (-grad).detach().cpu().numpy()
        bad = ~np.isfinite(u) | ~np.isfinite(g).all(axis=1)
        u[bad] = np.inf
        g[bad] = 0.0
        return u, g

    def to_constrained(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Constrained parameter values for unconstrained rows z (n, dim)."""
        zt = torch.as_tensor(np.atleast_2d(z), dtype=DTYPE, device=self.device)
        handler = _Unconstrained(zt, self.layout)
        with torch.no_grad(), handler:
            trace = pyro.poutine.trace(self.model).get_trace(zt.shape[0])
        return {p.name: trace.nodes[p.name]["value"].cpu().numpy() for p in self.ir.parameters}

    def to_unconstrained(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """Inverse of to_constrained (rows of a batch)."""
        n = np.asarray(next(iter(values.values()))).shape[0]
        cond = {k: torch.as_tensor(v, dtype=DTYPE, device=self.device) for k, v in values.items()}
        with torch.no_grad():
            trace = pyro.poutine.trace(pyro.poutine.condition(self.model, cond)).get_trace(n)
        z = np.zeros((n, self.dim))
        for p in self.ir.parameters:
            site = trace.nodes[p.name]
            u = biject_to(site["fn"].support).inv(site["value"])
            s = self.layout[p.name]
            z[:, s.offset:s.offset + s.size] = u.reshape(n, -1).cpu().numpy()
        return z

    # ------------------------------------------------------------ per draw
    def evaluate_draws(self, values: dict[str, np.ndarray], seed: int, predictive: bool = True) -> dict:
        """Derived quantities, pointwise log-likelihood and predictive draws for n constrained draws."""
        n = np.asarray(next(iter(values.values()))).shape[0] if values else 1
        cond = {k: torch.as_tensor(v, dtype=DTYPE, device=self.device) for k, v in values.items()}
        torch.manual_seed(seed)
        with torch.no_grad():
            trace = pyro.poutine.trace(pyro.poutine.condition(self.model, cond)).get_trace(n)
            out = {"derived": {}, "log_likelihood": {}, "predictive": {}, "solution": None}
            for name, _ in self.ir.derived:
                out["derived"][name] = trace.nodes[name]["value"].cpu().numpy()
            for o, *_ in self._obs:
                fn = trace.nodes[o.name]["fn"]
                base = fn.base_dist.base_dist  # Independent(Masked(d))
                out["log_likelihood"][o.name] = base.log_prob(trace.nodes[o.name]["value"]).cpu().numpy()[:, o.mask]
                if predictive:
                    out["predictive"][o.name] = base.sample().cpu().numpy()
            sol = trace.nodes["_RETURN"]["value"]
            out["solution"] = None if sol is None else sol.cpu().numpy()
        return out

    def sample_prior(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """Draws from the prior (parameters and predictive observations)."""
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            trace = pyro.poutine.trace(self.model).get_trace(n, predictive=True)
        out = {}
        for name, site in trace.nodes.items():
            if site["type"] == "sample":
                out[name] = site["value"].cpu().numpy()
        return out


def build_pyro_program(ir: ModelIR, device: str = "cpu", fast: bool = True) -> PyroProgram:
    """Compile the IR to a Pyro program on ``device`` ('cpu' or 'cuda').

    ``fast`` also generates the compiled log density NUTS uses on the CPU.
    """
    return PyroProgram(ir, device, fast and torch.device(device).type == "cpu")
