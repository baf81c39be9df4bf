"""The method of lines against analytic PDE solutions, its errors, and its gradients."""

import math

import numpy as np
import pytest

from msml_dsl import compile_source
from msml_dsl.errors import MsmlError


def _solve(model, **values):
    """The grid solution (T, states) at the ODE's output times for given parameter values."""
    program = model.program
    out = program.evaluate_draws({k: np.array([v]) for k, v in values.items()}, seed=1, predictive=False)
    return out["solution"][0]


def _grid(model):
    return np.array([float(str(s).split("[")[1].rstrip("]")) for s in model.ir.ode.states])


HEAT = """
model heat
space x in [0, 1]
time t in [0, 0.5]
field u(x, t) : mlp()
param k ~ LogNormal(-1, 1)
param sigma ~ HalfNormal(0.1)
equation der(u, t) = k * der(u, x, x)
{bc}
initial u(x, 0) = {init}
data probe = csv("probe.csv")
observe probe.u ~ Normal(u, sigma)
solver mol(points={n}, rtol=1e-8, atol=1e-10)
"""


@pytest.fixture
def probe(tmp_path):
    t = np.repeat([0.1, 0.25, 0.5], 5)
    x = np.tile(np.linspace(0.1, 0.9, 5), 3)
    u = np.exp(-0.3 * math.pi ** 2 * t) * np.sin(math.pi * x)
    (tmp_path / "probe.csv").write_text("x,t,u\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(x, t, u)))
    return tmp_path


def _heat(probe, n, bc="boundary u(0, t) = 0\nboundary u(1, t) = 0", init="sin(pi * x)"):
    return compile_source(HEAT.format(n=n, bc=bc, init=init), base_dir=probe)


def test_heat_dirichlet_converges_at_second_order(probe):
    errors = []
    for n in (11, 21, 41):
        m = _heat(probe, n)
        sol = _solve(m, k=0.3, sigma=0.1)
        x = (np.arange(n) / (n - 1))
        exact = np.exp(-0.3 * math.pi ** 2 * m.ir.ode.output_times[:, None]) * np.sin(math.pi * x)[None]
        errors.append(np.abs(sol - exact).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 5e-4
    assert np.all(orders > 1.8), orders


def test_neumann_edge_by_ghost_node(probe):
    # u_x(1) = 0 with u(x, 0) = sin(pi x / 2): u = exp(-k (pi/2)^2 t) sin(pi x / 2)
    m = _heat(probe, 41, bc="boundary u(0, t) = 0\nboundary der(u, x)(1, t) = 0", init="sin(pi * x / 2)")
    sol = _solve(m, k=0.3, sigma=0.1)
    x = np.arange(41) / 40
    exact = np.exp(-0.3 * (math.pi / 2) ** 2 * m.ir.ode.output_times[:, None]) * np.sin(math.pi * x / 2)[None]
    assert np.abs(sol - exact).max() < 2e-4


def test_robin_edge(probe):
    # u_x(1) = -u(1): no closed form to hand, so the coarse grid is checked against a fine one
    coarse = _heat(probe, 21, bc="boundary u(0, t) = 0\nboundary der(u, x)(1, t) = -u(1, t)")
    fine = _heat(probe, 81, bc="boundary u(0, t) = 0\nboundary der(u, x)(1, t) = -u(1, t)")
    assert coarse.ir.pde.conditions[1].kind == "robin"
    a = _solve(coarse, k=0.3, sigma=0.1)
    b = _solve(fine, k=0.3, sigma=0.1)[:, ::4]
    assert np.abs(a - b).max() < 4e-3  # O(h^2) with h = 0.05 and an incompatible initial corner
    assert np.abs(a[-1, -1]) > 0.05  # the edge is not held at zero


def test_periodic_advection_diffusion(tmp_path):
    (tmp_path / "d.csv").write_text("x,t,u\n1.0,1.0,0.5\n")
    src = """
model adv
space x in [0, 6.283185307179586]
time t in [0, 1]
field u(x, t) : mlp()
param c ~ Normal(1, 1)
param D ~ LogNormal(-2, 1)
equation der(u, t) + c * der(u, x) = D * der(u, x, x)
boundary u(0, t) = u(6.283185307179586, t)
initial u(x, 0) = sin(x)
data d = csv("d.csv")
observe d.u ~ Normal(u, 0.1)
solver mol(points=64, rtol=1e-9, atol=1e-10)
"""
    m = compile_source(src, base_dir=tmp_path)
    assert len(m.ir.ode.states) == 64  # the upper edge is the lower one
    sol = _solve(m, c=1.0, D=0.1)
    x = np.arange(64) * 2 * math.pi / 64
    t = m.ir.ode.output_times[-1]
    exact = np.exp(-0.1 * t) * np.sin(x - t)
    assert np.abs(sol[-1] - exact).max() < 3e-3


def test_steady_2d_poisson(tmp_path):
    # -lap u = 2 pi^2 sin(pi x) sin(pi y), u = 0 on the edges: u = sin(pi x) sin(pi y). The
    # five-point Laplacian has the same eigenfunction with eigenvalue (8 / h^2) sin^2(pi h / 2), so
    # the grid's steady state is that function times 2 pi^2 / eigenvalue (0.83 % above u at h = 0.1):
    # checking it to 1e-5 checks the stencil and the steady-state relaxation, not only the size of
    # the discretisation error, on a grid small enough to compile quickly.
    (tmp_path / "d.csv").write_text("x,y,u\n0.5,0.5,1.0\n0.25,0.75,0.5\n")
    src = """
model poisson
space x in [0, 1], y in [0, 1]
field u(x, y) : mlp()
param D ~ LogNormal(0, 0.5)
equation D * laplacian(u) + 2 * pi^2 * sin(pi * x) * sin(pi * y) = 0
boundary u(0, y) = 0
boundary u(1, y) = 0
boundary u(x, 0) = 0
boundary u(x, 1) = 0
data d = csv("d.csv")
observe d.u ~ Normal(u, 0.05)
solver mol(points=11)
"""
    m = compile_source(src, base_dir=tmp_path)
    sol = _solve(m, D=1.0)[-1].reshape(11, 11)
    g = np.linspace(0, 1, 11)
    exact = np.sin(math.pi * g)[:, None] * np.sin(math.pi * g)[None, :]
    h = g[1] - g[0]
    discrete = exact * 2 * math.pi ** 2 / (8 / h ** 2 * math.sin(math.pi * h / 2) ** 2)
    assert np.abs(sol - discrete).max() < 1e-5
    assert 5e-3 < np.abs(sol - exact).max() < 1e-2
    # the observation interpolates the grid bilinearly
    cols, w = m.ir.observations[0].state_maps[next(iter(m.ir.observations[0].state_maps))]
    assert cols.shape == (2, 4) and np.allclose(w.sum(1), 1)


def test_compiled_gradient_matches_pyro_trace(probe):
    m = _heat(probe, 21, bc="boundary u(0, t) = 0\nboundary der(u, x)(1, t) = 0")
    program = m.program
    assert program.fast is not None
    z = np.array([[math.log(0.3), math.log(0.05)], [math.log(0.5), math.log(0.2)]])
    u_fast, g_fast = program.potential_and_grad(z)
    u_ref, g_ref = program.reference_potential_and_grad(z)
    assert np.allclose(u_fast, u_ref, rtol=1e-8)
    assert np.allclose(g_fast, g_ref, rtol=1e-6, atol=1e-8)


def test_map_recovers_the_diffusivity(probe):
    m = _heat(probe, 21)
    fit = m.map(seed=1, starts=2)
    assert abs(float(fit.values["k"]) - 0.3) < 0.01


@pytest.mark.parametrize("bc,code", [
    ("boundary u(0, t) = u(1, t) + 1\nboundary u(1, t) = 0", "E292"),
    ("boundary u(0, t) = u(0.5, t)\nboundary u(1, t) = 0", "E292"),
    ("boundary u(0.5, t) = 0\nboundary u(1, t) = 0", "E284"),
])
def test_bad_conditions_are_located_errors(probe, bc, code):
    with pytest.raises(MsmlError) as info:
        _heat(probe, 11, bc=bc)
    assert code in {d.code for d in info.value.diagnostics}


def test_missing_initial_condition(probe):
    src = HEAT.format(n=11, bc="boundary u(0, t) = 0\nboundary u(1, t) = 0", init="0").replace(
        "initial u(x, 0) = 0\n", "")
    with pytest.raises(MsmlError) as info:
        compile_source(src, base_dir=probe)
    d = info.value.diagnostics[0]
    assert d.code == "E293" and "initial condition" in d.message


def test_third_derivative_needs_pinn(probe):
    src = HEAT.format(n=11, bc="boundary u(0, t) = 0\nboundary u(1, t) = 0", init="sin(pi * x)").replace(
        "k * der(u, x, x)", "k * der(u, x, x, x)")
    with pytest.raises(MsmlError) as info:
        compile_source(src, base_dir=probe)
    assert any(d.code == "E293" and "second order" in d.message for d in info.value.diagnostics)


# --------------------------------------------------------------------------- upwinding
def _upwind_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mol_upwind.py"
    spec = importlib.util.spec_from_file_location("mol_upwind", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _advection(tmp_path, n, scheme, advection="a * der(u, x)"):
    """u_t + advection = nu u_xx, periodic on [-1, 1] (the model of benchmarks/mol_upwind.py)."""
    return _upwind_benchmark().advection_model(tmp_path, n, scheme, advection)


def _rates(model, u, **values):
    """The discretised right-hand side at states u (no compilation: the IR's SymPy expressions)."""
    import sympy

    ode = model.ir.ode
    env = {s: float(v) for s, v in zip(ode.states, u)}
    env.update({e: values[e.name] for e in ode.parameters})
    return np.array([float(sympy.sympify(r).xreplace(env)) for r in ode.rhs])


@pytest.mark.parametrize("a", [1.0, -1.0])
def test_upwind_stencils_take_the_side_the_flow_comes_from(tmp_path, a):
    n = 10
    h = 2 / n
    rng = np.random.default_rng(0)
    u = rng.standard_normal(n)
    back, fwd = np.roll(u, 1), np.roll(u, -1)
    back2, fwd2 = np.roll(u, 2), np.roll(u, -2)
    diffusion = 0.01 * (fwd - 2 * u + back) / h ** 2
    first = (u - back) / h if a > 0 else (fwd - u) / h
    got = _rates(_advection(tmp_path, n, "upwind1"), u, a=a, nu=0.01)
    np.testing.assert_allclose(got, -a * first + diffusion, rtol=1e-12, atol=1e-12)
    second = (3 * u - 4 * back + back2) / (2 * h) if a > 0 else (-3 * u + 4 * fwd - fwd2) / (2 * h)
    got = _rates(_advection(tmp_path, n, "upwind2"), u, a=a, nu=0.01)
    np.testing.assert_allclose(got, -a * second + diffusion, rtol=1e-12, atol=1e-12)
    central = (fwd - back) / (2 * h)
    got = _rates(_advection(tmp_path, n, "central"), u, a=a, nu=0.01)
    np.testing.assert_allclose(got, -a * central + diffusion, rtol=1e-12, atol=1e-12)


def test_burgers_upwinding_uses_the_local_velocity(tmp_path):
    # u u_x: the velocity is u at each node, so the difference is backward where u > 0, forward where u < 0
    n = 10
    h = 2 / n
    u = np.array([0.5, -0.3, 0.8, 0.1, -0.9, -0.2, 0.4, 0.7, -0.6, 0.3])
    back, fwd = np.roll(u, 1), np.roll(u, -1)
    first = np.where(u > 0, (u - back) / h, (fwd - u) / h)
    got = _rates(_advection(tmp_path, n, "upwind1", advection="a * u * der(u, x)"), u, a=1.0, nu=0.0)
    np.testing.assert_allclose(got, -u * first, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_upwind_schemes_converge_at_their_orders():
    # u_t + u_x = 0.001 u_xx, periodic, u(x, 0) = sin(pi x): u = exp(-0.001 pi^2 t) sin(pi (x - t)).
    # Measured (benchmarks/README.md): central 2.00, upwind1 0.95 and 0.98, upwind2 2.00 (40, 80, 160 nodes).
    orders = {k: np.array(o) for k, (_, o) in _upwind_benchmark().convergence().items()}
    assert np.all(orders["central"] > 1.9), orders
    assert np.all((orders["upwind1"] > 0.85) & (orders["upwind1"] < 1.15)), orders
    assert np.all(orders["upwind2"] > 1.9), orders


def test_run_folder_has_the_fields_on_the_grid_and_a_posterior_predictive(probe, tmp_path):
    import xarray as xr

    from msml_dsl.diagnostics import get_group, load_netcdf

    (probe / "probe.csv").write_text("x,t,u\n" + "".join(
        f"{x},{t},{math.exp(-0.3 * math.pi ** 2 * t) * math.sin(math.pi * x) + 0.01 * e}\n"
        for (x, t), e in zip([(x, t) for t in (0.1, 0.25, 0.5) for x in np.linspace(0.1, 0.9, 5)],
                             np.random.default_rng(1).standard_normal(15))))
    m = _heat(probe, 11)
    fit = m.sample(chains=2, warmup=150, draws=100, seed=1)
    folder = fit.save(tmp_path / "run")
    ds = xr.open_dataset(folder / "fields.nc")
    assert ds["u_mean"].dims == ("x", "t") and ds["u_mean"].shape == (11, 4)   # t = 0 and the 3 data times
    np.testing.assert_allclose(ds["x"].values, np.linspace(0, 1, 11))
    X, T = np.meshgrid(ds["x"].values, ds["t"].values, indexing="ij")
    assert float(np.abs(ds["u_mean"].values - np.exp(-0.3 * math.pi ** 2 * T) * np.sin(math.pi * X)).max()) < 0.03
    assert ds.attrs["solver"] == "mol" and float(ds["u_sd"].values[5, -1]) > 0
    ds.close()
    assert get_group(load_netcdf(folder / "posterior.nc"), "posterior_predictive")["probe.u"].shape == (2, 100, 15)
