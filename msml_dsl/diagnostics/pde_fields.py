"""The fields of a PDE fit on a grid: ``fields.nc`` in the run folder, for both PDE solvers.

For every field ``u`` the file holds ``u_mean``, ``u_sd``, ``u_q03``, ``u_q50`` and ``u_q97``
(posterior mean, sd and the 3 %, 50 % and 97 % quantiles over draws) on the field's own
coordinates:

* ``solver mol``: the solver's grid nodes (the upper edge included, also for periodic axes where
  it repeats the lower one) at the ODE's output times (the initial time and every data time);
* ``solver pinn``: an even grid of the domain (101 nodes per axis in 1-D, 41 in 2-D, 21 in 3-D) at
  51 even times (``backends/pinn/fields.py`` says how each scheme makes a draw's field).

At most 1,000 draws (evenly thinned; for a method-of-lines grid, also at most 2e7 solution values
in memory) enter the summaries; the attributes say how many and how.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

QUANTILES = {"q03": 0.03, "q50": 0.5, "q97": 0.97}
VALUES_BUDGET = 20_000_000


def summarise_draws(draws: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, sd and quantiles over the first axis of (S, ...)."""
    out = {"mean": draws.mean(0), "sd": draws.std(0, ddof=1) if draws.shape[0] > 1 else np.zeros(draws.shape[1:])}
    for k, q in QUANTILES.items():
        out[k] = np.quantile(draws, q, axis=0)
    return out


def write_fields(grid: dict, path: str | Path) -> Path:
    """Write ``{"axes": {name: values}, "fields": {name: (dims, summaries)}, "attrs": {...}}`` as NetCDF."""
    import xarray as xr

    data_vars = {}
    for name, (dims, summaries) in grid["fields"].items():
        for k, v in summaries.items():
            data_vars[f"{name}_{k}"] = (dims, np.asarray(v, float))
    ds = xr.Dataset(data_vars, coords={k: np.asarray(v, float) for k, v in grid["axes"].items()},
                    attrs={k: (str(v) if not isinstance(v, (int, float)) else v) for k, v in grid["attrs"].items()})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_netcdf(tmp)
    tmp.replace(path)
    return path


def mol_field_grid(fit, max_draws: int = 1000) -> dict | None:
    """The posterior fields of a method-of-lines fit (a ``Fit`` or ``MapFit`` of a model with ``ir.pde``)."""
    ir = fit.model.ir
    pde = getattr(ir, "pde", None)
    if pde is None or ir.ode is None:
        return None
    draws = fit.posterior if hasattr(fit, "sample") else fit.draws
    params = {p.name: np.asarray(draws[p.name]) for p in ir.parameters}
    lead = 2 if hasattr(fit, "sample") else 1
    flat = {k: v.reshape((-1,) + v.shape[lead:]) for k, v in params.items()}
    S = next(iter(flat.values())).shape[0] if flat else 1
    # a fine grid at many output times (Burgers: 801 nodes x 100 times) holds fewer draws: at most
    # VALUES_BUDGET numbers (160 MB) of solution in memory
    per_draw = max(1, len(ir.ode.states) * len(ir.ode.output_times))
    max_draws = max(20, min(max_draws, VALUES_BUDGET // per_draw))
    step = max(1, -(-S // max_draws))
    flat = {k: v[::step] for k, v in flat.items()}
    sol = fit.model.program.evaluate_draws(flat, seed=1, predictive=False)["solution"]   # (S, T, states)
    labels = [str(s) for s in ir.ode.states]
    axes = {}
    for a in pde.space:
        name = a.symbol.name
        periodic = any(c.kind == "periodic" and c.at[0][0] == a.symbol for c in pde.conditions)
        n = _grid_size(labels, pde, a)
        axes[name] = np.linspace(a.lower, a.upper, n + 1 if periodic else n)
    timed = pde.time is not None
    if timed:
        axes[pde.time.name] = np.asarray(ir.ode.output_times, float)
    fields = {}
    for f in pde.fields:
        idx = [i for i, lab in enumerate(labels) if lab.split("[")[0] == f.name]
        shape = tuple(_grid_size(labels, pde, a) for a in pde.space)
        vals = sol[:, :, idx].reshape((sol.shape[0], sol.shape[1]) + shape)       # (S, T, nx[, ny])
        for k, a in enumerate(pde.space):                                             # close periodic axes
            if any(c.kind == "periodic" and c.at[0][0] == a.symbol for c in pde.conditions):
                first = np.take(vals, [0], axis=2 + k)
                vals = np.concatenate([vals, first], axis=2 + k)
        space = [a.symbol.name for a in pde.space]
        if timed:
            vals = np.moveaxis(vals, 1, -1)                                          # (S, nx[, ny], T)
            dims = space + [pde.time.name]
        else:
            vals = vals[:, -1]                                                         # the steady state
            dims = space
        fields[f.name] = (dims, summarise_draws(vals))
    return {"axes": axes, "fields": fields,
            "attrs": {"solver": "mol", "method": getattr(fit, "method", "map") if not hasattr(fit, "sample")
                      else fit.sample.settings["method"], "draws_used": int(sol.shape[0]),
                      "field_uncertainty": "the grid solution for each posterior draw of the parameters"}}


def _grid_size(labels, pde, axis) -> int:
    k = [a.symbol for a in pde.space].index(axis.symbol)
    return 1 + max(int(lab.split("[")[1].rstrip("]").split(",")[k]) for lab in labels)


def save_mol_fields(fit, folder: str | Path) -> Path | None:
    """``fields.nc`` for a method-of-lines fit; nothing for other models."""
    grid = mol_field_grid(fit)
    if grid is None:
        return None
    return write_fields(grid, Path(folder) / "fields.nc")
