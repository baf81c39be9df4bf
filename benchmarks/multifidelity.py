"""Multi-fidelity benchmarks: accuracy and calibration of the fidelity backend on known truths.

    python benchmarks/multifidelity.py            # Emukit's linear model too when `emukit` and GPy import

1. Forrester et al. (2008), 11 low and 4 high points: RMSE of the high-level mean on 1,000
   points against a GP on the 4 high points alone and against Emukit's linear multi-fidelity
   model (GPyLinearMultiFidelityModel, RBF kernels, noise fixed at 0, 5 optimiser restarts).
2. The nonlinear pair of Perdikaris et al. (2017), 50 low and 14 high points: the nonlinear
   link (NARGP form) against the linear (Kennedy–O'Hagan) link on 1,000 held-out points.
3. pk_coarse_fine: the coarse Euler solve corrected by nine samples assayed in duplicate, against a GP
   on the measurements alone (default priors) and the coarse solve alone, on 481 truth points.

4. pk_from_file: the same coarse level solved from another file (one_compartment.msml).
5. fkpp_coarse_fine: the Fisher-KPP PDE of models/fisher_kpp on a 21-node grid at rtol 1e-3,
   corrected by 100 noisy scan values, against the coarse solve alone, on 820 held-out field values.

    python benchmarks/multifidelity.py --forrester-seeds    # Forrester laplace over seeds, both amplitude priors
    python benchmarks/multifidelity.py --forrester-designs 1 2 3      # other designs (below); Emukit too with
                                                                      # --emukit-only --forrester-designs ...
    python benchmarks/multifidelity.py --prior-candidates 0 4 -1      # default priors of link terms compared
                                                                      # (designs; -1: the nonlinear pair)
    python benchmarks/multifidelity.py --replicates pk fkpp           # calibration over noise replicates (below)

Noise replicates (``replicates``): pk_coarse_fine and fkpp_coarse_fine refitted (``laplace``, the file's
settings) on the committed data (seed 0) and on the same design with new noise from the folder's
make_data.py (seeds 1-5); coverage of the truth.csv values by the mixture's and the linearised bands,
per replicate and as mean (range), with the coverage on parts of the truth (PK: up to 12 h and the
12-24 h gap; Fisher-KPP: at the coarse grid's nodes and between them) and the MAP noise sd.

Other Forrester designs (``forrester_design``): design s has 11 low points from a Latin hypercube
(scipy, seed s) and 4 high points among them (numpy default_rng(s)); the book's design is s = 0.

Each multi-fidelity row twice: hyperparameters at their MAP (``map``) and integrated out
(``laplace``, the models' default), with the RMSE and the coverage of the 95 % bands on the
held-out truth. Fixed seeds. Emukit lives in its own environment (it needs GPy, not torch):

    python benchmarks/multifidelity.py --emukit-only     # with that environment's python
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ROOT / "models"
METHODS = ("map", "laplace")


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


def compile_file(*args, **kwargs):
    from msml_dsl.api import compile_file as cf

    return cf(*args, **kwargs)


def compile_source(*args, **kwargs):
    from msml_dsl.api import compile_source as cs

    return cs(*args, **kwargs)


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


def forrester_design(seed: int) -> Path:
    """A folder with low.csv and high.csv: the book's design (seed 0) or a random nested one."""
    import tempfile

    if seed == 0:
        return MODELS / "forrester"
    from scipy.stats import qmc

    xl = np.sort(qmc.LatinHypercube(d=1, seed=seed).random(11)[:, 0])
    xh = np.sort(np.random.default_rng(seed).choice(xl, 4, replace=False))
    folder = Path(tempfile.mkdtemp(prefix=f"forrester_s{seed}_"))
    for name, xs, f in (("low.csv", xl, forrester_low), ("high.csv", xh, forrester_high)):
        (folder / name).write_text("x,y\n" + "".join(f"{a:.6f},{f(a):.10f}\n" for a in xs))
    return folder


def forrester_designs(seeds, emukit_only: bool) -> None:
    """The Forrester benchmark on other designs: msml's default (laplace: the mixture predictive),
    its linearised predictive (the MAP's mean), or Emukit (in its own environment)."""
    x = np.linspace(0, 1, 1000)
    text = (MODELS / "forrester" / "model.msml").read_text()
    for seed in seeds:
        folder = forrester_design(seed)
        if emukit_only:
            emu, t = timed(lambda: emukit_forrester(x, folder))
            row(f"design {seed}: Emukit", emu, t)
            continue
        fit, t = timed(lambda: compile_source(text, "design.msml", device="cpu", base_dir=folder).run())
        row(f"design {seed}: msml laplace (mixture)", fit.evaluate(x, forrester_high(x)), t)
        options = fit.state.options
        fit.state.options = {**options, "predictive": "linearised"}
        row(f"design {seed}: msml laplace (linearised)", fit.evaluate(x, forrester_high(x)), 0.0)
        fit.state.options = options


def emukit_forrester(x_test, folder=None):
    """Emukit's linear multi-fidelity model on the same 11 + 4 points (None when not importable)."""
    try:
        import GPy
        from emukit.multi_fidelity.convert_lists_to_array import convert_x_list_to_array, convert_xy_lists_to_arrays
        from emukit.multi_fidelity.kernels import LinearMultiFidelityKernel
        from emukit.multi_fidelity.models import GPyLinearMultiFidelityModel
        from emukit.model_wrappers.gpy_model_wrappers import GPyMultiOutputWrapper
    except ImportError:
        return None
    folder = folder or MODELS / "forrester"
    lo = pd.read_csv(folder / "low.csv")
    hi = pd.read_csv(folder / "high.csv")
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


def both(label, path, x, truth, coverages, level=None, extra=None):
    """One row per method (map, laplace) for a model file; returns the laplace fit."""
    fit = None
    for method in METHODS:
        fit, s = timed(lambda: compile_file(path, device="cpu").run(method=method))
        e = fit.evaluate(x, truth, level=level)
        row(f"{label} [{method}]", e, s)
        coverages.append((f"{label} [{method}]", e["rmse"], e["coverage"]))
        if extra is not None:
            extra(fit, method)
    ks = ", ".join(f"{'+'.join(b.levels)} k={b.stats['khat']:.2f} ess={b.stats['ess']:.0f}"
                   for b in fit.state.blocks if b.stats)
    print(f"  {'':<44} laplace importance sampling: {ks}")
    return fit


def forrester_seeds() -> None:
    """Forrester with integrated hyperparameters over importance-sampling seeds 1-3 and with
    8,000 draws, under the default amplitude prior of f_low (HalfNormal(2 x rms of the low
    data)) and the former one (10 x): how much of the RMSE and coverage is sampling noise."""
    x = np.linspace(0, 1, 1000)
    text = (MODELS / "forrester" / "model.msml").read_text()
    lo = pd.read_csv(MODELS / "forrester" / "low.csv").y.values
    rms = float(np.sqrt(np.mean(lo ** 2)))
    for label, src in (("default (2 x rms)", text),
                       ("former (10 x rms)", text.replace("unknown f_low(x) : gp(kernel=rbf)",
                                                         f"unknown f_low(x) : gp(kernel=rbf, amplitude=HalfNormal({10 * rms:.6g}))"))):
        for seed, draws in ((1, 2000), (2, 2000), (3, 2000), (1, 8000)):
            s = src.replace("infer laplace(starts=8, seed=1, draws=2000)",
                            f"infer laplace(starts=8, seed={seed}, draws={draws})")
            fit, t = timed(lambda: compile_source(s, "seeds.msml", device="cpu", base_dir=MODELS / "forrester").run())
            row(f"{label}, seed {seed}, {draws} draws", fit.evaluate(x, forrester_high(x)), t)


# Default priors of link terms compared by --prior-candidates (docs/fidelity.md): module settings of
# msml_dsl.ir.fidelity, or a replacement of the delta line of models/forrester/model.msml.
PRIOR_CANDIDATES = {
    "trend": {"LINK_TREND_RELATIVE": 1.0},                                # the default
    "no-trend": {"LINK_TREND_RELATIVE": 0.0},                             # the former default
    "no-trend, flat amplitude": {"LINK_TREND_RELATIVE": 0.0, "amplitude": "HalfNormal(10000)"},
    "no-trend, amplitude per lengthscale": {"LINK_TREND_RELATIVE": 0.0, "LINK_AMPLITUDE_PER_LENGTHSCALE": True},
    "trend x 10": {"LINK_TREND_RELATIVE": 10.0},
    "trend in NARGP levels too": {"LINK_TREND_RELATIVE": 1.0, "LINK_TREND_ON_LEVEL_INPUTS": True},
}


def prior_candidates(names, seeds) -> None:
    """Forrester designs and the nonlinear pair under each candidate default for link terms:
    RMSE / coverage of the mixture and the linearised predictive (laplace, 800 draws)."""
    import msml_dsl.ir.fidelity as F

    saved = {k: getattr(F, k) for k in ("LINK_TREND_RELATIVE", "LINK_AMPLITUDE_PER_LENGTHSCALE",
                                        "LINK_TREND_ON_LEVEL_INPUTS")}
    x = np.linspace(0, 1, 1000)
    test = pd.read_csv(MODELS / "nonlinear_mf" / "test.csv")
    for name in names:
        settings = dict(PRIOR_CANDIDATES[name])
        amplitude = settings.pop("amplitude", None)
        for k, v in {**saved, **settings}.items():
            setattr(F, k, v)
        for seed in seeds:
            folder, path = (forrester_design(seed), MODELS / "forrester") if seed >= 0 else (
                MODELS / "nonlinear_mf", MODELS / "nonlinear_mf")
            text = (path / "model.msml").read_text()
            if amplitude:
                text = text.replace("unknown delta(x) : gp(kernel=rbf)",
                                    f"unknown delta(x) : gp(kernel=rbf, amplitude={amplitude})")
            fit, t = timed(lambda: compile_source(text, "c.msml", device="cpu", base_dir=folder).run(draws=800))
            X, truth = (x, forrester_high(x)) if seed >= 0 else (test.x.values, test.y.values)
            label = f"design {seed}" if seed >= 0 else "nonlinear pair"
            row(f"{name}, {label}, mixture", fit.evaluate(X, truth), t)
            if fit.problem.scheme == "joint":
                options = fit.state.options
                fit.state.options = {**options, "predictive": "linearised"}
                row(f"{name}, {label}, linearised", fit.evaluate(X, truth), 0.0)
                fit.state.options = options
    for k, v in saved.items():
        setattr(F, k, v)


def load_script(folder: Path, name: str = "make_data"):
    """The module folder/name.py (a model's data script), under a name of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_{folder.name}_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replicate_model(name: str, seed: int):
    """The model of ``name`` (pk, fkpp) on its committed data (seed 0) or on new noise (the folder's
    make_data.py, written to a temporary folder): (compiled model, truth inputs, truth values, parts)."""
    import tempfile

    folder = MODELS / {"pk": "pk_coarse_fine", "fkpp": "fkpp_coarse_fine"}[name]
    text = (folder / "model.msml").read_text().replace('model="../', f'model="{MODELS}/')
    truth = pd.read_csv(folder / "truth.csv")
    base = folder
    if seed:
        base = Path(tempfile.mkdtemp(prefix=f"{name}_s{seed}_"))
        data = load_script(folder)
        if name == "pk":
            data.write_plasma(base / "plasma.csv", seed)
        else:
            data.write_scans(base / "scans.csv", seed)
    if name == "pk":
        X, y = truth.t.values, truth.conc.values
        parts = {"<=12 h": X <= 12, "12-24 h": X > 12}
    else:
        X, y = {"x": truth.position_mm.values, "t": truth.day.values}, truth.density.values
        spacing = 10 / (int(text.split("points=")[1].split(",")[0]) - 1)
        phase = np.round(X["x"] / spacing % 1, 6)
        parts = {"nodes": phase == 0, "between": phase != 0}
    return compile_source(text, "model.msml", device="cpu", base_dir=base), X, y, parts


def covered(fit, X, y):
    p = fit.predict(X)
    return (y >= p.lower) & (y <= p.upper)


def replicates(names, seeds=(0, 1, 2, 3, 4, 5)) -> None:
    """Calibration over noise replicates (the module docstring)."""
    for name in names:
        print(f"{name}: laplace on noise replicates (seed 0: the committed data)")
        summary = {"mixture": [], "linearised": []}
        for seed in seeds:
            model, X, y, parts = replicate_model(name, seed)
            fit, t = timed(lambda: model.run(method="laplace"))
            sigma = fit.parameters()["sigma"]["value"][0]
            ks = ",".join(f"{b.stats['khat']:.2f}" for b in fit.state.blocks if b.stats)
            options = fit.state.options
            for predictive in summary:
                fit.state.options = {**options, "predictive": predictive}
                e, c = fit.evaluate(X, y), covered(fit, X, y)
                summary[predictive].append((e["rmse"], e["coverage"]))
                split = ", ".join(f"{k} {100 * c[m].mean():.1f} %" for k, m in parts.items())
                print(f"  seed {seed} {predictive:<10} rmse {e['rmse']:.4f}  covers {100 * e['coverage']:5.1f} % "
                      f"({split})  sigma {sigma:.3f}  k {ks}  {t:5.1f} s", flush=True)
            fit.state.options = options
        for predictive, rows in summary.items():
            r, c = np.array(rows).T
            print(f"  {predictive:<10} coverage {100 * c.mean():.1f} % ({100 * c.min():.1f}-{100 * c.max():.1f}); "
                  f"rmse {r.mean():.4f} ({r.min():.4f}-{r.max():.4f})")


def main() -> None:
    if "--replicates" in sys.argv:              # --replicates [pk] [fkpp]
        names = [a for a in sys.argv[sys.argv.index("--replicates") + 1:] if a in ("pk", "fkpp")]
        replicates(names or ["pk", "fkpp"])
        return
    if "--prior-candidates" in sys.argv:      # --prior-candidates [designs ...; -1: the nonlinear pair]
        seeds = [int(a) for a in sys.argv[sys.argv.index("--prior-candidates") + 1:] if a.lstrip("-").isdigit()]
        prior_candidates(list(PRIOR_CANDIDATES), seeds or [0, 1, 3, 4, 5, 6, 7, 8, -1])
        return
    if "--forrester-designs" in sys.argv:
        seeds = [int(a) for a in sys.argv[sys.argv.index("--forrester-designs") + 1:] if a.isdigit()]
        forrester_designs(seeds or [0, 1, 2, 3], "--emukit-only" in sys.argv)
        return
    if "--forrester-seeds" in sys.argv:
        forrester_seeds()
        return
    if "--emukit-only" in sys.argv:
        x = np.linspace(0, 1, 1000)
        emu, s = timed(lambda: emukit_forrester(x))
        row("Emukit GPyLinearMultiFidelityModel", emu, s)
        return
    coverages = []
    print("1. Forrester (11 low + 4 high points), high level on 1,000 points")
    x = np.linspace(0, 1, 1000)
    rhos = {}
    both("msml, linear link (joint Kennedy-O'Hagan)", MODELS / "forrester" / "model.msml", x, forrester_high(x),
         coverages, extra=lambda fit, m: rhos.__setitem__(m, fit.parameters()["rho"]["value"][0]))
    single, s = timed(high_only_forrester)
    e1 = single.evaluate(x, forrester_high(x))
    row("GP on the 4 high points alone [map]", e1, s)
    emu, s = timed(lambda: emukit_forrester(x))
    if emu is None:
        print("  Emukit: not importable here (run --emukit-only with a python that has emukit and GPy)")
    else:
        row("Emukit GPyLinearMultiFidelityModel", emu, s)
    print(f"  ratio high-only / multi-fidelity RMSE: " + ", ".join(
        f"{m} {e1['rmse'] / r:.0f}x" for m, r, _ in [(n.split('[')[1][:-1], r, c) for n, r, c in coverages[:2]]))
    print(f"  rho: " + ", ".join(f"{m} {v:.4f}" for m, v in rhos.items()))

    print("2. Nonlinear pair (Perdikaris et al. 2017; 50 low + 14 high points), 1,000 held-out points")
    test = pd.read_csv(MODELS / "nonlinear_mf" / "test.csv")
    for name, file in (("nonlinear link g(low, x) + delta(x) (recursive)", "model.msml"),
                       ("linear link rho * low + delta(x) (joint)", "model_linear.msml")):
        both(name, MODELS / "nonlinear_mf" / file, test.x.values, test.y.values, coverages)

    print("3. pk_coarse_fine (coarse Euler solve + 9 samples x 2 assays), 481 truth points")
    truth = pd.read_csv(MODELS / "pk_coarse_fine" / "truth.csv")
    fit = both("coarse solve + GP discrepancy (joint)", MODELS / "pk_coarse_fine" / "model.msml", truth.t.values,
               truth.conc.values, coverages)
    row("the coarse solve alone (at the fitted ka, ke)",
        fit.evaluate(truth.t.values, truth.conc.values, level="coarse"), 0.0)
    src = (MODELS / "pk_coarse_fine" / "model.msml").read_text()
    src = src.replace("fidelity measured = rho * coarse + delta(t)", "fidelity measured = f(t)").replace(
        "unknown delta(t)", "unknown f(t) : gp(kernel=matern52)\nunknown delta(t)")
    src = "\n".join(line for line in src.splitlines() if not line.startswith(("unknown delta", "fidelity coarse",
                                                                               "param rho")))
    gp, s = timed(lambda: compile_source(src, "gp_only.msml", device="cpu", base_dir=MODELS / "pk_coarse_fine").run())
    row("GP on the 18 measurements alone [laplace]", gp.evaluate(truth.t.values, truth.conc.values), s)

    print("4. pk_from_file: the coarse level solved from one_compartment.msml (another file)")
    both("coarse level from another file (joint)", MODELS / "pk_coarse_fine" / "model_from_file.msml",
         truth.t.values, truth.conc.values, coverages)

    print("5. fkpp_coarse_fine (Fisher-KPP on 21 nodes at rtol 1e-3 + 100 scan values), 820 held-out field values")
    field = pd.read_csv(MODELS / "fkpp_coarse_fine" / "truth.csv")
    X = {"x": field.position_mm.values, "t": field.day.values}
    fit = both("coarse PDE grid + GP discrepancy delta(x, t)", MODELS / "fkpp_coarse_fine" / "model.msml", X,
               field.density.values, coverages)
    coarse = fit.evaluate(X, field.density.values, level="coarse")
    print(f"  {'the coarse grid alone (fitted D, r)':<44} rmse {coarse['rmse']:9.4f}")

    print("Calibration: coverage of the 95 % bands on held-out truth")
    for name, rmse, c in coverages:
        print(f"  {name:<60} rmse {rmse:9.4f}   {100 * c:5.1f} %")


if __name__ == "__main__":
    main()
