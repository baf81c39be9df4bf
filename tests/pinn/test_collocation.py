import numpy as np
import pytest
import sympy as sp
import torch
from dataclasses import replace

from msml_dsl.backends.pinn.collocation import (condition_counts, edge_points, interior_points, make_collocation,
                                               unit_points, worst_points)
from msml_dsl.ir.pde import CollocationSettings, FieldCondition

from pinn_problems import U, X, T, heat_problem


@pytest.mark.parametrize("method", ["sobol", "halton", "uniform"])
def test_interior_counts_and_ranges(method):
    p = heat_problem()
    pts = interior_points(p, 300, method, seed=4)
    assert pts.shape == (300, 2)
    assert (pts >= 0).all() and (pts <= 1).all()
    assert np.array_equal(pts, interior_points(p, 300, method, seed=4))      # seeded
    assert not np.array_equal(pts, interior_points(p, 300, method, seed=5))  # resampling moves them


def test_grid_is_full_and_uses_cell_centres_inside_and_ends_on_edges():
    u = unit_points(10, 2, "grid", 0)
    assert u.shape == (16, 2)                                 # rounded up to 4 x 4
    assert np.allclose(np.unique(u[:, 0]), [0.125, 0.375, 0.625, 0.875])
    e = unit_points(5, 1, "grid", 0, include_ends=True)
    assert np.allclose(e[:, 0], [0, 0.25, 0.5, 0.75, 1])
    assert unit_points(9, 2, "grid", 0).shape == (9, 2)


def test_edges_lie_exactly_on_the_boundary_and_span_the_free_coordinates():
    p = heat_problem()
    for method in ("sobol", "grid", "uniform"):
        e = edge_points(p, {"x": 1.0}, 50, method, seed=1)
        assert (e[:, 0] == 1.0).all()
        assert e[:, 1].min() >= 0 and e[:, 1].max() <= 1 and np.ptp(e[:, 1]) > 0.8
        i = edge_points(p, {"t": 0.0}, 50, method, seed=1)
        assert (i[:, 1] == 0.0).all()


def test_condition_counts_default_and_explicit():
    p = heat_problem(interior=2000)
    assert condition_counts(p, p.collocation) == [200, 100, 100]   # initial 200; boundary 200 over two edges
    p2 = heat_problem(interior=2000, boundary=60, initial=30)
    assert condition_counts(p2, p2.collocation) == [30, 30, 30]
    pts = make_collocation(p2, p2.collocation, "cpu", torch.float64)
    assert pts.interior.shape == (2000, 2) and [c.shape[0] for c in pts.conditions] == [30, 30, 30]
    assert pts.interior.dtype == torch.float64 and (pts.conditions[1][:, 0] == 0).all()


def test_periodic_condition_gets_partner_points_on_the_opposite_edge():
    p = heat_problem()
    periodic = FieldCondition("boundary", "periodic", "u", U, ((X, 0.0),), 5, partner=((X, 1.0),))
    p = replace(p, conditions=p.conditions[:1] + (periodic,))
    pts = make_collocation(p, p.collocation, "cpu", torch.float32)
    lo, hi = pts.conditions[1], pts.partner[1]
    assert (lo[:, 0] == 0).all() and (hi[:, 0] == 1).all() and torch.equal(lo[:, 1], hi[:, 1])


def test_unknown_method_is_an_error():
    p = heat_problem()
    with pytest.raises(ValueError, match="sobol"):
        make_collocation(p, CollocationSettings(method="lattice"), "cpu", torch.float32)


def test_worst_points_picks_the_largest_residuals():
    cand = torch.arange(10.0)[:, None].repeat(1, 2)
    scores = torch.tensor([0, 9, 1, 8, 2, 7, 3, 6, 4, 5.0])
    assert sorted(worst_points(cand, scores, 3)[:, 0].tolist()) == [1, 3, 5]
