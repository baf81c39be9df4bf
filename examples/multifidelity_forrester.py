"""Multi-fidelity from Python: fuse eleven cheap and four expensive evaluations, predict, pick the next.

The model (models/forrester/model.msml) declares two fidelity levels linked Kennedy–O'Hagan style,
`high = rho * low + delta(x)`, with a Gaussian process for each unknown term; `msml run` and
`msml suggest` do the same from the command line.

Run from the repository root:  python examples/multifidelity_forrester.py   (under a minute)
"""

from pathlib import Path

import numpy as np

import msml_dsl

ROOT = Path(__file__).resolve().parents[1]

model = msml_dsl.compile_file(ROOT / "models" / "forrester" / "model.msml")
fit = model.run()                                       # the file's infer: laplace over the hyperparameters
print(fit.summary())

x = np.linspace(0, 1, 1000)
truth = (6 * x - 2) ** 2 * np.sin(12 * x - 4)
band = fit.predict(x)                                   # the highest level: mean, sd, 95 % band
print("high level at x = 0.75: %.3f [%.3f, %.3f]" % (band.mean[750], band.lower[750], band.upper[750]))
print(fit.evaluate(x, truth))                           # held-out RMSE and the band's coverage

for s in fit.suggest_next(top=3):                       # where one more expensive run helps most
    print(f"measure high at x = {s.x['x']:.3f}: predictive sd {s.sd:.3f}, information gain {s.eig:.2f} nats")
