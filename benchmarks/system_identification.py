"""System identification of Lorenz-63: msml (fit through the ODE solution) against PySINDy.

Data: ``models/lorenz_sysid/lorenz.csv`` — four runs of one time unit from different states on
the attractor, every 0.01 time units, 1 % Gaussian noise (``simulate.py``), in long format (columns
run, t, x, y, z; the model's ``experiment run = runs.run``); ``--model model_8runs.msml`` takes the
eight-run design instead (``lorenz_8runs.csv``). Every method gets the same data and the same
library (the ten monomials of degree <= 2 in x, y, z per equation).

msml:
  * ``stlsq``: the derivative warm start alone (GCV smoothing spline, sequentially thresholded least
    squares with the model's threshold 3 on |coefficient| x candidate sd) — what starts the optimiser;
  * ``map``: the posterior mode from that start (``map(init=derivatives)``), through the ODE solution;
  * ``nuts`` (``--nuts``): the file's ``infer nuts(...)`` (4 chains, dense metric): inclusion
    probabilities P(|c| s > 3), posterior medians, divergences, R-hat.
  * ``map refit`` (and ``nuts refit`` with ``--nuts``): select, then refit, as PySINDy's STLSQ refits
    least squares on the terms it keeps: the fit's ``identified_refit_model()`` (each term a library
    of its kept candidates, c s ~ Normal(0, slab) without the spike) fitted again the same way.
PySINDy (optional: ``pip install pysindy``): STLSQ (threshold 0.1, its default) on finite-difference
and on smoothed finite-difference derivatives, and E-SINDy (100 bagged STLSQ models, inclusion =
share of models with the term; Fasel et al. 2022).

Printed per method: true terms selected (of 7), spurious terms selected, the largest relative error
of a true coefficient (median or point estimate), the smallest inclusion probability of a true term
and the largest of a spurious one (0 or 1 for msml's MAP, whose "selected" is |c| s > 3 at the mode;
STLSQ selects its non-zero coefficients), and wall time (compilation excluded for msml, reported
separately).

    python benchmarks/system_identification.py            # warm start, MAP, PySINDy
    python benchmarks/system_identification.py --nuts     # and the full NUTS run (minutes)
    python benchmarks/system_identification.py --model model_8runs.msml   # another design of the folder
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lorenz_sysid"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(MODEL))

from simulate import LABELS, TRUE_TERMS, read_runs  # noqa: E402

TERMS = ("fx", "fy", "fz")


@dataclass
class Result:
    method: str
    coefficients: dict[str, np.ndarray]               # term -> (10,) point estimates / medians, LABELS order
    inclusion: dict[str, np.ndarray] | None            # term -> (10,) probabilities, or None (point estimate)
    seconds: float
    notes: list[str] = field(default_factory=list)

    def selected(self) -> dict[str, set[str]]:
        if self.inclusion is not None:
            return {t: {LABELS[k] for k in range(10) if self.inclusion[t][k] > 0.5} for t in TERMS}
        return {t: {LABELS[k] for k in range(10) if self.coefficients[t][k] != 0} for t in TERMS}


def score(r: Result) -> dict:
    sel = r.selected()
    true_found = sum(len(sel[t] & set(TRUE_TERMS[t])) for t in TERMS)
    spurious = sum(len(sel[t] - set(TRUE_TERMS[t])) for t in TERMS)
    errors = {f"{t}[{lab}]": abs(r.coefficients[t][LABELS.index(lab)] - v) / abs(v)
              for t in TERMS for lab, v in TRUE_TERMS[t].items()}
    out = {"true": true_found, "spurious": spurious, "max_error": max(errors.values()),
           "worst": max(errors, key=errors.get), "errors": errors}
    if r.inclusion is not None:
        out["min_true_inclusion"] = min(r.inclusion[t][LABELS.index(lab)] for t in TERMS for lab in TRUE_TERMS[t])
        out["max_spurious_inclusion"] = max(r.inclusion[t][k] for t in TERMS for k in range(10)
                                            if LABELS[k] not in TRUE_TERMS[t])
    return out


# ----------------------------------------------------------------------------- msml
def _by_label(term, values) -> np.ndarray:
    """A library term's per-candidate values reordered to LABELS (the model's labels are the same)."""
    labels = [c.label for c in term.candidates]
    assert sorted(labels) == sorted(LABELS), labels
    return np.array([values[labels.index(lab)] for lab in LABELS], dtype=float)


def _kept_by_label(identified) -> tuple[np.ndarray, np.ndarray]:
    """Medians and inclusion of a refit term (its kept candidates only) in LABELS order, 0 elsewhere."""
    values = {c.label: c for c in identified.candidates}
    medians = np.array([values[lab].median if lab in values else 0.0 for lab in LABELS])
    return medians, np.array([values[lab].inclusion if lab in values else 0.0 for lab in LABELS])


def _refit(fit, method: str):
    """Select, then refit: the fit's identified_refit_model() compiled and fitted by ``method``."""
    import msml_dsl

    model = msml_dsl.compile_source(fit.identified_refit_model(), name="identified_refit.msml", base_dir=MODEL)
    _ = model.program
    t0 = time.perf_counter()
    refit = model.map(init="derivatives") if method == "map" else model.run()
    seconds = time.perf_counter() - t0
    kept = {t.name: _kept_by_label(t) for t in refit.identified()}
    return Result(f"msml {method} refit (selected terms)", {t: kept[t][0] for t in TERMS},
                  {t: kept[t][1] for t in TERMS}, seconds), refit


def run_msml(nuts: bool, file: Path) -> tuple[list[Result], dict]:
    import msml_dsl
    from msml_dsl.inference.library_warm_start import derivative_fit

    t0 = time.perf_counter()
    model = msml_dsl.compile_file(file)
    _ = model.program
    compile_s = time.perf_counter() - t0
    terms = {t.name: t for t in model.ir.unknowns}
    results = []

    t0 = time.perf_counter()
    fit = derivative_fit(model)
    results.append(Result("msml stlsq (warm start)", {t: _by_label(terms[t], fit[t]) for t in TERMS}, None,
                          time.perf_counter() - t0))

    t0 = time.perf_counter()
    mode = model.map(init="derivatives")
    seconds = time.perf_counter() - t0
    at_mode = {t.name: t for t in mode.identified()}   # included: |c| s above the threshold (0 or 1)
    results.append(Result("msml map (ODE fit)",
                          {t: _by_label(terms[t], [c.median for c in at_mode[t].candidates]) for t in TERMS},
                          {t: _by_label(terms[t], [c.inclusion for c in at_mode[t].candidates]) for t in TERMS},
                          seconds))
    results.append(_refit(mode, "map")[0])
    extra = {"compile_s": compile_s}
    if nuts:
        t0 = time.perf_counter()
        posterior = model.run()
        seconds = time.perf_counter() - t0
        identified = {t.name: t for t in posterior.identified()}
        medians = {t: _by_label(terms[t], [c.median for c in identified[t].candidates]) for t in TERMS}
        inclusion = {t: _by_label(terms[t], [c.inclusion for c in identified[t].candidates]) for t in TERMS}
        intervals = {t: (_by_label(terms[t], [c.lower for c in identified[t].candidates]),
                         _by_label(terms[t], [c.upper for c in identified[t].candidates])) for t in TERMS}
        results.append(Result("msml nuts (ODE fit)", medians, inclusion, seconds))
        table = posterior.summary_table()
        stats = posterior.sample.sample_stats
        extra.update({
            "divergences": int(np.sum(stats["diverging"])),
            "transitions": int(np.size(stats["diverging"])),
            "max_rhat": float(np.nanmax(table["r_hat"])),
            "min_ess_bulk": float(np.nanmin(table["ess_bulk"])),
            "mean_tree_depth": float(np.mean(stats["tree_depth"])),
            "timings": posterior.sample.timings,
            "intervals": intervals, "inclusion": inclusion, "medians": medians,
            "identified": "\n".join(f"{t}(x, y, z) = {identified[t].expression()}" for t in TERMS),
        })
        result, refit = _refit(posterior, "nuts")
        results.append(result)
        stats = refit.sample.sample_stats
        table = refit.summary_table()
        extra["refit"] = (f"{int(np.sum(stats['diverging']))} divergent of {int(np.size(stats['diverging']))} "
                          f"transitions, max R-hat {float(np.nanmax(table['r_hat'])):.4f}, min bulk ESS "
                          f"{float(np.nanmin(table['ess_bulk'])):.0f}")
    return results, extra


# ----------------------------------------------------------------------------- PySINDy
def run_pysindy(data: Path) -> list[Result]:
    try:
        import pysindy as ps
    except ImportError:
        print("pysindy is not installed (pip install pysindy): its rows are skipped", file=sys.stderr)
        return []
    t, runs = read_runs(data)      # the long-format file as one (rows, 3) array per run
    out = []
    configurations = [
        ("pysindy stlsq, finite differences", lambda: ps.STLSQ(threshold=0.1), ps.FiniteDifference, False),
        ("pysindy stlsq, smoothed differences", lambda: ps.STLSQ(threshold=0.1), ps.SmoothedFiniteDifference, False),
        ("pysindy e-sindy (100 bagged), smoothed", lambda: ps.EnsembleOptimizer(
            ps.STLSQ(threshold=0.1), bagging=True, n_models=100), ps.SmoothedFiniteDifference, True),
    ]
    for name, optimizer, differentiation, ensemble in configurations:
        np.random.seed(1)   # E-SINDy's bagging draws from numpy's global generator
        opt = optimizer()
        t0 = time.perf_counter()
        model = ps.SINDy(optimizer=opt, feature_library=ps.PolynomialLibrary(degree=2),
                         differentiation_method=differentiation())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(runs, t=t, feature_names=["x", "y", "z"])
        seconds = time.perf_counter() - t0
        names = [n.replace(" ", "*") for n in model.get_feature_names()]
        order = [names.index(lab) for lab in LABELS]
        coef = model.coefficients()[:, order]
        inclusion = None
        if ensemble:
            share = (np.array(opt.coef_list) != 0).mean(axis=0)[:, order]
            inclusion = {t: share[i] for i, t in enumerate(TERMS)}
        out.append(Result(name, {t: coef[i] for i, t in enumerate(TERMS)}, inclusion, seconds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuts", action="store_true", help="also run the model's NUTS (minutes)")
    parser.add_argument("--model", default="model.msml", help="model file in models/lorenz_sysid")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import msml_dsl

    source = msml_dsl.check_file(MODEL / args.model).data_sources[0]
    data = MODEL / source.path
    msml_results, extra = run_msml(args.nuts, MODEL / args.model)
    results = msml_results + run_pysindy(data)
    t, runs = read_runs(data)
    print(f"\nLorenz-63 ({args.model}), {len(runs)} runs x {t.size} rows, 1 % noise; "
          f"msml compile {extra['compile_s']:.1f} s\n")
    header = (f"{'method':<40} {'true (of 7)':>11} {'spurious':>8} {'max coef err':>13} {'worst':>10} "
              f"{'min P(true)':>11} {'max P(spur)':>11} {'time s':>8}")
    print(header)
    print("-" * len(header))
    for r in results:
        s = score(r)
        p_true = f"{s['min_true_inclusion']:.3f}" if "min_true_inclusion" in s else "-"
        p_spur = f"{s['max_spurious_inclusion']:.3f}" if "max_spurious_inclusion" in s else "-"
        print(f"{r.method:<40} {s['true']:>11} {s['spurious']:>8} {100 * s['max_error']:>12.2f}% "
              f"{s['worst']:>10} {p_true:>11} {p_spur:>11} {r.seconds:>8.1f}")
    print("\nrelative error of each true coefficient (%):")
    keys = list(score(results[0])["errors"])
    print(f"{'method':<40} " + " ".join(f"{k:>9}" for k in keys))
    for r in results:
        e = score(r)["errors"]
        print(f"{r.method:<40} " + " ".join(f"{100 * e[k]:>9.2f}" for k in keys))
    if "divergences" in extra:
        print(f"\nmsml nuts: {extra['divergences']} divergent of {extra['transitions']} transitions, "
              f"max R-hat {extra['max_rhat']:.4f}, min bulk ESS {extra['min_ess_bulk']:.0f}, "
              f"mean tree depth {extra['mean_tree_depth']:.2f}; timings "
              + ", ".join(f"{k} {v:.1f}" for k, v in extra["timings"].items() if k.endswith("_s")))
        print("inclusion probabilities and 90 % intervals of the true terms:")
        for t in TERMS:
            for lab, v in TRUE_TERMS[t].items():
                k = LABELS.index(lab)
                lo, hi = extra["intervals"][t][0][k], extra["intervals"][t][1][k]
                print(f"  {t}[{lab}]: truth {v:.4g}, median {extra['medians'][t][k]:.4f}, 90 % [{lo:.4f}, {hi:.4f}], "
                      f"P(included) {extra['inclusion'][t][k]:.3f}")
        print("identified:\n" + extra["identified"])
        print(f"msml nuts refit: {extra['refit']}")


if __name__ == "__main__":
    main()
