"""The physics likelihood: every residual, condition and observation as a named term.

A physics term ``T`` with scale ``s`` contributes, for its residuals r_i at its n_T points,

    log L_T = sum_i log Normal(r_i | 0, s) = -sum_i r_i^2 / (2 s^2) - n_T log s - n_T log(2 pi) / 2.

With s fixed this is the usual weighted-loss PINN with a weight of 1/(2 s^2) on each point's
squared residual, so the weight on the term's *mean* squared residual is n_T/(2 s^2): point
counts matter, and more boundary points weigh the boundary more.  ``term_weights`` reports both.
When s is a parameter it is inferred with the rest (the n_T log s term keeps it from collapsing).
Observations contribute their own log densities; their per-point weight, for a Normal, is
1/(2 sigma^2) likewise.

``PinnModel`` holds the networks (one per field), the compiled expressions and the parameters;
``log_terms(z, points)`` gives each term's log likelihood for a batch of S parameter points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy
import torch
from sympy.core.function import AppliedUndef
from torch import nn

from msml_dsl.backends.pinn.collocation import CollocationSet, domain_box, make_collocation
from msml_dsl.backends.pinn.derivatives import input_derivatives
from msml_dsl.backends.pinn.expressions import compile_expression
from msml_dsl.backends.pinn.network import build_network
from msml_dsl.backends.pinn.parameters import PhysicalParameters
from msml_dsl.backends.pyro.distributions import make_distribution

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Term:
    """A named likelihood term: which expressions, at which points."""

    name: str
    kind: str                       # "physics" or "data"
    exprs: list                     # compiled FieldExpressions (physics) or distribution args (data)
    scale: object = None            # compiled scale (physics) or None
    conditions: tuple[int, ...] = ()   # indices into problem.conditions (boundary/initial terms)
    observation: object = None
    declared: bool = True


class PinnModel:
    """Networks, compiled residuals, parameters and data of a PDE model, on one device."""

    def __init__(self, ir, device, options: dict):
        self.ir = ir
        self.pde = pde = ir.pde
        self.device = torch.device(device)
        self.dtype = getattr(torch, options["dtype"])
        self.options = options
        self.fields = {f.name: f for f in pde.fields}
        self.lower, self.upper, self.coord_names = domain_box(pde)
        self.params = PhysicalParameters(ir.parameters, self.device)
        self.points: CollocationSet = make_collocation(pde, pde.collocation, self.device, self.dtype)
        self.terms: list[Term] = []
        scales = {t.name: t for t in pde.physics}

        def scale_of(name):
            t = scales.get(name)
            s = sympy.Float(options["default_scale"]) if t is None else t.scale
            return compile_expression(sympy.sympify(s), {}), (t is not None and t.declared)

        for eq in pde.equations:
            s, declared = scale_of(eq.name)
            self._add(Term(eq.name, "physics", [compile_expression(eq.expr, self.fields)], s, declared=declared))
        for term_name in dict.fromkeys(c.term for c in pde.conditions):
            idx = tuple(i for i, c in enumerate(pde.conditions) if c.term == term_name)
            exprs = [compile_expression(pde.conditions[i].expr, self.fields) for i in idx]
            s, declared = scale_of(term_name)
            self._add(Term(term_name, "physics", exprs, s, idx, declared=declared))
        self.observations = []
        for o in ir.observations:
            coords = getattr(o, "coordinates", None)
            if not coords:
                raise ValueError(f"observation {o.name} has no coordinates: a PINN needs each row's "
                                 f"{', '.join(self.coord_names)}")
            missing = [c for c in self.coord_names if c not in coords]
            fields_used = {type(a).__name__ for e in o.args for a in sympy.sympify(e).atoms(AppliedUndef)}
            needed = {str(s) for f in fields_used for s in self.fields[f].arguments}
            if needed & set(missing):
                raise ValueError(f"observation {o.name} lacks the coordinate(s) {', '.join(sorted(needed & set(missing)))}")
            x = np.stack([np.asarray(coords.get(c, np.zeros(len(o.values))), float) for c in self.coord_names], 1)
            data = {
                "x": torch.as_tensor(x, dtype=self.dtype, device=self.device),
                "values": torch.as_tensor(np.asarray(o.values, float), dtype=self.dtype, device=self.device),
                "mask": torch.as_tensor(np.asarray(o.mask, bool), device=self.device),
                "covariates": {k: torch.as_tensor(np.asarray(v, float), dtype=self.dtype, device=self.device)
                               for k, v in getattr(o, "covariates", {}).items()},
                "args": [compile_expression(a, self.fields) for a in o.args],
                "n": int(np.asarray(o.mask).sum()),
            }
            self.observations.append((o, data))
            self._add(Term(o.name, "data", data["args"], observation=(o, data)))
        self.networks = nn.ModuleDict()
        for i, (name, spec) in enumerate(self.fields.items()):
            cols = [self.coord_names.index(a.name) for a in spec.arguments]
            shift, scale = self._output_scale(name) if options["output_scale"] else (0.0, 1.0)
            self.networks[name] = build_network(spec, self.lower[cols], self.upper[cols], shift, scale,
                                                self.device, self.dtype, options["seed"] + 7919 * i)
        self.columns = {name: [self.coord_names.index(a.name) for a in spec.arguments]
                        for name, spec in self.fields.items()}
        self.head_override: dict | None = None   # last-layer schemes: {field: (W (S, H), b (S,))}
        self.cache: dict | None = None           # set by freeze(): derivatives at fixed points
        self.random_heads: set[str] = set()

    # ------------------------------------------------------------- freezing
    def freeze(self, random_heads: bool) -> None:
        """Fix the networks (float64 from here on) and cache their input derivatives at the
        current points: afterwards a log density costs almost nothing but the residual algebra.
        With ``random_heads`` the cache holds the last hidden layer's derivatives so that the
        heads can be supplied per draw through ``head_override``."""
        self.to_float64()
        for p in self.networks.parameters():
            p.requires_grad_(False)
        self.cache = {}
        self.random_heads = set(self.fields) if random_heads else set()

    def to_float64(self) -> None:
        """Networks, points and data in float64 (the Laplace and sampling schemes work in it)."""
        self.dtype = torch.float64
        self.networks.to(torch.float64)
        pts = self.points
        self.points = CollocationSet(pts.interior.to(torch.float64), [c.to(torch.float64) for c in pts.conditions],
                                     {k: v.to(torch.float64) for k, v in pts.partner.items()}, pts.draws)
        for _, data in self.observations:
            data["x"] = data["x"].to(torch.float64)
            data["values"] = data["values"].to(torch.float64)
            data["covariates"] = {k: v.to(torch.float64) for k, v in data["covariates"].items()}

    def heads(self) -> torch.Tensor:
        """The MAP heads of the random-head fields, flattened: [W_1, b_1, W_2, b_2, ...]."""
        parts = []
        for name in self.fields:
            if name in self.random_heads:
                head = self.networks[name].head
                parts += [head.weight.reshape(-1), head.bias.reshape(-1)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=self.device)

    def set_heads(self, v: torch.Tensor | None) -> None:
        """Heads per draw from v (S, K) in the order of ``heads()``; None: the MAP heads."""
        if v is None or not self.random_heads:
            self.head_override = None
            return
        self.head_override, off = {}, 0
        for name in self.fields:
            if name in self.random_heads:
                h = self.networks[name].n_features
                self.head_override[name] = (v[:, off:off + h], v[:, off + h])
                off += h + 1

    def _frozen_derivatives(self, x: torch.Tensor, needs: dict) -> dict:
        out = {}
        for name, alphas in needs.items():
            net = self.networks[name]
            random = name in self.random_heads
            key = (name, id(x))
            if key not in self.cache:
                self.cache[key] = (x, {})
            store = self.cache[key][1]
            missing = [a for a in alphas if a not in store]
            if missing:
                inp = x[:, self.columns[name]].detach().requires_grad_(True)
                with torch.enable_grad():
                    got = input_derivatives(net.features if random else net, inp, missing,
                                            method=self.options["derivatives"], create_graph=False)
                store.update({a: v.detach() for a, v in got.items()})
            for alpha in alphas:
                f = store[alpha]
                if not random:
                    out[(name, alpha)] = f
                    continue
                if self.head_override is not None:
                    W, b = self.head_override[name]
                else:
                    W, b = net.head.weight, net.head.bias
                v = net.scale * (f @ W.T).T           # (S, n)
                if not any(alpha):
                    v = net.shift + v + net.scale * b[:, None]
                out[(name, alpha)] = v
        return out

    def _add(self, term: Term):
        self.terms.append(term)

    # ----------------------------------------------------------------- scaling
    def _output_scale(self, name: str) -> tuple[float, float]:
        """Shift and scale of a field's output: its observed values, else its boundary/initial targets."""
        values = []
        for o, data in self.observations:
            if o.args and isinstance(o.args[0], AppliedUndef) and type(o.args[0]).__name__ == name:
                values.append(np.asarray(o.values, float)[np.asarray(o.mask, bool)])
        if not values:
            for i, c in enumerate(self.pde.conditions):
                if c.field != name or c.kind not in ("dirichlet", "initial"):
                    continue
                e = compile_expression(c.expr, self.fields)
                if set(e.needs) != {name} or e.needs[name] != {(0,) * len(self.fields[name].arguments)}:
                    continue
                x = self.points.conditions[i]
                env = {n: x[:, j] for j, n in enumerate(self.coord_names)}
                zero = {k: torch.zeros(x.shape[0], dtype=self.dtype, device=self.device) for k in e.slots}
                with torch.no_grad():
                    try:
                        values.append(-e(zero, env).cpu().numpy().ravel())
                    except KeyError:  # the condition uses a parameter
                        continue
        if not values:
            return 0.0, 1.0
        v = np.concatenate(values)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return 0.0, 1.0
        shift = float(v.mean())
        scale = float(v.std())
        if not scale > 1e-12:
            scale = float(np.abs(v).max()) or 1.0
        return shift, scale

    # ------------------------------------------------------------ evaluation
    def field_derivatives(self, x: torch.Tensor, needs: dict[str, set], create_graph: bool = True) -> dict:
        """{(field, multi-index): (n,) or (S, n)} at points x (n, coordinates)."""
        out = {}
        method = self.options["derivatives"]
        if self.cache is not None:
            return self._frozen_derivatives(x, needs)
        for name, alphas in needs.items():
            net = self.networks[name]
            inp = x[:, self.columns[name]].detach().requires_grad_(True)
            for alpha, v in input_derivatives(net, inp, alphas, method=method, create_graph=create_graph).items():
                out[(name, alpha)] = v
        return out

    def env(self, elements: dict[str, torch.Tensor], x: torch.Tensor | None) -> dict:
        env = {k: v.to(self.dtype)[:, None] for k, v in elements.items()}
        if x is not None:
            env.update({n: x[:, j] for j, n in enumerate(self.coord_names)})
        return env

    def _needs(self, exprs) -> dict[str, set]:
        needs: dict[str, set] = {}
        for e in exprs:
            for f, alphas in e.needs.items():
                needs.setdefault(f, set()).update(alphas)
        return needs

    def residuals(self, term: Term, elements: dict, points: CollocationSet, index=None,
                  create_graph: bool = True) -> torch.Tensor:
        """A physics term's residuals, (S, n_T) (the conditions of a term side by side)."""
        S = next(iter(elements.values())).shape[0] if elements else 1
        if not term.conditions:
            x = points.interior if index is None else points.interior[index]
            derivs = self.field_derivatives(x, self._needs(term.exprs), create_graph)
            r = term.exprs[0](derivs, self.env(elements, x), like=x[:, 0])
            return r.expand(S, x.shape[0]) if r.ndim < 2 else r.expand(S, -1)
        parts = []
        for e, i in zip(term.exprs, term.conditions):
            x = points.conditions[i]
            c = self.pde.conditions[i]
            r = self._condition(e, x, elements, create_graph)
            if self.pde.conditions[i].kind == "periodic":   # expr at the lower edge minus expr at the partner edge
                r = r - self._condition(e, points.partner[i], elements, create_graph)
            parts.append(r.expand(S, x.shape[0]) if r.ndim < 2 else r.expand(S, -1))
        return torch.cat(parts, dim=-1)

    def _condition(self, e, x, elements, create_graph):
        derivs = self.field_derivatives(x, self._needs([e]), create_graph)
        return e(derivs, self.env(elements, x), like=x[:, 0])

    def scale_value(self, term: Term, elements: dict) -> torch.Tensor:
        like = next(iter(elements.values())) if elements else torch.zeros(1, dtype=self.dtype, device=self.device)
        s = term.scale({}, self.env(elements, None), like=like.to(self.dtype)[:, None])
        return s

    def log_terms(self, z: torch.Tensor, points: CollocationSet | None = None, batch: int = 0,
                  create_graph: bool = True) -> tuple[dict, torch.Tensor, torch.Tensor, dict]:
        """Each term's log likelihood (S,), the log prior (S,), log|det J| (S,) and the
        element values, for unconstrained parameters z (S, D)."""
        points = points or self.points
        _, elements, log_det, log_prior = self.params.transform(z)
        if not elements:
            elements = {}
        S = z.shape[0]
        out = {}
        for term in self.terms:
            if term.kind == "physics":
                index, factor = None, 1.0
                n = points.interior.shape[0]
                if batch and not term.conditions and batch < n:
                    index = torch.randperm(n, device=self.device)[:batch]
                    factor = n / batch
                r = self.residuals(term, elements, points, index, create_graph)
                s = self.scale_value(term, elements) if elements else term.scale({}, {}, like=r[:, :1])
                ll = -0.5 * (r / s) ** 2 - torch.log(torch.as_tensor(s, dtype=r.dtype, device=r.device)) - 0.5 * LOG_2PI
                out[term.name] = factor * ll.sum(-1).expand(S)
            else:
                o, data = term.observation
                out[term.name] = self._observation_log_lik(o, data, elements, S, create_graph).sum(-1)
        return out, log_prior, log_det, elements

    def observation_args(self, data, elements, S, create_graph=True, location=None) -> list[torch.Tensor]:
        """The arguments of an observation's distribution at each row, each (S, rows).

        ``location`` (S, rows), when given, replaces the first argument (the linearised fields of
        ``laplace(network=all)``)."""
        x = data["x"]
        exprs = data["args"] if location is None else data["args"][1:]
        derivs = self.field_derivatives(x, self._needs(exprs), create_graph) if self._needs(exprs) else {}
        env = self.env(elements, x)
        env.update(data["covariates"])
        rows = x.shape[0]
        args = [] if location is None else [location]
        for e in exprs:
            a = e(derivs, env, like=x[:, 0])
            args.append(torch.atleast_2d(a).expand(S, rows))
        return args

    def _observation_log_lik(self, o, data, elements, S, create_graph=True, location=None) -> torch.Tensor:
        """Pointwise log likelihood of an observation's rows, (S, rows); masked rows are 0."""
        rows = data["x"].shape[0]
        d = make_distribution(o.distribution, self.observation_args(data, elements, S, create_graph, location))
        lp = d.log_prob(data["values"].expand(S, rows))
        return torch.where(data["mask"], lp, torch.zeros_like(lp))

    def n_points(self) -> int:
        n = 0
        for term in self.terms:
            n += self.term_size(term)
        return max(n, 1)

    def term_size(self, term: Term, points: CollocationSet | None = None) -> int:
        points = points or self.points
        if term.kind == "data":
            return term.observation[1]["n"]
        if not term.conditions:
            return points.interior.shape[0]
        return sum(points.conditions[i].shape[0] for i in term.conditions)

    def predict(self, coords: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each field's value (MAP network) at the given coordinates (name -> 1-D array)."""
        out = {}
        with torch.no_grad():
            for name, spec in self.fields.items():
                cols = [np.asarray(coords[a.name], float).ravel() for a in spec.arguments]
                x = torch.as_tensor(np.stack(cols, 1), dtype=self.dtype, device=self.device)
                out[name] = self.networks[name](x).cpu().numpy()
        return out


def residual_scores(model: PinnModel, elements: dict, x: torch.Tensor) -> torch.Tensor:
    """Sum over equations of the squared residual (scaled) at points x, (n,): where to refine."""
    pts = CollocationSet(x, [], {})
    total = torch.zeros(x.shape[0], dtype=model.dtype, device=model.device)
    for term in model.terms:
        if term.kind == "physics" and not term.conditions:
            r = model.residuals(term, elements, pts, create_graph=False).detach()
            s = model.scale_value(term, elements).detach() if elements else term.scale({}, {}, like=r[:, :1])
            total = total + ((r / s) ** 2).mean(0)
    return total
