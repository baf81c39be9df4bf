"""Derivatives of a network with respect to its inputs, batched over points.

A derivative is named by its multi-index over the inputs: for ``u(x, t)``, ``(0, 0)`` is u,
``(1, 0)`` is u_x, ``(2, 0)`` is u_xx and ``(1, 1)`` is u_xt.  Two methods, both exact
(automatic differentiation, no finite differences), both differentiable again with respect to
the network's weights so that training can backpropagate through them:

* ``autograd`` — reverse mode, ``torch.autograd.grad`` of the summed output: since each point's
  output depends only on that point's input, one backward pass gives the whole gradient at every
  point.  Each derivative already computed is reused, so u, u_x, u_t, u_xx cost one forward and
  two backward passes.  Outputs with several channels take one pass per channel.
* ``forward`` — forward mode, nested ``torch.func.jvp`` along coordinate directions; every
  channel at once, so it suits the network's features (last-layer schemes).

``benchmarks/pinn_derivatives.py`` times these (and ``vmap(hessian)``/``vmap(jacrev)``) on
Burgers' second-order residual; ``autograd`` is the default because it is the fastest there.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch


def _axes(alpha: tuple[int, ...]) -> tuple[int, ...]:
    """(2, 1) -> (0, 0, 1): the inputs to differentiate along, in order."""
    return tuple(i for i, k in enumerate(alpha) for _ in range(k))


def _alpha(axes: tuple[int, ...], d: int) -> tuple[int, ...]:
    return tuple(axes.count(i) for i in range(d))


def input_derivatives(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      wanted: Iterable[tuple[int, ...]], method: str = "autograd",
                      create_graph: bool = True) -> dict[tuple[int, ...], torch.Tensor]:
    """Partial derivatives of ``fn`` at the rows of ``x`` for every multi-index in ``wanted``.

    ``fn`` maps (n, d) to (n,) or (n, k) row by row.  Returns {multi-index: (n,) or (n, k)},
    always including the value itself (the zero multi-index).
    """
    wanted = {tuple(int(a) for a in w) for w in wanted}
    d = x.shape[-1]
    wanted.add((0,) * d)
    if method == "autograd":
        return _reverse(fn, x, wanted, d, create_graph)
    if method == "forward":
        return _forward(fn, x, wanted, d)
    raise ValueError(f"unknown derivative method {method!r}; use 'autograd' or 'forward'")


def _grad_rows(y: torch.Tensor, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """d y / d x row by row: (n, d) for y (n,), (n, k, d) for y (n, k)."""
    if y.ndim == 1:
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=create_graph, retain_graph=True, allow_unused=True,
                                   materialize_grads=True)
        return g
    return torch.stack([_grad_rows(y[:, j], x, create_graph) for j in range(y.shape[1])], dim=1)


def _reverse(fn, x, wanted, d, create_graph):
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    cache: dict[tuple[int, ...], torch.Tensor] = {(): fn(x)}
    top = max(sum(w) for w in wanted)
    for alpha in sorted(wanted, key=sum):
        axes = _axes(alpha)
        for m in range(1, len(axes) + 1):
            key = tuple(sorted(axes[:m]))
            if key in cache:
                continue
            parent = tuple(sorted(axes[:m - 1]))
            # A derivative that is differentiated again needs its graph even when the caller does not.
            g = _grad_rows(cache[parent], x, create_graph or m < top)
            for j in range(d):
                cache.setdefault(tuple(sorted(parent + (j,))), g[..., j])
    return {alpha: cache[_axes(alpha)] for alpha in wanted}


def _forward(fn, x, wanted, d):
    from torch.func import jvp

    out: dict[tuple[int, ...], torch.Tensor] = {}

    def along(f, axis):
        def g(z):
            e = torch.zeros_like(z)
            e[:, axis] = 1
            return jvp(f, (z,), (e,))[1]
        return g

    for alpha in sorted(wanted, key=sum, reverse=True):
        if alpha in out:
            continue
        axes = _axes(alpha)
        if not axes:
            out[alpha] = fn(x)
            continue
        f = fn
        for a in axes[:-1]:
            f = along(f, a)
        e = torch.zeros_like(x)
        e[:, axes[-1]] = 1
        lower, value = jvp(f, (x,), (e,))
        out[alpha] = value
        out.setdefault(_alpha(axes[:-1], d), lower)
    return {alpha: out[alpha] for alpha in wanted}
