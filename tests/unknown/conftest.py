"""Shared fixtures of the unknown-term tests."""

import numpy as np
import pytest


@pytest.fixture
def decay_data(tmp_path):
    """d.csv in a temporary folder: x = 2 exp(-0.5 t) at 24 times in [0.25, 6] with noise sd 0.01."""
    rng = np.random.default_rng(3)
    t = np.linspace(0.25, 6, 24)
    x = 2 * np.exp(-0.5 * t)            # truth: f(x) = -0.5 x
    (tmp_path / "d.csv").write_text("t,x\n" + "".join(f"{a},{b + 0.01 * rng.normal()}\n" for a, b in zip(t, x)))
    return tmp_path
