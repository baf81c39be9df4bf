"""Lotka–Volterra with the predation term unknown: how well is it learned, and do the forecasts cover the truth?

For each model (the sparse library `model.msml`, the network `network.msml` in
models/lotka_volterra_hidden) this fits the file's own inference settings (or `--method map`),
then measures against the simulation's truth (beta = 0.028, predation = 0.028 H L):

* the learned term's error over the observed range: the posterior-mean predation function
  evaluated along the true trajectory for t in [0, 12] (401 points), relative L2 error
  ||f_hat - f|| / ||f|| and the largest pointwise relative error;
* forecasts beyond the data: the 90 % band of the solved states H(t), L(t) (posterior draws of
  the ODE solution) and the 90 % posterior-predictive band (observation noise included) at the
  forecast rows t = 12.5, 13, ..., 20; the fraction of true values each band covers;
* sampler health: divergences, draws at the tree-depth limit, largest R-hat, smallest bulk ESS, time.

`--design` prints the evidence for the monthly data design: the least-squares beta of the correctly
specified model (alpha, beta, gamma, delta, H0, L0) and its standard error for half-yearly and
monthly counts over 12 years, with 5 % log-normal noise.

Run (single-threaded; NUTS takes minutes):
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=. python benchmarks/lotka_volterra_unknown.py library
    ... network [--method map]       ... --design
    ... network --file /tmp/variant.msml   (a variant of a file, e.g. another network size)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "models" / "lotka_volterra_hidden"
sys.path.insert(0, str(ROOT))


def load_module(path: Path, name: str):
    """A model folder's simulate.py under its own module name (every folder has a 'simulate')."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_sim = load_module(FOLDER / "simulate.py", "lotka_volterra_hidden_simulate")
ALPHA, BETA, DELTA, GAMMA, H0, L0 = _sim.ALPHA, _sim.BETA, _sim.DELTA, _sim.GAMMA, _sim.H0, _sim.L0
OBSERVED_UNTIL, truth = _sim.OBSERVED_UNTIL, _sim.truth

FILES = {"library": "model.msml", "network": "network.msml"}
SAVE = None  # --save: an .npz of the posterior draws and sampler statistics


def learned_term_error(term, draws: dict) -> dict:
    """Relative error of the posterior-mean term along the true trajectory over the observed years."""
    from msml_dsl.diagnostics.identified import term_values

    t = np.linspace(0.0, OBSERVED_UNTIL, 401)
    states = truth(t)
    h, l = states[:, 0], states[:, 1]
    values = term_values(term, draws, [h, l])            # (draws, points)
    mean = values.mean(axis=0)
    lo, hi = np.quantile(values, [0.05, 0.95], axis=0)
    true = BETA * h * l
    return {"rel_l2": float(np.linalg.norm(mean - true) / np.linalg.norm(true)),
            "max_rel": float(np.max(np.abs(mean - true) / true)),
            "band_covers": float(np.mean((lo <= true) & (true <= hi)))}


def forecast_coverage(compiled, draws: dict, seed: int = 1) -> dict:
    """Coverage of the true trajectory by 90 % bands at the empty rows after the data."""
    ir = compiled.ir
    names = [p.name for p in ir.parameters]
    n = len(next(iter(draws.values())))
    out = compiled.program.evaluate_draws({k: np.asarray(draws[k]) for k in names}, seed=seed)
    times = ir.ode.output_times
    future = times > OBSERVED_UNTIL + 1e-9
    grid, back = np.unique(np.concatenate([[0.0], times]), return_inverse=True)   # the truth from t = 0
    true = truth(grid)[back][1:]
    sol = out["solution"]                                  # (draws, times, states)
    lo, hi = np.quantile(sol, [0.05, 0.95], axis=0)
    state_cover = (lo[future] <= true[future]) & (true[future] <= hi[future])
    pred_cover = []
    for o, col in zip(ir.observations, (0, 1)):
        rows = np.searchsorted(times, o.times)
        ahead = times[rows] > OBSERVED_UNTIL + 1e-9
        pp = out["predictive"][o.name][:, ahead]
        plo, phi = np.quantile(pp, [0.05, 0.95], axis=0)
        truth_rows = true[rows[ahead], col]
        pred_cover.append((plo <= truth_rows) & (truth_rows <= phi))
    pred_cover = np.concatenate(pred_cover)
    width = np.median((hi[future] - lo[future]) / true[future])
    return {"draws": n, "points": int(state_cover.size), "state_cover": float(state_cover.mean()),
            "predictive_cover": float(pred_cover.mean()), "state_band_rel_width": float(width)}


def flat(posterior: dict) -> dict:
    return {k: np.asarray(v).reshape((-1,) + np.asarray(v).shape[2:]) for k, v in posterior.items()}


def sampler_health(fit) -> dict:
    import arviz as az

    s = fit.sample.sample_stats
    depth_limit = int(fit.sample.settings.get("max_tree_depth", 10))
    idata = fit.to_arviz()
    summary = az.summary(idata, var_names=[p.name for p in fit.model.ir.parameters], kind="diagnostics")
    out = {"divergent": float(np.mean(s["diverging"])), "at_depth_limit": float(np.mean(s["tree_depth"] >= depth_limit)),
           "mean_leapfrog": float(np.mean(s.get("n_steps", s.get("n_leapfrog", np.array([np.nan]))))),
           "max_rhat": float(summary["r_hat"].max()), "max_rhat_at": str(summary["r_hat"].idxmax()),
           "min_ess_bulk": float(summary["ess_bulk"].min()), "min_ess_at": str(summary["ess_bulk"].idxmin()),
           "worst": summary.sort_values("r_hat", ascending=False).head(8).to_string()}
    try:  # the unknown term's values on a grid of its inputs (what the user reads), judged like a parameter
        from msml_dsl.diagnostics.function_checks import function_diagnostics

        term = next(t for t in fit.model.ir.unknowns if t.name == "predation")
        f = function_diagnostics(term, {k: np.asarray(v) for k, v in fit.posterior.items()})
        K = f.n_coefficients
        out.update(function_rhat=float(np.nanmax(f.rhat[K:])), function_ess_bulk=float(np.nanmin(f.ess_bulk[K:])),
                   function_ess_tail=float(np.nanmin(f.ess_tail[K:])))
        if K:
            out.update(coefficient_rhat=dict(zip(f.column_labels[:K], np.round(f.rhat[:K], 3).tolist())),
                       coefficient_ess_bulk=dict(zip(f.column_labels[:K], np.round(f.ess_bulk[:K]).tolist())))
        rest = summary.loc[[i for i in summary.index if i.split("[", 1)[0] not in f.parameters]]
        out.update(rest_rhat=float(rest["r_hat"].max()), rest_rhat_at=str(rest["r_hat"].idxmax()),
                   rest_ess_bulk=float(rest["ess_bulk"].min()), rest_ess_at=str(rest["ess_bulk"].idxmin()))
    except Exception as exc:  # noqa: BLE001 - a benchmark line, not a result
        out["function_error"] = repr(exc)
    return out


def fit_file(path: Path, method: str | None, overrides: dict):
    """Compile and fit a model file with progress lines; (compiled, fit, flat draws, sampler health, times)."""
    from msml_dsl.api import compile_file

    t0 = time.perf_counter()
    compiled = compile_file(path)
    _ = compiled.program
    compile_s = time.perf_counter() - t0
    t1 = time.perf_counter()

    def progress(it, total, info):
        if it % 25 == 0 or it == total - 1:
            print(f"  {it + 1}/{total} {info['phase']}: tree depth {info['tree_depth']:.1f}, step {info['step_size']:.3g}, "
                  f"divergences {info['divergences']}, {time.perf_counter() - t1:.0f} s", flush=True)

    fit = compiled.run(progress=progress, **({"method": method} if method else {}), **overrides)
    fit_s = time.perf_counter() - t1
    if SAVE and hasattr(fit, "posterior"):
        s = fit.sample.sample_stats
        np.savez(SAVE, **{f"post_{k}": np.asarray(v) for k, v in fit.posterior.items()},
                 **{f"stat_{k}": np.asarray(v) for k, v in s.items()})
    if hasattr(fit, "posterior"):
        return compiled, fit, flat(fit.posterior), sampler_health(fit), compile_s, fit_s
    return compiled, fit, {k: np.asarray(v) for k, v in fit.draws.items()}, {}, compile_s, fit_s


def run(which: str, method: str | None, overrides: dict, path: Path | None = None) -> None:
    compiled, fit, draws, health, compile_s, fit_s = fit_file(path or FOLDER / FILES[which], method, overrides)
    term = next(t for t in compiled.ir.unknowns if t.name == "predation")
    err = learned_term_error(term, draws)
    cov = forecast_coverage(compiled, draws)
    label = f"{which} ({method or compiled.checked.inference.method})"
    print(f"\n| model | learned-term rel. L2 error | max rel. error | 90 % band covers f | forecast: state band covers "
          f"| forecast: predictive band covers | compile s | fit s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {label} | {err['rel_l2']:.2%} | {err['max_rel']:.2%} | {err['band_covers']:.0%} | "
          f"{cov['state_cover']:.0%} of {cov['points']} | {cov['predictive_cover']:.0%} | {compile_s:.0f} | {fit_s:.0f} |")
    if health:
        print(f"\nsampler: divergent {health['divergent']:.2%}, at tree-depth limit {health['at_depth_limit']:.2%}, "
              f"max R-hat {health['max_rhat']:.3f} ({health['max_rhat_at']}), min bulk ESS {health['min_ess_bulk']:.0f} "
              f"({health['min_ess_at']}; {health['min_ess_bulk'] / fit_s:.3f} per s of sampling), "
              f"mean leapfrog steps {health['mean_leapfrog']:.0f}")
        if "function_rhat" in health:
            print(f"predation on its 25-point input grid: max R-hat {health['function_rhat']:.3f}, "
                  f"min bulk ESS {health['function_ess_bulk']:.0f}, min tail ESS {health['function_ess_tail']:.0f}")
            print(f"parameters other than the term's: max R-hat {health['rest_rhat']:.3f} ({health['rest_rhat_at']}), "
                  f"min bulk ESS {health['rest_ess_bulk']:.0f} ({health['rest_ess_at']})")
            if "coefficient_rhat" in health:
                print(f"coefficients' R-hat {health['coefficient_rhat']}, bulk ESS {health['coefficient_ess_bulk']}")
        else:
            print(f"predation on its input grid: {health.get('function_error')}")
        print(health["worst"])
    print(f"forecast state band median relative width {cov['state_band_rel_width']:.2%}")
    for name in ("alpha", "gamma", "efficiency", "sigma"):
        v = draws[name]
        print(f"{name}: mean {np.mean(v):.4f} sd {np.std(v):.4f}")
    print(f"truth: alpha {ALPHA}, gamma {GAMMA}, efficiency {DELTA / BETA:.4f}, sigma 0.05")
    if hasattr(fit, "identified"):
        from msml_dsl.diagnostics.identified import format_identified

        terms = fit.identified()
        if terms:
            print(format_identified(terms))


def design() -> None:
    from scipy.integrate import solve_ivp
    from scipy.optimize import least_squares

    p_true = np.array([ALPHA, BETA, GAMMA, DELTA, H0, L0])

    def sim(p, t):
        a, b, g, d, h0, l0 = p
        sol = solve_ivp(lambda _, z: [a * z[0] - b * z[0] * z[1], -g * z[1] + d * z[0] * z[1]], (0, t.max()),
                        [h0, l0], t_eval=t, rtol=1e-10, atol=1e-10)
        return sol.y.T

    print("| design | counts | least-squares beta error, 8 noise draws (median abs, max abs) | standard error |")
    print("| --- | --- | --- | --- |")
    for label, t in (("half-yearly", np.arange(0, 12.001, 0.5)), ("monthly", np.arange(0, 145) / 12.0)):
        errs = []
        for seed in range(8):
            rng = np.random.default_rng(seed)
            y = np.log(sim(p_true, t)) + 0.05 * rng.normal(size=(len(t), 2))
            r = least_squares(lambda p: (np.log(sim(p, t)) - y).ravel(), p_true,
                              x_scale=[0.1, 0.005, 0.1, 0.005, 5, 1])
            errs.append(abs(r.x[1] / BETA - 1))
        cov = np.linalg.inv(r.jac.T @ r.jac) * 0.05 ** 2
        print(f"| {label} | {len(t)} | {np.median(errs):.1%}, {np.max(errs):.1%} | {np.sqrt(cov[1, 1]) / BETA:.1%} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=["library", "network", "design"])
    ap.add_argument("--method", choices=["nuts", "map"], default=None)
    ap.add_argument("--chains", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--draws", type=int)
    ap.add_argument("--target-accept", type=float)
    ap.add_argument("--metric", choices=["diag", "dense"])
    ap.add_argument("--centring", type=float, help="the horseshoe's HORSESHOE_CENTRING (0 non-centred, 0.5 default)")
    ap.add_argument("--warmup-metric", choices=["laplace", "identity"], default="laplace",
                    help="the warm-up's first metric for models with unknown terms (identity: as Stan)")
    ap.add_argument("--save", help="write the draws and sampler statistics to this .npz")
    ap.add_argument("--file", type=Path, help="fit this model file instead of the named one (same measurements)")
    args = ap.parse_args()
    SAVE = args.save
    if args.centring is not None:
        import msml_dsl.symbolic.unknown_terms as _ut

        _ut.HORSESHOE_CENTRING = args.centring
    if args.warmup_metric == "identity":
        import msml_dsl.inference.runner as _runner

        _runner._laplace_metric = lambda *a, **k: None
    if args.which == "design":
        design()
    else:
        over = {k: v for k, v in dict(chains=args.chains, warmup=args.warmup, draws=args.draws,
                                      target_accept=args.target_accept, metric=args.metric).items() if v is not None}
        run(args.which, args.method, over, args.file)
