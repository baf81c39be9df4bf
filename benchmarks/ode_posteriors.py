"""ODE posteriors: msml against NumPyro + diffrax, PyMC (numba backend) and Pyro's stock NUTS.

Each fit runs in a fresh subprocess (so compile time and peak memory are its
own). Printed per model and tool: wall time (compilation included), compile
time, minimum bulk ESS, ESS per second of wall time, the largest R-hat,
divergences, peak resident memory, and the ratios of msml's ESS/s to the
peers'. Peers are optional (``pip install msml-dsl[bench]``); a missing one is
reported, not fatal.

    python benchmarks/ode_posteriors.py                       # the whole suite
    python benchmarks/ode_posteriors.py --models lv --tools msml,numpyro,pymc
    python benchmarks/ode_posteriors.py --scaling             # time per gradient vs states

Same priors, likelihood, tolerances, chains, warmup and draws for every tool;
peers get good initial values (msml finds its own). PyMC integrates with a
fixed-step RK4 written as a scan (10 steps per time unit), as PyMC users do;
for the stiff PK model with a step of 0.015 h, below RK4's stability limit at
the posterior's fast rate (PK_RK4_STEP). NumPyro uses diffrax's Dopri5, and
Kvaerno5 (implicit) for the stiff PK model, at each model's tolerances.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = {
    "lv": ROOT / "models" / "lotka_volterra" / "model.msml",
    "sir": ROOT / "models" / "sir_influenza" / "model.msml",
    "stiff_pk": ROOT / "models" / "stiff_pk" / "model.msml",
}
PEER_MODELS = ("lv", "sir", "stiff_pk")  # models written by hand for the peers (and chainN, any N)
LV_GOOD_INIT = {"alpha": 0.55, "beta": 0.028, "gamma": 0.8, "delta": 0.024, "H0": 34.0, "L0": 5.9,
                "sigma_H": 0.25, "sigma_L": 0.25}
SIR_GOOD_INIT = {"beta": 1.7, "gamma": 0.54, "phi_inv": 0.1}
PK_GOOD_INIT = {"CL": 5.0, "V1": 5.0, "Q": 300.0, "V2": 50.0, "sigma": 0.1}  # the simulation's truth
CHAIN_GOOD_INIT = {"k": 1.5, "d": 0.1, "sigma": 0.1}  # the simulation's truth
PK_DOSE = 100.0
# PyMC's fixed RK4 step for the stiff PK model. Explicit RK4 is stable for |h * lambda| < 2.785 on the
# real axis; the fast (distribution) eigenvalue is about Q/V1 + Q/V2 + CL/V1 = 60 + 6 + 1 = 67 /h at the
# truth (and where the posterior sits), so h = 0.015 h is stable up to lambda = 186 /h, 2.8 times the
# truth; the prior's tails (Q ~ LogNormal(5.7, 1)) reach beyond that, where the scan blows up and NUTS
# records a divergence. 3,200 steps over the 48 h.
PK_RK4_STEP = 0.015


def is_peer_model(name: str) -> bool:
    return name in PEER_MODELS or name.startswith("chain")


# ----------------------------------------------------------------- chain model
def chain_model(n_states: int, folder: Path) -> Path:
    """A linear reaction chain x1 -> x2 -> ... -> xN with decay, simulated data: the scaling model."""
    from scipy.integrate import solve_ivp

    k, d, sigma = 1.5, 0.1, 0.1
    A = np.zeros((n_states, n_states))
    for i in range(n_states):
        A[i, i] = -(k + d) if i else -k
        if i:
            A[i, i - 1] = k
    y0 = np.zeros(n_states)
    y0[0] = 10.0
    times = np.linspace(1, 10, 10)
    sol = solve_ivp(lambda t, y: A @ y, (0, 10), y0, t_eval=times, rtol=1e-10, atol=1e-12, method="LSODA")
    observed = sorted({0, n_states // 4, n_states // 2, 3 * n_states // 4, n_states - 1})
    rng = np.random.default_rng(n_states)
    rows = ["t," + ",".join(f"x{i + 1}" for i in observed)]
    for j, t in enumerate(times):
        vals = sol.y[observed, j] + rng.normal(0, sigma, size=len(observed))
        rows.append(f"{t:g}," + ",".join(f"{v:.6f}" for v in vals))
    (folder / f"chain{n_states}.csv").write_text("\n".join(rows) + "\n")
    states = [f"x{i + 1}" for i in range(n_states)]
    lines = [f'model chain{n_states} "Linear reaction chain with {n_states} species"', "time t in [0, 10]",
             "state " + ", ".join(states), "param k ~ LogNormal(0, 0.5)", "param d ~ LogNormal(log(0.1), 0.5)",
             "param sigma ~ HalfNormal(0.5)", "equation der(x1) = -k * x1"]
    lines += [f"equation der(x{i + 1}) = k * x{i} - (k + d) * x{i + 1}" for i in range(1, n_states)]
    lines += ["init x1 = 10"] + [f"init x{i + 1} = 0" for i in range(1, n_states)]
    lines += [f'data obs = csv("chain{n_states}.csv", t = t)']
    lines += [f"observe obs.x{i + 1} ~ Normal(x{i + 1}, sigma)" for i in observed]
    lines += ["solver rk45(rtol=1e-6, atol=1e-6)"]
    path = folder / f"chain{n_states}.msml"
    path.write_text("\n".join(lines) + "\n")
    return path


def model_path(name: str, scratch: Path) -> Path:
    if name.startswith("chain"):
        return chain_model(int(name[5:]), scratch)
    return MODELS[name]


# --------------------------------------------------------------------- workers
def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_msml(name, chains, warmup, draws, seed, scratch, metric="auto"):
    # The third-party libraries are imported before the clock starts, as the peers' are (PyMC's
    # and NumPyro's imports are outside their wall time too); msml's own modules load inside it.
    import numba  # noqa: F401
    import pyro  # noqa: F401
    import sympy  # noqa: F401
    import torch  # noqa: F401

    import msml_dsl
    from msml_dsl.diagnostics import ess_bulk, rhat

    t0 = time.perf_counter()
    model = msml_dsl.compile_file(model_path(name, scratch), device="cpu")
    _ = model.program
    compile_s = time.perf_counter() - t0
    fit = model.sample(chains=chains, warmup=warmup, draws=draws, seed=seed, metric=metric)
    wall = time.perf_counter() - t0
    data = fit.to_arviz()
    params = [p.name for p in model.ir.parameters]
    ess = {k: v for k, v in ess_bulk(data).items() if k.split("[")[0] in params}
    rh = {k: v for k, v in rhat(data).items() if k.split("[")[0] in params}
    return {"wall_s": wall, "compile_s": compile_s, "min_ess": min(ess.values()), "max_rhat": max(rh.values()),
            "divergences": int(fit.sample.sample_stats["diverging"].sum()), "peak_mb": peak_mb(),
            "means": {k: float(np.mean(v)) for k, v in fit.posterior.items()}}


def _arviz_stats(draws_by_param: dict[str, np.ndarray]):
    import arviz as az

    ess, rh = [], []
    for v in draws_by_param.values():
        v = np.asarray(v)
        v = v.reshape(v.shape[0], v.shape[1], -1)
        for j in range(v.shape[2]):
            ess.append(float(az.ess(v[:, :, j], method="bulk")))
            rh.append(float(az.rhat(v[:, :, j])) if v.shape[0] > 1 else float("nan"))
    return min(ess), max(rh)


def _lv_data():
    import pandas as pd

    df = pd.read_csv(MODELS["lv"].parent / "lynx_hare.csv")
    return (df["Year"] - 1900).to_numpy(float), df["Hare"].to_numpy(float), df["Lynx"].to_numpy(float)


def _sir_data():
    import pandas as pd

    df = pd.read_csv(MODELS["sir"].parent / "influenza_england_1978_school.csv")
    return df["day"].to_numpy(float), df["in_bed"].to_numpy(float)


def _pk_data():
    import pandas as pd

    df = pd.read_csv(MODELS["stiff_pk"].parent / "stiff_pk.csv")
    return df["time_h"].to_numpy(float), df["conc"].to_numpy(float)


def _chain_data(name, scratch):
    """The chain model's data as chain_model() writes them: times, observed state indices (0-based), values."""
    import pandas as pd

    n = int(name[5:])
    chain_model(n, scratch)
    df = pd.read_csv(scratch / f"chain{n}.csv")
    cols = [c for c in df.columns if c != "t"]
    return n, df["t"].to_numpy(float), np.array([int(c[1:]) - 1 for c in cols]), df[cols].to_numpy(float)


def run_numpyro(name, chains, warmup, draws, seed, scratch, dense_mass=False):
    # Kvaerno5's Newton solves go through lineax, which by default raises when a far-out warm-up proposal
    # hands it non-finite values (even with throw=False); EQX_ON_ERROR=nan turns that into a NaN density,
    # which NUTS rejects as a divergence. Read when equinox is imported, so set it before.
    os.environ.setdefault("EQX_ON_ERROR", "nan")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from diffrax import Dopri5, Kvaerno5, ODETerm, PIDController, SaveAt, diffeqsolve
    from numpyro.infer import MCMC, NUTS, init_to_value

    if name == "lv":
        ts, hare, lynx = _lv_data()

        def vf(t, z, th):
            a, b, g, d = th
            return jnp.stack([(a - b * z[1]) * z[0], (-g + d * z[0]) * z[1]])

        def model():
            a = numpyro.sample("alpha", dist.TruncatedNormal(1.0, 0.5, low=0.0))
            b = numpyro.sample("beta", dist.TruncatedNormal(0.05, 0.05, low=0.0))
            g = numpyro.sample("gamma", dist.TruncatedNormal(1.0, 0.5, low=0.0))
            d = numpyro.sample("delta", dist.TruncatedNormal(0.05, 0.05, low=0.0))
            h0 = numpyro.sample("H0", dist.LogNormal(jnp.log(10.0), 1.0))
            l0 = numpyro.sample("L0", dist.LogNormal(jnp.log(10.0), 1.0))
            sh = numpyro.sample("sigma_H", dist.LogNormal(-1.0, 1.0))
            sl = numpyro.sample("sigma_L", dist.LogNormal(-1.0, 1.0))
            sol = diffeqsolve(ODETerm(vf), Dopri5(), t0=0.0, t1=20.0, dt0=0.1, y0=jnp.stack([h0, l0]),
                              args=(a, b, g, d), saveat=SaveAt(ts=ts),
                              stepsize_controller=PIDController(rtol=1e-5, atol=1e-3), max_steps=100_000,
                              throw=False)
            numpyro.sample("hare", dist.LogNormal(jnp.log(sol.ys[:, 0]), sh), obs=hare)
            numpyro.sample("lynx", dist.LogNormal(jnp.log(sol.ys[:, 1]), sl), obs=lynx)

        init = LV_GOOD_INIT
    elif name == "stiff_pk":
        ts, conc = _pk_data()

        def vf(t, z, th):
            cl, v1, q, v2 = th
            flow = q * (z[0] / v1 - z[1] / v2)
            return jnp.stack([-cl * z[0] / v1 - flow, flow])

        def model():
            cl = numpyro.sample("CL", dist.LogNormal(1.6, 0.5))
            v1 = numpyro.sample("V1", dist.LogNormal(1.6, 0.5))
            q = numpyro.sample("Q", dist.LogNormal(5.7, 1.0))
            v2 = numpyro.sample("V2", dist.LogNormal(3.9, 0.5))
            sigma = numpyro.sample("sigma", dist.HalfNormal(0.3))
            # The model's "solver stiff(rtol=1e-6, atol=1e-9)": diffrax's implicit Kvaerno5 (ESDIRK) at those
            # tolerances, as a NumPyro user would pick for a stiff system.
            sol = diffeqsolve(ODETerm(vf), Kvaerno5(), t0=0.0, t1=48.0, dt0=0.001,
                              y0=jnp.array([PK_DOSE, 0.0]), args=(cl, v1, q, v2), saveat=SaveAt(ts=ts),
                              stepsize_controller=PIDController(rtol=1e-6, atol=1e-9), max_steps=100_000,
                              throw=False)
            numpyro.sample("conc", dist.LogNormal(jnp.log(sol.ys[:, 0] / v1), sigma), obs=conc)

        init = PK_GOOD_INIT
    elif name.startswith("chain"):
        n, ts, idx, obs = _chain_data(name, scratch)

        def vf(t, z, th):
            k, d = th
            return jnp.concatenate([-k * z[:1], k * z[:-1] - (k + d) * z[1:]])

        def model():
            k = numpyro.sample("k", dist.LogNormal(0.0, 0.5))
            d = numpyro.sample("d", dist.LogNormal(math.log(0.1), 0.5))
            sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
            y0 = jnp.zeros(n).at[0].set(10.0)
            # The model's "solver rk45(rtol=1e-6, atol=1e-6)": Dopri5 at the same tolerances.
            sol = diffeqsolve(ODETerm(vf), Dopri5(), t0=0.0, t1=10.0, dt0=0.1, y0=y0, args=(k, d),
                              saveat=SaveAt(ts=ts), stepsize_controller=PIDController(rtol=1e-6, atol=1e-6),
                              max_steps=100_000, throw=False)
            numpyro.sample("obs", dist.Normal(sol.ys[:, idx], sigma), obs=obs)

        init = CHAIN_GOOD_INIT
    else:
        ts, in_bed = _sir_data()

        def vf(t, z, th):
            b, g = th
            inf = b * z[0] * z[1] / 763.0
            return jnp.stack([-inf, inf - g * z[1], g * z[1]])

        def model():
            b = numpyro.sample("beta", dist.TruncatedNormal(2.0, 1.0, low=0.0))
            g = numpyro.sample("gamma", dist.TruncatedNormal(0.4, 0.5, low=0.0))
            phi_inv = numpyro.sample("phi_inv", dist.Exponential(5.0))
            sol = diffeqsolve(ODETerm(vf), Dopri5(), t0=0.0, t1=14.0, dt0=0.1, y0=jnp.array([762.0, 1.0, 0.0]),
                              args=(b, g), saveat=SaveAt(ts=ts),
                              stepsize_controller=PIDController(rtol=1e-6, atol=1e-6), max_steps=100_000,
                              throw=False)
            phi = 1.0 / phi_inv
            numpyro.sample("in_bed", dist.NegativeBinomial2(sol.ys[:, 1], phi), obs=in_bed)

        init = SIR_GOOD_INIT
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model, init_strategy=init_to_value(values=init), dense_mass=dense_mass), num_warmup=warmup, num_samples=draws,
                num_chains=chains, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed))
    wall = time.perf_counter() - t0
    samples = mcmc.get_samples(group_by_chain=True)
    min_ess, max_rhat = _arviz_stats({k: np.asarray(v) for k, v in samples.items()})
    div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return {"wall_s": wall, "compile_s": float("nan"), "min_ess": min_ess, "max_rhat": max_rhat, "divergences": div,
            "peak_mb": peak_mb(), "means": {k: float(np.mean(v)) for k, v in samples.items()}}


def run_pymc(name, chains, warmup, draws, seed, scratch):
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    substeps = 10

    def rk4(rhs, y, args, h):
        k1 = rhs(y, *args)
        k2 = rhs([a + h / 2 * b for a, b in zip(y, k1)], *args)
        k3 = rhs([a + h / 2 * b for a, b in zip(y, k2)], *args)
        k4 = rhs([a + h * b for a, b in zip(y, k3)], *args)
        return [a + h / 6 * (p + 2 * q + 2 * r + s) for a, p, q, r, s in zip(y, k1, k2, k3, k4)]

    with pm.Model():
        if name == "lv":
            ts, hare, lynx = _lv_data()
            a = pm.TruncatedNormal("alpha", 1.0, 0.5, lower=0.0)
            b = pm.TruncatedNormal("beta", 0.05, 0.05, lower=0.0)
            g = pm.TruncatedNormal("gamma", 1.0, 0.5, lower=0.0)
            d = pm.TruncatedNormal("delta", 0.05, 0.05, lower=0.0)
            h0 = pm.LogNormal("H0", math.log(10.0), 1.0)
            l0 = pm.LogNormal("L0", math.log(10.0), 1.0)
            sh = pm.LogNormal("sigma_H", -1.0, 1.0)
            sl = pm.LogNormal("sigma_L", -1.0, 1.0)

            def rhs(y, a, b, g, d):
                return [(a - b * y[1]) * y[0], (-g + d * y[0]) * y[1]]

            def step(u, v, a, b, g, d):
                return rk4(rhs, [u, v], (a, b, g, d), 1.0 / substeps)

            (us, vs), _ = pytensor.scan(step, outputs_info=[h0, l0], non_sequences=[a, b, g, d],
                                        n_steps=20 * substeps)
            H = pt.concatenate([h0[None], us[substeps - 1::substeps]])
            L = pt.concatenate([l0[None], vs[substeps - 1::substeps]])
            pm.LogNormal("hare", pt.log(H), sh, observed=hare)
            pm.LogNormal("lynx", pt.log(L), sl, observed=lynx)
            init = LV_GOOD_INIT
        elif name == "stiff_pk":
            ts, conc = _pk_data()
            cl = pm.LogNormal("CL", 1.6, 0.5)
            v1 = pm.LogNormal("V1", 1.6, 0.5)
            q = pm.LogNormal("Q", 5.7, 1.0)
            v2 = pm.LogNormal("V2", 3.9, 0.5)
            sigma = pm.HalfNormal("sigma", 0.3)
            # Fixed-step RK4 at PK_RK4_STEP (see there for the stability limit), the steps in each interval
            # between observation times shortened so that the grid lands on every observation time.
            edges = np.concatenate([[0.0], ts])
            n_int = np.ceil(np.diff(edges) / PK_RK4_STEP - 1e-9).astype(int)
            hs = np.repeat(np.diff(edges) / n_int, n_int)
            obs_steps = np.cumsum(n_int) - 1

            def rhs(y, cl, v1, q, v2):
                flow = q * (y[0] / v1 - y[1] / v2)
                return [-cl * y[0] / v1 - flow, flow]

            def step(h, ac, ap, cl, v1, q, v2):
                return rk4(rhs, [ac, ap], (cl, v1, q, v2), h)

            (acs, _), _ = pytensor.scan(step, sequences=[pt.as_tensor(hs)],
                                        outputs_info=[pt.as_tensor(PK_DOSE, dtype="float64"),
                                                      pt.as_tensor(0.0, dtype="float64")],
                                        non_sequences=[cl, v1, q, v2])
            pm.LogNormal("conc", pt.log(acs[obs_steps] / v1), sigma, observed=conc)
            init = PK_GOOD_INIT
        elif name.startswith("chain"):
            n, ts, idx, obs = _chain_data(name, scratch)
            k = pm.LogNormal("k", 0.0, 0.5)
            d = pm.LogNormal("d", math.log(0.1), 0.5)
            sigma = pm.HalfNormal("sigma", 0.5)

            def rhs(y, k, d):  # the whole state as one vector
                return [pt.concatenate([-k * y[0][:1], k * y[0][:-1] - (k + d) * y[0][1:]])]

            def step(x, k, d):
                return rk4(rhs, [x], (k, d), 1.0 / substeps)[0]

            y0 = np.zeros(n)
            y0[0] = 10.0
            xs, _ = pytensor.scan(step, outputs_info=[pt.as_tensor(y0)], non_sequences=[k, d],
                                  n_steps=10 * substeps)
            # ts are 1, 2, ..., 10: the state after every substeps-th step.
            at = np.rint(ts * substeps).astype(int) - 1
            pm.Normal("obs", xs[at][:, idx], sigma, observed=obs)
            init = CHAIN_GOOD_INIT
        else:
            ts, in_bed = _sir_data()
            b = pm.TruncatedNormal("beta", 2.0, 1.0, lower=0.0)
            g = pm.TruncatedNormal("gamma", 0.4, 0.5, lower=0.0)
            phi_inv = pm.Exponential("phi_inv", 5.0)

            def rhs(y, b, g):
                inf = b * y[0] * y[1] / 763.0
                return [-inf, inf - g * y[1], g * y[1]]

            def step(s, i, r, b, g):
                return rk4(rhs, [s, i, r], (b, g), 1.0 / substeps)

            (_, I, _), _ = pytensor.scan(step, outputs_info=[pt.as_tensor(762.0, dtype="float64"),
                                                             pt.as_tensor(1.0, dtype="float64"),
                                                             pt.as_tensor(0.0, dtype="float64")],
                                         non_sequences=[b, g], n_steps=14 * substeps)
            pm.NegativeBinomial("in_bed", mu=I[substeps - 1::substeps], alpha=1.0 / phi_inv, observed=in_bed)
            init = SIR_GOOD_INIT
        t0 = time.perf_counter()
        trace = pm.sample(draws=draws, tune=warmup, chains=chains, cores=1, random_seed=seed, initvals=init,
                          progressbar=False, compile_kwargs={"mode": "NUMBA"}, compute_convergence_checks=False)
        wall = time.perf_counter() - t0
    post = trace.posterior
    min_ess, max_rhat = _arviz_stats({k: post[k].values for k in init})
    return {"wall_s": wall, "compile_s": float("nan"), "min_ess": min_ess, "max_rhat": max_rhat,
            "divergences": int(trace.sample_stats["diverging"].values.sum()), "peak_mb": peak_mb(),
            "means": {k: float(post[k].values.mean()) for k in init}}


def run_pyro_stock(name, chains, warmup, draws, seed, scratch):
    """Pyro's own NUTS kernel on msml's Pyro model (which already uses the compiled solver)."""
    import pyro
    from pyro.infer import MCMC, NUTS

    import msml_dsl

    t0 = time.perf_counter()
    model = msml_dsl.compile_file(model_path(name, scratch), device="cpu")
    program = model.program
    compile_s = time.perf_counter() - t0
    pyro.set_rng_seed(seed)
    mcmc = MCMC(NUTS(lambda: program.model(1)), num_samples=draws, warmup_steps=warmup, num_chains=1,
                disable_progbar=True)
    draws_by_chain = {}
    for c in range(chains):
        mcmc.run()
        for k, v in mcmc.get_samples().items():
            draws_by_chain.setdefault(k, []).append(v.numpy())
    wall = time.perf_counter() - t0
    samples = {k: np.stack(v) for k, v in draws_by_chain.items() if k in program.layout}
    min_ess, max_rhat = _arviz_stats(samples)
    return {"wall_s": wall, "compile_s": compile_s, "min_ess": min_ess, "max_rhat": max_rhat, "divergences": -1,
            "peak_mb": peak_mb(), "means": {k: float(v.mean()) for k, v in samples.items()}}


# msml's default metric is dense for small models (metric=auto); the "_diag"/"_dense" variants
# show how much of each tool's speed is the mass matrix rather than the gradient.
WORKERS = {"msml": run_msml, "numpyro": run_numpyro, "pymc": run_pymc, "pyro": run_pyro_stock,
           "msml_diag": lambda *a: run_msml(*a, metric="diag"),
           "numpyro_dense": lambda *a: run_numpyro(*a, dense_mass=True)}


def gradient_time(name: str, scratch: Path, batch: int = 4, repeats: int = 200) -> tuple[float, int, float]:
    """Best of five timings of one gradient of `batch` chains near the simulation's truth.

    At the truth (k 1.5, d 0.1, sigma 0.1; each chain 1 % apart) every size takes about the same
    number of solver steps, so the times compare the cost per step; prior draws would mix in
    how stiff each draw happens to be. Returns (seconds, states, mean solver steps per chain).
    """
    import msml_dsl

    model = msml_dsl.compile_file(model_path(name, scratch), device="cpu")
    program = model.program
    truth = {"k": 1.5, "d": 0.1, "sigma": 0.1}
    jitter = np.exp(np.random.default_rng(1).normal(0, 0.01, (batch, len(truth))))
    z = program.to_unconstrained({k: np.asarray(v * jitter[:, j]) for j, (k, v) in enumerate(truth.items())})
    program.potential_and_grad(z)
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeats // 5):
            program.potential_and_grad(z)
        best = min(best, (time.perf_counter() - t0) / (repeats // 5))
    return best, len(model.ir.ode.states), float(np.mean(program.system.last_nsteps))


# ---------------------------------------------------------------------- driver
def run_one(tool, name, chains, warmup, draws, seed, python):
    cmd = [python, __file__, "--worker", tool, name, str(chains), str(warmup), str(draws), str(seed)]
    with tempfile.TemporaryDirectory() as kernel_cache:
        # A fresh kernel cache: the compile time shown is a first run's, not a cached rerun's.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MSML_CACHE_DIR": kernel_cache}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail[:100]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lv,sir,stiff_pk,chain20,chain50,chain200")
    ap.add_argument("--tools", default="msml,numpyro,pymc,pyro")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--pyro-iterations", type=int, default=100,
                    help="warmup and draws per chain for Pyro's stock NUTS (it needs minutes per 100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--python", default=sys.executable, help="interpreter with the peers installed")
    ap.add_argument("--scaling", action="store_true", help="only measure time per gradient against states")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        tool, name, chains, warmup, draws, seed = args.worker
        with tempfile.TemporaryDirectory() as scratch:
            result = WORKERS[tool](name, int(chains), int(warmup), int(draws), int(seed), Path(scratch))
        print(json.dumps(result))
        return

    if args.scaling:
        with tempfile.TemporaryDirectory() as scratch:
            rows = [gradient_time(f"chain{n}", Path(scratch)) for n in (20, 50, 100, 200)]
        print(f"{'states':>7} {'us per gradient (4 chains)':>28} {'steps per chain':>16}")
        for t, n, steps in rows:
            print(f"{n:>7} {t * 1e6:>28.0f} {steps:>16.1f}")
        ns = np.log([n for _, n, _ in rows])
        ts = np.log([t for t, _, _ in rows])
        print(f"cost ~ states^{np.polyfit(ns, ts, 1)[0]:.2f}")
        return

    # The ODE solver core and the density core are compiled once per installation and cached on disk; build
    # those caches first so that each fit's compile time is the per-model cost a user pays.
    # (Only when msml runs: numba keeps one version's cache per file, so building it with a peers'
    # interpreter that has another numba would evict the main environment's.)
    if any(t.startswith("msml") or t == "pyro" for t in args.tools.split(",")):
        cores = "import msml_dsl.backends.pyro.ode_solver, msml_dsl.backends.pyro.density_core"
        subprocess.run([args.python, "-c", cores], check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    results = []
    header = (f"{'model':<9} {'tool':<13} {'iterations':>12} {'wall s':>8} {'compile s':>9} {'min ESS':>8} "
              f"{'ESS/s':>8} {'R-hat':>6} {'div':>4} {'peak MB':>8} {'msml/x':>7}")
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        row_msml = None
        for tool in args.tools.split(","):
            if tool in ("numpyro", "numpyro_dense", "pymc") and not is_peer_model(name):
                continue
            it = (args.pyro_iterations, args.pyro_iterations) if tool == "pyro" else (args.warmup, args.draws)
            r = run_one(tool, name, args.chains, it[0], it[1], args.seed, args.python)
            r.update(model=name, tool=tool, warmup=it[0], draws=it[1])
            results.append(r)
            if "error" in r:
                print(f"{name:<9} {tool:<13} not run: {r['error']}")
                continue
            r["ess_per_s"] = r["min_ess"] / r["wall_s"]
            if tool == "msml":
                row_msml = r
            ratio = (row_msml["ess_per_s"] / r["ess_per_s"]) if row_msml and tool != "msml" else float("nan")
            print(f"{name:<9} {tool:<13} {args.chains:>3}x({it[0]}+{it[1]}) {r['wall_s']:>8.1f} "
                  f"{r['compile_s']:>9.1f} {r['min_ess']:>8.0f} {r['ess_per_s']:>8.2f} {r['max_rhat']:>6.3f} "
                  f"{r['divergences']:>4} {r['peak_mb']:>8.0f} {ratio:>7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
