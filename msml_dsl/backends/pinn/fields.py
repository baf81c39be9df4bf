"""Fields of a PINN fit per posterior draw: on a grid for the run folder, at points for ``derive``.

How a draw's field is made depends on the scheme (``PinnFit.field_draws``):

* ``laplace`` with ``network=all``: the MAP network linearised in its weights,
  u(x) + J_u(x) (w - w*), with (w, z) drawn jointly from the Gaussian;
* ``network=last_layer`` (``laplace`` and ``nuts``): each draw's own last layer on the fixed features
  (exact: the field is linear in the last layer);
* ``map``, ``svi`` and ``network=fixed``: the MAP network for every draw (the band is then only
  what the parameters' spread implies for derived quantities: none for the field itself).
"""

from __future__ import annotations

import numpy as np
import sympy
import torch
from sympy.core.function import AppliedUndef

GRID_POINTS = {1: 101, 2: 41, 3: 21}      # nodes per space axis, by the number of space axes
TIME_POINTS = 51


def field_draws(fit, name: str, x: torch.Tensor, alpha=None, start: int = 0, stop: int | None = None):
    """The field ``name`` (or its derivative ``alpha``) at points x (n, model coordinates), (S, n)."""
    model = fit.model
    spec = model.fields[name]
    cols = model.columns[name]
    alpha = tuple(alpha) if alpha is not None else (0,) * len(spec.arguments)
    S = fit.flat.shape[0]
    stop = S if stop is None else min(stop, S)
    x = x.to(device=model.device, dtype=model.dtype)
    if fit.linear is not None:
        if any(alpha):
            raise ValueError("derivatives of the linearised fields are not available; use network=last_layer")
        v, J = fit.linear["lin"].field_jacobian(name, x)
        return v[None, :] + fit.linear["dw"][start:stop] @ J.T
    heads = None if fit.flat_heads is None else fit.flat_heads[start:stop]
    if heads is not None:
        model.set_heads(heads)
    try:
        if model.cache is not None:
            got = model.field_derivatives(x, {name: {alpha}}, create_graph=False)[(name, alpha)]
        else:
            from msml_dsl.backends.pinn.derivatives import input_derivatives

            inp = x[:, cols].detach().requires_grad_(True)
            with torch.enable_grad():
                got = input_derivatives(model.networks[name], inp, [alpha], create_graph=False)[alpha]
    finally:
        model.set_heads(None)
    got = got.detach()
    return got[None, :].expand(stop - start, -1) if got.ndim == 1 else got


def _fields_in(expr, fields) -> list:
    return [a for a in sympy.sympify(expr).atoms(AppliedUndef) if type(a).__name__ in fields]


def derived_with_fields(fit, elements: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each ``derive`` per draw; a field at a point (``u(5, 20)``) is the draw's field there."""
    model = fit.model
    out = {}
    lower, upper, names = model.lower, model.upper, model.coord_names
    for dname, expr in fit.ir.derived:
        expr = sympy.sympify(expr)
        env = dict(elements)
        reps = {}
        for k, app in enumerate(sorted(_fields_in(expr, model.fields), key=sympy.default_sort_key)):
            fname = type(app).__name__
            spec = model.fields[fname]
            try:
                point = [float(a) for a in app.args]
            except TypeError:
                raise ValueError(f"derived {dname}: the field {app} must be evaluated at numbers (a point of the "
                                 "domain), not at expressions of parameters") from None
            x = np.zeros((1, len(names)))
            for a, value in zip(spec.arguments, point):
                j = names.index(a.name)
                if not lower[j] - 1e-12 <= value <= upper[j] + 1e-12:
                    raise ValueError(f"derived {dname}: {app} lies outside the domain ({a.name} in "
                                     f"[{lower[j]:g}, {upper[j]:g}])")
                x[0, j] = value
            sym = sympy.Symbol(f"_field{k}", real=True)
            reps[app] = sym
            env[sym.name] = torch.cat([field_draws(fit, fname, torch.as_tensor(x), start=s, stop=s + 512)
                                       for s in range(0, fit.flat.shape[0], 512)])[:, 0].cpu().numpy()
        expr = expr.xreplace(reps)
        syms = sorted(expr.free_symbols, key=lambda s: s.name)
        missing = [s.name for s in syms if s.name not in env]
        if missing:
            fit.notes.append(f"derived {dname} is not reported: it uses {', '.join(missing)}, which is not a "
                             "parameter or a field at a point")
            continue
        fn = sympy.lambdify(syms, expr, "numpy")
        n = fit.shape[0] * fit.shape[1]
        v = np.broadcast_to(np.asarray(fn(*[env[s.name] for s in syms]), float), (n,))
        out[dname] = v.reshape(fit.shape)
    return out


def grid_axes(pde) -> dict[str, np.ndarray]:
    """The PINN grid: GRID_POINTS nodes per space axis and TIME_POINTS times (edges included)."""
    k = len(pde.space)
    axes = {a.symbol.name: np.linspace(a.lower, a.upper, GRID_POINTS.get(k, 21)) for a in pde.space}
    if pde.time is not None:
        axes[pde.time.name] = np.linspace(pde.time_range[0], pde.time_range[1], TIME_POINTS)
    return axes


def pinn_field_grid(fit, max_draws: int = 1000) -> dict:
    """Every field's posterior summary on the grid of :func:`grid_axes` (see ``write_fields``)."""
    from msml_dsl.diagnostics.pde_fields import summarise_draws

    model = fit.model
    axes = grid_axes(model.pde)
    S = fit.flat.shape[0]
    step = max(1, -(-S // max_draws))
    fields = {}
    for name, spec in model.fields.items():
        dims = [a.name for a in spec.arguments]
        mesh = np.meshgrid(*[axes[d] for d in dims], indexing="ij")
        x = np.zeros((mesh[0].size, len(model.coord_names)))
        for d, m in zip(dims, mesh):
            x[:, model.coord_names.index(d)] = m.ravel()
        xt = torch.as_tensor(x)
        chunks = []
        for s in range(0, S, 256 * step):
            vals = field_draws(fit, name, xt, start=s, stop=min(S, s + 256 * step))
            chunks.append(vals[::step].cpu().numpy())
        draws = np.concatenate(chunks).reshape((-1,) + mesh[0].shape)
        fields[name] = (dims, summarise_draws(draws))
    scheme = fit.settings["infer"].get("network", "fixed") if fit.method in ("laplace", "nuts") else fit.method
    how = {"all": "the network linearised in all its weights, drawn with the physical parameters",
           "last_layer": "each draw's last layer on the MAP features", "fixed": "the MAP network",
           "map": "the MAP network", "svi": "the MAP network (SVI treats the weights as point estimates)"}[scheme]
    return {"axes": {k: v for k, v in axes.items()}, "fields": fields,
            "attrs": {"solver": "pinn", "method": fit.method, "draws_used": int(-(-S // step)),
                      "field_uncertainty": how}}
