"""Calibration of the network posteriors: do the intervals of each Laplace scheme cover the truth?

One MAP training per data set, then every scheme from the same trained networks (the model is
rebuilt and the weights loaded for each, so the schemes differ only in what they treat as random):

* ``fixed``       — the networks fixed at the MAP, Laplace on the physical parameters;
* ``last_layer``  — each network's last layer random too (the features fixed);
* ``all``         — every weight random, a Gauss-Newton Laplace jointly with the parameters
                    (``backends/pinn/laplace_full.py``; the default of ``infer laplace``).

Data sets: Burgers with 1 % noise (``models/burgers/burgers.csv``, the file's own settings) and
Fisher-KPP with the network (the settings of benchmarks/pde_models.py) on its own data and on
``--replicates`` fresh noise draws of the same reference solution (seeds 1, 2, ...). For each
parameter: the 94 % interval (3 % and 97 % quantiles of 2,000 draws), whether it holds the
truth, and its width.  The totals count intervals that hold the truth, over parameters and data sets.

    python benchmarks/pinn_calibration.py [--models fisher_kpp,burgers] [--replicates 4] [--threads 1]
                                          [--quick] [--json out.json]

``--quick`` trains for a few hundred steps (a smoke run: its numbers are not results).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pde_models import PARAMETERS, QUICK_STEPS, TRUTH, model_text, simulate_module  # noqa: E402

SCHEMES = ("fixed", "last_layer", "all")


def replicate_csv(seed: int, folder: Path) -> Path:
    """fisher_kpp.csv with a fresh noise draw (the reference solution of models/fisher_kpp/simulate.py)."""
    sim = simulate_module("fisher_kpp")
    rng = np.random.default_rng(seed)
    x, u = sim.reference(sim.TIMES)
    lines = ["day,position_mm,density"]
    for k, t in enumerate(sim.TIMES):
        truth = np.interp(sim.PROBES, x, u[k])
        for xi, ui in zip(sim.PROBES, truth):
            lines.append(f"{t:g},{xi:g},{ui + sim.SIGMA_TRUE * rng.normal():.5f}")
    path = folder / "fisher_kpp.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def calibrate(name: str, base_dir: Path, quick: bool, device: str = "cpu") -> dict:
    import torch

    import msml_dsl
    from msml_dsl.backends.pinn.inference import posterior_from_map, train_map
    from msml_dsl.backends.pinn.likelihood import PinnModel
    from msml_dsl.backends.pinn.settings import PINN_INFER_OPTIONS, PINN_OPTIONS, resolve_options

    text = model_text(name, "pinn", quick)
    model = msml_dsl.compile_source(text, "model.msml", device=device, base_dir=base_dir)
    ir = model.ir
    solver = resolve_options(PINN_OPTIONS, {**dict(ir.pde.solver.options), **(QUICK_STEPS if quick else {})},
                             "solver pinn(...)")
    torch.manual_seed(solver["seed"])
    t0 = time.perf_counter()
    pm = PinnModel(ir, device, solver)
    z = torch.nn.Parameter(pm.params.initial(solver["seed"]))
    history = train_map(pm, z, solver)
    train_s = time.perf_counter() - t0
    state = {k: v.detach().clone() for k, v in pm.networks.state_dict().items()}
    out = {"model": name, "train_s": train_s, "steps": f"{history.adam_steps}+{history.lbfgs_steps}", "schemes": {}}
    for scheme in SCHEMES:
        t1 = time.perf_counter()
        torch.manual_seed(solver["seed"])
        fresh = PinnModel(ir, device, solver)
        fresh.networks.load_state_dict(state)
        opts = resolve_options(PINN_INFER_OPTIONS["laplace"], {"draws": 2000, "network": scheme}, "laplace")
        fit = posterior_from_map(ir, fresh, z, history, "laplace", opts, solver)
        row = {"seconds": time.perf_counter() - t1, "notes": fit.notes}
        for p in PARAMETERS[name]:
            v = fit.posterior[p].ravel()
            lo, hi = (float(q) for q in np.quantile(v, [0.03, 0.97]))
            truth = TRUTH[name][p]
            row[p] = {"map": float(fit.map_values[p]), "lo": lo, "hi": hi, "sd": float(v.std()),
                      "covers": bool(lo <= truth <= hi)}
        out["schemes"][scheme] = row
    return out


def table(results: list[dict]) -> str:
    lines = [f"{'data':<22} {'param':<8} {'truth':>9} {'MAP':>10} " +
             " ".join(f"{s + ' 94% interval':>30} {'in':>3}" for s in SCHEMES)]
    totals = {s: [0, 0] for s in SCHEMES}
    for r in results:
        for p in PARAMETERS[r["model"]]:
            cells = []
            for s in SCHEMES:
                c = r["schemes"][s][p]
                interval = "[{:.5g}, {:.5g}]".format(c["lo"], c["hi"])
                cells.append(f"{interval:>30} {'yes' if c['covers'] else 'NO':>3}")
                totals[s][0] += c["covers"]
                totals[s][1] += 1
            m = r["schemes"][SCHEMES[0]][p]["map"]
            lines.append(f"{r['label']:<22} {p:<8} {TRUTH[r['model']][p]:>9.5g} {m:>10.5g} " + " ".join(cells))
    lines.append("intervals holding the truth: " + ", ".join(f"{s} {a}/{b}" for s, (a, b) in totals.items()))
    ratios = []
    for p in sorted({p for r in results for p in PARAMETERS[r["model"]]}):
        rs = [r["schemes"]["all"][p]["sd"] / r["schemes"]["last_layer"][p]["sd"] for r in results
              if p in r["schemes"]["all"]]
        ratios.append(f"{p} {np.median(rs):.3g}")
    lines.append("sd of all / sd of last_layer (median over data sets): " + ", ".join(ratios))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="fisher_kpp,burgers")
    ap.add_argument("--replicates", type=int, default=4, help="fresh Fisher-KPP noise draws besides the file's")
    ap.add_argument("--replicates-only", action="store_true", help="skip the models' own data files")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = []
    for name in args.models.split(","):
        sets = [] if args.replicates_only else [("file", ROOT / "models" / name)]
        if name == "fisher_kpp":
            sets += [(f"noise seed {k}", None) for k in range(1, args.replicates + 1)]
        for label, folder in sets:
            with tempfile.TemporaryDirectory() as tmp:
                if folder is None:
                    replicate_csv(int(label.split()[-1]), Path(tmp))
                    folder = Path(tmp)
                r = calibrate(name, folder, args.quick)
            r["label"] = f"{name} ({label})"
            results.append(r)
            print(f"{r['label']}: trained {r['steps']} steps in {r['train_s']:.0f} s; "
                  + "; ".join(f"{s} {r['schemes'][s]['seconds']:.1f} s" for s in SCHEMES), flush=True)
            print(table([r]), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
