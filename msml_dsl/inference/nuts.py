"""Batched-chain No-U-Turn sampler (Stan's algorithm).

Each chain's work (initial step-size search, NUTS transitions, adaptation) is
written as a Python generator that ``yield``\\ s the position at which it needs
the potential and its gradient and receives ``(U, dU/dz)`` back.  A driver
collects the pending positions of all chains still working, evaluates them
with *one* call of the batched potential, and sends every chain its result.
By default chains run free (a chain whose tree is finished starts its next
iteration, so batches stay full); with ``lockstep=True`` chains that finished
the current iteration wait for the others.  Both give the same draws.

The transition follows Stan's ``base_nuts.hpp`` (2.26+): multinomial sampling
of the trajectory, biased progressive sampling at the top level and uniform
sampling inside subtrees, the generalised no-U-turn criterion on
``p_sharp = M^{-1} p`` and ``rho`` including the two extra checks across
merged subtrees, divergence when ``H - H0 > 1000`` (NaN energy counts as
infinite).  Warm-up adaptation follows Stan's windowed scheme
(``windowed_adaptation``, ``var_adaptation``/``covar_adaptation``,
``stepsize_adaptation`` and ``base_hmc::init_stepsize``), except that the
step-size search starts low enough that its first kick stays near the start
where the gradient is steep (``_kick_capped_step``).

Randomness: chain ``i`` owns ``np.random.default_rng(SeedSequence(seed).spawn(C)[i])``;
its random stream does not depend on the other chains, so the same seed gives
the same draws however chains are batched (given a potential whose rows do
not depend on each other numerically).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

__all__ = ["NutsResult", "run_nuts"]

_INF = math.inf
_LOG_08 = math.log(0.8)


@dataclass
class NutsResult:
    positions: np.ndarray  # (C, draws, D) unconstrained draws
    potential_energy: np.ndarray  # (C, draws)  (= -log density)
    energy: np.ndarray  # (C, draws)  Hamiltonian at the sample
    tree_depth: np.ndarray  # (C, draws) int
    n_leapfrog: np.ndarray  # (C, draws) int
    diverging: np.ndarray  # (C, draws) bool
    accept_stat: np.ndarray  # (C, draws)
    step_size: np.ndarray  # (C,) final adapted step size
    inverse_metric: np.ndarray  # (C, D) diag or (C, D, D) dense
    n_draws_completed: int  # < draws when interrupted
    interrupted: bool
    n_batched_calls: int = 0  # calls of potential_and_grad (warm-up included)
    n_gradient_evals: int = 0  # positions evaluated, summed over all calls


# --------------------------------------------------------------------------- helpers


def _lse(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats (Stan's math::log_sum_exp)."""
    if a == -_INF:
        return b
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def _window_schedule(num_warmup: int, init_buffer: int, term_buffer: int, base_window: int):
    """Replays Stan's ``windowed_adaptation``.

    Returns two boolean arrays over warm-up iterations: whether the draw of that
    iteration enters the metric estimator, and whether a window ends there."""
    add = np.zeros(num_warmup, dtype=bool)
    end = np.zeros(num_warmup, dtype=bool)
    if num_warmup < 20:
        return add, end  # Stan: no metric estimation for num_warmup < 20
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - (init_buffer + term_buffer)
    last = num_warmup - term_buffer - 1
    window_size = base_window
    next_window = init_buffer + window_size - 1
    for counter in range(num_warmup):
        if init_buffer <= counter < num_warmup - term_buffer:
            add[counter] = True
        if counter == next_window:
            end[counter] = True
            if next_window != last:  # compute_next_window
                window_size *= 2
                next_window = counter + window_size
                if next_window != last and next_window + 2 * window_size >= num_warmup - term_buffer:
                    next_window = last
    return add, end


def _kick_capped_step(eps: float, g_minv_g: float, D: int) -> float:
    """Where the step-size search starts: ``eps``, halved until its first half kick is no larger
    than a typical momentum.

    Stan starts ``init_stepsize`` at the current step size (1 at the first call) and halves it
    while the trial leapfrog is rejected. Where the gradient is steep (a start a few posterior
    widths from a narrow mode), the kick ``eps/2 * g`` of those first trials throws the position
    far past the posterior: on a 200-state reaction chain with the identity metric, log k = 35,
    where one stiff ODE solve of the explicit solver costs 20-90 s, 200 s of the search in all.
    Halving until ``eps/2 * |g|_{M^-1} <= sqrt(D)`` (the size of ``p ~ N(0, M)`` in the same
    norm) keeps every trial near the start; the search then doubles up from there, on the same
    grid ``eps * 2^k``, and stops at the first rejected step, as Stan's does from below.
    """
    if not (g_minv_g > 0.0 and math.isfinite(g_minv_g)):
        return eps
    kick = 0.5 * eps * math.sqrt(g_minv_g)
    limit = math.sqrt(D)
    if kick <= limit:
        return eps
    return eps * 2.0 ** -math.ceil(math.log2(kick / limit))


def _evaluate(potential_and_grad, Z: np.ndarray, D: int, user_err: dict):
    k = Z.shape[0]
    with np.errstate(**user_err):  # the sampler silences overflow warnings, not the user's code
        U, G = potential_and_grad(Z)
    U = np.array(U, dtype=np.float64).reshape(k)
    G = np.array(G, dtype=np.float64).reshape(k, D)  # fresh copy: rows are kept by the chains
    bad = ~(np.isfinite(U) & np.isfinite(G).all(axis=1))
    if bad.any():
        U[bad] = _INF
        G[bad] = 0.0
    return U, G


def _drive(gens, potential_and_grad, D: int, counter: list, user_err: dict, after_round) -> None:
    """Runs the chain generators to completion, batching their gradient requests.

    after_round: optional callable run after every batched evaluation."""
    pend_g = []
    pend_q = []
    for g in gens:
        try:
            q = g.send(None)
        except StopIteration:
            continue
        pend_g.append(g)
        pend_q.append(q)
    while pend_g:
        U, G = _evaluate(potential_and_grad, np.stack(pend_q), D, user_err)
        counter[0] += 1
        counter[1] += len(pend_g)
        new_g = []
        new_q = []
        for g, u, grad in zip(pend_g, U.tolist(), G):
            try:
                q = g.send((u, grad))
            except StopIteration:
                continue
            new_g.append(g)
            new_q.append(q)
        pend_g = new_g
        pend_q = new_q
        if after_round is not None:
            after_round()


# --------------------------------------------------------------------------- one chain


class _Chain:
    def __init__(self, rng: np.random.Generator, D: int, dense: bool, inv_metric: np.ndarray,
                 step_size: float, max_depth: int, max_delta_h: float, target_accept: float):
        self.rng = rng
        self.D = D
        self.dense = dense
        self.max_depth = max_depth
        self.max_delta_h = max_delta_h
        self.set_metric(inv_metric)
        self.eps = float(step_size)
        self.z = None  # (q, p, U, grad)
        # dual averaging (Stan's stepsize_adaptation defaults)
        self.delta = target_accept
        self.gamma = 0.05
        self.t0 = 10.0
        self.kappa = 0.75
        self.mu = math.log(10.0 * self.eps)
        self.da_restart()
        self.window: list = []
        # statistics of the last transition
        self.depth = 0
        self.n_leapfrog = 0
        self.divergent = False
        self.accept_stat = 0.0
        self.energy = 0.0

    # ---- metric
    def set_metric(self, inv_metric: np.ndarray) -> None:
        self.minv = np.array(inv_metric, dtype=np.float64)
        if self.dense:
            L = np.linalg.cholesky(self.minv)
            # p = L^{-T} u  so that Cov(p) = (L L^T)^{-1} = M  (Stan's dense_e_metric::sample_p)
            self.p_factor = np.linalg.inv(L).T.copy()
        else:
            self.p_factor = 1.0 / np.sqrt(self.minv)

    def sample_p(self) -> np.ndarray:
        u = self.rng.standard_normal(self.D)
        if self.dense:
            return self.p_factor @ u
        return u * self.p_factor

    # ---- dual averaging
    def da_restart(self) -> None:
        self.da_counter = 0
        self.s_bar = 0.0
        self.x_bar = 0.0

    def da_learn(self, adapt_stat: float) -> None:
        self.da_counter += 1
        n = self.da_counter
        adapt_stat = 1.0 if adapt_stat > 1.0 else adapt_stat
        eta = 1.0 / (n + self.t0)
        self.s_bar = (1.0 - eta) * self.s_bar + eta * (self.delta - adapt_stat)
        x = self.mu - self.s_bar * math.sqrt(n) / self.gamma
        x_eta = n ** (-self.kappa)
        self.x_bar = (1.0 - x_eta) * self.x_bar + x_eta * x
        self.eps = math.exp(x)

    def da_complete(self) -> None:
        if self.da_counter > 0:
            self.eps = math.exp(self.x_bar)

    # ---- generators (every gradient is a yield)
    def init_gen(self, q0: np.ndarray, index: int):
        U, g = yield q0
        if not math.isfinite(U):
            raise ValueError(
                f"chain {index}: the potential is not finite (or its gradient is not) at the "
                "initial position; choose other initial values")
        self.z = (q0, None, U, g)

    def init_stepsize_gen(self):
        """Stan's base_hmc::init_stepsize (every trial leapfrog is a yield)."""
        eps = self.eps
        if eps == 0 or eps > 1e7 or math.isnan(eps):
            return
        q0, _, U0, g0 = self.z
        minv = self.minv
        mv = np.dot if self.dense else np.multiply
        eps = _kick_capped_step(eps, float(mv(minv, g0).dot(g0)), self.D)

        def trial(eps):
            p = self.sample_p()
            H0 = U0 + 0.5 * float(mv(minv, p).dot(p))
            p = p - (0.5 * eps) * g0
            q = q0 + eps * mv(minv, p)
            U, g = yield q
            p = p - (0.5 * eps) * g
            h = U + 0.5 * float(mv(minv, p).dot(p))
            if h != h:
                h = _INF
            return H0 - h

        delta_h = yield from trial(eps)
        direction = 1 if delta_h > _LOG_08 else -1
        while True:
            delta_h = yield from trial(eps)
            if direction == 1 and not (delta_h > _LOG_08):
                break
            if direction == -1 and not (delta_h < _LOG_08):
                break
            eps = 2.0 * eps if direction == 1 else 0.5 * eps
            if eps > 1e7:
                raise RuntimeError("Posterior is improper. Please check your model.")
            if eps == 0:
                raise RuntimeError("No acceptably small step size could be found. "
                                   "Perhaps the posterior is not continuous?")
        self.eps = eps

    def transition_gen(self):
        """One NUTS transition (Stan's base_nuts::transition)."""
        q0, _, U0, g0 = self.z
        minv = self.minv
        eps = self.eps
        dense = self.dense
        mv = np.dot if dense else np.multiply
        step_f = eps * minv
        step_b = -eps * minv
        half_f = 0.5 * eps
        half_b = -0.5 * eps
        rand = self.rng.random
        max_dh = self.max_delta_h
        exp = math.exp

        p0 = self.sample_p()
        ps0 = mv(minv, p0)
        H0 = U0 + 0.5 * float(ps0.dot(p0))
        n_leapfrog = 0
        sum_metro = 0.0
        divergent = False

        def build(depth, z, step, half):
            # returns None if the subtree is invalid, else
            # (z_end, z_propose, p_sharp_beg, p_sharp_end, p_beg, p_end, rho, log_sum_weight)
            nonlocal n_leapfrog, sum_metro, divergent
            if depth == 0:
                q, p, U, g = z
                p = p - half * g
                q = q + (step @ p if dense else step * p)
                U, g = yield q
                p = p - half * g
                ps = minv @ p if dense else minv * p
                h = U + 0.5 * float(ps.dot(p))
                if h != h:
                    h = _INF
                n_leapfrog += 1
                lw = H0 - h
                if h - H0 > max_dh:
                    divergent = True
                    sum_metro += exp(lw) if lw < 0 else 1.0
                    return None
                sum_metro += 1.0 if lw > 0 else exp(lw)
                z = (q, p, U, g)
                return (z, z, ps, ps, p, p, p, lw)

            r = yield from build(depth - 1, z, step, half)
            if r is None:
                return None
            z_end, z_prop, ps_beg, ps_init_end, p_beg, p_init_end, rho_init, lw_init = r
            r = yield from build(depth - 1, z_end, step, half)
            if r is None:
                return None
            z_end, z_prop_final, ps_final_beg, ps_end, p_final_beg, p_end, rho_final, lw_final = r

            lw_sub = _lse(lw_init, lw_final)
            if lw_final > lw_sub or rand() < exp(lw_final - lw_sub):
                z_prop = z_prop_final
            rho = rho_init + rho_final
            # around merged subtrees
            if not (ps_beg.dot(rho) > 0 and ps_end.dot(rho) > 0):
                return None
            if depth == 1:
                # both halves are single states: the two checks below equal the one above
                return (z_end, z_prop, ps_beg, ps_end, p_beg, p_end, rho, lw_sub)
            # between subtrees
            rho_ext = rho_init + p_final_beg
            if not (ps_beg.dot(rho_ext) > 0 and ps_final_beg.dot(rho_ext) > 0):
                return None
            rho_ext = rho_final + p_init_end
            if not (ps_init_end.dot(rho_ext) > 0 and ps_end.dot(rho_ext) > 0):
                return None
            return (z_end, z_prop, ps_beg, ps_end, p_beg, p_end, rho, lw_sub)

        z_fwd = z_bck = z_sample = (q0, p0, U0, g0)
        p_ff = p_fb = p_bf = p_bb = p0
        ps_ff = ps_fb = ps_bf = ps_bb = ps0
        rho = p0
        rho_f = rho_b = p0
        log_sum_weight = 0.0
        depth = 0
        while depth < self.max_depth:
            if rand() > 0.5:
                # extend forward: the current trajectory becomes the backward subtree
                rho_b = rho
                p_bf = p_ff
                ps_bf = ps_ff
                r = yield from build(depth, z_fwd, step_f, half_f)
                if r is None:
                    break
                z_fwd, z_prop, ps_fb, ps_ff, p_fb, p_ff, rho_f, lw_sub = r
            else:
                rho_f = rho
                p_fb = p_bb
                ps_fb = ps_bb
                r = yield from build(depth, z_bck, step_b, half_b)
                if r is None:
                    break
                z_bck, z_prop, ps_bf, ps_bb, p_bf, p_bb, rho_b, lw_sub = r
            depth += 1
            if lw_sub > log_sum_weight or rand() < exp(lw_sub - log_sum_weight):
                z_sample = z_prop
            log_sum_weight = _lse(log_sum_weight, lw_sub)
            rho = rho_b + rho_f
            if not (ps_bb.dot(rho) > 0 and ps_ff.dot(rho) > 0):
                break
            if depth == 1:
                continue  # two single states: the extra checks equal the one above
            rho_ext = rho_b + p_fb
            if not (ps_bb.dot(rho_ext) > 0 and ps_fb.dot(rho_ext) > 0):
                break
            rho_ext = rho_f + p_bf
            if not (ps_bf.dot(rho_ext) > 0 and ps_ff.dot(rho_ext) > 0):
                break

        self.z = z_sample
        _, p, U, _ = z_sample
        self.energy = U + 0.5 * float(mv(minv, p).dot(p))
        self.depth = depth
        self.n_leapfrog = n_leapfrog
        self.divergent = divergent
        self.accept_stat = sum_metro / n_leapfrog

    def warmup_gen(self, add_sample: bool, end_window: bool, adapt_metric: bool):
        """Transition + Stan's adapt_{diag,dense}_e_nuts::transition."""
        yield from self.transition_gen()
        self.da_learn(self.accept_stat)
        if not adapt_metric:
            return
        if add_sample:
            self.window.append(self.z[0])
        if end_window:
            W = np.asarray(self.window)
            n = float(W.shape[0])
            if self.dense:
                var = np.atleast_2d(np.cov(W, rowvar=False, ddof=1))
                var = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0)) * np.eye(self.D)
            else:
                var = W.var(axis=0, ddof=1)
                var = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
            self.window = []
            self.set_metric(var)
            yield from self.init_stepsize_gen()
            self.mu = math.log(10.0 * self.eps)
            self.da_restart()


# --------------------------------------------------------------------------- driver


def _initial_metric(inverse_metric, C: int, D: int, dense: bool) -> np.ndarray:
    if inverse_metric is None:
        return np.broadcast_to(np.eye(D) if dense else np.ones(D), (C,) + ((D, D) if dense else (D,))).copy()
    m = np.asarray(inverse_metric, dtype=np.float64)
    shape = (D, D) if dense else (D,)
    if m.shape == shape:
        return np.broadcast_to(m, (C,) + shape).copy()
    if m.shape == (C,) + shape:
        return m.copy()
    raise ValueError(f"inverse_metric has shape {m.shape}; expected {shape} or {(C,) + shape}")


def run_nuts(potential_and_grad: Callable[[np.ndarray], tuple], initial_positions: np.ndarray, *,
             warmup: int, draws: int, seed: int,
             target_accept: float = 0.8, max_tree_depth: int = 10, metric: str = "diag",
             step_size: Optional[float] = None, progress: Optional[Callable] = None,
             inverse_metric: Optional[np.ndarray] = None, adapt_metric: bool = True,
             max_delta_h: float = 1000.0, init_buffer: int = 75, term_buffer: int = 50,
             base_window: int = 25, lockstep: bool = False) -> NutsResult:
    """Run NUTS on C chains, their gradient requests batched.

    potential_and_grad(z: (k, D) float64 array) -> (U (k,), dU/dz (k, D)) for any subset of k
    chains' positions.  U (or the gradient) may be +inf or NaN: such a point has infinite
    energy (a divergence / rejected point), never a crash.  Only the initial positions must
    have a finite potential.

    initial_positions: (C, D) (a (D,) vector means one chain).
    warmup / draws: iterations per chain.  seed: chain i uses SeedSequence(seed).spawn(C)[i].
    metric: "diag" or "dense".  step_size: initial (nominal) step size; default 1, refined by
    Stan's heuristic.  With warmup == 0 and step_size given it is used as is.
    progress: optional callable(iteration, total, info) called once per iteration (all chains);
    info = {'phase': 'warmup'|'sampling', 'divergences': int (this phase, all chains),
    'step_size': float (mean over chains), 'accept_stat': float, 'tree_depth': float,
    'n_leapfrog': float (means over chains of this iteration)}.
    inverse_metric: optional initial inverse metric ((D,)/(C, D) diag or (D, D)/(C, D, D) dense).
    adapt_metric: estimate the metric in Stan's windows (else only the step size is adapted).
    lockstep: if True, every chain waits at the end of each iteration for the others.  By default
    chains run free (each adapts and samples on its own, so nothing needs to wait) and every
    batched call holds all chains that still have work; the draws are the same either way.
    progress is called for iteration i once every chain has completed it.

    KeyboardInterrupt while sampling returns the draws completed so far (interrupted=True);
    during warm-up it is re-raised.
    """
    if metric not in ("diag", "dense"):
        raise ValueError("metric must be 'diag' or 'dense'")
    dense = metric == "dense"
    Q0 = np.array(initial_positions, dtype=np.float64)
    if Q0.ndim == 1:
        Q0 = Q0[None, :]
    if Q0.ndim != 2:
        raise ValueError("initial_positions must have shape (C, D)")
    C, D = Q0.shape
    warmup = int(warmup)
    draws = int(draws)
    if warmup < 0 or draws < 0:
        raise ValueError("warmup and draws must be >= 0")
    if max_tree_depth < 1:
        raise ValueError("max_tree_depth must be >= 1")

    user_err = np.geterr()
    with np.errstate(all="ignore"):  # overflow in far-out leapfrogs is handled as a divergence
        return _run(potential_and_grad, Q0, C, D, dense, warmup, draws, seed, target_accept,
                    max_tree_depth, step_size, progress, inverse_metric, adapt_metric, max_delta_h,
                    init_buffer, term_buffer, base_window, lockstep, user_err)


def _run(potential_and_grad, Q0, C, D, dense, warmup, draws, seed, target_accept, max_tree_depth,
         step_size, progress, inverse_metric, adapt_metric, max_delta_h, init_buffer, term_buffer,
         base_window, lockstep, user_err) -> NutsResult:
    minv0 = _initial_metric(inverse_metric, C, D, dense)
    eps0 = 1.0 if step_size is None else float(step_size)
    children = np.random.SeedSequence(seed).spawn(C)
    chains = [
        _Chain(np.random.default_rng(children[i]), D, dense, minv0[i], eps0, int(max_tree_depth),
               float(max_delta_h), float(target_accept))
        for i in range(C)
    ]
    counter = [0, 0]  # batched calls, evaluated positions
    add_sample, end_window = _window_schedule(warmup, init_buffer, term_buffer, base_window)
    total = warmup + draws

    # per-iteration statistics, warm-up and sampling together: (C, warmup + draws)
    st_eps = np.zeros((C, total))
    st_acc = np.zeros((C, total))
    st_depth = np.zeros((C, total), dtype=np.int64)
    st_nleap = np.zeros((C, total), dtype=np.int64)
    st_div = np.zeros((C, total), dtype=bool)
    st_energy = np.zeros((C, total))
    positions = np.empty((C, draws, D))
    potential = np.empty((C, draws))
    done = [0] * C  # iterations completed by each chain

    def record(c, ch, it):
        st_eps[c, it] = ch.eps
        st_acc[c, it] = ch.accept_stat
        st_depth[c, it] = ch.depth
        st_nleap[c, it] = ch.n_leapfrog
        st_div[c, it] = ch.divergent
        st_energy[c, it] = ch.energy
        if it >= warmup:
            q, _, U, _ = ch.z
            positions[c, it - warmup] = q
            potential[c, it - warmup] = U
        done[c] = it + 1

    def init_gen(c):
        ch = chains[c]
        yield from ch.init_gen(Q0[c].copy(), c)
        if warmup > 0 or step_size is None:
            yield from ch.init_stepsize_gen()

    def iteration_gen(c, it):
        ch = chains[c]
        if it < warmup:
            yield from ch.warmup_gen(bool(add_sample[it]), bool(end_window[it]), adapt_metric)
            if it == warmup - 1:
                ch.da_complete()
        else:
            yield from ch.transition_gen()
        record(c, ch, it)

    def chain_gen(c):
        yield from init_gen(c)
        for it in range(total):
            yield from iteration_gen(c, it)

    reported = [0]
    div_count = [0, 0]  # warm-up, sampling

    def report():
        # progress for every iteration that all chains have completed
        m = min(done)
        while reported[0] < m:
            it = reported[0]
            phase = 0 if it < warmup else 1
            div_count[phase] += int(st_div[:, it].sum())
            reported[0] = it + 1
            if progress is not None:
                info = {
                    "phase": "warmup" if phase == 0 else "sampling",
                    "divergences": div_count[phase],
                    "step_size": float(st_eps[:, it].mean()),
                    "accept_stat": float(st_acc[:, it].mean()),
                    "tree_depth": float(st_depth[:, it].mean()),
                    "n_leapfrog": float(st_nleap[:, it].mean()),
                }
                with np.errstate(**user_err):
                    progress(it, total, info)

    interrupted = False
    try:
        if lockstep:
            _drive([init_gen(c) for c in range(C)], potential_and_grad, D, counter, user_err, None)
            for it in range(total):
                _drive([iteration_gen(c, it) for c in range(C)], potential_and_grad, D, counter,
                       user_err, None)
                report()
        else:
            _drive([chain_gen(c) for c in range(C)], potential_and_grad, D, counter, user_err, report)
            report()
    except KeyboardInterrupt:
        if min(done) < warmup or draws == 0:
            raise
        interrupted = True

    completed = min(done) - warmup if interrupted else draws
    sl = slice(warmup, warmup + completed)
    return NutsResult(
        positions=positions[:, :completed].copy() if interrupted else positions,
        potential_energy=potential[:, :completed].copy() if interrupted else potential,
        energy=st_energy[:, sl].copy(),
        tree_depth=st_depth[:, sl].copy(),
        n_leapfrog=st_nleap[:, sl].copy(),
        diverging=st_div[:, sl].copy(),
        accept_stat=st_acc[:, sl].copy(),
        step_size=np.array([ch.eps for ch in chains]),
        inverse_metric=np.stack([ch.minv for ch in chains]),
        n_draws_completed=completed,
        interrupted=interrupted,
        n_batched_calls=counter[0],
        n_gradient_evals=counter[1],
    )
