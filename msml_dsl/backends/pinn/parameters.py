"""The physical parameters: priors, constraining transforms and their unconstrained layout.

Priors are built the way the Pyro backend builds them (``make_distribution``, exact
``Truncated`` renormalisation, ``biject_to`` of the prior's support), in float64, for a batch
of S unconstrained points ``z`` (S, D).  Values come back per element name as (S,) tensors,
ready to broadcast against residuals at n points as (S, 1).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.distributions import biject_to

from msml_dsl.backends.pyro.distributions import constant_log_normalizer
from msml_dsl.backends.pyro.program import PyroProgram, TorchExpressions

DTYPE = torch.float64


@contextlib.contextmanager
def _unvalidated():
    """Log densities without torch's support check: a far unconstrained point whose transform
    under- or overflows to the support's edge (exp(-800) = 0 for a positive parameter) gets a
    log density of -inf (see transform), which line searches and samplers reject, instead of a ValueError."""
    before = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(before)


class PhysicalParameters:
    """Latent parameters of a PDE model (the network weights are not among them)."""

    def __init__(self, parameters, device):
        self.parameters = tuple(parameters)
        self.device = torch.device(device)
        self.offsets, offset = {}, 0
        for p in self.parameters:
            size = int(np.prod(p.shape)) if p.shape else 1
            self.offsets[p.name] = (offset, size)
            offset += size
        self.dim = offset
        self._prior_args = {p.name: TorchExpressions(p.args) for p in self.parameters}
        self._log_normalizers = {}
        for p in self.parameters:
            if p.truncated and all(not a.free_symbols for a in p.args):
                self._log_normalizers[p.name] = constant_log_normalizer(p.distribution, [float(a) for a in p.args],
                                                                   p.lower, p.upper)
            else:
                self._log_normalizers[p.name] = None

    @property
    def labels(self) -> list[str]:
        """One label per unconstrained coordinate: 'k' or 'k[2]'."""
        out = []
        for p in self.parameters:
            size = self.offsets[p.name][1]
            out += [p.name] if not p.shape else [f"{p.name}[{i + 1}]" for i in range(size)]
        return out

    # The Pyro backend's prior builder, shared rather than copied: it reads ``_prior_args``,
    # ``_log_normalizers`` and ``device``, which this class has too.
    _prior = PyroProgram._prior

    def transform(self, z: torch.Tensor):
        """For z (S, D): values by parameter name (S, *shape), values by element name (S,),
        log|det J| (S,) and the log prior density of the constrained values (S,)."""
        z = z.to(DTYPE)
        n = z.shape[0]
        sym_env: dict = {}
        values, elements = {}, {}
        log_det = torch.zeros(n, dtype=DTYPE, device=z.device)
        log_prior = torch.zeros(n, dtype=DTYPE, device=z.device)
        for p in self.parameters:
            off, size = self.offsets[p.name]
            zs = z[:, off:off + size]
            if not p.shape:
                zs = zs[:, 0]
            with _unvalidated():
                d = self._prior(p, sym_env, n)
                t = biject_to(d.support)
                v = t(zs)
                ld = t.log_abs_det_jacobian(zs, v)
                lp = d.log_prob(v)
            # at the edge itself a density's log can be nan (LogNormal at 0: -inf + inf): it is -inf
            lp = torch.where(torch.isnan(lp), torch.full_like(lp, -torch.inf), lp)
            if p.shape:
                ld, lp = ld.reshape(n, -1).sum(-1), lp.reshape(n, -1).sum(-1)
            log_det, log_prior = log_det + ld, log_prior + lp
            values[p.name] = v
            for i, e in enumerate(p.elements):
                ev = v[:, i] if p.shape else v
                sym_env[e] = ev
                elements[e.name] = ev
        return values, elements, log_det, log_prior

    def prior_draws(self, n: int, seed: int) -> torch.Tensor:
        """n unconstrained draws from the prior, (n, D)."""
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            sym_env: dict = {}
            z = torch.zeros(n, self.dim, dtype=DTYPE, device=self.device)
            with torch.no_grad():
                for p in self.parameters:
                    d = self._prior(p, sym_env, n)
                    v = d.sample()
                    off, size = self.offsets[p.name]
                    z[:, off:off + size] = biject_to(d.support).inv(v).reshape(n, size)
                    for i, e in enumerate(p.elements):
                        sym_env[e] = v[:, i] if p.shape else v
        finally:
            torch.random.set_rng_state(gen_state)
        return z

    def initial(self, seed: int) -> torch.Tensor:
        """A starting point (D,): the element-wise median of 2,000 prior draws, unconstrained."""
        if self.dim == 0:
            return torch.zeros(0, dtype=DTYPE, device=self.device)
        z = self.prior_draws(2000, seed)
        z = torch.where(torch.isfinite(z), z, torch.zeros_like(z))
        return z.median(dim=0).values
