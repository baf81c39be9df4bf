"""Torch autograd wrapper around the numba ODE solver (forward sensitivities).

The forward pass solves the ODE together with its forward sensitivities
dY/dp and dY/dy0 (numpy/numba, on the CPU); the backward pass contracts the
incoming gradient with them:

    grad_p[b]  = sum_{t,i} gY[b,t,i] * dY/dp[b,t,i,:]
    grad_y0[b] = sum_{t,i} gY[b,t,i] * dY/dy0[b,t,i,:]

Rows whose solve failed are NaN in the output and get zero gradients.
Only first derivatives are supported (the backward is not itself differentiable).

Two backends compute the forward pass: the numba solver (``OdeSystem``, on the
CPU; inputs on another device are copied over and back) and the batched torch
solver (``TorchOdeSystem``, ``ode_torch.py``) that runs on the inputs' device, so
CUDA inputs never leave the GPU.  ``backend="auto"`` takes the torch solver for
CUDA inputs when one is given, the numba solver otherwise.  Both share the backward.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .ode_solver import OdeSystem
from .ode_torch import TorchOdeSystem

__all__ = ["solve_ode", "BACKENDS"]

BACKENDS = ("auto", "numba", "torch")


class _OdeSolveFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y0, p, system, t0, times, opts):
        y0_np = y0.detach().to("cpu", torch.float64).numpy()
        p_np = p.detach().to("cpu", torch.float64).numpy()
        y0_sens = bool(y0.requires_grad)
        Y, SP, S0, ok = system.solve(y0_np, p_np, t0, times, sensitivities=True, y0_sensitivities=y0_sens, **opts)
        if S0 is None:  # constant initial values: no sensitivities with respect to them
            S0 = np.zeros((Y.shape[0], Y.shape[1], Y.shape[2], 0))
        bad = ~ok
        if bad.any():
            SP[bad] = 0.0
            S0[bad] = 0.0
        ctx.save_for_backward(torch.from_numpy(SP), torch.from_numpy(S0), torch.from_numpy(ok))
        ctx.in_dtype = (y0.dtype, p.dtype)
        ctx.in_device = (y0.device, p.device)
        return torch.from_numpy(Y).to(device=y0.device, dtype=y0.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, gY):
        SP, S0, ok = ctx.saved_tensors
        g = gY.detach().to(SP.device, torch.float64)  # the CPU for numba, the inputs' device for torch
        if not bool(ok.all()):
            g = torch.where(ok[:, None, None], g, torch.zeros((), dtype=g.dtype, device=g.device))
        grad_y0 = grad_p = None
        B = g.shape[0]
        gf = g.reshape(B, 1, -1)  # (B, 1, T*n); bmm is much cheaper than einsum for these sizes
        if ctx.needs_input_grad[0]:
            grad_y0 = torch.bmm(gf, S0.reshape(B, gf.shape[2], -1)).reshape(B, -1)
            grad_y0 = grad_y0.to(device=ctx.in_device[0], dtype=ctx.in_dtype[0])
        if ctx.needs_input_grad[1]:
            grad_p = torch.bmm(gf, SP.reshape(B, gf.shape[2], -1)).reshape(B, -1)
            grad_p = grad_p.to(device=ctx.in_device[1], dtype=ctx.in_dtype[1])
        return grad_y0, grad_p, None, None, None, None


class _TorchOdeSolveFn(_OdeSolveFn):
    """The torch solver's forward (on the inputs' device, no autograd graph); backward as above."""

    @staticmethod
    def forward(ctx, y0, p, system, t0, times, opts):
        y0_sens = bool(y0.requires_grad)
        Y, SP, S0, ok = system.solve(y0.detach(), p.detach(), t0, times, sensitivities=True,
                                     y0_sensitivities=y0_sens, **opts)
        if S0 is None:  # constant initial values: no sensitivities with respect to them
            S0 = Y.new_zeros((Y.shape[0], Y.shape[1], Y.shape[2], 0))
        # failed rows: zero sensitivities, selected on the device (no host synchronisation)
        SP = torch.where(ok[:, None, None, None], SP, torch.zeros((), dtype=SP.dtype, device=SP.device))
        S0 = torch.where(ok[:, None, None, None], S0, torch.zeros((), dtype=S0.dtype, device=S0.device))
        ctx.save_for_backward(SP, S0, ok)
        ctx.in_dtype = (y0.dtype, p.dtype)
        ctx.in_device = (y0.device, p.device)
        return Y.to(device=y0.device, dtype=y0.dtype)


def _use_torch(backend, system, torch_system, y0, p) -> bool:
    """Resolves ``backend``: True for the torch solver, False for the numba solver."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    if backend == "torch":
        if torch_system is None:
            raise ValueError("backend='torch' needs a TorchOdeSystem: pass torch_system=compile_torch_ode_system(...) "
                             "(the numba OdeSystem keeps no SymPy to build one from)")
        return True
    if backend == "numba":
        if not isinstance(system, OdeSystem):
            raise ValueError("backend='numba' needs a numba OdeSystem as `system`")
        return False
    if not isinstance(system, OdeSystem):
        return True  # only a torch system was given
    return torch_system is not None and (y0.is_cuda or p.is_cuda)


def solve_ode(system: OdeSystem | TorchOdeSystem | None, y0: torch.Tensor, p: torch.Tensor, t0: float, times, *,
              method: str = "rk45", rtol: float = 1e-6, atol: float = 1e-8,
              max_steps: int = 100_000, backend: str = "auto",
              torch_system: TorchOdeSystem | None = None) -> torch.Tensor:
    """Differentiable ODE solve.

    y0 (B, n) and p (B, P) tensors (1-D inputs are treated as B=1 and the batch
    dimension is dropped from the result); times (T,) array/tensor sorted
    ascending, all >= t0.  Returns (B, T, n) on the inputs' device and dtype.
    Failed rows are NaN (their gradients are zero).  When neither input
    requires grad the sensitivities are not computed.

    ``backend``: "numba" (the compiled CPU solver, ``system``), "torch" (the
    batched torch solver ``torch_system``, on the inputs' device) or "auto" (torch
    when the inputs are on a CUDA device and ``torch_system`` is given, numba
    otherwise).  ``system`` may itself be a ``TorchOdeSystem``.

    Example::

        >>> Y = solve_ode(lv, y0.cuda(), p.cuda().requires_grad_(), 0.0, times, torch_system=lv_torch)
        >>> Y.sum().backward()  # gradients from the forward sensitivities, on the GPU
    """
    if isinstance(system, TorchOdeSystem):  # a torch system alone: it is the one to use
        torch_system, system = system, None
    if isinstance(times, torch.Tensor):
        times_np = times.detach().to("cpu", torch.float64).numpy()
    else:
        times_np = np.asarray(times, dtype=np.float64)
    times_np = np.ascontiguousarray(times_np.reshape(-1))
    if isinstance(t0, torch.Tensor):
        t0 = float(t0.detach().cpu())
    t0 = float(t0)
    squeeze = y0.dim() == 1 and p.dim() == 1
    if y0.dim() == 1:
        y0 = y0.unsqueeze(0)
    if p.dim() == 1:
        p = p.unsqueeze(0)
    if y0.shape[0] != p.shape[0]:
        B = max(y0.shape[0], p.shape[0])
        y0 = y0.expand(B, -1)
        p = p.expand(B, -1)
    opts = dict(method=method, rtol=rtol, atol=atol, max_steps=max_steps)
    if _use_torch(backend, system, torch_system, y0, p):
        if torch.is_grad_enabled() and (y0.requires_grad or p.requires_grad):
            out = _TorchOdeSolveFn.apply(y0, p, torch_system, t0, times_np, opts)
        else:
            Y, _, _, _ = torch_system.solve(y0.detach(), p.detach(), t0, times_np, sensitivities=False, **opts)
            out = Y.to(device=y0.device, dtype=y0.dtype)
        return out[0] if squeeze else out
    if torch.is_grad_enabled() and (y0.requires_grad or p.requires_grad):
        out = _OdeSolveFn.apply(y0, p, system, t0, times_np, opts)
    else:
        Y, _, _, _ = system.solve(y0.detach().to("cpu", torch.float64).numpy(),
                                  p.detach().to("cpu", torch.float64).numpy(),
                                  t0, times_np, sensitivities=False, **opts)
        out = torch.from_numpy(Y).to(device=y0.device, dtype=y0.dtype)
    return out[0] if squeeze else out
