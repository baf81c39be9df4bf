"""Build a PDE model's IR in Python, without a model file (tests, benchmarks, scripts).

The front end produces the same objects from a ``.msml`` file; this module only saves typing.
Where the installed ``ModelIR``/``Observation`` do not yet carry the PDE fields (``pde``,
``coordinates``), small stand-ins with the same attribute names are used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import sympy

from msml_dsl.ir.model_ir import LatentParameter, ModelIR, Observation
from msml_dsl.semantics.distributions import DISTRIBUTIONS
from msml_dsl.semantics.model import InferenceSettings


@dataclass(frozen=True)
class _Observation:
    name: str
    distribution: str
    args: tuple
    values: np.ndarray
    mask: np.ndarray
    coordinates: dict
    covariates: dict = field(default_factory=dict)
    file_lines: np.ndarray | None = None
    time_index: None = None
    times: None = None


@dataclass(frozen=True)
class _ModelIR:
    name: str
    title: str | None
    file: str
    parameters: tuple
    ode: None
    observations: tuple
    derived: tuple
    inference: InferenceSettings
    constants: dict
    warnings: tuple = ()
    pde: object = None


def latent(name: str, distribution: str, *args, lower: float | None = None,
           upper: float | None = None) -> LatentParameter:
    """A scalar parameter ``param name ~ distribution(args) [lower=, upper=]``."""
    args = tuple(sympy.sympify(a) for a in args)
    lo, hi = DISTRIBUTIONS[distribution].support
    if distribution == "Uniform":
        lo, hi = float(args[0]), float(args[1])
    lo = lo if lower is None else max(lo, lower)
    hi = hi if upper is None else min(hi, upper)
    return LatentParameter(name, (), distribution, args, lower, upper, (sympy.Symbol(name, real=True),), (lo, hi))


def observation(name: str, distribution: str, args, values, coordinates: dict, mask=None):
    """``observe name ~ distribution(args)`` with per-row coordinates {"x": ..., "t": ...}."""
    values = np.asarray(values, float)
    mask = np.isfinite(values) if mask is None else np.asarray(mask, bool)
    kwargs = dict(name=name, distribution=distribution, args=tuple(sympy.sympify(a) for a in args),
                  values=np.where(mask, values, 0.0), mask=mask, covariates={},
                  file_lines=np.arange(2, values.size + 2), time_index=None, times=None)
    coords = {k: np.asarray(v, float) for k, v in coordinates.items()}
    if "coordinates" in {f.name for f in dataclasses.fields(Observation)}:
        return Observation(coordinates=coords, **kwargs)
    return _Observation(coordinates=coords, **kwargs)


def pde_model_ir(name: str, pde, parameters=(), observations=(), method: str = "map", options: dict | None = None,
                 derived=()):
    """A ModelIR for the PDE problem ``pde`` (real ModelIR where it has a ``pde`` field)."""
    inference = InferenceSettings(method, tuple((options or {}).items()))
    kwargs = dict(name=name, title=None, file=f"<{name}>", parameters=tuple(parameters), ode=None,
                  observations=tuple(observations), derived=tuple(derived), inference=inference, constants={})
    if "pde" in {f.name for f in dataclasses.fields(ModelIR)}:
        return ModelIR(pde=pde, **kwargs)
    return _ModelIR(pde=pde, **kwargs)


__all__ = ["latent", "observation", "pde_model_ir"]
