"""Multi-fidelity benchmarks: accuracy and calibration of the fidelity backend on known truths.

    python benchmarks/multifidelity.py            # Emukit's linear model too when `emukit` and GPy import

1. Forrester et al. (2008), 11 low and 4 high points: RMSE of the high-level mean on 1,000
   points against a GP on the 4 high points alone and against Emukit's linear multi-fidelity
   model (GPyLinearMultiFidelityModel, RBF kernels, noise fixed at 0, 5 optimiser restarts).
2. The nonlinear pair of Perdikaris et al. (2017), 50 low and 14 high points: the nonlinear
   link (NARGP form) against the linear (Kennedy–O'Hagan) link on 1,000 held-out points.
3. pk_coarse_fine: the coarse Euler solve corrected by eight measurements, against a GP on
   the measurements alone (default priors) and the coarse solve alone, on 481 truth points.

For each, the coverage of the 95 % bands on the held-out truth. MAP fits, fixed seeds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msml_dsl.api import compile_file, compile_source  # noqa: E402

MODELS = ROOT / "models"


def forrester_high(x):
    return (6 * x - 2) ** 2 * np.sin(12 * x - 4)


def forrester_low(x):
    return 0.5 * forrester_high(x) + 10 * (x - 0.5) - 5


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def row(name, e, seconds):
    print(f"  {name:<44} rmse {e['rmse']:9.4f}   95% band covers {100 * e['coverage']:5.1f} %   {seconds:6.1f} s")


def high_only_forrester():
    src = """model forrester_high_only "A GP on the four high points alone"
space x in [0, 1]
unknown f(x) : gp(kernel=rbf)
param s_high ~ HalfNormal(0.01)
fidelity high = f(x)
data costly = csv("high.csv") fidelity high
observe costly.y ~ Normal(high, s_high)
infer map(starts=8, seed=1)
"""
    return compile_source(src, "high_only.msml", device="cpu", base_dir=MODELS / "forrester").run()


def emukit_forrester(x_test):
    """Emukit's linear multi-fidelity model on the same 11 + 4 points (None when not importable)."""
    try:
        import GPy
        from emukit.multi_fidelity.convert_lists_to_array import convert_x_list_to_array, convert_xy_lists_to_arrays
        from emukit.multi_fidelity.kernels import LinearMultiFidelityKernel
        from emukit.multi_fidelity.models import GPyLinearMultiFidelityModel
        from emukit.model_wrappers.gpy_model_wrappers import GPyMultiOutputWrapper
    except ImportError:
        return None
    lo = pd.read_csv(MODELS / "forrester" / "low.csv")
    hi = pd.read_csv(MODELS / "forrester" / "high.csv")
    X, Y = convert_xy_lists_to_arrays([lo.x.values[:, None], hi.x.values[:, None]],
                                      [lo.y.values[:, None], hi.y.values[:, None]])
    kernel = LinearMultiFidelityKernel([GPy.kern.RBF(1), GPy.kern.RBF(1)])
    gpy_model = GPyLinearMultiFidelityModel(X, Y, kernel, n_fidelities=2)
    gpy_model.mixed_noise.Gaussian_noise.fix(0)
    gpy_model.mixed_noise.Gaussian_noise_1.fix(0)
    model = GPyMultiOutputWrapper(gpy_model, 2, n_optimization_restarts=5, verbose_optimization=False)
    np.random.seed(1)
    model.optimize()
    Xt = convert_x_list_to_array([x_test[:, None], x_test[:, None]])[len(x_test):]
    mean, var = model.predict(Xt)
    err = mean[:, 0] - forrester_high(x_test)
    sd = np.sqrt(np.maximum(var[:, 0], 0))
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "coverage": float(np.mean(np.abs(err) <= 1.96 * sd))}


def main() -> None:
    coverages = []
    print("1. Forrester (11 low + 4 high points), high level on 1,000 points")
    x = np.linspace(0, 1, 1000)
    fit, s = timed(lambda: compile_file(MODELS / "forrester" / "model.msml", device="cpu").run())
    mf = fit.evaluate(x, forrester_high(x))
    row("msml, linear link (joint Kennedy-O'Hagan)", mf, s)
    coverages.append(("forrester", mf["coverage"]))
    single, s = timed(high_only_forrester)
    e1 = single.evaluate(x, forrester_high(x))
    row("GP on the 4 high points alone", e1, s)
    emu, s = timed(lambda: emukit_forrester(x))
    if emu is None:
        print("  Emukit: not importable here (pip install emukit gpy to compare)")
    else:
        row("Emukit GPyLinearMultiFidelityModel", emu, s)
    print(f"  ratio high-only / multi-fidelity RMSE: {e1['rmse'] / mf['rmse']:.0f}x; rho = "
          f"{fit.parameters()['rho']['value'][0]:.4f}")

    print("2. Nonlinear pair (Perdikaris et al. 2017; 50 low + 14 high points), 1,000 held-out points")
    test = pd.read_csv(MODELS / "nonlinear_mf" / "test.csv")
    for name, file in (("nonlinear link g(low, x) + delta(x) (recursive)", "model.msml"),
                       ("linear link rho * low + delta(x) (joint)", "model_linear.msml")):
        fit, s = timed(lambda: compile_file(MODELS / "nonlinear_mf" / file, device="cpu").run())
        e = fit.evaluate(test.x.values, test.y.values)
        row(name, e, s)
        coverages.append((f"nonlinear_mf/{file}", e["coverage"]))

    print("3. pk_coarse_fine (coarse Euler solve + 8 measured concentrations), 481 truth points")
    truth = pd.read_csv(MODELS / "pk_coarse_fine" / "truth.csv")
    fit, s = timed(lambda: compile_file(MODELS / "pk_coarse_fine" / "model.msml", device="cpu").run())
    e = fit.evaluate(truth.t.values, truth.conc.values)
    row("coarse solve + GP discrepancy (joint)", e, s)
    coverages.append(("pk_coarse_fine", e["coverage"]))
    row("the coarse solve alone (at the fitted ka, ke)",
        fit.evaluate(truth.t.values, truth.conc.values, level="coarse"), 0.0)
    src = (MODELS / "pk_coarse_fine" / "model.msml").read_text()
    src = src.replace("fidelity measured = rho * coarse + delta(t)", "fidelity measured = f(t)").replace(
        "unknown delta(t)", "unknown f(t) : gp(kernel=matern52)\nunknown delta(t)")
    src = "\n".join(line for line in src.splitlines() if not line.startswith(("unknown delta", "fidelity coarse",
                                                                               "param rho")))
    gp, s = timed(lambda: compile_source(src, "gp_only.msml", device="cpu", base_dir=MODELS / "pk_coarse_fine").run())
    row("GP on the 8 measurements alone", gp.evaluate(truth.t.values, truth.conc.values), s)

    print("Calibration: coverage of the 95 % bands on held-out truth")
    for name, c in coverages:
        print(f"  {name:<44} {100 * c:5.1f} %")


if __name__ == "__main__":
    main()
