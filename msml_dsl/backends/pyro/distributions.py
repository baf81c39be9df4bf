"""Language distributions as torch/Pyro distributions, with exact truncation."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints


def make_distribution(name: str, args: list[torch.Tensor]) -> dist.TorchDistribution:
    """The Pyro distribution for a language distribution name and its arguments."""
    if name == "NegBinomial2":
        mean, phi = args
        # Stan's neg_binomial_2(mean, phi): variance mean + mean^2 / phi.
        return dist.NegativeBinomial(total_count=phi, logits=torch.log(mean) - torch.log(phi))
    if name == "Beta":
        return dist.Beta(*args)
    if name == "SpikeSlab":
        return SpikeSlab(*torch.broadcast_tensors(*args))
    return getattr(dist, name)(*args)


class SpikeSlab(dist.TorchDistribution):
    """p Normal(0, slab) + (1 - p) Normal(0, spike): a continuous spike-and-slab NUTS can move through."""

    arg_constraints: dict = {}
    support = torch.distributions.constraints.real
    has_rsample = False

    def __init__(self, p, slab, spike, validate_args=False):
        self.p, self.slab, self.spike = p, slab, spike
        super().__init__(p.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return SpikeSlab(self.p.expand(shape), self.slab.expand(shape), self.spike.expand(shape))

    def log_prob(self, value):
        a = torch.log(self.p) + dist.Normal(0.0, self.slab).log_prob(value)
        b = torch.log1p(-self.p) + dist.Normal(0.0, self.spike).log_prob(value)
        return torch.logaddexp(a, b)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            pick = torch.rand(shape, dtype=self.p.dtype, device=self.p.device) < self.p
            return torch.randn(shape, dtype=self.p.dtype, device=self.p.device) * torch.where(pick, self.slab, self.spike)


class Truncated(dist.TorchDistribution):
    """``base`` restricted to [low, high]: a renormalised density, not a clipped one.

    ``log_normalizer`` is log(F(high) - F(low)); when None it is computed from
    the base distribution's CDF (which must then exist in torch).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base, low: float | None, high: float | None, log_normalizer=None, validate_args=False):
        self.base = base
        self.low = low
        self.high = high
        # Every tensor stays on the base distribution's device (the model's device).
        self.device = next((v.device for v in vars(base).values() if torch.is_tensor(v)), torch.device("cpu"))
        if log_normalizer is None:
            upper_cdf = base.cdf(self._tensor(high)) if high is not None else 1.0
            lower_cdf = base.cdf(self._tensor(low)) if low is not None else 0.0
            log_normalizer = torch.log(torch.as_tensor(upper_cdf - lower_cdf, device=self.device))
        self.log_normalizer = log_normalizer
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def _tensor(self, value) -> torch.Tensor:
        return torch.as_tensor(value, dtype=torch.float64, device=self.device)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        if self.low is not None and self.high is not None:
            return constraints.interval(self.low, self.high)
        if self.low is not None:
            return constraints.greater_than(self.low)
        return constraints.less_than(self.high)

    def expand(self, batch_shape, _instance=None):
        return Truncated(self.base.expand(batch_shape), self.low, self.high,
                         torch.as_tensor(self.log_normalizer).expand(batch_shape) if torch.is_tensor(self.log_normalizer)
                         and self.log_normalizer.ndim else self.log_normalizer)

    def log_prob(self, value):
        lp = self.base.log_prob(value) - self.log_normalizer
        inside = torch.ones_like(value, dtype=torch.bool)
        if self.low is not None:
            inside = inside & (value >= self.low)
        if self.high is not None:
            inside = inside & (value <= self.high)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            try:
                lo = self.base.cdf(self._tensor(self.low)) if self.low is not None else 0.0
                hi = self.base.cdf(self._tensor(self.high)) if self.high is not None else 1.0
                u = torch.rand(shape, dtype=torch.float64, device=self.device)
                x = self.base.icdf(lo + (hi - lo) * u)
                if torch.isfinite(x).all():
                    return self._clip(x)
            except NotImplementedError:
                pass
            # No inverse CDF in torch: rejection sampling from the base.
            out = self.base.sample(sample_shape)
            for _ in range(1000):
                bad = ~self._inside(out)
                if not bad.any():
                    break
                out = torch.where(bad, self.base.sample(sample_shape), out)
            return out

    def _inside(self, x):
        ok = torch.ones_like(x, dtype=torch.bool)
        if self.low is not None:
            ok &= x >= self.low
        if self.high is not None:
            ok &= x <= self.high
        return ok

    def _clip(self, x):
        lo = -math.inf if self.low is None else self.low
        hi = math.inf if self.high is None else self.high
        return x.clamp(lo, hi)


def _closed_form_cdf(name: str, a: list[float]):
    """(cdf, sf) of the families with an elementary CDF, or None; importing scipy.stats costs a second."""
    r2 = math.sqrt(2.0)
    if name == "Normal":
        m, s = a
        return (lambda v: 0.5 * math.erfc((m - v) / (s * r2)), lambda v: 0.5 * math.erfc((v - m) / (s * r2)))
    if name == "LogNormal":
        m, s = a
        return (lambda v: 0.5 * math.erfc((m - math.log(v)) / (s * r2)) if v > 0 else 0.0,
                lambda v: 0.5 * math.erfc((math.log(v) - m) / (s * r2)) if v > 0 else 1.0)
    if name == "HalfNormal":
        (s,) = a
        return (lambda v: math.erf(v / (s * r2)) if v > 0 else 0.0, lambda v: math.erfc(v / (s * r2)) if v > 0 else 1.0)
    if name == "HalfCauchy":
        (s,) = a
        return (lambda v: 2 / math.pi * math.atan(v / s) if v > 0 else 0.0,
                lambda v: 2 / math.pi * math.atan2(s, v) if v > 0 else 1.0)
    if name == "Exponential":
        (r,) = a
        return (lambda v: -math.expm1(-r * v) if v > 0 else 0.0, lambda v: math.exp(-r * v) if v > 0 else 1.0)
    if name == "Cauchy":
        m, s = a
        return (lambda v: math.atan2(s, m - v) / math.pi, lambda v: math.atan2(s, v - m) / math.pi)
    if name == "Uniform":
        lo, hi = a
        return (lambda v: min(max((v - lo) / (hi - lo), 0.0), 1.0), lambda v: min(max((hi - v) / (hi - lo), 0.0), 1.0))
    return None


def constant_log_normalizer(name: str, args: list[float], low: float | None, high: float | None) -> float:
    """log(F(high) - F(low)) for constant arguments: closed forms where the CDF is elementary, else SciPy's."""
    closed = _closed_form_cdf(name, args)
    if closed is not None:
        cdf, sf = closed
        if low is not None and high is None:
            tail = sf(low)
            if tail > 1e-300:  # far in the tail SciPy's log survival function stays accurate
                return math.log(tail)
        else:
            upper = cdf(high) if high is not None else 1.0
            lower = cdf(low) if low is not None else 0.0
            mass = upper - lower
            if mass > 1e-12:
                return math.log(mass)
    return _scipy_log_normalizer(name, args, low, high)


def _scipy_log_normalizer(name: str, args: list[float], low: float | None, high: float | None) -> float:
    from scipy import stats

    frozen = {
        "Normal": lambda a: stats.norm(a[0], a[1]),
        "LogNormal": lambda a: stats.lognorm(s=a[1], scale=math.exp(a[0])),
        "HalfNormal": lambda a: stats.halfnorm(scale=a[0]),
        "HalfCauchy": lambda a: stats.halfcauchy(scale=a[0]),
        "Exponential": lambda a: stats.expon(scale=1 / a[0]),
        "Gamma": lambda a: stats.gamma(a[0], scale=1 / a[1]),
        "InverseGamma": lambda a: stats.invgamma(a[0], scale=a[1]),
        "Beta": lambda a: stats.beta(a[0], a[1]),
        "StudentT": lambda a: stats.t(a[0], a[1], a[2]),
        "Cauchy": lambda a: stats.cauchy(a[0], a[1]),
        "Uniform": lambda a: stats.uniform(a[0], a[1] - a[0]),
    }[name](args)
    upper = frozen.cdf(high) if high is not None else 1.0
    lower = frozen.cdf(low) if low is not None else 0.0
    mass = upper - lower
    if not mass > 0:
        return -math.inf
    # Use survival functions in the upper tail for accuracy.
    if low is not None and high is None:
        return float(frozen.logsf(low))
    return math.log(mass)
