"""Input derivatives for a PINN: torch.autograd.grad against torch.func, on Burgers' residual.

Burgers needs u, u_t, u_x and u_xx at every collocation point:
r = u_t + u u_x - nu u_xx.  Each method computes them for an MLP (8 hidden layers of 20, tanh,
the Raissi et al. network) at N points, then backpropagates the mean squared residual to the
weights — one training step's work.  Printed: milliseconds per step (median of repeats), the
largest difference from the autograd reference, and peak memory where measurable (CUDA).

    python benchmarks/pinn_derivatives.py [--points 10000] [--device cpu] [--dtype float32] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call, hessian, jacfwd, jacrev, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from msml_dsl.backends.pinn.derivatives import input_derivatives  # noqa: E402
from msml_dsl.backends.pinn.network import FieldNetwork  # noqa: E402

NU = 0.01 / math.pi


def residual_autograd(net, x):
    d = input_derivatives(net, x, [(1, 0), (0, 1), (2, 0)], method="autograd")
    return d[(0, 0)], d[(1, 0)], d[(0, 1)], d[(2, 0)]


def residual_forward(net, x):
    d = input_derivatives(net, x, [(1, 0), (0, 1), (2, 0)], method="forward")
    return d[(0, 0)], d[(1, 0)], d[(0, 1)], d[(2, 0)]


def _single(net):
    params = dict(net.named_parameters())
    buffers = dict(net.named_buffers())

    def f(p, z):
        return functional_call(net, ({**p, **buffers},), (z[None],))[0]
    return params, f


def residual_vmap_jacrev_hessian(net, x):
    params, f = _single(net)
    u = net(x)
    g = vmap(jacrev(f, argnums=1), in_dims=(None, 0))(params, x)
    h = vmap(hessian(f, argnums=1), in_dims=(None, 0))(params, x)
    return u, g[:, 0], g[:, 1], h[:, 0, 0]


def residual_vmap_jacfwd_jacrev(net, x):
    params, f = _single(net)
    u = net(x)
    g = vmap(jacrev(f, argnums=1), in_dims=(None, 0))(params, x)
    h = vmap(jacfwd(jacrev(f, argnums=1), argnums=1), in_dims=(None, 0))(params, x)
    return u, g[:, 0], g[:, 1], h[:, 0, 0]


METHODS = {
    "autograd.grad (reverse, reused)": residual_autograd,
    "torch.func jvp (forward, nested)": residual_forward,
    "torch.func vmap(jacrev)+vmap(hessian)": residual_vmap_jacrev_hessian,
    "torch.func vmap(jacfwd(jacrev))": residual_vmap_jacfwd_jacrev,
}


def step(method, net, x):
    net.zero_grad(set_to_none=True)
    u, ux, ut, uxx = method(net, x)
    r = ut + u * ux - NU * uxx
    loss = (r ** 2).mean()
    loss.backward()
    return r.detach()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    net = FieldNetwork(2, (20,) * 8, "tanh", [-1.0, 0.0], [1.0, 1.0]).to(device=device, dtype=dtype)
    x = torch.rand(args.points, 2, device=device, dtype=dtype) * torch.tensor([2.0, 1.0], device=device,
                                                                             dtype=dtype) - torch.tensor(
        [1.0, 0.0], device=device, dtype=dtype)
    x.requires_grad_(True)
    reference = step(residual_autograd, net, x)
    print(f"Burgers residual + backward, {args.points} points, MLP 8x20 tanh, {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'method':<40} {'ms/step':>9} {'max |diff|':>11} {'peak MiB':>9}")
    for name, method in METHODS.items():
        times = []
        try:
            for _ in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                r = step(method, net, x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        except Exception as exc:  # a torch.func transform may not support an op on this version
            print(f"{name:<40} failed: {type(exc).__name__}: {exc}"[:160])
            continue
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
        diff = (r - reference).abs().max().item()
        print(f"{name:<40} {1000 * statistics.median(times[1:]):>9.1f} {diff:>11.2e} {peak:>9.1f}")


if __name__ == "__main__":
    main()
