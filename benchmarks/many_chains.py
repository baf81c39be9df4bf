"""Many chains in one batch: ChEES-HMC's total ESS per second against the number of chains.

The issue's GPU target: with 1,024 chains on a GPU, total ESS per second at least 10 times the CPU
figure. This script fits one model (Lotka-Volterra on the lynx-hare data by default) with

* the CPU baseline: msml's NUTS, 4 chains x (1000 + 1000), compiled density (numba);
* ChEES-HMC (``method="chees"``: chains in lockstep, superchains for nested R-hat) with each
  number of chains in ``--chains``, on ``--device`` (``cuda``: the Pyro program with the batched
  torch solver; ``cpu``: the compiled density);

and prints, per row: wall time (compilation separately), draws, minimum bulk ESS over the
parameters (all chains pooled), ESS per second, nested R-hat (ChEES) or R-hat (NUTS), divergences
and the ratio to the CPU baseline. Run it where a GPU is lent:

    python benchmarks/many_chains.py --device cuda --chains 64,256,1024

``--device cpu --chains 16,64 --warmup 100 --draws 100`` exercises the script without a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {"lv": ROOT / "models" / "lotka_volterra" / "model.msml", "sir": ROOT / "models" / "sir_influenza" / "model.msml"}


def summarise(model, fit, wall: float, compile_s: float) -> dict:
    from msml_dsl.diagnostics import ess_bulk, rhat

    data = fit.to_arviz()
    params = [p.name for p in model.ir.parameters]
    ess = {k: v for k, v in ess_bulk(data).items() if k.split("[")[0] in params}
    nested = fit.sample.nested_rhat
    rh = max(nested.values()) if nested else max(v for k, v in rhat(data).items() if k.split("[")[0] in params)
    stats = fit.sample.sample_stats
    return {"wall_s": wall, "compile_s": compile_s, "draws": int(stats["diverging"].size),
            "min_ess": min(ess.values()), "rhat": rh, "divergences": int(np.sum(stats["diverging"]))}


def run(path: Path, device: str, method: str, chains: int, warmup: int, draws: int, seed: int) -> dict:
    import msml_dsl

    t0 = time.perf_counter()
    model = msml_dsl.compile_file(path, device=device)
    _ = model.program
    compile_s = time.perf_counter() - t0
    kwargs = {"superchains": min(8, chains)} if method == "chees" else {}
    fit = model.sample(chains=chains, warmup=warmup, draws=draws, seed=seed, method=method, **kwargs)
    return summarise(model, fit, time.perf_counter() - t0, compile_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="lv")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--chains", default="64,256,1024", help="ChEES chain counts")
    ap.add_argument("--warmup", type=int, default=500, help="ChEES warm-up iterations")
    ap.add_argument("--draws", type=int, default=250, help="ChEES draws per chain")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true", help="skip the CPU NUTS baseline")
    args = ap.parse_args()
    path = MODELS[args.model]
    rows = []
    if not args.no_baseline:
        rows.append(("cpu", "nuts", 4, run(path, "cpu", "nuts", 4, 1000, 1000, args.seed)))
    for n in (int(c) for c in args.chains.split(",")):
        rows.append((args.device, "chees", n, run(path, args.device, "chees", n, args.warmup, args.draws, args.seed)))
    base = rows[0][3]["min_ess"] / rows[0][3]["wall_s"] if not args.no_baseline else None
    header = (f"{'device':<7} {'sampler':<7} {'chains':>6} {'wall s':>8} {'compile s':>9} {'draws':>8} {'min ESS':>8} "
              f"{'ESS/s':>8} {'R-hat':>6} {'div':>5} {'x CPU':>6}")
    print(f"{args.model}: total ESS per second against the number of chains")
    print(header)
    print("-" * len(header))
    for device, sampler, n, r in rows:
        rate = r["min_ess"] / r["wall_s"]
        ratio = f"{rate / base:6.2f}" if base else "     -"
        print(f"{device:<7} {sampler:<7} {n:>6} {r['wall_s']:>8.1f} {r['compile_s']:>9.1f} {r['draws']:>8} "
              f"{r['min_ess']:>8.0f} {rate:>8.2f} {r['rhat']:>6.3f} {r['divergences']:>5} {ratio}")


if __name__ == "__main__":
    main()
