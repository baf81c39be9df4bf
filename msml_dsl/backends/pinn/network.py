"""The network that represents one field: an MLP with input and output scaling.

``u(x, t) = shift + scale * head(features(x, t))`` where ``features`` first maps each input
from its declared range to [-1, 1] (so a domain of [0, 1000] trains like one of [-1, 1]),
optionally through random Fourier features, then through the hidden layers.  ``shift`` and
``scale`` come from the data (or the boundary/initial values) so the last layer works on
numbers of order one.  ``features`` and ``head`` are separate so that the last-layer schemes
of ``inference`` can treat the head's weights as random.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "sin": torch.sin,
    "gelu": nn.functional.gelu, "softplus": nn.functional.softplus, "silu": nn.functional.silu,
    "elu": nn.functional.elu,
}


class FieldNetwork(nn.Module):
    """An MLP from the field's arguments (physical units) to its value (physical units)."""

    def __init__(self, n_inputs: int, hidden: tuple[int, ...], activation: str, lower, upper,
                 shift: float = 0.0, scale: float = 1.0, fourier_features: int = 0, fourier_scale: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
        self.activation = ACTIVATIONS[activation]
        lower = torch.as_tensor(lower, dtype=torch.float64)
        upper = torch.as_tensor(upper, dtype=torch.float64)
        self.register_buffer("centre", (upper + lower) / 2)
        self.register_buffer("half_width", (upper - lower) / 2)
        self.register_buffer("shift", torch.tensor(float(shift), dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        width = n_inputs
        if fourier_features:
            freqs = torch.randn(n_inputs, fourier_features, generator=generator, dtype=torch.float64) * fourier_scale
            self.register_buffer("fourier", freqs)
            width = 2 * fourier_features
        else:
            self.fourier = None
        layers = []
        for h in hidden:
            layers.append(nn.Linear(width, h, dtype=torch.float64))
            width = h
        self.hidden = nn.ModuleList(layers)
        self.head = nn.Linear(width, 1, dtype=torch.float64)
        for layer in [*self.hidden, self.head]:  # Glorot-normal weights, zero biases
            std = math.sqrt(2.0 / (layer.in_features + layer.out_features))
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64) * std)
                layer.bias.zero_()

    @property
    def n_features(self) -> int:
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer, (n, width), for inputs x (n, d) in physical units."""
        h = (x - self.centre) / self.half_width
        if self.fourier is not None:
            proj = 2 * math.pi * h @ self.fourier
            h = torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)
        for layer in self.hidden:
            h = self.activation(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Field values (n,) at inputs x (n, d) in physical units."""
        return self.shift + self.scale * self.head(self.features(x)).squeeze(-1)


def build_network(spec, lower, upper, shift: float, scale: float, device, dtype, seed: int) -> FieldNetwork:
    """The network of a ``FieldSpec`` on ``device`` in ``dtype`` (weights drawn from ``seed``)."""
    g = torch.Generator().manual_seed(int(seed))
    net = FieldNetwork(len(spec.arguments), tuple(spec.hidden), spec.activation, lower, upper, shift, scale,
                       int(spec.fourier_features), float(spec.fourier_scale), generator=g)
    return net.to(device=device, dtype=dtype)
