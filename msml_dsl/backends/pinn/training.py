"""MAP training: Adam, then L-BFGS, with progress reports and early stopping.

The loss is a closure returning a scalar tensor.  Nothing is copied to the host except every
``check_every`` steps, when the mean loss of the last window is read for the progress callback
``progress(step, total, loss)`` and the early-stopping test: a phase ends when the loss changed
by less than ``tol`` (relative) since the previous check.  L-BFGS (strong Wolfe line search)
runs in chunks of ``check_every`` iterations; a chunk that ends in a non-finite loss is undone
and ends the phase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class TrainingHistory:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    phase: list[str] = field(default_factory=list)
    adam_steps: int = 0
    lbfgs_steps: int = 0
    stopped_early: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return self.loss[-1] if self.loss else float("nan")


def _converged(prev: float | None, cur: float, tol: float) -> bool:
    return prev is not None and abs(prev - cur) <= tol * max(abs(prev), 1e-30)


def train(loss_fn: Callable[[str], torch.Tensor], parameters: list[torch.Tensor], *, adam_steps: int, lr: float,
          lbfgs_steps: int, tol: float, check_every: int = 100, lr_decay: float = 1.0,
          progress: Callable | None = None, before_step: Callable[[int], None] | None = None) -> TrainingHistory:
    """Minimise ``loss_fn(phase)`` over ``parameters`` in place.

    ``phase`` is 'adam', 'lbfgs' or 'eval' (a value only: no graph for a backward pass).

    ``before_step(step)`` runs before each Adam step (resampling, adaptive refinement).
    """
    history = TrainingHistory()
    total = adam_steps + lbfgs_steps
    t0 = time.perf_counter()
    if adam_steps:
        opt = torch.optim.Adam(parameters, lr=lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay ** (1 / 1000)) if lr_decay != 1 else None
        acc, count, prev = None, 0, None
        for step in range(1, adam_steps + 1):
            if before_step is not None:
                before_step(step)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn("adam")
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            acc = loss.detach() if acc is None else acc + loss.detach()
            count += 1
            if step % check_every == 0 or step == adam_steps:
                cur = float(acc / count)          # the only host sync of the window
                acc, count = None, 0
                history.steps.append(step)
                history.loss.append(cur)
                history.phase.append("adam")
                if progress is not None:
                    progress(step, total, cur)
                if _converged(prev, cur, tol):
                    history.stopped_early.append(f"adam at step {step} (loss change below tol={tol:g})")
                    break
                prev = cur
        history.adam_steps = step
    history.seconds["adam"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if lbfgs_steps:
        opt = torch.optim.LBFGS(parameters, lr=1.0, max_iter=check_every, max_eval=check_every * 5 // 4 + 1,
                                history_size=50, tolerance_grad=1e-12, tolerance_change=1e-15,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn("lbfgs")
            loss.backward()
            return loss

        done, prev = 0, float(loss_fn("eval").detach())
        while done < lbfgs_steps:
            saved = [p.detach().clone() for p in parameters]
            before = opt.state[opt._params[0]].get("n_iter", 0)
            opt.param_groups[0]["max_iter"] = min(check_every, lbfgs_steps - done)
            opt.step(closure)
            ran = opt.state[opt._params[0]].get("n_iter", 0) - before
            done += max(ran, 1)
            cur = float(loss_fn("eval").detach())
            if not cur == cur or cur in (float("inf"), float("-inf")):
                with torch.no_grad():
                    for p, s in zip(parameters, saved):
                        p.copy_(s)
                history.stopped_early.append(f"lbfgs after {done} iterations (non-finite loss; last good "
                                             "point kept)")
                break
            history.steps.append(history.adam_steps + done)
            history.loss.append(cur)
            history.phase.append("lbfgs")
            if progress is not None:
                progress(history.adam_steps + done, total, cur)
            if ran < opt.param_groups[0]["max_iter"] or _converged(prev, cur, tol):
                history.stopped_early.append(f"lbfgs after {done} iterations (converged: loss change below "
                                             f"tol={tol:g} or no further progress)")
                break
            prev = cur
        history.lbfgs_steps = done
    history.seconds["lbfgs"] = time.perf_counter() - t1
    return history
