"""Inference for PDE models with physics-informed networks: ``run_pinn``.

Every method first trains the MAP: network weights and physical parameters together,
maximising log prior + every term's log likelihood (Adam, then L-BFGS).  Then:

* ``map``   — the trained point is the answer (one draw).
* ``svi``   — a Gaussian guide (mean-field, or low-rank plus diagonal) on the *unconstrained
  physical parameters*, fitted by the reparameterised ELBO while the network weights keep
  training as point estimates (variational EM).  The weights carry no uncertainty.
* ``laplace`` — ``network=all`` (the default): a Gaussian over every network weight and the
  physical parameters at the MAP, with the generalised Gauss-Newton curvature
  (``laplace_full.py``); the parameters' marginal lets the network re-fit the physics for each
  parameter value.  ``network=last_layer``: the hidden layers fixed, each network's last layer
  random (the field is linear in it, so that part is exact given the features); the log
  posterior of (parameters, last layers) is maximised by Newton's method and approximated by a
  Gaussian with the inverse Hessian as covariance.  ``network=fixed``: only the parameters.
* ``nuts``  — the fixed-feature posterior of ``network=last_layer`` (or ``fixed``), sampled exactly
  by NUTS (chains start from its Laplace approximation, whose covariance is the initial metric).
  With the features' derivatives cached at the collocation points a gradient costs one small
  matrix product per term, not a network pass.

Only ``laplace(network=all)`` carries the uncertainty of the hidden layers (to second order
around the MAP); the other schemes condition on the trained features and give intervals that
are too narrow when the physics residuals, thousands of them, pin the parameters through a
network that cannot move.  ``docs/pinn.md`` ("Calibration") has the measurements.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from msml_dsl.backends.pinn.collocation import interior_points, make_collocation, worst_points
from msml_dsl.backends.pinn.likelihood import PinnModel, residual_scores
from msml_dsl.backends.pinn.settings import PINN_INFER_OPTIONS, PINN_OPTIONS, resolve_options
from msml_dsl.backends.pinn.training import TrainingHistory, train


def run_pinn(ir, device: str = "cpu", method: str | None = None, options: dict | None = None,
             progress: Callable | None = None, solver_options: dict | None = None):
    """Fit a PDE model (``ir.pde`` with ``solver pinn``) and return a :class:`PinnFit`.

    ``method`` defaults to the file's ``infer`` method; ``options`` override the file's infer
    options, ``solver_options`` its ``solver pinn(...)`` options.  ``progress(step, total, loss)``
    is called every ``check_every`` training steps.
    """
    pde = ir.pde
    solver = resolve_options(PINN_OPTIONS, {**dict(pde.solver.options), **(solver_options or {})},
                             "solver pinn(...)")
    method = method or ir.inference.method
    if method not in PINN_INFER_OPTIONS:
        raise ValueError(f"infer {method}(...) is not available for PINN models; use "
                         f"{', '.join(PINN_INFER_OPTIONS)}")
    file_opts = dict(ir.inference.options) if ir.inference.method == method else {}
    opts = resolve_options(PINN_INFER_OPTIONS[method], {**file_opts, **(options or {})}, f"infer {method}(...)")
    torch.manual_seed(solver["seed"])
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = PinnModel(ir, device, solver)
    timings["build_s"] = time.perf_counter() - t0
    z = torch.nn.Parameter(model.params.initial(solver["seed"]))
    history = TrainingHistory()
    if method != "svi" or opts["pretrain"]:
        history = train_map(model, z, solver, progress)
    timings["map_s"] = time.perf_counter() - t0 - timings["build_s"]
    return posterior_from_map(ir, model, z, history, method, opts, solver, timings, progress)


def posterior_from_map(ir, model: PinnModel, z: torch.nn.Parameter, history: TrainingHistory, method: str,
                       opts: dict, solver: dict, timings: dict | None = None, progress: Callable | None = None):
    """The inference step of :func:`run_pinn` after MAP training (``z``: the trained physical parameters,
    the networks in ``model``); ``opts`` are the resolved options of ``method``.  Benchmarks call it to
    compare schemes on one trained network (rebuild the model and load the weights for each)."""
    from msml_dsl.backends.pinn.fit import PinnFit

    timings = dict(timings or {})
    z_map = z.detach().clone()
    z_point = z_map
    notes: list[str] = []
    stats: dict[str, np.ndarray] = {}
    linear = None
    t1 = time.perf_counter()
    if method == "map":
        model.freeze(random_heads=False)
        draws = z_map[None, None]
        heads = None
    elif method == "svi":
        draws, svi_loss, z_point = fit_svi(model, z, solver, opts, progress)
        notes.append(f"SVI: {opts['steps']} steps, final loss {svi_loss:.6g} (negative ELBO per point)")
        model.freeze(random_heads=False)
        draws = draws.reshape(4, -1, draws.shape[-1]) if draws.shape[0] % 4 == 0 else draws[None]
        heads = None
    elif method == "laplace" and opts["network"] == "all":
        from msml_dsl.backends.pinn.laplace_full import full_laplace, joint_draws

        res = full_laplace(model, z_map, opts)
        notes += res["notes"]
        gen = torch.Generator(device="cpu").manual_seed(int(opts["seed"]))
        z_draws, dw = joint_draws(res, opts["draws"], gen, model.device)
        C = 4 if opts["draws"] % 4 == 0 else 1
        draws = z_draws.reshape(C, -1, z_draws.shape[-1])
        heads = None
        linear = {"lin": res["lin"], "dw": dw, "data": res["data"]}
    else:
        model.freeze(random_heads=opts["network"] == "last_layer")
        mode, cov, lap_notes = laplace(model, z_map, opts)
        notes += lap_notes
        gen = torch.Generator(device="cpu").manual_seed(int(opts["seed"]))
        chol = torch.linalg.cholesky(cov)
        if method == "laplace":
            eps = torch.randn(opts["draws"], mode.shape[0], generator=gen, dtype=torch.float64).to(model.device)
            v = mode + eps @ chol.T
            v = v.reshape(4, -1, v.shape[-1]) if opts["draws"] % 4 == 0 else v[None]
        else:
            v, stats, nuts_notes = sample_nuts(model, mode, cov, opts, progress, gen)
            notes += nuts_notes
        D = model.params.dim
        draws, heads = v[..., :D], v[..., D:]
    timings["inference_s"] = time.perf_counter() - t1
    return PinnFit(ir, model, method, z_map, draws, heads, history, {"solver": solver, "infer": opts,
                   "method": method, "device": str(model.device)}, timings, notes, stats, z_point, linear)


def train_map(model: PinnModel, z: torch.nn.Parameter, solver: dict, progress=None) -> TrainingHistory:
    """Adam then L-BFGS on the negative log posterior (networks and physical parameters)."""
    pde = model.pde
    coll = pde.collocation
    n_total = model.n_points()
    extra: list[torch.Tensor] = []
    rounds = coll.adaptive_rounds if coll.adaptive else 0
    refine_at = {max(1, int(solver["adam_steps"] * (r + 1) / (rounds + 1))) for r in range(rounds)}

    def before(step: int):
        if coll.resample_every and step % coll.resample_every == 0:
            pts = make_collocation(pde, coll, model.device, model.dtype, draw=step // coll.resample_every)
            if extra:
                pts.interior = torch.cat([pts.interior, *extra])
            model.points = pts
        if step in refine_at:
            with torch.no_grad():
                _, elements, _, _ = model.params.transform(z.detach()[None])
            cand = torch.as_tensor(interior_points(pde, max(10 * coll.adaptive, 1000), "uniform",
                                                   coll.seed + 31 * step), dtype=model.dtype, device=model.device)
            new = worst_points(cand, residual_scores(model, elements, cand), coll.adaptive)
            extra.append(new)
            model.points.interior = torch.cat([model.points.interior, new])

    def loss_fn(phase: str) -> torch.Tensor:
        terms, log_prior, _, _ = model.log_terms(z[None], batch=solver["batch"] if phase == "adam" else 0,
                                                 create_graph=phase != "eval")
        return -(sum(terms.values()) + log_prior)[0] / n_total

    nets = [*model.networks.parameters()]
    params = nets + ([z] if z.numel() else [])
    hook = before if (coll.resample_every or refine_at) else None
    common = dict(lr=solver["lr"], tol=solver["tol"], check_every=solver["check_every"], lr_decay=solver["lr_decay"])
    adam, lbfgs = solver["adam_steps"], solver["lbfgs_steps"]
    freeze = solver.get("freeze_params", 0) if z.numel() else 0
    if freeze <= 0:
        return train(loss_fn, params, adam_steps=adam, lbfgs_steps=lbfgs, progress=progress, before_step=hook, **common)
    # Two stages: the networks alone (physical parameters at their start), then everything together.
    adam1, lbfgs1 = min(freeze, adam), min(max(0, freeze - adam), lbfgs)
    total = adam + lbfgs

    def shifted(offset):
        return None if progress is None else (lambda step, _total, loss: progress(offset + step, total, loss))

    first = train(loss_fn, nets, adam_steps=adam1, lbfgs_steps=lbfgs1, progress=shifted(0), before_step=hook,
                  **common)
    done = first.adam_steps + first.lbfgs_steps
    second = train(loss_fn, params, adam_steps=adam - adam1, lbfgs_steps=lbfgs - lbfgs1, progress=shifted(done),
                   before_step=None if hook is None else (lambda step: hook(step + adam1)), **common)
    return TrainingHistory(
        steps=first.steps + [done + s for s in second.steps], loss=first.loss + second.loss,
        phase=[f"{p} (parameters fixed)" for p in first.phase] + second.phase,
        adam_steps=first.adam_steps + second.adam_steps, lbfgs_steps=first.lbfgs_steps + second.lbfgs_steps,
        stopped_early=[f"{m} (parameters fixed)" for m in first.stopped_early] + second.stopped_early
        + [f"the physical parameters stayed at their starting values for the first {done} training steps "
           f"(freeze_params={freeze})"],
        seconds={"adam": first.seconds.get("adam", 0) + second.seconds.get("adam", 0),
                 "lbfgs": first.seconds.get("lbfgs", 0) + second.seconds.get("lbfgs", 0)})


def fit_svi(model: PinnModel, z: torch.nn.Parameter, solver: dict, opts: dict, progress=None):
    """Reparameterised-ELBO SVI with a Gaussian guide on the unconstrained physical parameters.

    Returns the guide's draws (draws, D), the final loss and the guide's mean.  The networks keep training as
    point estimates (their weights maximise the same ELBO).
    """
    D = z.shape[0]
    if D == 0:
        raise ValueError("infer svi needs at least one physical parameter")
    n_total = model.n_points()
    loc = torch.nn.Parameter(z.detach().clone())
    raw_scale = torch.nn.Parameter(torch.full((D,), math.log(math.expm1(0.05)), dtype=torch.float64,
                                              device=model.device))
    factor = torch.nn.Parameter(torch.zeros(D, opts["rank"], dtype=torch.float64, device=model.device)) \
        if opts["guide"] == "lowrank" else None
    gen_seed = int(opts["seed"])
    torch.manual_seed(gen_seed)

    def guide():
        scale = torch.nn.functional.softplus(raw_scale) + 1e-8
        if factor is None:
            return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
        return torch.distributions.LowRankMultivariateNormal(loc, factor, scale ** 2)

    guide_params = [loc, raw_scale] + ([factor] if factor is not None else [])
    opt = torch.optim.Adam([{"params": guide_params, "lr": opts["lr"] * 10},
                            {"params": list(model.networks.parameters()), "lr": opts["lr"]}])
    acc, count, last = None, 0, float("nan")
    every = solver["check_every"]
    for step in range(1, opts["steps"] + 1):
        opt.zero_grad(set_to_none=True)
        q = guide()
        zs = q.rsample((opts["particles"],))
        terms, log_prior, log_det, _ = model.log_terms(zs)
        elbo = (sum(terms.values()) + log_prior + log_det).mean() + q.entropy()
        loss = -elbo / n_total
        loss.backward()
        opt.step()
        acc = loss.detach() if acc is None else acc + loss.detach()
        count += 1
        if step % every == 0 or step == opts["steps"]:
            last = float(acc / count)
            acc, count = None, 0
            if progress is not None:
                progress(step, opts["steps"], last)
    with torch.no_grad():
        draws = guide().sample((opts["draws"],))
    return draws, last, loc.detach().clone()


def fixed_feature_log_density(model: PinnModel, v: torch.Tensor, prior_sd: float) -> torch.Tensor:
    """log p(z, heads | data, physics) + log|J| with the networks' features fixed, v (S, D + K)."""
    D = model.params.dim
    model.set_heads(v[:, D:] if v.shape[1] > D else None)
    terms, log_prior, log_det, _ = model.log_terms(v[:, :D], create_graph=False)
    total = sum(terms.values()) + log_prior + log_det
    if v.shape[1] > D:
        h = v[:, D:]
        total = total - 0.5 * (h / prior_sd).pow(2).sum(-1) - h.shape[1] * (math.log(prior_sd) + 0.5 * math.log(2 * math.pi))
    return total


def laplace(model: PinnModel, z_map: torch.Tensor, opts: dict, max_newton: int = 50):
    """Mode and covariance of the fixed-feature posterior by damped Newton from the MAP."""
    prior_sd = opts["last_layer_prior"]
    v = torch.cat([z_map.to(torch.float64), model.heads()]).detach()
    notes = []

    def neg(vv):
        return -fixed_feature_log_density(model, vv[None], prior_sd)[0]

    def grad_hess(vv):
        vv = vv.detach().requires_grad_(True)
        f = neg(vv)
        (g,) = torch.autograd.grad(f, vv)
        H = torch.autograd.functional.hessian(neg, vv.detach())
        return f.detach(), g.detach(), H.detach()

    f, g, H = grad_hess(v)
    for it in range(max_newton):
        evals, evecs = torch.linalg.eigh(H)
        floor = evals.abs().max() * 1e-10 + 1e-12
        step = evecs @ ((evecs.T @ g) / torch.clamp(evals, min=floor))
        t, accepted = 1.0, False
        for _ in range(30):
            cand = v - t * step
            fc = neg(cand).detach()
            if torch.isfinite(fc) and fc <= f + 1e-12 * abs(float(f)):
                accepted = True
                break
            t /= 2
        if not accepted:
            break
        v = cand
        f, g, H = grad_hess(v)
        if float((t * step).abs().max()) < 1e-9:
            break
    evals, evecs = torch.linalg.eigh(H)
    if bool((evals <= 0).any()):
        notes.append(f"Laplace: the Hessian had {int((evals <= 0).sum())} non-positive eigenvalue(s) at the mode; "
                     "they were floored (the posterior is flat or the mode was not reached in those directions)")
    floor = evals.abs().max() * 1e-10 + 1e-12
    cov = evecs @ torch.diag(1 / torch.clamp(evals, min=floor)) @ evecs.T
    cov = (cov + cov.T) / 2
    notes.append(f"Laplace at the fixed-feature mode ({it + 1} Newton step(s); {v.shape[0]} dimensions: "
                 f"{model.params.dim} physical, {v.shape[0] - model.params.dim} last-layer)")
    return v.detach(), cov, notes


def sample_nuts(model: PinnModel, mode, cov, opts, progress, gen):
    """NUTS on the fixed-feature posterior; chains start at Laplace draws, metric = its covariance."""
    from msml_dsl.inference.nuts import run_nuts

    prior_sd = opts["last_layer_prior"]
    C = opts["chains"]

    def potential_and_grad(z_np: np.ndarray):
        vv = torch.as_tensor(np.atleast_2d(z_np), dtype=torch.float64, device=model.device).requires_grad_(True)
        lp = fixed_feature_log_density(model, vv, prior_sd)
        finite = torch.isfinite(lp)
        (g,) = torch.autograd.grad(torch.where(finite, lp, torch.zeros_like(lp)).sum(), vv)
        u, gr = (-lp).detach().cpu().numpy(), (-g).detach().cpu().numpy()
        bad = ~np.isfinite(u) | ~np.isfinite(gr).all(axis=1)
        u[bad], gr[bad] = np.inf, 0.0
        return u, gr

    chol = torch.linalg.cholesky(cov)
    init = (mode + torch.randn(C, mode.shape[0], generator=gen, dtype=torch.float64).to(mode.device) @ chol.T)
    cov_np = cov.cpu().numpy()
    metric = opts["metric"]
    inv_metric = cov_np if metric == "dense" else np.diag(cov_np).copy()
    result = run_nuts(potential_and_grad, init.cpu().numpy(), warmup=opts["warmup"], draws=opts["draws"],
                      seed=opts["seed"], target_accept=opts["target_accept"], max_tree_depth=opts["max_tree_depth"],
                      metric=metric, inverse_metric=inv_metric, adapt_metric=opts["adapt_metric"],
                      progress=(lambda i, n, info: progress(i, n, float("nan"))) if progress else None)
    v = torch.as_tensor(result.positions, dtype=torch.float64, device=model.device)
    stats = {"lp": -result.potential_energy, "diverging": result.diverging, "tree_depth": result.tree_depth,
             "n_steps": result.n_leapfrog, "energy": result.energy, "acceptance_rate": result.accept_stat,
             "step_size": np.broadcast_to(result.step_size[:, None], result.diverging.shape).copy()}
    notes = [f"NUTS on the fixed-feature posterior: {C} chains, {opts['warmup']} warm-up + {opts['draws']} draws, "
             f"{int(result.diverging.sum())} divergences"]
    return v, stats, notes
