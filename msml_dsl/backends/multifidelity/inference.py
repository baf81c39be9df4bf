"""Fitting a multi-fidelity model: MAP (multi-start L-BFGS) or NUTS over each block's parameters,
then predictions at any level — exact Gaussian (joint scheme) or Monte Carlo through the levels
(recursive scheme, Perdikaris et al. 2017) — leave-one-out checks and the next measurement.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from msml_dsl.backends.multifidelity.model import DTYPE, Block, FidelityModel, Rows, covariance

DEFAULTS = {"map": {"seed": 1, "starts": 8, "max_iter": 1000},
            "laplace": {"seed": 1, "starts": 8, "max_iter": 1000, "draws": 2000, "predictive": "mixture"},
            "nuts": {"seed": 1, "chains": 4, "warmup": 500, "draws": 500, "target_accept": 0.8,
                     "max_tree_depth": 10, "metric": "diag", "thin": 1}}
PREDICTION_DRAWS = 64      # posterior draws (NUTS) used for predictions
PREDICTIVES = ("mixture", "linearised")   # laplace predictions in the joint scheme (see FitState.linearised)
LINEARISATION_STEP = 0.1   # central differences at a tenth of a posterior sd along each principal axis


@dataclass
class BlockFit:
    """A block with its fitted parameters: one unconstrained z per draw (MAP: one)."""

    block: Block
    levels: tuple[str, ...]
    zs: list                                  # full unconstrained vectors used for prediction
    draws: np.ndarray | None = None           # NUTS: (chains, draws, block dim)
    stats: dict = field(default_factory=dict)
    log_density: float = math.nan
    n_starts: int = 0
    n_converged: int = 0
    axes: np.ndarray | None = None            # laplace: principal axes of the Laplace covariance, scaled
    z_map: torch.Tensor | None = None         # laplace: the full unconstrained vector at the MAP
    _linear: "BlockFit | None" = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def state(self, i: int):
        """(env, factor) at the i-th prediction draw, computed once; the model's current parameter
        values (read by its kernels and networks) are set to that draw's."""
        model = self.block.model
        if i not in self._cache:
            with torch.no_grad():
                env, _ = model.unpack(torch.as_tensor(self.zs[i], dtype=DTYPE, device=model.device))
                f = self.block.factor(env)
            if f is None:
                raise FloatingPointError("the covariance of the fitted Gaussian process is not positive definite")
            self._cache[i] = (env, f, model._values)
        env, f, values = self._cache[i]
        model._values = values
        return env, f

    def linear(self) -> "BlockFit":
        """The MAP and the points MAP +- h a_k along the Laplace covariance's scaled principal axes a_k
        (h = LINEARISATION_STEP): draw 0 is the MAP, draws 2k+1 and 2k+2 the pair of axis k."""
        if self._linear is None:
            zs = [self.z_map.clone()]
            for a in self.axes.T:
                for sign in (1.0, -1.0):
                    z = self.z_map.clone()
                    z[self.block.index] += sign * LINEARISATION_STEP * torch.as_tensor(a, dtype=DTYPE,
                                                                                       device=z.device)
                    zs.append(z)
            self._linear = BlockFit(self.block, self.levels, zs)
        return self._linear


def linearised(M: torch.Tensor, V: torch.Tensor):
    """Mean and variance of the linearised Laplace predictive from the moments at the MAP (row 0)
    and at the pairs MAP +- h a_k (rows 2k+1, 2k+2): the mean at the MAP, the variance at the MAP
    plus sum_k (d mean / d along a_k)^2, i.e. J Sigma J^T (MacKay 1992)."""
    D = (M[1::2] - M[2::2]) / (2 * LINEARISATION_STEP)
    return M[0], V[0] + (D ** 2).sum(0), D


def data_rows(model: FidelityModel) -> dict[str, list[Rows]]:
    out = {}
    for lv in model.problem.levels:
        out[lv.name] = [Rows(lv.name, d.name, torch.as_tensor(d.inputs, dtype=DTYPE, device=model.device),
                             torch.as_tensor(d.values, dtype=DTYPE, device=model.device)) for d in lv.data]
    return out


def parameter_names(model: FidelityModel, exprs) -> set[str]:
    """Latent parameters whose elements appear in the expressions (and those their priors use)."""
    by_element = {e.name: p for p in model.ir.parameters for e in p.elements}
    found = set()
    for e in exprs:
        for s in e.free_symbols:
            if s.name in by_element:
                found.add(by_element[s.name].name)
    changed = True
    while changed:
        changed = False
        for p in model.ir.parameters:
            if p.name in found:
                for a in p.args:
                    for s in a.free_symbols:
                        q = by_element.get(s.name)
                        if q is not None and q.name not in found:
                            found.add(q.name)
                            changed = True
    return found


def _level_exprs(model: FidelityModel, name: str, stop: set[str]) -> list:
    """Expressions that set a level's value given the levels in ``stop``: its link, its simulations,
    its terms' hyperparameters and, through lower levels not in ``stop``, theirs."""
    problem = model.problem
    lv = problem.level(name)
    import sympy

    exprs = [lv.expression]
    for sim in problem.simulations:
        if sim.symbol in lv.expression.free_symbols:
            exprs += [sim.output, *sim.rhs, *sim.inits]
    for t in lv.terms:
        exprs += [sympy.Symbol(p, real=True) for p in _elements(model, problem.terms[t].parameters)]
    for lower in lv.lower:
        if lower not in stop:
            exprs += _level_exprs(model, lower, stop)
    return exprs


def _elements(model, names):
    out = []
    for p in model.ir.parameters:
        if p.name in names:
            out += [e.name for e in p.elements]
    return out


# -------------------------------------------------------------------------- fitting
def fit(model: FidelityModel, method: str, options: dict, progress: Callable | None = None) -> "FitState":
    problem = model.problem
    o = {**DEFAULTS[method], **{k: v for k, v in options.items() if v is not None}}
    if method == "laplace" and o["predictive"] not in PREDICTIVES:
        raise ValueError(f"predictive={o['predictive']!r}: use one of {', '.join(PREDICTIVES)}")
    t0 = time.perf_counter()
    rows = data_rows(model)
    z_base = model.params.initial(int(o["seed"])).clone()
    state = FitState(model, method, o, [], z_base, [])
    if problem.scheme == "joint":
        all_rows = [r for lv in problem.levels for r in rows[lv.name]]
        free = [p.name for p in model.ir.parameters]
        block = Block(model, all_rows, free, joint=True)
        state.blocks.append(_fit_block(block, tuple(lv.name for lv in problem.levels if rows[lv.name]), state,
                                       progress))
    else:
        done: set[str] = set()
        fitted_levels: set[str] = set()
        for lv in problem.levels:
            if not rows[lv.name]:
                continue
            exprs = _level_exprs(model, lv.name, fitted_levels) + [d.noise for d in lv.data]
            free = [p for p in parameter_names(model, exprs) if p not in done]
            fixed_train = {r.name: {j: state.plugin_mean(j, r.X) for j in state.ancestors_with_blocks(lv.name)}
                           for r in rows[lv.name]}
            block = Block(model, rows[lv.name], free, joint=False, fixed_train=fixed_train)
            state.blocks.append(_fit_block(block, (lv.name,), state, progress))
            done.update(free)
            fitted_levels.add(lv.name)
    unused = [p.name for p in model.ir.parameters if not any(p.name in b.block.free for b in state.blocks)]
    if unused:
        state.notes.append(f"not determined by any data (kept at their prior medians): {', '.join(unused)}")
    state.timings["fit_s"] = time.perf_counter() - t0
    return state


def _fit_block(block: Block, levels, state: "FitState", progress) -> BlockFit:
    from msml_dsl.errors import InferenceFailed
    from msml_dsl.inference.optimize import find_map

    model, o = block.model, state.options
    pot = block.potential(state.z_base)
    fitted = BlockFit(block, levels, [])
    if block.dim == 0:
        fitted.zs = [state.z_base.clone()]
        return fitted
    starts = max(1, int(o.get("starts", 8)))
    draws = model.params.prior_draws(max(1, starts - 1), int(o["seed"]))[:, block.index]
    z0 = state.z_base[block.index]
    candidates = torch.cat([z0[None], draws]).cpu().numpy()
    candidates = np.where(np.isfinite(candidates), candidates, 0.0)
    result = find_map(pot, block.dim, candidates, int(o.get("max_iter", 1000)))
    if not np.isfinite(result.log_density):
        raise InferenceFailed(f"no starting point gave a finite likelihood for the levels {', '.join(levels)}",
                              help="check the priors and the data scales; a noise scale of zero needs jitter")
    fitted.log_density, fitted.n_starts, fitted.n_converged = result.log_density, result.n_starts, result.n_converged
    if result.modes_disagree:
        state.notes.append(f"levels {', '.join(levels)}: the {result.n_starts} optimisations found different "
                           "modes; the best is kept")
    z_map = torch.as_tensor(result.z, dtype=DTYPE, device=model.device)
    state.z_base[block.index] = z_map
    if state.method == "map":
        fitted.zs = [state.z_base.clone()]
        return fitted
    if state.method == "laplace":
        draws, stats = integrate(block.potential(state.z_base, gradient=False), pot, result.z, int(o["draws"]),
                                 int(o["seed"]))
        fitted.draws, fitted.stats = draws[None], stats
        fitted.axes = stats.pop("axes")
        fitted.z_map = state.z_base.clone()
        if stats["khat"] > 0.7:
            state.notes.append(f"levels {', '.join(levels)}: the importance weights are unreliable (Pareto k = "
                               f"{stats['khat']:.2f} > 0.7); the hyperparameter posterior is far from its Laplace "
                               "approximation: use infer nuts(...)")
        for z_block in draws:
            z = state.z_base.clone()
            z[block.index] = torch.as_tensor(z_block, dtype=DTYPE, device=model.device)
            fitted.zs.append(z)
        return fitted
    from msml_dsl.inference.nuts import run_nuts

    C = int(o["chains"])
    rng = np.random.default_rng(int(o["seed"]))
    init = result.z[None, :] + 0.05 * rng.standard_normal((C, block.dim))
    res = run_nuts(pot, init, warmup=int(o["warmup"]), draws=int(o["draws"]), seed=int(o["seed"]),
                   target_accept=float(o["target_accept"]), max_tree_depth=int(o["max_tree_depth"]),
                   metric=str(o["metric"]), progress=progress)
    thin = max(1, int(o.get("thin", 1)))
    positions = res.positions[:, ::thin]
    fitted.draws = positions
    fitted.stats = {"diverging": res.diverging[:, ::thin], "tree_depth": res.tree_depth[:, ::thin],
                    "accept_stat": res.accept_stat[:, ::thin]}
    flat = positions.reshape(-1, block.dim)
    pick = np.linspace(0, flat.shape[0] - 1, min(PREDICTION_DRAWS, flat.shape[0])).astype(int)
    for i in pick:
        z = state.z_base.clone()
        z[block.index] = torch.as_tensor(flat[i], dtype=DTYPE, device=model.device)
        fitted.zs.append(z)
    return fitted


def _hessian(gradient_fn, z: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """The Hessian of the potential at z by central differences of its gradient (2 d evaluations)."""
    d = z.size
    E = step * np.eye(d)
    _, G = gradient_fn(np.concatenate([z + E, z - E]))
    H = (G[:d] - G[d:]) / (2 * step)
    return 0.5 * (H + H.T)


def _t_logpdf(Z: np.ndarray, mean: np.ndarray, L: np.ndarray, df: float) -> np.ndarray:
    """log density of a multivariate Student t (location mean, scale L L^T) at the rows of Z."""
    d = mean.size
    u = np.linalg.solve(L, (Z - mean).T)
    q = (u ** 2).sum(0)
    return (math.lgamma((df + d) / 2) - math.lgamma(df / 2) - 0.5 * d * math.log(df * math.pi)
            - np.log(np.diagonal(L)).sum() - 0.5 * (df + d) * np.log1p(q / df))


def integrate(potential, gradient_fn, z_map: np.ndarray, n: int, seed: int, keep: int = 256,
              df: float = 4.0, max_sd: float = 3.0):
    """Integrate the hyperparameters by importance sampling; returns (keep draws (keep, d), stats).

    The proposal starts from the Laplace approximation at the MAP (the inverse Hessian of the
    potential in unconstrained coordinates, each direction's sd capped at ``max_sd``) widened to a
    Student t with ``df`` degrees of freedom. Three stages (n/4, n/4, n/2 draws) each draw from
    the equal mixture of the proposals so far, and the first two add a t matched to the weighted
    mean and covariance (x 1.2) of everything drawn (adaptive importance sampling, for skewed and
    ridge-shaped posteriors). All draws are weighted by the posterior over the deterministic
    mixture of all stages' proposals (the balance heuristic), the weights are Pareto-smoothed (PSIS, Vehtari et al. 2024), and ``keep`` draws are
    resampled systematically. ``stats``: Pareto k (reliable below 0.7), effective sample size,
    number of draws.
    """
    import arviz as az

    rng = np.random.default_rng(seed)
    d = z_map.size
    H = _hessian(gradient_fn, z_map)
    w, V = np.linalg.eigh(H)
    w = np.maximum(w, 1.0 / max_sd ** 2)
    L0 = np.linalg.cholesky(V @ np.diag(1.0 / w) @ V.T)
    axes = V / np.sqrt(w)                  # columns: the Laplace covariance's principal axes x their sd

    def draw(mean, L, m):
        g = rng.chisquare(df, m) / df
        return mean + (rng.standard_normal((m, d)) @ L.T) / np.sqrt(g)[:, None]

    def smoothed(log_w):
        log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
        finite = np.isfinite(log_w)
        out = np.full(log_w.shape, -np.inf)
        lw, k = az.psislw(log_w[finite] - log_w[finite].max())
        out[finite] = lw
        return np.exp(out - out.max()) / np.exp(out - out.max()).sum(), float(np.asarray(k))

    # stage k draws n_k points from the equal mixture of the proposals so far, then adds a t
    # matched to the weighted moments of everything drawn; weights use the deterministic mixture
    # of all stages (the balance heuristic), so every draw keeps a valid weight.
    proposals = [(z_map, L0)]
    sizes = [max(d + 2, n // 4), max(d + 2, n // 4), max(d + 2, n - 2 * (n // 4))]
    Zs, Us, stage_mix = [], [], []

    def log_q(Z):
        comps = [_t_logpdf(Z, m, L, df) for m, L in proposals]
        total = sum(sizes[:len(stage_mix)])
        terms = []
        for j, (m_j, k_j) in enumerate(stage_mix):      # stage j: size m_j, mixture of its first k_j proposals
            for c in range(k_j):
                terms.append(np.log(m_j / total / k_j) + comps[c])
        return np.logaddexp.reduce(np.stack(terms), axis=0)

    for k, m_k in enumerate(sizes):
        which = rng.integers(0, len(proposals), m_k)
        Z_k = np.empty((m_k, d))
        for c, (mean, L) in enumerate(proposals):
            sel = which == c
            Z_k[sel] = draw(mean, L, int(sel.sum()))
        U_k, _ = potential(Z_k)
        Zs.append(Z_k)
        Us.append(U_k)
        stage_mix.append((m_k, len(proposals)))
        if k == len(sizes) - 1:
            break
        Z, U = np.concatenate(Zs), np.concatenate(Us)
        W, _ = smoothed(-U - log_q(Z))
        m1 = W @ Z
        C1 = (Z - m1).T @ ((Z - m1) * W[:, None]) + 1e-6 * np.eye(d)
        try:
            proposals.append((m1, np.linalg.cholesky(1.2 * C1)))
        except np.linalg.LinAlgError:
            pass
    Z, U = np.concatenate(Zs), np.concatenate(Us)
    log_q = log_q(Z)
    W, khat = smoothed(-U - log_q)
    ess = float(1.0 / np.sum(W ** 2))
    positions = (rng.random() + np.arange(keep)) / keep
    pick = np.minimum(np.searchsorted(np.cumsum(W), positions), Z.shape[0] - 1)
    mean = W @ Z
    sd = np.sqrt(np.maximum(W @ (Z - mean) ** 2, 0.0))
    return Z[pick], {"khat": khat, "ess": ess, "draws": int(Z.shape[0]), "mean": mean, "sd": sd, "axes": axes}


@dataclass
class FitState:
    model: FidelityModel
    method: str
    options: dict
    blocks: list
    z_base: torch.Tensor
    notes: list
    timings: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ helpers
    @property
    def linearised(self) -> bool:
        """laplace in the joint scheme with ``predictive="linearised"``: the mean at the MAP, the variance
        widened by the hyperparameters' Laplace covariance; the default ``mixture`` mixes the
        importance-sampled draws instead (the recursive scheme always does)."""
        return (self.method == "laplace" and self.model.problem.scheme == "joint"
                and self.options.get("predictive", "mixture") == "linearised")

    def block_of(self, level: str) -> BlockFit | None:
        return next((b for b in self.blocks if level in b.levels), None)

    def ancestors_with_blocks(self, level: str) -> list[str]:
        """Levels below ``level`` (transitively) that have their own block (recursive scheme)."""
        problem = self.model.problem
        out, stack = [], list(problem.level(level).lower)
        while stack:
            j = stack.pop()
            if j in out:
                continue
            if self.block_of(j) is not None:
                out.append(j)
            else:
                stack += list(problem.level(j).lower)
        return out

    def plugin_mean(self, level: str, X: torch.Tensor) -> torch.Tensor:
        """The posterior mean of a level at X with the levels below plugged in at their means."""
        fixed = {j: self.plugin_mean(j, X) for j in self.ancestors_with_blocks(level)}
        b = self.block_of(level)
        with torch.no_grad():
            if b is None:
                env, _ = self.model.unpack(self.z_base)
                mean, inst = self.model.evaluate(level, X, env, fixed, joint=False)
                return mean
            means = [self._block_moments(b, i, level, X, fixed)[0] for i in range(len(b.zs))]
        return torch.stack(means).mean(0)

    def _block_moments(self, b: BlockFit, i: int, level: str, X: torch.Tensor, fixed: dict, cov: bool = False):
        """Mean and variance (or covariance) of a level at X from draw i of a block."""
        model = self.model
        env, (L, alpha, r, mean_tr, inst_tr, offs_tr, noise) = b.state(i)
        mean, inst = model.evaluate(level, X, env, fixed, joint=b.block.joint)
        n = X.shape[0]
        N = alpha.shape[0]
        if not inst:
            zero = torch.zeros(n, n, dtype=DTYPE) if cov else torch.zeros(n, dtype=DTYPE)
            return mean, zero
        zeros = [0] * len(inst)
        v = covariance(model, inst_tr, offs_tr, N, inst, zeros, n) if inst_tr else torch.zeros(N, n, dtype=DTYPE)
        m = mean + v.T @ alpha
        w = torch.linalg.solve_triangular(L, v, upper=False)
        if cov:
            prior = covariance(model, inst, zeros, n)
            return m, prior - w.T @ w
        prior = covariance(model, inst, zeros, n, diag=True)
        return m, torch.clamp(prior - (w ** 2).sum(0), min=0.0)

    # -------------------------------------------------------------- prediction
    def predict(self, level: str, X: torch.Tensor, samples: int | None = None, seed: int = 0, chunk: int = 20000):
        """(mean, variance, samples or None) of a level at X (n, d)."""
        problem = self.model.problem
        with torch.no_grad():
            if problem.scheme == "joint" and self.linearised:
                b = self.blocks[0].linear()
                ms, vs = zip(*[self._block_moments(b, i, level, X, {}) for i in range(len(b.zs))])
                mean, var, _ = linearised(torch.stack(ms), torch.stack(vs))
                draws = None
                if samples:
                    gen = torch.Generator(device="cpu").manual_seed(seed)
                    draws = mean + var.sqrt() * torch.randn(samples, X.shape[0], generator=gen, dtype=DTYPE)
                return mean, var, draws
            if problem.scheme == "joint":
                b = self.blocks[0]
                ms, vs = [], []
                for i in range(len(b.zs)):
                    m, v = self._block_moments(b, i, level, X, {})
                    ms.append(m)
                    vs.append(v)
                M, V = torch.stack(ms), torch.stack(vs)
                mean = M.mean(0)
                var = V.mean(0) + M.var(0, unbiased=False)
                draws = None
                if samples:
                    gen = torch.Generator(device="cpu").manual_seed(seed)
                    k = torch.randint(0, M.shape[0], (samples, X.shape[0]), generator=gen)
                    eps = torch.randn(samples, X.shape[0], generator=gen, dtype=DTYPE)
                    idx = torch.arange(X.shape[0])
                    draws = M[k, idx] + V[k, idx].sqrt() * eps
                return mean, var, draws
            S = samples or problem.samples
            means, vars_, draws = [], [], []
            for start in range(0, X.shape[0], max(1, chunk // S)):
                Xc = X[start:start + max(1, chunk // S)]
                m, v, d = self._propagate(level, Xc, S, seed + start)
                means.append(m)
                vars_.append(v)
                draws.append(d)
            return torch.cat(means), torch.cat(vars_), torch.cat(draws, dim=1)

    def _propagate(self, level: str, X: torch.Tensor, S: int, seed: int):
        """Monte Carlo through the levels (recursive scheme): S joint draws of every level per point."""
        problem = self.model.problem
        gen = torch.Generator(device="cpu").manual_seed(seed)
        n = X.shape[0]
        Xr = X.repeat(S, 1)                   # (S*n, d): sample s of point j at row s*n + j
        needed = self._needed(level)
        values: dict[str, torch.Tensor] = {}
        last = None
        for lv in problem.levels:
            if lv.name not in needed:
                continue
            fixed = {j: values[j] for j in self.ancestors_with_blocks(lv.name)}
            b = self.block_of(lv.name)
            if b is None:
                env, _ = self.model.unpack(self.z_base)
                mean, _ = self.model.evaluate(lv.name, Xr, env, fixed, joint=False)
                var = torch.zeros_like(mean)
            else:
                D = len(b.zs)
                which = torch.arange(S).repeat_interleave(n) % D
                mean = torch.empty(S * n, dtype=DTYPE)
                var = torch.empty(S * n, dtype=DTYPE)
                for i in range(D):
                    sel = which == i
                    if not bool(sel.any()):
                        continue
                    m, v = self._block_moments(b, i, lv.name, Xr[sel], {k: t[sel] for k, t in fixed.items()})
                    mean[sel], var[sel] = m, v
            values[lv.name] = mean + var.sqrt() * torch.randn(S * n, generator=gen, dtype=DTYPE)
            last = (mean, var)
        mean, var = last
        M, V = mean.reshape(S, n), var.reshape(S, n)
        return M.mean(0), V.mean(0) + M.var(0, unbiased=False), values[level].reshape(S, n)

    def _needed(self, level: str) -> set[str]:
        problem = self.model.problem
        out, stack = set(), [level]
        while stack:
            j = stack.pop()
            if j not in out:
                out.add(j)
                stack += list(problem.level(j).lower)
        return out

    def covariance(self, level: str, X: torch.Tensor) -> torch.Tensor:
        """The posterior covariance of a level over X (joint scheme; averaged over draws)."""
        b = self.blocks[0]
        with torch.no_grad():
            if self.linearised:
                b = b.linear()
                ms, cs = zip(*[self._block_moments(b, i, level, X, {}, cov=True) for i in range(len(b.zs))])
                D = (torch.stack(ms[1::2]) - torch.stack(ms[2::2])) / (2 * LINEARISATION_STEP)
                return cs[0] + D.T @ D
            covs = [self._block_moments(b, i, level, X, {}, cov=True)[1] for i in range(len(b.zs))]
        return torch.stack(covs).mean(0)

    def noise_sd(self, level: str) -> float:
        """The noise sd of a level's first observed column (0 when it has no data)."""
        lv = self.model.problem.level(level)
        if not lv.data:
            return 0.0
        b = self.block_of(level) or self.blocks[0]
        env, _ = (b.linear() if self.linearised else b).state(0)
        with torch.no_grad():
            return float(self.model.noise[lv.data[0].name](env, 1, self.model.device)[0])

    # -------------------------------------------------------------------- LOO
    def leave_one_out(self) -> list[dict]:
        """Exact Gaussian leave-one-out predictions of every data row, given all other rows of its
        block (mixed over draws), summarised per observed column."""
        out = []
        for b in self.blocks:
            draws = b.linear() if self.linearised else b
            ms, vs = [], []
            with torch.no_grad():
                for i in range(len(draws.zs)):
                    env, (L, alpha, r, *_rest) = draws.state(i)
                    Cinv = torch.cholesky_inverse(L)
                    d = torch.diagonal(Cinv)
                    ms.append(b.block.y - alpha / d)
                    vs.append(1.0 / d)
            M, V = torch.stack(ms), torch.stack(vs)
            if self.linearised:
                mean, var, _ = linearised(M, V)
            else:
                mean = M.mean(0)
                var = V.mean(0) + M.var(0, unbiased=False)
            y = b.block.y
            for r, (lo, hi) in zip(b.block.rows, zip(b.block.offsets[:-1], b.block.offsets[1:])):
                res = (y[lo:hi] - mean[lo:hi]).numpy()
                sd = var[lo:hi].sqrt().numpy()
                z = res / sd
                out.append({"level": r.level, "data": r.name, "rows": int(hi - lo),
                            "rmse": float(np.sqrt(np.mean(res ** 2))), "mean_abs_z": float(np.mean(np.abs(z))),
                            "coverage95": float(np.mean(np.abs(z) <= 1.959964)),
                            "lpd": float(np.mean(-0.5 * z ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)))})
        return out


def candidate_points(problem, n: int, seed: int) -> np.ndarray:
    """n candidates over the inputs' box: a grid in 1-D, a scrambled Sobol sequence otherwise."""
    lo = np.array([a.lower for a in problem.inputs])
    hi = np.array([a.upper for a in problem.inputs])
    if len(lo) == 1:
        return np.linspace(lo[0], hi[0], n)[:, None]
    from scipy.stats import qmc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = qmc.Sobol(len(lo), scramble=True, seed=seed).random(n)
    return lo + u * (hi - lo)
