"""Fit the Lotka–Volterra model from Python, inspect it, and save the results.

Run from the repository root:  python examples/fit_lotka_volterra.py
"""

from pathlib import Path

import numpy as np

import msml_dsl

ROOT = Path(__file__).resolve().parents[1]

model = msml_dsl.compile_file(ROOT / "models" / "lotka_volterra" / "model.msml")
print(model.ir.to_json()[:400], "...")                 # the backend-neutral IR

mode = model.map()                                     # quick posterior mode
print(mode.summary())

fit = model.sample(chains=4, warmup=500, draws=500, seed=2)
print(fit.summary())                                   # mean, sd, HDI, ESS, R-hat, warnings

alpha = fit.posterior["alpha"]                         # (chain, draw)
print("P(alpha > 0.5) =", float(np.mean(alpha > 0.5)))

idata = fit.to_arviz()                                 # InferenceData or DataTree
fit.save(ROOT / "msml_runs" / "example-lotka-volterra")
