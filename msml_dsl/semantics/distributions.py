"""The distributions of the language: names, parameters, supports.

Parameterisations follow Pyro (and torch.distributions); ``NegBinomial2`` is
Stan's mean/dispersion form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True)
class DistributionSpec:
    name: str
    parameters: tuple[str, ...]
    positive: tuple[str, ...]        # parameters that must be > 0
    support: tuple[float, float]     # of the variate; Uniform's is its arguments
    discrete: bool = False
    prior_allowed: bool = True


DISTRIBUTIONS: dict[str, DistributionSpec] = {d.name: d for d in [
    DistributionSpec("Normal", ("loc", "scale"), ("scale",), (-INF, INF)),
    DistributionSpec("LogNormal", ("loc", "scale"), ("scale",), (0.0, INF)),
    DistributionSpec("HalfNormal", ("scale",), ("scale",), (0.0, INF)),
    DistributionSpec("HalfCauchy", ("scale",), ("scale",), (0.0, INF)),
    DistributionSpec("Exponential", ("rate",), ("rate",), (0.0, INF)),
    DistributionSpec("Gamma", ("concentration", "rate"), ("concentration", "rate"), (0.0, INF)),
    # Stan's inv_gamma(alpha, beta): the usual prior for a variance or a GP lengthscale
    DistributionSpec("InverseGamma", ("concentration", "rate"), ("concentration", "rate"), (0.0, INF)),
    DistributionSpec("Beta", ("concentration1", "concentration0"), ("concentration1", "concentration0"), (0.0, 1.0)),
    DistributionSpec("StudentT", ("df", "loc", "scale"), ("df", "scale"), (-INF, INF)),
    DistributionSpec("Cauchy", ("loc", "scale"), ("scale",), (-INF, INF)),
    DistributionSpec("Laplace", ("loc", "scale"), ("scale",), (-INF, INF)),
    # a continuous spike-and-slab: p Normal(0, slab) + (1 - p) Normal(0, spike)
    DistributionSpec("SpikeSlab", ("p", "slab", "spike"), ("slab", "spike"), (-INF, INF)),
    DistributionSpec("Uniform", ("low", "high"), (), (-INF, INF)),
    DistributionSpec("Poisson", ("rate",), ("rate",), (0.0, INF), discrete=True, prior_allowed=False),
    DistributionSpec("NegBinomial2", ("mean", "phi"), ("mean", "phi"), (0.0, INF), discrete=True,
                     prior_allowed=False),
]}


def support_of(spec: DistributionSpec, constant_args: list[float | None]) -> tuple[float, float]:
    """The variate's support; for Uniform it is (low, high) when those are constants."""
    if spec.name == "Uniform":
        lo, hi = constant_args
        return (lo if lo is not None else -INF, hi if hi is not None else INF)
    return spec.support
