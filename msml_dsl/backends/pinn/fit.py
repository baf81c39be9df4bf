"""The result of a PINN run: posterior draws of the physical parameters, the trained networks,
every likelihood term's weight, and the same outputs as an ODE ``Fit`` (summary, ArviZ, run folder).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from msml_dsl.version import __version__


class PinnFit:
    """Posterior draws (chain, draw, ...) of the physical parameters from a PINN run.

    ``method`` is map | svi | laplace | nuts; ``term_weights`` lists every likelihood term with
    its points, scale and weights; ``predict(coords)`` evaluates the trained fields.
    """

    def __init__(self, ir, model, method, z_map, draws, heads, history, settings, timings, notes, stats,
                 z_point=None, linear=None):
        self.ir, self.model, self.method = ir, model, method
        self.history, self.settings, self.timings, self.notes = history, settings, timings, notes
        self.sample_stats = {k: np.asarray(v) for k, v in (stats or {}).items()}
        self.z_map = z_map
        C, N, D = draws.shape
        self.shape = (C, N)
        flat = draws.reshape(C * N, D)
        flat_heads = None if heads is None or heads.shape[-1] == 0 else heads.reshape(C * N, -1)
        self.flat, self.flat_heads, self.linear = flat, flat_heads, linear
        with torch.no_grad():
            values, elements, _, _ = model.params.transform(flat)
        self.parameters = {k: v.cpu().numpy().reshape((C, N) + tuple(v.shape[1:])) for k, v in values.items()}
        self.derived = self._derived({k: v.cpu().numpy() for k, v in elements.items()})
        self.log_likelihood, self.posterior_predictive = self._per_draw_observations()
        model.set_heads(None)
        with torch.no_grad():
            _, map_values, _, _ = model.params.transform(z_map[None])
        self.map_values = {k: v[0].cpu().numpy() for k, v in map_values.items()}
        # SVI goes on training the networks: its terms are reported at the guide's mean, the others at the MAP.
        self.term_weights = term_report(model, z_map if z_point is None else z_point)
        self._idata = None
        self.source: str | None = None      # the model file's text (set by CompiledModel.run), saved as model.msml

    # --------------------------------------------------------------- per draw
    def _derived(self, elements: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each ``derive`` per draw: parameters, and fields at fixed points (``u(5, 20)``, ``der(u, x)(0, t)``
        with every coordinate given), the fields per draw as in :meth:`field_draws`."""
        from msml_dsl.backends.pinn.fields import derived_with_fields

        return derived_with_fields(self, elements)

    def field_draws(self, name: str, x: torch.Tensor, alpha: tuple[int, ...] | None = None,
                    start: int = 0, stop: int | None = None) -> torch.Tensor:
        """A field (or its derivative ``alpha``) at points x (n, coordinates of the field's arguments, in the
        model's coordinate order) for draws start:stop, (S, n): linearised in all weights (laplace,
        network=all), with each draw's last layer (network=last_layer), else the MAP network."""
        from msml_dsl.backends.pinn.fields import field_draws

        return field_draws(self, name, x, alpha, start, stop)

    def _per_draw_observations(self) -> tuple[dict, dict]:
        """Pointwise log likelihood and a posterior-predictive draw of every observed row, (chain, draw, rows)."""
        from msml_dsl.backends.pinn.likelihood import make_distribution

        lls, preds = {}, {}
        model, flat = self.model, self.flat
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(int(self.settings["infer"]["seed"]) + 12345)
        try:
            for o, data in model.observations:
                ll_chunks, pred_chunks = [], []
                for start in range(0, flat.shape[0], 256):
                    z = flat[start:start + 256]
                    model.set_heads(None if self.flat_heads is None else self.flat_heads[start:start + 256])
                    location = None
                    if self.linear is not None:
                        loc, J = self.linear["data"][o.name]    # the location at the MAP and its weight Jacobian
                        location = loc[None, :] + self.linear["dw"][start:start + 256] @ J.T
                    with torch.no_grad():
                        _, elements, _, _ = model.params.transform(z)
                        args = model.observation_args(data, elements, z.shape[0], False, location)
                        d = make_distribution(o.distribution, [a.detach() for a in args])
                        lp = d.log_prob(data["values"].expand(z.shape[0], -1))
                        pred = d.sample()
                    m = data["mask"]
                    ll_chunks.append(lp[:, m].cpu().numpy())
                    pred_chunks.append(pred[:, m].cpu().numpy())
                lls[o.name] = np.concatenate(ll_chunks).reshape(self.shape + (-1,))
                preds[o.name] = np.concatenate(pred_chunks).reshape(self.shape + (-1,))
        finally:
            torch.random.set_rng_state(gen_state)
        model.set_heads(None)
        return lls, preds

    # ---------------------------------------------------------------- outputs
    @property
    def posterior(self) -> dict[str, np.ndarray]:
        return {**self.parameters, **self.derived}

    def predict(self, coords: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each field at the given coordinates (name -> array), from the trained (MAP) networks."""
        return self.model.predict(coords)

    def to_arviz(self):
        if self._idata is None:
            from msml_dsl.diagnostics import build_inference_data

            observed, dims, coords = {}, {}, {}
            for o in self.ir.observations:
                observed[o.name] = np.asarray(o.values)[np.asarray(o.mask, bool)]
                dims[o.name] = [f"{o.name}_row"]
                coords[f"{o.name}_row"] = np.asarray(o.file_lines)[np.asarray(o.mask, bool)]
            for p in self.ir.parameters:
                if p.shape:
                    dims[p.name] = [f"{p.name}_dim"]
                    coords[f"{p.name}_dim"] = np.arange(1, p.shape[0] + 1)
            self._idata = build_inference_data(
                posterior=self.posterior, sample_stats=self.sample_stats or None, observed_data=observed or None,
                log_likelihood=self.log_likelihood or None,
                posterior_predictive=(self.posterior_predictive or None) if self.method != "map" else None,
                dims=dims, coords=coords,
                attrs={"model": self.ir.name, "msml_version": __version__, "backend": "pinn",
                       "inference": self.method, "seed": int(self.settings["infer"]["seed"])})
        return self._idata

    def summary_table(self):
        from msml_dsl.diagnostics import summary_table

        return summary_table(self.to_arviz(), var_names=list(self.posterior))

    def warnings(self):
        if self.method != "nuts":
            return []
        from msml_dsl.diagnostics import check_convergence

        return check_convergence(self.to_arviz(), max_tree_depth=int(self.settings["infer"]["max_tree_depth"]))

    def summary(self) -> str:
        """Posterior table (or the MAP values), the likelihood terms with their weights, notes."""
        network = self.settings["infer"].get("network")
        note = _METHOD_NOTE.get((self.method, network), _METHOD_NOTE.get(self.method))
        lines = [f"{self.ir.name}: PDE model, physics-informed networks, inference {self.method}"
                 f"{f'(network={network})' if network else ''} ({note})"]
        if self.method == "map":
            for k, v in self.map_values.items():
                lines.append(f"  {k:<20} {np.array2string(np.asarray(v), precision=6)}")
        else:
            from msml_dsl.diagnostics import format_summary

            lines.append(format_summary(self.summary_table(), self.warnings()))
        lines.append(format_terms(self.term_weights))
        h = self.history
        lines.append(f"training: {h.adam_steps} Adam + {h.lbfgs_steps} L-BFGS steps, final loss {h.final_loss:.6g} "
                     f"(negative log posterior per point), {sum(h.seconds.values()):.1f} s")
        lines += [f"note: {n}" for n in [*h.stopped_early, *self.notes]]
        return "\n".join(lines)

    def save(self, folder: str | Path, source_text: str | None = None) -> Path:
        """Write posterior.nc, summary.txt, run.json, networks.pt (and model.msml when the source is known)."""
        from msml_dsl.api import _atomic_write, _json_safe
        from msml_dsl.diagnostics import save_netcdf

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_netcdf(self.to_arviz(), folder / "posterior.nc")
        from msml_dsl.backends.pinn.fields import pinn_field_grid
        from msml_dsl.diagnostics.pde_fields import write_fields

        write_fields(pinn_field_grid(self), folder / "fields.nc")
        _atomic_write(folder / "summary.txt", self.summary() + "\n")
        torch.save({k: v.state_dict() for k, v in self.model.networks.items()}, folder / "networks.pt")
        text = source_text if source_text is not None else self.source
        if text is not None:
            _atomic_write(folder / "model.msml", text)
        record = {
            "model": self.ir.name, "file": self.ir.file, "backend": "pinn", "method": self.method,
            "settings": self.settings, "timings_s": {**self.timings, **self.history.seconds},
            "map": {k: np.asarray(v).tolist() for k, v in self.map_values.items()},
            "term_weights": self.term_weights, "notes": [*self.history.stopped_early, *self.notes],
            "training": {"steps": self.history.steps, "loss": self.history.loss, "phase": self.history.phase},
            "versions": {"msml": __version__, "torch": torch.__version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _atomic_write(folder / "run.json", json.dumps(record, indent=2, default=_json_safe) + "\n")
        return folder


_METHOD_NOTE = {
    "map": "the trained point; no uncertainty",
    "svi": "Gaussian guide on the physical parameters; network weights are point estimates",
    ("laplace", "all"): "Gauss-Newton Gaussian over every network weight and the parameters",
    ("laplace", "last_layer"): "Gaussian at the mode; hidden layers fixed at the MAP",
    ("laplace", "fixed"): "Gaussian at the mode; networks fixed at the MAP",
    ("nuts", "last_layer"): "exact given the features; hidden layers fixed at the MAP",
    ("nuts", "fixed"): "exact given the networks, which are fixed at the MAP",
}


def term_report(model, z) -> list[dict]:
    """Every likelihood term at the point z: points, scale, weights, mean squared residual, log likelihood."""
    from msml_dsl.backends.pinn.likelihood import LOG_2PI

    out = []
    with torch.no_grad():
        _, elements, _, _ = model.params.transform(z[None])
    for term in model.terms:
        n = model.term_size(term)
        row = {"term": term.name, "kind": term.kind, "points": n}
        if term.kind == "physics":
            r = model.residuals(term, elements, model.points, create_graph=False).detach()
            s = float(model.scale_value(term, elements).reshape(-1)[0]) if elements else \
                float(term.scale({}, {}, like=r[:, :1]).reshape(-1)[0])
            ms = float((r ** 2).mean())
            row.update(scale=s, scale_source="declared" if term.declared else "default",
                       mean_sq_residual=ms,
                       log_likelihood=float((-0.5 * r ** 2 / s ** 2 - math.log(s) - 0.5 * LOG_2PI).sum()))
        else:
            o, data = term.observation
            lp = model._observation_log_lik(o, data, elements, 1, create_graph=False).detach()
            row.update(log_likelihood=float(lp.sum()), scale=None, scale_source=o.distribution)
            if o.distribution == "Normal" and len(data["args"]) == 2:
                derivs = model.field_derivatives(data["x"], model._needs(data["args"]), create_graph=False)
                env = model.env(elements, data["x"])
                env.update(data["covariates"])
                loc = torch.atleast_2d(data["args"][0](derivs, env, like=data["x"][:, 0]).detach())
                sd = torch.atleast_2d(data["args"][1](derivs, env, like=data["x"][:, 0]).detach())
                m = data["mask"]
                row.update(scale=float(sd.expand_as(loc)[:, m].mean()),
                           mean_sq_residual=float(((loc - data["values"]) ** 2)[:, m].mean()))
        if row.get("scale"):
            row["weight_per_point"] = 1 / (2 * row["scale"] ** 2)
            row["weight_on_mean_sq"] = n / (2 * row["scale"] ** 2)
        out.append(row)
    return out


def format_terms(rows: list[dict]) -> str:
    """The likelihood terms as a table: each term's points, scale and weight."""
    head = (f"{'likelihood term':<24} {'points':>7} {'scale':>11} {'w/point':>11} {'w on mean r^2':>14} "
            f"{'mean r^2':>11} {'log lik':>12}")
    lines = ["", head]
    for r in rows:
        scale = f"{r['scale']:.4g}" if r.get("scale") else "-"
        wp = f"{r['weight_per_point']:.4g}" if "weight_per_point" in r else "-"
        wm = f"{r['weight_on_mean_sq']:.4g}" if "weight_on_mean_sq" in r else "-"
        ms = f"{r['mean_sq_residual']:.3g}" if "mean_sq_residual" in r else "-"
        src = {"declared": "", "default": " (default scale)"}.get(r["scale_source"], f" ({r['scale_source']})")
        lines.append(f"{r['term'] + src:<24} {r['points']:>7} {scale:>11} {wp:>11} {wm:>14} {ms:>11} "
                     f"{r['log_likelihood']:>12.5g}")
    lines.append("w/point = 1/(2 scale^2) on each squared residual; w on mean r^2 = points/(2 scale^2). "
                 "Parameter scales: at the MAP (SVI: the guide mean).")
    return "\n".join(lines)
