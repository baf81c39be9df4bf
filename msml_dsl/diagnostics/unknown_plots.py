"""Plots of each learned unknown term against its inputs, with credible bands over the data range.

>>> # plot_unknown_terms(fit.model.ir, fit.posterior, "run_folder")   # unknown_f.png per term
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from msml_dsl.diagnostics.identified import term_values


class ExtrapolationWarning(UserWarning):
    """An unknown term evaluated outside the range its data covered."""


def evaluate_unknown(term, draws: dict, points: dict[str, np.ndarray]) -> np.ndarray:
    """Posterior draws of a term at input points (draws, points); warns outside the data's range."""
    grid = [np.asarray(points[name], dtype=float).reshape(-1) for name in term.input_names]
    for name, values, (lo, hi) in zip(term.input_names, grid, term.input_ranges):
        span = hi - lo
        if values.size and (values.min() < lo - 1e-9 * span or values.max() > hi + 1e-9 * span):
            warnings.warn(f"'{term.name}' is evaluated at {name} in [{values.min():g}, {values.max():g}], outside "
                          f"the range its data covered [{lo:g}, {hi:g}]: this is extrapolation, and the "
                          "bands there come from the prior alone", ExtrapolationWarning, stacklevel=2)
    return term_values(term, draws, grid)


def plot_unknown_terms(ir, draws: dict, folder: str | Path, points: int = 60) -> list[Path]:
    """One PNG per unknown term: the median and 90 % band (1 input), or median and band width (2 inputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for term in ir.unknowns:
        ranges = term.input_ranges
        if len(term.input_names) == 1:
            lo, hi = ranges[0]
            x = np.linspace(lo, hi, points)
            v = term_values(term, draws, [x])
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.fill_between(x, np.quantile(v, 0.05, axis=0), np.quantile(v, 0.95, axis=0), alpha=0.3,
                            label="90 % band")
            ax.plot(x, np.median(v, axis=0), label="median")
            ax.set_xlabel(term.input_names[0])
            ax.set_ylabel(f"{term.name}({term.input_names[0]})")
            ax.legend()
        elif len(term.input_names) == 2:
            (a0, a1), (b0, b1) = ranges[:2]
            X, Y = np.meshgrid(np.linspace(a0, a1, points // 2), np.linspace(b0, b1, points // 2), indexing="ij")
            v = term_values(term, draws, [X.ravel(), Y.ravel()])
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
            for ax, values, title in ((axes[0], np.median(v, axis=0), "median"),
                                      (axes[1], np.quantile(v, 0.95, axis=0) - np.quantile(v, 0.05, axis=0),
                                       "90 % band width")):
                im = ax.pcolormesh(X, Y, values.reshape(X.shape), shading="auto")
                fig.colorbar(im, ax=ax)
                ax.set_xlabel(term.input_names[0])
                ax.set_ylabel(term.input_names[1])
                ax.set_title(f"{term.name}: {title}")
        else:
            continue
        fig.suptitle(f"{term.name} ({term.kind}) over the range of the data")
        fig.tight_layout()
        path = folder / f"unknown_{term.name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
