"""ChEES-HMC: an ensemble-friendly HMC whose chains move in lockstep.

NUTS gives each chain its own trajectory length, so a batch of chains waits
for its slowest member. ChEES-HMC (Hoffman, Radul & Sountsov, AISTATS 2021)
uses one jittered trajectory length for all chains, adapted during warm-up by
maximising the change in the ensemble's estimated squared distance (ChEES),
and one step size adapted by dual averaging on the harmonic mean of the
chains' acceptance probabilities. Every leapfrog step is then a single batched
gradient call over all chains: the method of choice for hundreds or thousands
of chains. The diagonal metric is the ensemble's variance during warm-up.

Convergence of many short chains is judged with nested R-hat (Margossian et
al. 2022): chains are grouped into superchains that share a starting point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from msml_dsl.inference.nuts import NutsResult


@dataclass(frozen=True)
class CheesSettings:
    target_accept: float = 0.651     # optimal for HMC (Beskos et al.)
    initial_step_size: float = 0.1
    initial_length: float = 1.0
    max_leapfrog: int = 1000
    length_learning_rate: float = 0.025
    max_delta_h: float = 1000.0


def _halton(i: int, base: int = 2) -> float:
    f, r = 1.0, 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


def run_chees(potential_and_grad: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
              initial_positions: np.ndarray, *, warmup: int, draws: int, seed: int,
              settings: CheesSettings = CheesSettings(), progress: Callable | None = None) -> NutsResult:
    """Run ChEES-HMC on C chains (rows of initial_positions); the result has NUTS's fields.

    >>> f = lambda z: (0.5 * (z ** 2).sum(1), z)
    >>> r = run_chees(f, np.zeros((64, 2)), warmup=200, draws=200, seed=1)
    >>> abs(float(r.positions.mean())) < 0.1
    True
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    q = np.array(initial_positions, dtype=float)
    C, D = q.shape
    u, g = potential_and_grad(q)
    if not np.isfinite(u).all():
        raise ValueError("every chain needs a starting point with a finite log density")
    inv_metric = np.ones(D)
    eps = settings.initial_step_size
    log_length = math.log(settings.initial_length)
    # dual averaging state (Stan's constants)
    mu, h_bar, log_eps_bar = math.log(10 * eps), 0.0, 0.0
    adam_m = adam_v = 0.0
    out = {k: [] for k in ("q", "u", "energy", "n", "div", "acc")}
    total = warmup + draws
    interrupted = False
    n_calls = 0
    try:
        for it in range(total):
            jitter = _halton(it + 1)
            length = math.exp(log_length)
            n_steps = int(min(settings.max_leapfrog, max(1, math.ceil(jitter * length / eps))))
            sqrt_m = 1.0 / np.sqrt(inv_metric)
            p0 = rng.standard_normal((C, D)) * sqrt_m
            h0 = u + 0.5 * np.sum(p0 * p0 * inv_metric, axis=1)
            qn, pn, un, gn = q.copy(), p0.copy(), u.copy(), g.copy()
            pn -= 0.5 * eps * gn
            for step in range(n_steps):
                qn += eps * pn * inv_metric
                un, gn = potential_and_grad(qn)
                n_calls += 1
                gn = np.where(np.isfinite(un)[:, None], gn, 0.0)
                pn -= (eps if step < n_steps - 1 else 0.5 * eps) * gn
            h1 = un + 0.5 * np.sum(pn * pn * inv_metric, axis=1)
            delta = np.where(np.isfinite(h1), h1 - h0, np.inf)
            accept_prob = np.exp(np.minimum(0.0, -delta))
            accept = rng.uniform(size=C) < accept_prob
            diverging = delta > settings.max_delta_h
            q_prev = q
            q = np.where(accept[:, None], qn, q)
            u = np.where(accept, un, u)
            g = np.where(accept[:, None], gn, g)
            energy = u + 0.5 * np.sum(np.where(accept[:, None], pn, p0) ** 2 * inv_metric, axis=1)
            if it < warmup:
                # step size: dual averaging on the harmonic mean of the acceptance probabilities
                harmonic = 1.0 / np.mean(1.0 / np.maximum(accept_prob, 1e-10))
                t = it + 1
                h_bar = (1 - 1 / (t + 10)) * h_bar + (settings.target_accept - harmonic) / (t + 10)
                log_eps = mu - math.sqrt(t) / 0.05 * h_bar
                eta = t ** -0.75
                log_eps_bar = eta * log_eps + (1 - eta) * log_eps_bar
                eps = math.exp(log_eps)
                # trajectory length: Adam ascent on ChEES, weighted by acceptance
                centred_new = qn - qn.mean(axis=0)
                centred_old = q_prev - q_prev.mean(axis=0)
                diff_sq = np.sum(centred_new ** 2, axis=1) - np.sum(centred_old ** 2, axis=1)
                grad_terms = diff_sq * np.sum(centred_new * pn * inv_metric, axis=1) * jitter
                ok = np.isfinite(grad_terms)
                w = accept_prob[ok] / max(accept_prob[ok].sum(), 1e-12)
                grad_log_length = float(np.sum(w * grad_terms[ok])) * length
                if math.isfinite(grad_log_length):
                    adam_m = 0.9 * adam_m + 0.1 * grad_log_length
                    adam_v = 0.999 * adam_v + 0.001 * grad_log_length ** 2
                    m_hat = adam_m / (1 - 0.9 ** t)
                    v_hat = adam_v / (1 - 0.999 ** t)
                    log_length += settings.length_learning_rate * m_hat / (math.sqrt(v_hat) + 1e-8)
                    log_length = min(log_length, math.log(eps * settings.max_leapfrog))
                # metric: the ensemble's variance (regularised as Stan does)
                if it >= 50 and C >= 8:
                    var = q.var(axis=0)
                    inv_metric = (C / (C + 5)) * var + 1e-3 * (5 / (C + 5))
                if it == warmup - 1:
                    eps = math.exp(log_eps_bar)
            else:
                out["q"].append(q.copy())
                out["u"].append(u.copy())
                out["energy"].append(energy)
                out["n"].append(np.full(C, n_steps))
                out["div"].append(diverging)
                out["acc"].append(accept_prob)
            if progress is not None:
                progress(it + 1, total, {"phase": "warmup" if it < warmup else "sampling",
                                         "divergences": int(sum(d.sum() for d in out["div"])), "step_size": eps,
                                         "n_leapfrog": n_steps})
    except KeyboardInterrupt:
        if not out["q"]:
            raise
        interrupted = True
    n = len(out["q"])
    stack = (lambda k: np.stack(out[k], axis=1)) if n else (lambda k: np.zeros((C, 0)))
    positions = np.stack(out["q"], axis=1) if n else np.zeros((C, 0, D))
    return NutsResult(positions=positions, potential_energy=stack("u"), energy=stack("energy"),
                      tree_depth=np.zeros((C, n), dtype=int), n_leapfrog=stack("n").astype(int),
                      diverging=stack("div").astype(bool), accept_stat=stack("acc"), step_size=np.full(C, eps),
                      inverse_metric=np.tile(inv_metric, (C, 1)), n_draws_completed=n, interrupted=interrupted,
                      n_batched_calls=n_calls, n_gradient_evals=n_calls * C)


def nested_rhat(draws: np.ndarray, superchains: int) -> float:
    """Nested R-hat (Margossian et al. 2022) of one quantity, draws (chains, draws).

    Chains i*M .. (i+1)*M - 1 form superchain i (they share a starting point).
    """
    C, N = draws.shape
    M = C // superchains
    x = draws[: superchains * M].reshape(superchains, M, N)
    chain_means = x.mean(axis=2)
    super_means = chain_means.mean(axis=1)
    between = super_means.var(ddof=1) if superchains > 1 else 0.0
    within_chain = x.var(axis=2, ddof=1).mean(axis=1) if N > 1 else np.zeros(superchains)
    between_chain = chain_means.var(axis=1, ddof=1) if M > 1 else np.zeros(superchains)
    within = float(np.mean(between_chain + within_chain))
    return math.sqrt(1 + between / within) if within > 0 else math.inf
