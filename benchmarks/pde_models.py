"""The library's PDE models solved both ways: the method of lines (MoL) and physics-informed networks.

For each model (burgers, fisher_kpp, tissue_oxygen) and solver this prints the parameter
estimates next to the simulation truth (each model's README), the error of the fitted field
against the model's reference solution (``reference()`` in its simulate.py: Cole-Hopf for
Burgers, independent fine SciPy solves for the others), the final PDE residual (networks only:
the method of lines solves its discrete equations to the ODE tolerance), the wall time and the
peak memory.  Each (model, solver) runs in its own process, so its peak resident memory
(ru_maxrss; on CUDA, the peak of torch's allocator) is its own.

What runs, per model (the same .msml file, only the ``solver`` and ``infer`` lines and, for the
network, ``collocation``/``physics`` lines swapped; MoL ignores those two anyway):

* MoL: the posterior mode (``map(starts=2)``; NUTS intervals are in each README).
  Burgers on 801 nodes (the file says ``solver pinn``; 801 nodes resolve nu = 0.01/pi, README).
* network: ``infer laplace(network=last_layer)`` (MAP training, then the Gaussian with the hidden
  layers fixed: the scheme of the recorded table, kept so that it reproduces), the settings in
  PINN below; the 94 % intervals are the 3 % and 97 % quantiles of its draws.  Those intervals
  are too narrow; ``benchmarks/pinn_calibration.py`` compares them with ``network=all``, the
  default of ``infer laplace``.

    python benchmarks/pde_models.py [--quick] [--models burgers,fisher_kpp] [--solvers mol,pinn]
                                    [--threads 1] [--device cpu] [--json results.json]

``--quick`` is a smoke run (a few hundred training steps, coarse grids): its numbers are not results.
The table in benchmarks/README.md ("PDE models: method of lines vs network") comes from a full run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

TRUTH = {
    "burgers": {"lambda1": 1.0, "lambda2": 0.01 / math.pi, "sigma": 0.0061},
    "fisher_kpp": {"D": 0.05, "r": 0.3, "sigma": 0.03, "speed": 2 * math.sqrt(0.05 * 0.3)},
    "tissue_oxygen": {"D": 1.0, "k": 4.0, "sigma": 0.02, "penetration": 0.5},
}
PARAMETERS = {"burgers": ("lambda1", "lambda2", "sigma"), "fisher_kpp": ("D", "r", "sigma"),
              "tissue_oxygen": ("D", "k", "sigma")}

# solver lines for the method of lines (None: the file's own)
MOL = {
    "burgers": "solver mol(points=801, method=rk45, rtol=1e-6, atol=1e-8)",
    "fisher_kpp": None,
    "tissue_oxygen": None,
}
MOL_QUICK = {"burgers": "solver mol(points=201, method=rk45, rtol=1e-6, atol=1e-8)"}

# network settings: (lines added before the solver line, the solver line); None: the file's own
PINN = {
    "burgers": None,
    "fisher_kpp": ("collocation 3000 sobol(boundary=200, initial=200)\n"
                   "physics pde ~ Normal(0, 0.01)\n"
                   "physics boundary ~ Normal(0, 0.01)\n"
                   "physics initial ~ Normal(0, 0.01)",
                   "solver pinn(adam_steps=2000, lbfgs_steps=4000, lr=0.001, tol=1e-10, freeze_params=2500)"),
    "tissue_oxygen": ("collocation 3000 sobol(boundary=400)\n"
                      "physics pde ~ Normal(0, 0.1)\n"
                      "physics boundary ~ Normal(0, 0.01)",
                      "solver pinn(adam_steps=2000, lbfgs_steps=5000, lr=0.001, tol=1e-10, freeze_params=3000)"),
}
QUICK_STEPS = {"adam_steps": 300, "lbfgs_steps": 100, "freeze_params": 0}


def simulate_module(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_simulate", MODELS / name / "simulate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_text(name: str, solver: str, quick: bool) -> str:
    """The model file with its solver (and infer) lines for ``solver``."""
    text = (MODELS / name / "model.msml").read_text()
    if solver == "mol":
        line = (MOL_QUICK.get(name) if quick else None) or MOL[name]
        if line:
            text = re.sub(r"^solver .*$", line, text, flags=re.M)
        return re.sub(r"^infer .*$", "infer map()", text, flags=re.M)
    if PINN[name] is not None:
        extra, line = PINN[name]
        text = re.sub(r"^solver .*$", lambda _: extra + "\n" + line, text, flags=re.M)
    return re.sub(r"^infer .*$", "infer laplace(draws=2000, network=last_layer)", text, flags=re.M)


# ------------------------------------------------------------------ field errors against the references
def rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def grid_coordinates(model) -> np.ndarray:
    """(states, space dims) node coordinates of a MoL grid, from the state names u[i] or c[i,j]."""
    pde = model.ir.pde
    idx = np.array([[int(v) for v in str(s).split("[")[1].rstrip("]").split(",")] for s in model.ir.ode.states])
    n = idx.max(axis=0) + 1
    return np.stack([a.lower + (a.upper - a.lower) * idx[:, k] / (n[k] - 1) for k, a in enumerate(pde.space)], 1)


def field_error(name: str, solver: str, model, fit, values: dict) -> float:
    """Relative L2 error of the fitted field against the reference solution at the true parameters."""
    sim = simulate_module(name)
    if solver == "mol":
        out = model.program.evaluate_draws({k: np.atleast_1d(np.asarray(v, float)) for k, v in values.items()},
                                           seed=0, predictive=False)["solution"][0]
        nodes = grid_coordinates(model)
        times = model.ir.ode.output_times
    if name == "burgers":
        if solver == "mol":
            keep = times > 0
            ref = sim.reference(nodes[:, 0], times[keep])
            return rel_l2(out[keep], ref)
        x, t, ref = sim.grid()
        X, T = np.meshgrid(x, t)
        pred = fit.predict({"x": X.ravel(), "t": T.ravel()})["u"].reshape(ref.shape)
        return rel_l2(pred, ref)
    if name == "fisher_kpp":
        x, ref = sim.reference(sim.TIMES)
        if solver == "mol":
            rows = [int(np.argmin(np.abs(times - t))) for t in sim.TIMES]
            ref_nodes = np.stack([np.interp(nodes[:, 0], x, r) for r in ref])
            return rel_l2(out[rows], ref_nodes)
        X, T = np.meshgrid(x, sim.TIMES)
        pred = fit.predict({"x": X.ravel(), "t": T.ravel()})["u"].reshape(ref.shape)
        return rel_l2(pred, ref)
    if name == "tissue_oxygen":
        from scipy.interpolate import RegularGridInterpolator

        g, ref = sim.reference()
        if solver == "mol":
            interp = RegularGridInterpolator((g, g), ref)
            return rel_l2(out[-1], interp(nodes))
        g4 = g[::4]
        X, Y = np.meshgrid(g4, g4, indexing="ij")
        pred = fit.predict({"x": X.ravel(), "y": Y.ravel()})["c"].reshape(X.shape)
        return rel_l2(pred, ref[::4, ::4])
    raise ValueError(name)


# ------------------------------------------------------------------ one case, in its own process
def peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(name: str, solver: str, quick: bool, device: str) -> dict:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import msml_dsl

    text = model_text(name, solver, quick)
    t0 = time.perf_counter()
    model = msml_dsl.compile_source(text, "model.msml", device=device, base_dir=MODELS / name)
    row = {"model": name, "solver": solver, "device": device}
    if solver == "mol":
        _ = model.program                                  # generates and compiles the grid's kernels
        row["setup_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        fit = model.map(starts=1 if quick else 2)
        row["fit_s"] = time.perf_counter() - t1
        values = {k: np.asarray(v) for k, v in fit.values.items()}
        row["estimates"] = {k: float(v) for k, v in {**fit.values, **fit.derived}.items() if np.size(v) == 1}
        row["intervals"] = {}
        row["residual"] = None
        row["grid"] = "x".join(str(n) for n in model.ir.pde.solver.get("points") or ())
        row["states"] = len(model.ir.ode.states)
        row["field_error"] = field_error(name, solver, model, fit, values)
        row["mol_truth_error"] = field_error(name, solver, model, fit, {p: TRUTH[name][p] for p in PARAMETERS[name]})
    else:
        row["setup_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        fit = model.run(solver_options=QUICK_STEPS if quick else None)
        row["fit_s"] = time.perf_counter() - t1
        row["estimates"] = {k: float(v) for k, v in fit.map_values.items() if np.size(v) == 1}
        for k, v in fit.derived.items():                   # derived quantities at the MAP
            row["estimates"][k] = float(_derived_at(fit, k))
        row["intervals"] = {k: [float(q) for q in np.quantile(v.ravel(), [0.03, 0.97])]
                            for k, v in fit.posterior.items() if v.ndim == 2}
        pde = [r for r in fit.term_weights if r["kind"] == "physics" and r["term"].startswith("pde")]
        row["residual"] = math.sqrt(sum(r["mean_sq_residual"] for r in pde) / len(pde))
        row["steps"] = f"{fit.history.adam_steps}+{fit.history.lbfgs_steps}"
        row["points"] = sum(r["points"] for r in fit.term_weights if r["kind"] == "physics")
        row["field_error"] = field_error(name, solver, model, fit, {})
        print(fit.summary(), file=sys.stderr)
    row["total_s"] = time.perf_counter() - t0
    row["peak_mib"] = peak_memory_mib(device)
    return row


def _derived_at(fit, name: str) -> float:
    """A derived quantity (of parameters only) at the MAP values."""
    import sympy

    expr = dict(fit.ir.derived)[name]
    expr = sympy.sympify(expr)
    values = {s: float(fit.map_values[s.name]) for s in expr.free_symbols}
    return float(expr.xreplace(values))


def run_in_subprocess(name: str, solver: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", f"{name}:{solver}", "--threads",
           str(args.threads), "--device", args.device] + (["--quick"] if args.quick else [])
    print(f"== {name} / {solver}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"model": name, "solver": solver, "error": proc.stderr.strip().splitlines()[-1:]}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"   done in {time.perf_counter() - t0:.0f} s", flush=True)
    return row


# ------------------------------------------------------------------ report
def fmt(v, digits=4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def table(rows: list[dict]) -> str:
    head = ["model", "solver", "setting", "time s (setup+fit)", "final residual", "field rel. L2", "peak MiB"]
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append([r["model"], r["solver"], "failed: " + " ".join(r["error"]), "", "", "", ""])
            continue
        setting = (f"grid {r['grid']} ({r['states']} states), MAP" if r["solver"] == "mol"
                   else f"{r['points']} physics points, {r['steps']} steps, laplace")
        lines.append([r["model"], r["solver"], setting, f"{r['total_s']:.0f} ({r['setup_s']:.0f}+{r['fit_s']:.0f})",
                      fmt(r["residual"], 3) + (" (rms pde)" if r["residual"] is not None else ""),
                      fmt(r["field_error"], 3), f"{r['peak_mib']:.0f}"])
    return _render(lines)


def comparison(rows: list[dict]) -> str:
    """Per model and parameter: truth, MoL MAP, network MAP and its 94 % interval."""
    lines = [["model", "parameter", "truth", "MoL (MAP)", "MoL error", "network (MAP)", "network 94 %", "net error"]]
    by = {(r["model"], r["solver"]): r for r in rows if "error" not in r}
    for name in dict.fromkeys(r["model"] for r in rows):
        mol, net = by.get((name, "mol")), by.get((name, "pinn"))
        for p, truth in TRUTH[name].items():
            m = mol["estimates"].get(p) if mol else None
            n = net["estimates"].get(p) if net else None
            iv = net["intervals"].get(p) if net else None
            lines.append([name, p, fmt(truth), fmt(m), _err(m, truth), fmt(n),
                          f"[{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "-", _err(n, truth)])
    return _render(lines)


def _err(v, truth) -> str:
    return "-" if v is None else f"{100 * abs(v - truth) / abs(truth):.2f} %"


def _render(lines: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(lines[0]))]
    out = []
    for k, r in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few training steps, coarse grids")
    ap.add_argument("--models", default="burgers,fisher_kpp,tissue_oxygen")
    ap.add_argument("--solvers", default="mol,pinn")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--case", help=argparse.SUPPRESS)       # MODEL:SOLVER, run in this process (one JSON line)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.case:
        name, solver = args.case.split(":")
        print(json.dumps(run_case(name, solver, args.quick, args.device)))
        return
    t0 = time.perf_counter()
    rows = [run_in_subprocess(name, solver, args) for name in args.models.split(",")
            for solver in args.solvers.split(",")]
    print(f"\n{args.device}, {args.threads} thread(s){', QUICK smoke run' if args.quick else ''}; "
          f"total {time.perf_counter() - t0:.0f} s\n")
    print(table(rows))
    print("\nMoL field error at the true parameters (discretisation only): " + ", ".join(
        f"{r['model']} {r['mol_truth_error']:.3g}" for r in rows if r.get("solver") == "mol" and "error" not in r))
    print()
    print(comparison(rows))
    if "burgers" in args.models.split(","):
        e = simulate_module("burgers").exact_fit(str(MODELS / "burgers" / "burgers.csv"))
        print(f"\nburgers, least squares with the exact (Cole-Hopf) solution, no solver error: lambda1 = "
              f"{e['lambda1']:.5f} +- {e['lambda1_sd']:.5f}, lambda2 = {e['lambda2']:.7f} +- {e['lambda2_sd']:.7f}, "
              f"sigma = {e['sigma']:.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
