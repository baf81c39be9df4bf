"""Fisher–KPP with its reaction term unknown: how well is growth(u) learned?

Fits models/fisher_kpp_hidden/model.msml (its own settings, or `--method map`) and measures
against the simulation's truth, growth(u) = 0.3 u (1 - u), D = 0.05:

* the learned reaction's error over the observed range of u (0 to the largest noise-free density
  the probes saw, 200 points): relative L2 error of the posterior-mean term, its largest error as
  a fraction of the truth's maximum (r/4 = 0.075 /day), and how much of the truth the 90 % band
  covers;
* the proliferation rate read off the learned term, growth'(0) (truth r = 0.3), and D;
* the identified equation, sampler health and time.

Run (single-threaded; NUTS takes tens of minutes on the shared machine):
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fisher_kpp_unknown.py [--method map]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "models" / "fisher_kpp_hidden"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lotka_volterra_unknown import fit_file, load_module  # noqa: E402

_sim = load_module(FOLDER / "simulate.py", "fisher_kpp_hidden_simulate")
D_TRUE, PROBES, R_TRUE, TIMES, growth, reference = (_sim.D_TRUE, _sim.PROBES, _sim.R_TRUE, _sim.TIMES, _sim.growth,
                                                    _sim.reference)


def observed_range() -> tuple[float, float]:
    x, u = reference(TIMES)
    probed = np.array([np.interp(PROBES, x, row) for row in u])
    return 0.0, float(probed.max())


def reaction_error(term, draws: dict) -> dict:
    from msml_dsl.diagnostics.identified import term_values

    lo, hi = observed_range()
    u = np.linspace(lo, hi, 200)
    values = term_values(term, draws, [u])
    mean = values.mean(axis=0)
    band = np.quantile(values, [0.05, 0.95], axis=0)
    true = growth(u)
    slope = term_values(term, draws, [np.array([1e-6])])[:, 0] / 1e-6
    return {"range": (lo, hi), "rel_l2": float(np.linalg.norm(mean - true) / np.linalg.norm(true)),
            "max_err_of_peak": float(np.max(np.abs(mean - true)) / (R_TRUE / 4)),
            "band_covers": float(np.mean((band[0] <= true) & (true <= band[1]))),
            "r_mean": float(slope.mean()), "r_sd": float(slope.std())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["nuts", "map"], default=None)
    ap.add_argument("--chains", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--draws", type=int)
    args = ap.parse_args()
    over = {k: v for k, v in dict(chains=args.chains, warmup=args.warmup, draws=args.draws).items() if v is not None}
    compiled, fit, draws, health, compile_s, fit_s = fit_file(FOLDER / "model.msml", args.method, over)
    term = compiled.ir.unknowns[0]
    err = reaction_error(term, draws)
    d = np.asarray(draws["D"])
    label = args.method or compiled.checked.inference.method
    print("\n| fit | u range | growth rel. L2 error | max error / peak | 90 % band covers | growth'(0) (r = 0.3) "
          "| D (0.05) | compile s | fit s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {label} | [0, {err['range'][1]:.3f}] | {err['rel_l2']:.2%} | {err['max_err_of_peak']:.2%} | "
          f"{err['band_covers']:.0%} | {err['r_mean']:.4f} ± {err['r_sd']:.4f} | {d.mean():.4f} ± {d.std():.4f} | "
          f"{compile_s:.0f} | {fit_s:.0f} |")
    print(f"truth: D = {D_TRUE}, r = {R_TRUE}")
    if health:
        print(f"sampler: divergent {health['divergent']:.2%}, at tree-depth limit {health['at_depth_limit']:.2%}, "
              f"max R-hat {health['max_rhat']:.3f}, min bulk ESS {health['min_ess_bulk']:.0f}")
    from msml_dsl.diagnostics.identified import format_identified

    print(format_identified(fit.identified()))


if __name__ == "__main__":
    main()
