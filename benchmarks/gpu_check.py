"""GPU readiness: the PDE backends on CUDA against the CPU (one short prepared script, < 5 min on an H200).

When CUDA is absent it says so and exits 0.  With CUDA it runs, on each of two devices
(``--devices cpu,cuda``):

1. consistency at the start: the Burgers model's negative log posterior and its gradient with the
   same initial network, float32 (relative difference below 1e-4);
2. the Burgers forward problem (nu = 0.01/pi, 8 x 20 tanh, 3,000 collocation points, Adam then
   L-BFGS): the relative L2 error against Cole-Hopf on the 256 x 100 grid, and time;
3. the Burgers inverse problem from ``models/burgers/burgers.csv`` (1 % noise) through the model
   file: MAP and ``laplace(network=all)``, lambda1 and lambda2 (MAP and 94 % interval), and time;
4. the Fisher-KPP model by the method of lines (51 nodes) with NUTS through the model file:
   posterior means and sds, and time.

Agreement: the start within 1e-4; after training, which float32 rounding on two devices sends
down different paths, the forward errors within a factor 3 of each other, lambda1 within 0.5 %
and lambda2 within 5 % of each other, the NUTS means within 4 combined Monte Carlo standard
errors.  Exit code 1 when a check fails, 0 otherwise.

    python benchmarks/gpu_check.py [--devices cpu,cuda] [--quick] [--threads 16]

``--devices cpu,cpu --quick`` exercises the script where there is no GPU.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELS = ROOT / "models"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def start_consistency(devices) -> dict:
    """Loss and gradient of the Burgers model at the initial weights on each device."""
    import msml_dsl
    from msml_dsl.backends.pinn.likelihood import PinnModel
    from msml_dsl.backends.pinn.settings import PINN_OPTIONS, resolve_options

    text = (MODELS / "burgers" / "model.msml").read_text()
    out = []
    for dev in devices:
        model = msml_dsl.compile_source(text, "model.msml", device=dev, base_dir=MODELS / "burgers")
        solver = resolve_options(PINN_OPTIONS, dict(model.ir.pde.solver.options), "solver")
        torch.manual_seed(0)
        pm = PinnModel(model.ir, dev, solver)
        z = torch.nn.Parameter(pm.params.initial(0))
        terms, log_prior, _, _ = pm.log_terms(z[None])
        loss = -(sum(terms.values()) + log_prior)[0] / pm.n_points()
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1).double().cpu() for p in pm.networks.parameters()] + [z.grad.cpu()])
        out.append((float(loss.detach()), grads))
    (l0, g0), (l1, g1) = out
    rel_loss = abs(l0 - l1) / abs(l0)
    rel_grad = float((g0 - g1).norm() / g0.norm())
    return {"loss": (l0, l1), "rel_loss": rel_loss, "rel_grad": rel_grad, "ok": rel_loss < 1e-4 and rel_grad < 1e-4}


def forward(dev: str, quick: bool, threads: int) -> dict:
    import pinn_burgers

    args = argparse.Namespace(points=3000, adam=300 if quick else 1500, lbfgs=100 if quick else 500,
                              dtype="float32", device=dev, every=10**9, threads=threads)
    _sync(dev)
    t0 = time.perf_counter()
    out = pinn_burgers.forward_problem(args)
    _sync(dev)
    out["seconds"] = time.perf_counter() - t0
    return out


def inverse(dev: str, quick: bool) -> dict:
    import msml_dsl

    text = (MODELS / "burgers" / "model.msml").read_text()
    text = re.sub(r"^infer .*$", "infer laplace(draws=1000, network=all)", text, flags=re.M)
    model = msml_dsl.compile_source(text, "model.msml", device=dev, base_dir=MODELS / "burgers")
    steps = {"adam_steps": 300, "lbfgs_steps": 100} if quick else {"adam_steps": 800, "lbfgs_steps": 800}
    _sync(dev)
    t0 = time.perf_counter()
    fit = model.run(solver_options=steps)
    _sync(dev)
    out = {"seconds": time.perf_counter() - t0, "steps": f"{fit.history.adam_steps}+{fit.history.lbfgs_steps}"}
    for p in ("lambda1", "lambda2"):
        d = fit.posterior[p].ravel()
        out[p] = float(fit.map_values[p])
        out[p + "_94"] = tuple(float(q) for q in np.quantile(d, [0.03, 0.97]))
    return out


def mol_nuts(dev: str, quick: bool) -> dict:
    import msml_dsl

    text = (MODELS / "fisher_kpp" / "model.msml").read_text()
    text = re.sub(r"^solver .*$", "solver mol(points=51, method=rk45, rtol=1e-6, atol=1e-8)", text, flags=re.M)
    model = msml_dsl.compile_source(text, "model.msml", device=dev, base_dir=MODELS / "fisher_kpp")
    n = 100 if quick else 200
    _sync(dev)
    t0 = time.perf_counter()
    fit = model.sample(chains=4, warmup=n, draws=n, seed=1)
    _sync(dev)
    table = fit.summary_table()
    out = {"seconds": time.perf_counter() - t0}
    for p in ("D", "r", "sigma"):
        row = table.loc[p]
        out[p] = (float(row["mean"]), float(row["sd"]), float(row["mcse_mean"]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--quick", action="store_true", help="few steps: checks the script, not the devices")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    devices = args.devices.split(",")
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; nothing to check (exit 0)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if any(d.startswith("cuda") for d in devices):
        print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}; CPU threads {torch.get_num_threads()}")
    failures = []
    t_all = time.perf_counter()

    c = start_consistency(devices)
    print(f"\n1. start: loss {c['loss'][0]:.8g} vs {c['loss'][1]:.8g} (relative {c['rel_loss']:.2e}), "
          f"gradient relative difference {c['rel_grad']:.2e}: {'ok' if c['ok'] else 'FAIL'}", flush=True)
    if not c["ok"]:
        failures.append("start")

    f = [forward(d, args.quick, args.threads or torch.get_num_threads()) for d in devices]
    a, b = (r["rel_l2"] for r in f)
    ok = max(a, b) / min(a, b) < 3
    print("\n2. Burgers forward   " + "   ".join(f"{d}: rel L2 {r['rel_l2']:.3e}, {r['seconds']:.1f} s "
                                               f"({r['adam']}+{r['lbfgs']} steps)" for d, r in zip(devices, f))
          + f"   speed-up {f[0]['seconds'] / f[1]['seconds']:.2f}x: {'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        failures.append("forward")

    inv = [inverse(d, args.quick) for d in devices]
    i0, i1 = inv
    ok = abs(i0["lambda1"] - i1["lambda1"]) < 0.005 * abs(i0["lambda1"]) and \
        abs(i0["lambda2"] - i1["lambda2"]) < 0.05 * abs(i0["lambda2"])
    print("\n3. Burgers inverse (laplace, network=all)")
    for d, r in zip(devices, inv):
        print(f"   {d:<6} lambda1 {r['lambda1']:.5f} [{r['lambda1_94'][0]:.5f}, {r['lambda1_94'][1]:.5f}]  "
              f"lambda2 {r['lambda2']:.6f} [{r['lambda2_94'][0]:.6f}, {r['lambda2_94'][1]:.6f}]  "
              f"{r['seconds']:.1f} s ({r['steps']} steps)")
    print(f"   speed-up {i0['seconds'] / i1['seconds']:.2f}x: {'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        failures.append("inverse")

    m = [mol_nuts(d, args.quick) for d in devices]
    m0, m1 = m
    ok = all(abs(m0[p][0] - m1[p][0]) < 4 * math.hypot(m0[p][2], m1[p][2]) for p in ("D", "r", "sigma"))
    print("\n4. Fisher-KPP, method of lines (51 nodes), NUTS 4 chains")
    for d, r in zip(devices, m):
        print(f"   {d:<6} " + "  ".join(f"{p} {r[p][0]:.4f} ± {r[p][1]:.4f}" for p in ("D", "r", "sigma"))
              + f"  {r['seconds']:.1f} s")
    print(f"   speed-up {m0['seconds'] / m1['seconds']:.2f}x: {'ok' if ok else 'FAIL'}", flush=True)
    if not ok:
        failures.append("mol nuts")

    print(f"\ngpu_check: {time.perf_counter() - t_all:.0f} s in all; "
          + ("all checks agree" if not failures else f"FAILED: {', '.join(failures)}"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
