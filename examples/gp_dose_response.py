"""An unknown dose-response curve learned as an exact Gaussian process, from the Python API.

The model file says only that the response is a smooth function of the dose and that the
measurements are noisy; `gp(kernel=matern52)` is exact here because the term is called at the
doses in the data (docs/language.md, "Gaussian-process terms: exact or basis").

    python examples/gp_dose_response.py
"""

import tempfile
from pathlib import Path

import numpy as np

import msml_dsl

MODEL = """
model dose_response "A smooth response to a dose, shape unknown"
const dose = 1                         # names the term's input; the calls pass the data's doses
param sigma ~ HalfNormal(0.5)
unknown response(dose) : gp(kernel=matern52)
data d = csv("doses.csv")
observe d.y ~ Normal(response(d.dose), sigma)
infer nuts(chains=4, warmup=300, draws=300, seed=1)
"""


def truth(dose):
    return np.sin(dose)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="msml_gp_example_"))
    rng = np.random.default_rng(0)
    doses = np.linspace(0, 5, 15)
    y = truth(doses) + 0.1 * rng.normal(size=doses.size)
    (folder / "doses.csv").write_text("dose,y\n" + "".join(f"{a},{b}\n" for a, b in zip(doses, y)))

    model = msml_dsl.compile_source(MODEL, base_dir=folder)
    term = model.ir.unknowns[0]
    print(f"'{term.name}' is an exact GP over {len(term.exact.points)} doses")
    fit = model.sample()
    grid = np.array([0.5, 1.75, 2.5, 3.3, 4.5])     # between the measured doses
    draws = fit.evaluate_unknown("response", dose=grid)
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    print(f"sigma: {np.mean(fit.posterior['sigma']):.3f} (truth 0.1)")
    print("dose   truth   median   90 % band")
    for g, t, m, a, b in zip(grid, truth(grid), np.median(draws, axis=0), lo, hi):
        print(f"{g:4.2f} {t:7.3f} {m:8.3f}   [{a:.3f}, {b:.3f}]")
    covered = np.mean((lo <= truth(grid)) & (truth(grid) <= hi))
    print(f"the 90 % bands cover the truth at {covered:.0%} of these doses")


if __name__ == "__main__":
    main()
