"""Torch autograd wrapper around the numba ODE solver (forward sensitivities).

The forward pass solves the ODE together with its forward sensitivities
dY/dp and dY/dy0 (numpy/numba, on the CPU); the backward pass contracts the
incoming gradient with them:

    grad_p[b]  = sum_{t,i} gY[b,t,i] * dY/dp[b,t,i,:]
    grad_y0[b] = sum_{t,i} gY[b,t,i] * dY/dy0[b,t,i,:]

Rows whose solve failed are NaN in the output and get zero gradients.
Only first derivatives are supported (the backward is not itself differentiable).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .ode_solver import OdeSystem

__all__ = ["solve_ode"]


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
        g = gY.detach().to("cpu", torch.float64)
        if not bool(ok.all()):
            g = torch.where(ok[:, None, None], g, torch.zeros((), dtype=g.dtype))
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


def solve_ode(system: OdeSystem, y0: torch.Tensor, p: torch.Tensor, t0: float, times, *,
              method: str = "rk45", rtol: float = 1e-6, atol: float = 1e-8,
              max_steps: int = 100_000) -> torch.Tensor:
    """Differentiable ODE solve.

    y0 (B, n) and p (B, P) tensors (1-D inputs are treated as B=1 and the batch
    dimension is dropped from the result); times (T,) array/tensor sorted
    ascending, all >= t0.  Returns (B, T, n) on the inputs' device and dtype.
    Failed rows are NaN (their gradients are zero).  When neither input
    requires grad the sensitivities are not computed.
    """
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
    if torch.is_grad_enabled() and (y0.requires_grad or p.requires_grad):
        out = _OdeSolveFn.apply(y0, p, system, t0, times_np, opts)
    else:
        Y, _, _, _ = system.solve(y0.detach().to("cpu", torch.float64).numpy(),
                                  p.detach().to("cpu", torch.float64).numpy(),
                                  t0, times_np, sensitivities=False, **opts)
        out = torch.from_numpy(Y).to(device=y0.device, dtype=y0.dtype)
    return out[0] if squeeze else out
