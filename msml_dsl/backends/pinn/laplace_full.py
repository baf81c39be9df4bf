"""A Laplace approximation over every network weight and the physical parameters (``network=all``).

The last-layer scheme fixes the hidden layers, so the field cannot follow a change of a physical
parameter: the thousands of physics residuals then act as direct observations of the parameter,
and the intervals come out far narrower than the data allow (docs/pinn.md, "Calibration").  Here
all weights w of all networks are random together with the unconstrained physical parameters z.
Around the trained MAP (w*, z*) the log posterior's curvature is

    H = [[A, B], [B^T, C]],   A = J_w^T L J_w + tau I,   B = J_w^T L J_z,   C = d^2(-log p) / dz^2,

with one row per likelihood row (every physics residual and every Normal observation): J_w and J_z
are the rows' Jacobians with respect to the weights and to z at the MAP, L = diag(1 / s_i^2) the
rows' precisions (s the physics scale or the noise sd at the MAP).  A and B are the generalised
Gauss-Newton (GGN) blocks: the terms with second derivatives of the residuals, which vanish for an
exact fit and can make the Hessian indefinite, are left out.  tau = 1 / weight_prior^2 is the
precision of a Normal(0, weight_prior) prior on each weight, used for the curvature only (the MAP
was trained with a flat prior); it makes A invertible in the directions no residual sees, which
do not touch z.  C is exact (autograd Hessian with the weights fixed): it holds the curvature of
the noise and physics scales, the priors and the transforms' Jacobians.

The marginal of z is Normal(z*, (C - B^T A^-1 B)^-1): the Schur complement lets the network
re-fit the physics for each value of z, so that the parameters are as uncertain as the data leave
them given that the field solves the equation (up to the physics scale).  Joint draws of (w, z)
give the fields per draw by linearisation, u(x) + J_u(x) (w - w*), for the posterior predictive.

Per-row Jacobians use ``torch.func``: the input derivatives by nested forward mode (``jvp``) and
the weight Jacobian by ``jacrev``, vmapped over the points (each row depends on its own point
only), in chunks.  A is dense, P x P for P weights: ``max_weights`` bounds P (the default 8,000
is 0.5 GB in float64).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap

from msml_dsl.backends.pinn.derivatives import input_derivatives

CHUNK = 256


class LinearisedNetworks:
    """The networks' weights as one flat vector, and Jacobians of field expressions with respect to it."""

    def __init__(self, model):
        self.model = model
        self.names = list(model.networks)
        self.params = {n: {k: v.detach() for k, v in model.networks[n].named_parameters()} for n in self.names}
        self.layout = []                      # (field, parameter name, shape, offset)
        off = 0
        for n in self.names:
            for k, v in self.params[n].items():
                self.layout.append((n, k, tuple(v.shape), off))
                off += v.numel()
        self.size = off

    def _derivs(self, params, needs, x):
        """{(field, alpha): (1,)} at one point x (d,) with weights ``params``."""
        model, out = self.model, {}
        for name, alphas in needs.items():
            net = model.networks[name]

            def fn(inp, net=net, p=params[name]):
                return functional_call(net, p, (inp,))

            got = input_derivatives(fn, x[None, model.columns[name]], alphas, method="forward")
            out.update({(name, a): v for a, v in got.items()})
        return out

    def jacobian(self, expr, x: torch.Tensor, env_fn, partner: torch.Tensor | None = None,
                 extra: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Values (n,) and weight Jacobian (n, P) of ``expr`` at the rows of x.

        ``env_fn(x_row)`` gives the expression's environment (parameters, coordinates); for a
        periodic condition the value is expr(x) - expr(partner).  ``extra`` holds per-row
        covariates (name -> (n,)).
        """
        needs = {f: set(a) for f, a in expr.needs.items()}
        extra = extra or {}
        keys = list(extra)

        def value(params, xr, pr, *cov):
            env = env_fn(xr[None])
            env.update({k: c.reshape(1) for k, c in zip(keys, cov)})
            v = expr(self._derivs(params, needs, xr), env, like=xr[None, 0]).reshape(-1)[0]
            if pr is not None:
                env2 = env_fn(pr[None])
                env2.update({k: c.reshape(1) for k, c in zip(keys, cov)})
                v = v - expr(self._derivs(params, needs, pr), env2, like=pr[None, 0]).reshape(-1)[0]
            return v

        def both(params, xr, pr, *cov):
            g = jacrev(value)(params, xr, pr, *cov)
            return value(params, xr, pr, *cov), g

        vals, jacs = [], []
        n = x.shape[0]
        for start in range(0, n, CHUNK):
            sl = slice(start, min(n, start + CHUNK))
            cov = [extra[k][sl] for k in keys]
            in_dims = (None, 0, None if partner is None else 0, *([0] * len(cov)))
            v, g = vmap(both, in_dims=in_dims)(self.params, x[sl], None if partner is None else partner[sl], *cov)
            vals.append(v.detach())
            jacs.append(self.flatten(g, sl.stop - sl.start))
        return torch.cat(vals), torch.cat(jacs)

    def flatten(self, g: dict, n: int) -> torch.Tensor:
        """A jacrev result {field: {param: (n, *shape)}} as (n, P); fields the expression skips are zero."""
        parts = []
        dtype, device = torch.float64, self.model.device
        for name, key, shape, _ in self.layout:
            t = g.get(name, {}).get(key) if isinstance(g, dict) else None
            parts.append(torch.zeros(n, int(np.prod(shape)), dtype=dtype, device=device) if t is None
                         else t.reshape(n, -1).to(dtype))
        return torch.cat(parts, dim=1)

    def field_jacobian(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A field's values (n,) and weight Jacobian (n, P) at points x (n, coordinates)."""
        from msml_dsl.backends.pinn.expressions import compile_expression

        spec = self.model.fields[name]
        expr = compile_expression(spec.applied, self.model.fields)
        return self.jacobian(expr, x, lambda xr: {})


def _groups(model):
    """Every Normal likelihood row group, in a fixed order: (term, expression, points, partner, data)."""
    pts = model.points
    out = []
    for term in model.terms:
        if term.kind == "physics":
            if not term.conditions:
                out.append((term, term.exprs[0], pts.interior, None, None))
                continue
            for e, i in zip(term.exprs, term.conditions):
                partner = pts.partner.get(i) if model.pde.conditions[i].kind == "periodic" else None
                out.append((term, e, pts.conditions[i], partner, None))
        else:
            o, data = term.observation
            if o.distribution != "Normal" or len(data["args"]) != 2 or data["args"][1].needs:
                raise ValueError(f"infer laplace(network=all) needs Normal observations with a scale free of "
                                 f"fields; '{o.name}' is not: use network=last_layer")
            out.append((term, data["args"][0], data["x"], None, data))
    return out


def _rows(model, lin: LinearisedNetworks, elements: dict):
    """Each group's values (n,), weight Jacobian (n, P) and precisions 1/s^2 (n,); masked data rows get 0."""
    def env_of(xr):
        return model.env(elements, xr)

    out = []
    for term, expr, x, partner, data in _groups(model):
        if data is None:
            like = torch.zeros(1, 1, dtype=torch.float64, device=model.device)
            s = float((model.scale_value(term, elements) if elements else term.scale({}, {}, like=like)).reshape(-1)[0])
            v, J = lin.jacobian(expr, x, env_of, partner)
            out.append((v, J, torch.full_like(v, 1 / s ** 2)))
            continue
        v, J = lin.jacobian(expr, x, env_of, extra=data["covariates"])
        env = model.env(elements, x)
        env.update(data["covariates"])
        sd = data["args"][1]({}, env, like=x[:, 0]).reshape(-1).to(torch.float64).expand(v.shape[0])
        out.append((v, J, torch.where(data["mask"], 1 / sd ** 2, torch.zeros_like(v))))
    return out


def _z_jacobian(model, z: torch.Tensor) -> torch.Tensor:
    """d(rows)/dz (N, D) in the order of ``_groups``, the weights fixed: the fields' derivatives are
    computed once and the expressions differentiated in forward mode along each coordinate of z."""
    groups = []
    for term, expr, x, partner, data in _groups(model):
        d1 = model.field_derivatives(x, model._needs([expr]), create_graph=False)
        d1 = {k: v.detach() for k, v in d1.items()}
        d2 = None
        if partner is not None:
            d2 = {k: v.detach() for k, v in
                  model.field_derivatives(partner, model._needs([expr]), create_graph=False).items()}
        groups.append((expr, x, partner, data, d1, d2))

    def rows_of(zz):
        _, elements, _, _ = model.params.transform(zz[None])
        vals = []
        for expr, x, partner, data, d1, d2 in groups:
            env = model.env(elements, x)
            if data is not None:
                env.update(data["covariates"])
            r = torch.atleast_2d(expr(d1, env, like=x[:, 0])).expand(1, x.shape[0])
            if partner is not None:
                r = r - torch.atleast_2d(expr(d2, model.env(elements, partner), like=partner[:, 0]))
            vals.append(r.reshape(-1))
        return torch.cat(vals)

    return torch.autograd.functional.jacobian(rows_of, z.detach().to(torch.float64), vectorize=True,
                                              strategy="forward-mode")


def full_laplace(model, z_map: torch.Tensor, opts: dict):
    """Joint GGN Laplace over (weights, z) at the MAP.  Returns a dict with the z mode and covariance,
    the joint precision's Cholesky factor, the linearisation, and notes."""
    from msml_dsl.backends.pinn.inference import fixed_feature_log_density

    notes = []
    model.to_float64()
    lin = LinearisedNetworks(model)
    P, D = lin.size, model.params.dim
    if P > opts["max_weights"]:
        raise ValueError(f"infer laplace(network=all): the networks have {P} weights, more than max_weights="
                         f"{opts['max_weights']} (the dense curvature is P x P); raise max_weights or use "
                         "network=last_layer")
    z = z_map.detach().to(torch.float64)
    with torch.no_grad():
        _, elements, _, _ = model.params.transform(z[None])
    rows = _rows(model, lin, elements)
    J = torch.cat([r[1] for r in rows])
    prec = torch.cat([r[2] for r in rows])
    tau = 1.0 / opts["weight_prior"] ** 2
    A = J.T @ (prec[:, None] * J)
    A.diagonal().add_(tau)
    if D:
        Jz = _z_jacobian(model, z)
        B = J.T @ (prec[:, None] * Jz)
        model.freeze(random_heads=False)

        def neg(vv):
            return -fixed_feature_log_density(model, vv[None], 1.0)[0]

        C = torch.autograd.functional.hessian(neg, z)
    else:
        B = torch.zeros(P, 0, dtype=torch.float64, device=model.device)
        C = torch.zeros(0, 0, dtype=torch.float64, device=model.device)
        model.freeze(random_heads=False)
    H = torch.cat([torch.cat([A, B], 1), torch.cat([B.T, C], 1)], 0)
    H = (H + H.T) / 2
    evals, evecs = torch.linalg.eigh(H)
    floor = evals.abs().max() * 1e-12
    if bool((evals <= floor).any()):
        notes.append(f"full Laplace: {int((evals <= floor).sum())} curvature eigenvalue(s) floored")
    evals = torch.clamp(evals, min=floor)
    # joint covariance factor: cov = V diag(1/e) V^T = (V diag(e^-1/2)) (...)^T
    factor = evecs * evals.rsqrt()[None, :]
    cov_z = (factor[P:] @ factor[P:].T) if D else torch.zeros(0, 0, dtype=torch.float64, device=model.device)
    cov_z = (cov_z + cov_z.T) / 2
    n_rows = J.shape[0]
    notes.append(f"Laplace over all {P} network weights and {D} physical parameter(s) at the MAP "
                 f"(generalised Gauss-Newton over {n_rows} likelihood rows, weight prior Normal(0, "
                 f"{opts['weight_prior']:g}) for the curvature)")
    if D:
        cond_sd = torch.sqrt(1 / torch.diagonal(C).clamp(min=1e-300))
        marg_sd = torch.sqrt(torch.diagonal(cov_z))
        ratio = ", ".join(f"{lab} x{float(m / c):.3g}" for lab, m, c in zip(model.params.labels, marg_sd, cond_sd))
        notes.append(f"sd with the network free / with it fixed: {ratio}")
    data = {}
    for (term, _, x, _, d), (v, Jg, _) in zip(_groups(model), rows):
        if d is not None:
            data[term.name] = (v, Jg)
    return {"mode": z, "cov": cov_z, "factor": factor, "lin": lin, "P": P, "data": data, "notes": notes}


class LinearisedFields:
    """Field values per draw by linearisation around the MAP weights: u + J_u (w - w*)."""

    def __init__(self, lin: LinearisedNetworks, dw: torch.Tensor):
        self.lin = lin
        self.dw = dw                           # (S, P)

    def at(self, name: str, x: torch.Tensor) -> torch.Tensor:
        v, J = self.lin.field_jacobian(name, x.to(torch.float64))
        return v[None, :] + self.dw @ J.T


def joint_draws(res: dict, n: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """n joint draws: z (n, D) and weight offsets dw (n, P)."""
    factor = res["factor"]
    eps = torch.randn(n, factor.shape[1], generator=gen, dtype=torch.float64).to(device)
    d = eps @ factor.T
    P = res["P"]
    return res["mode"][None, :] + d[:, P:], d[:, :P]


__all__ = ["full_laplace", "joint_draws", "LinearisedFields", "LinearisedNetworks"]
