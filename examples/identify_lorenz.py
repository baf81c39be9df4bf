"""System identification from Python: select the Lorenz equations from a sparse library, then refit.

The model (models/lorenz_sysid/model.msml) writes each right-hand side as a spike-and-slab library
of the ten monomials of degree <= 2 in (x, y, z). A MAP fit selects the terms (NUTS gives inclusion
probabilities: `msml run models/lorenz_sysid/model.msml`); the identified model is then refitted
with only the kept terms, which pins each coefficient far better than the sparse fit can.

Run from the repository root:  python examples/identify_lorenz.py   (about a minute on one core)
"""

from pathlib import Path

import msml_dsl
from msml_dsl.diagnostics.identified import format_identified

ROOT = Path(__file__).resolve().parents[1]
folder = ROOT / "models" / "lorenz_sysid"

selection = msml_dsl.compile_file(folder / "model.msml").map(seed=1, starts=2)
print(format_identified(selection.identified()))       # each equation, its kept terms marked '*'
print(selection.identified_model())                     # the model with the equations written out

# Select, then refit: the kept candidates only, each coefficient re-estimated with the slab as prior
refit_source = selection.identified_refit_model()
refit = msml_dsl.compile_source(refit_source, name="identified_refit.msml", base_dir=folder)
mode = refit.map(seed=1, starts=2)
truth = {"fx[x]": -10, "fx[y]": 10, "fy[x]": 28, "fy[y]": -1, "fy[x*z]": -1, "fz[z]": -8 / 3, "fz[x*y]": 1}
for term in mode.identified():
    for c in term.included:
        name = f"{term.name}[{c.label}]"
        print(f"{name:<10} {c.median:9.4f}   truth {truth[name]:8.4f}   error {abs(c.median / truth[name] - 1):.2%}")
# For intervals, sample the refitted model: refit.sample(chains=4, warmup=300, draws=300)
