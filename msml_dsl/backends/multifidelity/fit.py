"""The result of a multi-fidelity fit: hyperparameters, per-level noise, leave-one-out checks,
predictions with credible bands at any level, and where to measure next."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from msml_dsl.backends.multifidelity.inference import FitState, candidate_points
from msml_dsl.backends.multifidelity.model import DTYPE, few_threads
from msml_dsl.version import __version__

Z95 = 1.959963984540054


def _small(method):
    """Run a method with one torch thread when the problem is small (see ``few_threads``)."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with few_threads(self.model.n_rows):
            return method(self, *args, **kwargs)
    return wrapper


def _short(path: str) -> str:
    """A level's model file as folder/name (enough to tell models/*/model.msml apart)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


@dataclass(frozen=True)
class Prediction:
    """A level's posterior at points x: mean, sd and the central credible band (``prob``)."""

    level: str
    x: np.ndarray          # (n, d)
    mean: np.ndarray
    sd: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    prob: float


@dataclass(frozen=True)
class Suggestion:
    """A candidate for the next measurement, ranked by ``criterion``."""

    x: dict                # input name -> value
    mean: float
    sd: float
    score: float
    eig: float             # expected information gain of one noisy measurement there (nats)


class FidelityFit:
    """A fitted multi-fidelity model.

    >>> fit = compile_file("models/forrester/model.msml").run()            # doctest: +SKIP
    >>> p = fit.predict(np.linspace(0, 1, 5))                              # doctest: +SKIP
    >>> fit.suggest_next(1000)[0].x                                        # doctest: +SKIP
    """

    def __init__(self, state: FitState, source: str | None = None):
        self.state = state
        self.model = state.model
        self.problem = state.model.problem
        self.ir = state.model.ir
        self.method = state.method
        self.notes = state.notes
        self.timings = state.timings
        self.source = source
        self._loo = None

    # ----------------------------------------------------------------- inputs
    def _inputs(self, x) -> np.ndarray:
        names = [a.name for a in self.problem.inputs]
        if isinstance(x, dict):
            cols = [np.asarray(x[n], dtype=float).reshape(-1) for n in names]
            return np.stack(cols, -1)
        x = np.array(x, dtype=float)
        if x.ndim == 1:
            x = x[:, None] if len(names) == 1 else x[None, :]
        if x.shape[1] != len(names):
            raise ValueError(f"x has {x.shape[1]} columns, but the levels take {len(names)} inputs "
                             f"({', '.join(names)})")
        return x

    # ------------------------------------------------------------- prediction
    @_small
    def predict(self, x, level: str | None = None, prob: float = 0.95, noise: bool = False,
                samples: int | None = None, seed: int = 0) -> Prediction:
        """The level's posterior (default: the highest level) at x: an array (n,) or (n, d), or a dict
        of input columns. ``noise=True`` gives the band of a new measurement instead of the level."""
        level = level or self.problem.target
        if level not in {lv.name for lv in self.problem.levels}:
            raise ValueError(f"unknown level '{level}' (levels: {', '.join(lv.name for lv in self.problem.levels)})")
        X = self._inputs(x)
        Xt = torch.as_tensor(X, dtype=DTYPE, device=self.model.device)
        want_samples = samples or (self.problem.samples if self._non_gaussian() else None)
        mean, var, draws = self.state.predict(level, Xt, want_samples, seed)
        extra = self.state.noise_sd(level) ** 2 if noise else 0.0
        sd = (var + extra).sqrt().cpu().numpy()
        mean = mean.cpu().numpy()
        q = 0.5 + prob / 2
        if draws is not None and self._non_gaussian():
            d = draws.cpu().numpy()
            if extra:
                d = d + math.sqrt(extra) * np.random.default_rng(seed).standard_normal(d.shape)
            lower, upper = np.quantile(d, 1 - q, axis=0), np.quantile(d, q, axis=0)
        else:
            from scipy.stats import norm

            z = float(norm.ppf(q))
            lower, upper = mean - z * sd, mean + z * sd
        return Prediction(level, X, mean, sd, lower, upper, prob)

    def _non_gaussian(self) -> bool:
        """Bands from samples: the recursive scheme's mixtures, or NUTS's mixture over draws."""
        return self.problem.scheme == "recursive" or (self.method != "map" and not self.state.linearised)

    def evaluate(self, x, truth, level: str | None = None, prob: float = 0.95) -> dict:
        """Held-out check against known values: RMSE, mean |z| and the band's coverage."""
        p = self.predict(x, level, prob)
        truth = np.asarray(truth, dtype=float).reshape(-1)
        err = p.mean - truth
        return {"level": p.level, "points": int(truth.size), "rmse": float(np.sqrt(np.mean(err ** 2))),
                "mean_abs_z": float(np.mean(np.abs(err) / np.maximum(p.sd, 1e-300))),
                "coverage": float(np.mean((truth >= p.lower) & (truth <= p.upper))), "prob": prob}

    # ------------------------------------------------------------ next point
    @_small
    def suggest_next(self, n_candidates: int = 1024, level: str | None = None, criterion: str = "variance",
                     top: int = 5, seed: int = 0) -> list[Suggestion]:
        """Where one new measurement of ``level`` (default the highest) would help most.

        ``variance``: the candidate of largest predictive variance; ``eig``: the largest expected
        information gain ``0.5 log(1 + var / noise^2)`` about the level there (the same ranking for
        a constant noise); ``imse`` (joint scheme): the largest reduction of the predictive variance
        integrated over the candidates, ``sum_x cov(x, c)^2 / (var(c) + noise^2) / n``.
        """
        if criterion not in ("variance", "eig", "imse"):
            raise ValueError("criterion is variance, eig or imse")
        level = level or self.problem.target
        X = candidate_points(self.problem, int(n_candidates), seed)
        Xt = torch.as_tensor(X, dtype=DTYPE, device=self.model.device)
        noise2 = self.state.noise_sd(level) ** 2
        if criterion == "imse":
            if self.problem.scheme != "joint":
                raise ValueError("the imse criterion needs the joint scheme (a Gaussian posterior over all points)")
            C = self.state.covariance(level, Xt)
            var = torch.clamp(torch.diagonal(C), min=0.0)
            score = ((C ** 2).sum(0) / (var + noise2 + 1e-300) / X.shape[0]).cpu().numpy()
            mean = self.state.predict(level, Xt)[0]
        else:
            mean, var, _ = self.state.predict(level, Xt, samples=None if self.problem.scheme == "joint" else 200,
                                              seed=seed)
        var_np = var.cpu().numpy()
        eig = 0.5 * np.log1p(var_np / max(noise2, 1e-12 * float(var_np.max() or 1.0)))
        if criterion == "variance":
            score = var_np
        elif criterion == "eig":
            score = eig
        # the best candidates, each at least 2 % of the box away from those listed before it
        span = np.array([a.upper - a.lower for a in self.problem.inputs])
        order = []
        for i in np.argsort(-score, kind="stable"):
            if all(np.max(np.abs(X[i] - X[j]) / span) >= 0.02 for j in order):
                order.append(i)
            if len(order) >= max(1, top):
                break
        names = [a.name for a in self.problem.inputs]
        mean_np = mean.cpu().numpy()
        return [Suggestion({n: float(X[i, j]) for j, n in enumerate(names)}, float(mean_np[i]),
                           float(np.sqrt(var_np[i])), float(score[i]), float(eig[i])) for i in order]

    # --------------------------------------------------------------- reports
    @_small
    def loo(self) -> list[dict]:
        if self._loo is None:
            self._loo = self.state.leave_one_out()
        return self._loo

    @_small
    def parameters(self) -> dict[str, dict]:
        """Each latent parameter's value (MAP) or posterior summary (NUTS), on its own scale;
        GP lengthscales also in the units of their inputs."""
        out = {}
        for b in self.state.blocks:
            for p in self.ir.parameters:
                if p.name not in b.block.free:
                    continue
                values = []
                for z in (b.zs if self.method != "map" else b.zs[:1]):
                    with torch.no_grad():
                        self.model.unpack(z)
                    values.append(self.model._values[p.name].reshape(-1).cpu().numpy())
                V = np.stack(values)
                row = {"value": V.mean(0), "sd": V.std(0) if V.shape[0] > 1 else None, "level": ",".join(b.levels)}
                if b.draws is not None and self.method == "nuts":
                    row.update(self._diagnostics(b, p))
                if p.name.endswith("_lengthscale"):
                    term = p.name[:-len("_lengthscale")]
                    if term in self.model.scaling:
                        row["in_input_units"] = V.mean(0) * self.model.scaling[term][1].cpu().numpy()
                out[p.name] = row
        return out

    def _diagnostics(self, b, p) -> dict:
        """R-hat and bulk ESS of a parameter's unconstrained coordinates from the block's chains."""
        import arviz as az

        offsets = []
        for q in self.ir.parameters:
            if q.name in b.block.free:
                off, size = self.model.params.offsets[q.name]
                offsets += [(q.name, i) for i in range(off, off + size)]
        cols = [k for k, (name, _) in enumerate(offsets) if name == p.name]
        rhat = max(float(az.rhat(b.draws[:, :, c])) for c in cols)
        ess = min(float(az.ess(b.draws[:, :, c])) for c in cols)
        return {"r_hat": rhat, "ess_bulk": ess, "divergences": int(b.stats["diverging"].sum())}

    @_small
    def summary(self) -> str:
        p = self.problem
        n_rows = sum(d.values.size for lv in p.levels for d in lv.data)
        scheme = {"joint": "joint (Kennedy–O'Hagan: one Gaussian process over all levels, exact marginal "
                           "likelihood)",
                  "recursive": "recursive (one level after another given the levels below; predictions by Monte "
                               f"Carlo through the levels, {p.samples} samples per point)"}[p.scheme]
        lines = [f"multi-fidelity fit of '{self.ir.name}': {len(p.levels)} levels "
                 f"({' -> '.join(lv.name for lv in p.levels)}), {n_rows} data rows",
                 f"scheme: {scheme}"]
        if self.method == "map":
            fits = ", ".join(f"{'+'.join(b.levels)}: log density {b.log_density:.3f} ({b.n_converged}/{b.n_starts} "
                             f"optimisations converged)" for b in self.state.blocks if b.n_starts)
            lines.append(f"inference: MAP of the hyperparameters by multi-start L-BFGS; {fits}")
        elif self.method == "laplace":
            o = self.state.options
            stats = ", ".join(f"{'+'.join(b.levels)}: Pareto k {b.stats['khat']:.2f}, ESS {b.stats['ess']:.0f} of "
                              f"{b.stats['draws']}" for b in self.state.blocks if b.stats)
            lines.append("inference: hyperparameters integrated out (Laplace approximation at the MAP, corrected by "
                         f"adaptive importance sampling with Pareto smoothing; {stats}); " + (
                             "predictions: linearised Laplace (the mean at the MAP, the variance widened by the "
                             "hyperparameters' Laplace covariance)" if self.state.linearised else
                             f"predictions mix {len(self.state.blocks[0].zs)} resampled draws"))
        else:
            o = self.state.options
            lines.append(f"inference: NUTS over the hyperparameters, {o['chains']} chains x ({o['warmup']} warmup + "
                         f"{o['draws']} draws); predictions mix {len(self.state.blocks[0].zs)} draws")
        lines.append("")
        lines.append("links:")
        for lv in p.levels:
            import sympy

            lines.append(f"  {lv.name} = {sympy.sstr(lv.expression)}")
        for sim in p.simulations:
            what = (f"the field {sim.output[0].name.split('[')[0]} of {_short(sim.source)} on {len(sim.nodes)} "
                    f"nodes in {sim.space}") if sim.space else \
                f"{sympy.sstr(sim.output)} of {_short(sim.source) if sim.source else 'this file'}"
            solve = (f"{sim.method} at rtol {sim.rtol:g}, read on {sim.steps} intervals" if sim.method in
                     ("rk45", "stiff", "auto") else f"{sim.steps} {sim.method} steps")
            lines.append(f"  {sim.symbol.name}: {what}, {solve} over {sim.time.name} in [{sim.t0:g}, {sim.t1:g}]")
        for t in p.terms.values():
            if t.trend:
                lines.append(f"  {t.name}: a {t.kernel} GP plus a linear trend in its scaled inputs (coefficients "
                             f"Normal(0, {t.trend:.4g}^2), integrated out)")
        lines.append("")
        params = self.parameters()
        if self.method == "map":
            lines.append(f"{'parameter':<26} {'value':>12}  {'(input units)':>14}")
        elif self.method == "laplace":
            lines.append(f"{'parameter':<26} {'mean':>12} {'sd':>10}  {'(input units)':>14}")
        else:
            lines.append(f"{'parameter':<26} {'mean':>12} {'sd':>10} {'r_hat':>7} {'ess_bulk':>9}  "
                         f"{'(input units)':>14}")
        for name, row in params.items():
            vals = np.atleast_1d(row["value"])
            sds = np.atleast_1d(row["sd"]) if row.get("sd") is not None else None
            units = np.atleast_1d(row["in_input_units"]) if "in_input_units" in row else None
            for i, v in enumerate(vals):
                label = name if vals.size == 1 else f"{name}[{i + 1}]"
                u = f"{units[i]:14.5g}" if units is not None else ""
                if self.method == "map":
                    lines.append(f"{label:<26} {v:12.5g}  {u}")
                elif self.method == "laplace":
                    lines.append(f"{label:<26} {v:12.5g} {sds[i]:10.4g}  {u}")
                else:
                    lines.append(f"{label:<26} {v:12.5g} {sds[i]:10.4g} {row.get('r_hat', math.nan):7.3f} "
                                 f"{row.get('ess_bulk', math.nan):9.0f}  {u}")
        lines.append("")
        lines.append("noise and leave-one-out checks per level (each row predicted from all other rows):")
        lines.append(f"  {'level':<12} {'data':<18} {'rows':>5} {'noise sd':>10} {'LOO rmse':>10} {'mean|z|':>8} "
                     f"{'95% cover':>9} {'LOO lpd':>9}")
        for row in self.loo():
            noise = self.state.noise_sd(row["level"]) if True else math.nan
            for lv in p.levels:
                for d in lv.data:
                    if d.name == row["data"]:
                        b = self.state.block_of(lv.name) or self.state.blocks[0]
                        env, _ = b.state(0)
                        with torch.no_grad():
                            noise = float(self.model.noise[d.name](env, 1, self.model.device)[0])
            lines.append(f"  {row['level']:<12} {row['data']:<18} {row['rows']:>5} {noise:10.4g} {row['rmse']:10.4g} "
                         f"{row['mean_abs_z']:8.3f} {row['coverage95']:9.2f} {row['lpd']:9.3f}")
        if self.method == "nuts":
            div = sum(int(b.stats["diverging"].sum()) for b in self.state.blocks if b.stats)
            worst = max((r.get("r_hat", 1.0) for r in params.values()), default=1.0)
            lines.append("")
            lines.append(f"NUTS: {div} divergences; max R-hat {worst:.3f}")
            if worst > 1.01:
                lines.append("warning[W101]: R-hat above 1.01: run longer chains (--warmup, --draws)")
        for note in self.notes + list(p.notes):
            lines.append(f"note: {note}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ save
    def run_record(self) -> dict:
        import arviz
        import pyro

        params = {k: {kk: (np.asarray(vv).tolist() if vv is not None and not isinstance(vv, str) else vv)
                      for kk, vv in v.items()} for k, v in self.parameters().items()}
        return {"model": self.ir.name, "file": self.ir.file, "method": self.method,
                "scheme": self.problem.scheme, "settings": self.state.options, "parameters": params,
                "leave_one_out": self.loo(), "notes": self.notes + list(self.problem.notes),
                "integration": [{"levels": list(b.levels), "pareto_k": b.stats["khat"], "ess": b.stats["ess"],
                                 "draws": b.stats["draws"]} for b in self.state.blocks
                                if self.method == "laplace" and b.stats],
                "timings_s": self.timings, "device": str(self.model.device),
                "versions": {"msml": __version__, "python": platform.python_version(), "torch": torch.__version__,
                             "pyro": pyro.__version__, "arviz": arviz.__version__, "numpy": np.__version__},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    @_small
    def save(self, folder: str | Path) -> Path:
        """Write summary.txt, run.json, model.msml, predictions.csv (every output level on a grid of
        the inputs) and, after NUTS, draws.npz (unconstrained draws per block)."""
        from msml_dsl.api import _atomic_write, _json_safe

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / "summary.txt", self.summary() + "\n")
        _atomic_write(folder / "run.json", json.dumps(self.run_record(), indent=2, default=_json_safe) + "\n")
        if self.source is not None:
            _atomic_write(folder / "model.msml", self.source)
        X = candidate_points(self.problem, 201 if len(self.problem.inputs) == 1 else 256, 0)
        names = [a.name for a in self.problem.inputs]
        header = names[:]
        cols = [X[:, j] for j in range(X.shape[1])]
        for level in self.problem.top:
            pr = self.predict(X, level)
            header += [f"{level}_mean", f"{level}_sd", f"{level}_lower95", f"{level}_upper95"]
            cols += [pr.mean, pr.sd, pr.lower, pr.upper]
        table = np.stack(cols, -1)
        text = ",".join(header) + "\n" + "\n".join(",".join(f"{v:.10g}" for v in row) for row in table) + "\n"
        _atomic_write(folder / "predictions.csv", text)
        draws = {"_".join(b.levels): b.draws for b in self.state.blocks if b.draws is not None}
        if draws:
            np.savez(folder / "draws.npz", **draws)
        return folder

