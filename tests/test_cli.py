"""The command line: exit codes, located errors, no tracebacks, run folders, interrupted runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import msml_dsl

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"

TINY = """model tiny "A conjugate normal mean"
param mu ~ Normal(0, 3)
data d = csv("y.csv")
observe d.y ~ Normal(mu, 2)
derive twice = 2 * mu
infer nuts(chains=2, warmup=100, draws=100, seed=4)
"""


def msml(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "msml_dsl", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "y.csv").write_text("y\n1.0\n2.5\n\n0.3\n")
    (tmp_path / "tiny.msml").write_text(TINY)
    return tmp_path / "tiny.msml"


def test_version_and_help():
    r = msml("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"msml {msml_dsl.__version__}"
    r = msml("--help")
    assert r.returncode == 0 and "exit codes" in r.stdout and "130" in r.stdout


def test_check_good_and_bad():
    r = msml("check", "models/lotka_volterra/model.msml")
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    r = msml("check", GOLDEN / "bad" / "unknown_name_typo_param.msml")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unknown_name_typo_param.msml:" in r.stderr and "^" in r.stderr and "did you mean" in r.stderr


def test_missing_file_and_garbage_input(tmp_path):
    r = msml("check", tmp_path / "nope.msml")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bin.msml").write_bytes(b"\xff\xfe\x00model")
    r = msml("run", tmp_path / "bin.msml")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_unsupported_feature_exits_4(tmp_path):
    # a bounded Gamma prior whose rate is a parameter: torch has no Gamma CDF to renormalise it
    (tmp_path / "d.csv").write_text("t,y\n1,1.0\n2,0.5\n")
    (tmp_path / "m.msml").write_text(
        "model m\ntime t in [0, 3]\nstate y\nparam b ~ Exponential(1)\nparam k ~ Gamma(2, b) [upper=5]\n"
        "param s ~ HalfNormal(1)\nequation der(y) = -k * y\ninit y = 2\ndata d = csv(\"d.csv\")\n"
        "observe d.y ~ Normal(y, s)\n")
    r = msml("run", tmp_path / "m.msml")
    assert r.returncode == 4
    assert "E402" in r.stderr and "Traceback" not in r.stderr


def test_compile_emits_each_stage():
    for stage, needle in [("ast", "ParamDecl"), ("ir", '"rhs"'), ("pyro", "pyro.plate")]:
        r = msml("compile", "models/lotka_volterra/model.msml", "--emit", stage)
        assert r.returncode == 0, r.stderr
        assert needle in r.stdout
    ir = json.loads(msml("compile", "models/lotka_volterra/model.msml", "--emit", "ir").stdout)
    assert ir["ode"]["states"] == ["H", "L"] and len(ir["parameters"]) == 8


def test_cuda_without_gpu_is_a_clear_error(tiny):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = msml("run", tiny, "--device", "cuda")
    assert r.returncode == 2 and "E501" in r.stderr


def test_run_writes_a_complete_run_folder(tiny, tmp_path):
    out = tmp_path / "run"
    r = msml("run", tiny, "--out", out, "--quiet", "--seed", "5")
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.iterdir()} == {"posterior.nc", "summary.txt", "model.msml", "run.json"}
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["seed"] == 5 and record["settings"]["chains"] == 2
    assert "torch" in record["versions"]
    assert (out / "model.msml").read_text() == TINY
    from msml_dsl.diagnostics import get_group, group_names, load_netcdf
    data = load_netcdf(out / "posterior.nc")
    groups = set(group_names(data))
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood", "posterior_predictive", "prior",
            "prior_predictive"} <= groups
    post = get_group(data, "posterior")
    assert post["mu"].shape == (2, 100) and "twice" in post
    assert get_group(data, "observed_data")["d.y"].shape == (3,)  # the empty cell is masked
    stats = get_group(data, "sample_stats")
    assert {"diverging", "tree_depth", "energy", "n_steps", "lp"} <= set(stats.data_vars)
    assert "r_hat" in r.stdout and "mu" in r.stdout


def test_map_method(tiny):
    r = msml("run", tiny, "--method", "map")
    assert r.returncode == 0, r.stderr
    assert "MAP of tiny" in r.stdout


def test_interrupted_sampling_keeps_completed_draws(tiny):
    model = msml_dsl.compile_file(tiny, device="cpu")

    def progress(iteration, total, info):
        if info["phase"] == "sampling" and iteration >= 100 + 30:
            raise KeyboardInterrupt

    fit = model.sample(chains=2, warmup=100, draws=100, seed=1, progress=progress)
    assert fit.sample.interrupted
    n = fit.posterior["mu"].shape[1]
    assert 25 <= n < 100
    assert np.isfinite(fit.posterior["mu"]).all()


def test_svi_on_an_ode_model_is_a_clear_unsupported_error(tiny):
    tiny.write_text(TINY.replace("infer nuts(chains=2, warmup=100, draws=100, seed=4)", "infer svi(steps=100)"))
    r = msml("run", tiny)
    assert r.returncode == 4 and "E403" in r.stderr and "Traceback" not in r.stderr


def test_chees_from_the_command_line(tiny, tmp_path):
    r = msml("run", tiny, "--method", "chees", "--chains", "16", "--superchains", "4", "--warmup", "100",
             "--draws", "50", "--out", tmp_path / "chees", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "nested R-hat over 4 superchains" in r.stdout
    record = json.loads((tmp_path / "chees" / "run.json").read_text())
    assert record["method"] == "chees" and "mu" in record["nested_rhat"]


PINN_ROD = """model rod_cli "Steady heat in a rod with a uniform source: infer the conductivity"
space x in [0, 1]                        # no time: a steady problem
field u(x) : mlp(hidden=[16, 16], activation=tanh)
param k ~ LogNormal(0, 1)
equation k * der(u, x, x) + 2 = 0        # u = x (1 - x) / k
boundary u(0) = 0
boundary der(u, x)(1) = -1 / k
data d = csv("rod.csv")
observe d.u ~ Normal(u, 0.01)
collocation 200 sobol
physics pde ~ Normal(0, 0.01)
solver pinn(adam_steps=100, lbfgs_steps=50, lr=0.003)
"""


@pytest.fixture
def pinn_rod(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.random(40)
    u = x * (1 - x) / 0.5 + 0.01 * rng.standard_normal(40)          # k = 0.5
    (tmp_path / "rod.csv").write_text("x,u\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(x, u)))
    (tmp_path / "rod.msml").write_text(PINN_ROD)
    return tmp_path / "rod.msml"


def test_pinn_model_runs_from_the_command_line_with_laplace_by_default(pinn_rod, tmp_path):
    out = tmp_path / "pinn_run"
    r = msml("run", pinn_rod, "--out", out, "--quiet", "--threads", "1", "--seed", "2",
             "--solver-option", "adam_steps=500", "--solver-option", "lbfgs_steps=200")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "inference laplace" in r.stdout                     # no infer statement: laplace, not nuts
    assert "w/point" in r.stdout and "w on mean r^2" in r.stdout
    for term in ("pde", "boundary (default scale)", "d.u (Normal)"):
        assert term in r.stdout, term
    assert {p.name for p in out.iterdir()} == {"posterior.nc", "summary.txt", "run.json", "networks.pt", "model.msml",
                                              "fields.nc"}
    record = json.loads((out / "run.json").read_text())
    assert record["method"] == "laplace" and record["settings"]["infer"]["seed"] == 2
    assert {row["term"] for row in record["term_weights"]} == {"pde", "boundary", "d.u"}
    pde = next(row for row in record["term_weights"] if row["term"] == "pde")
    assert pde["weight_per_point"] == pytest.approx(1 / (2 * 0.01 ** 2))
    assert record["settings"]["solver"]["adam_steps"] == 500 and record["settings"]["solver"]["lr"] == 0.003
    assert (out / "model.msml").read_text() == PINN_ROD
    from msml_dsl.diagnostics import get_group, load_netcdf
    k = get_group(load_netcdf(out / "posterior.nc"), "posterior")["k"]
    assert abs(float(k.mean()) - 0.5) < 0.03                     # 700 training steps: near the truth (0.506)


def test_pinn_run_rejects_options_its_method_does_not_take(pinn_rod):
    r = msml("run", pinn_rod, "--chains", "2", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "E261" in r.stderr and "--chains" in r.stderr and "laplace" in r.stderr
    r = msml("run", pinn_rod, "--solver-option", "adam_step=10", "--quiet")
    assert r.returncode == 2 and "E261" in r.stderr and "did you mean 'adam_steps'" in r.stderr
    r = msml("run", pinn_rod, "--method", "laplace", "--draws", "0", "--quiet")
    assert r.returncode == 2 and "E262" in r.stderr and "draws" in r.stderr
    r = msml("run", pinn_rod, "--method", "chees", "--quiet")
    assert r.returncode == 2 and "E263" in r.stderr


def test_laplace_on_an_ode_model_is_a_clear_error(tiny):
    r = msml("run", tiny, "--method", "laplace", "--quiet")
    assert r.returncode == 2 and "E263" in r.stderr and "Traceback" not in r.stderr


def test_sigterm_during_sampling_saves_the_completed_draws(tiny, tmp_path):
    """Plain progress lines off a terminal; a scheduler's SIGTERM keeps the draws, as Ctrl-C does (exit 130)."""
    import os
    import signal

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "msml_dsl", "run", str(tiny), "--out", str(out), "--warmup", "50",
                             "--draws", "40000"], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen = []
    for line in proc.stderr:   # off a terminal, progress is a plain line at every 5 %: wait for kept draws
        seen.append(line)
        if line.startswith("sampling ") and not line.startswith("sampling 0/"):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert seen[0].startswith("warmup 0/40050: step ") and "divergences" in seen[-1]
    assert "\x1b[" not in "".join(seen) + err          # no terminal control codes in a log
    assert proc.returncode == 130, err
    assert "the draws completed so far were saved" in err and "Traceback" not in err
    assert (out / "posterior.nc").exists()
