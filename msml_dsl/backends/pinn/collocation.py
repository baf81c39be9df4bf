"""Collocation points: the interior of the domain, each boundary edge, the initial line.

``collocation N sobol|halton|uniform|grid (boundary=B, initial=I, resample=K, adaptive=A, rounds=R)``:

* N interior points fill the box ``space x time``; ``sobol`` and ``halton`` are scrambled
  low-discrepancy sequences (``scipy.stats.qmc``), ``uniform`` is plain random, ``grid`` is the
  regular grid of cell centres, rounded up to a full grid (m^k points, m = ceil(N^(1/k))).
* each boundary or initial condition gets its own points on its edge: the coordinates it fixes
  are set exactly to the edge value and the others are drawn like the interior (a grid there
  includes the ends).  B points are shared out among the boundary conditions and I among the
  initial ones; when B or I is 0 it is max(64, N/10).
* ``resample=K`` draws fresh interior points every K optimiser steps (the Adam phase; L-BFGS
  needs a fixed set); ``adaptive=A`` with R rounds adds, in each round, the A points of a
  random candidate set (10 A, at least 1000) where the residual is largest (residual-based
  adaptive refinement, Lu et al. 2021).

Points are made with NumPy once per draw and moved to the model's device in one copy.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

METHODS = ("sobol", "halton", "uniform", "grid")


def domain_box(problem) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Lower and upper corners of the domain and the coordinate names (space then time)."""
    lower = [a.lower for a in problem.space]
    upper = [a.upper for a in problem.space]
    names = [a.symbol.name for a in problem.space]
    if problem.time is not None:
        lower.append(problem.time_range[0])
        upper.append(problem.time_range[1])
        names.append(problem.time.name)
    return np.asarray(lower, float), np.asarray(upper, float), names


def unit_points(n: int, k: int, method: str, seed: int, include_ends: bool = False) -> np.ndarray:
    """n points in [0, 1]^k (a full grid of m^k points for ``grid``)."""
    if k == 0:
        return np.zeros((1, 0))
    if method == "grid":
        m = max(1, math.ceil(round(n ** (1.0 / k), 9)))
        axis = np.linspace(0.0, 1.0, m) if include_ends and m > 1 else (np.arange(m) + 0.5) / m
        mesh = np.meshgrid(*([axis] * k), indexing="ij")
        return np.stack([g.ravel() for g in mesh], axis=1)
    if method == "uniform":
        return np.random.default_rng(seed).random((n, k))
    from scipy.stats import qmc

    engine = qmc.Sobol(k, scramble=True, seed=seed) if method == "sobol" else qmc.Halton(k, scramble=True, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Sobol's balance warning for n not a power of two
        return engine.random(n)
    raise ValueError(method)


def interior_points(problem, n: int, method: str, seed: int) -> np.ndarray:
    """n points (m^k for a grid) inside the domain, (n, coordinates)."""
    lower, upper, _ = domain_box(problem)
    return lower + unit_points(n, len(lower), method, seed) * (upper - lower)


def edge_points(problem, at: dict[str, float], n: int, method: str, seed: int) -> np.ndarray:
    """n points on the edge where the named coordinates are fixed to ``at`` (exactly)."""
    lower, upper, names = domain_box(problem)
    free = [i for i, name in enumerate(names) if name not in at]
    u = unit_points(n, len(free), method, seed, include_ends=True)
    x = np.empty((u.shape[0], len(names)))
    for name, value in at.items():
        x[:, names.index(name)] = value
    for j, i in enumerate(free):
        x[:, i] = lower[i] + u[:, j] * (upper[i] - lower[i])
    return x


def condition_counts(problem, settings) -> list[int]:
    """Points for each condition of ``problem.conditions`` (in order)."""
    n = max(1, settings.interior)
    totals = {"boundary": settings.boundary or max(64, n // 10), "initial": settings.initial or max(64, n // 10)}
    members = {"boundary": 0, "initial": 0}
    for c in problem.conditions:
        members[c.term if c.term in members else "boundary"] += 1
    return [max(1, totals[c.term if c.term in totals else "boundary"] // members[c.term if c.term in members
                                                                                else "boundary"])
            for c in problem.conditions]


@dataclass
class CollocationSet:
    """The current points on the model's device: interior (n, d) and one array per condition.

    A periodic condition holds its lower-edge points; ``partner[i]`` holds the same points moved
    to the partner (upper) edge.
    """

    interior: torch.Tensor
    conditions: list[torch.Tensor]
    partner: dict[int, torch.Tensor] = field(default_factory=dict)
    draws: int = 0


def periodic_partner(problem, points: np.ndarray, condition) -> np.ndarray:
    """A periodic condition's points moved to its partner edge (by default the upper edge of
    each coordinate the condition fixes)."""
    _, upper, names = domain_box(problem)
    out = points.copy()
    partner = {s.name: float(v) for s, v in getattr(condition, "partner", ())}
    for s, _ in condition.at:
        out[:, names.index(s.name)] = partner.get(s.name, upper[names.index(s.name)])
    return out


def make_collocation(problem, settings, device, dtype, draw: int = 0) -> CollocationSet:
    """Interior and condition points for draw number ``draw`` (0: the first; resampling counts up)."""
    if settings.method not in METHODS:
        raise ValueError(f"unknown collocation method {settings.method!r}; use one of {', '.join(METHODS)}")

    def to(a):
        return torch.as_tensor(a, dtype=dtype, device=device)

    seed = settings.seed + 1009 * draw
    interior = interior_points(problem, settings.interior, settings.method, seed)
    conds, partner = [], {}
    for i, (c, n) in enumerate(zip(problem.conditions, condition_counts(problem, settings))):
        at = {s.name: float(v) for s, v in c.at}
        pts = edge_points(problem, at, n, settings.method, seed + 17 * (i + 1))
        conds.append(to(pts))
        if c.kind == "periodic":
            partner[i] = to(periodic_partner(problem, pts, c))
    return CollocationSet(to(interior), conds, partner, draw)


def worst_points(candidates: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k candidate rows with the largest scores (residual-based adaptive refinement)."""
    k = min(int(k), candidates.shape[0])
    return candidates[torch.topk(scores, k).indices]
