"""The experiment statement: long-format data split into one ODE solution per experiment.

The split model must be the model one would write by hand with a copy of every state per
experiment (the old way): same log density at the same point.
"""

from pathlib import Path

import numpy as np
import pytest

import msml_dsl
from msml_dsl.errors import MsmlError

GOOD = Path(__file__).resolve().parents[1] / "golden" / "good"


def _model(tmp_path, text: str, rows: list[str]) -> Path:
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "m.msml").write_text(text)
    return tmp_path / "m.msml"


def test_split_names_each_copy_and_keeps_shared_things_once():
    m = msml_dsl.compile_file(GOOD / "experiment_decay.msml")
    assert [str(s) for s in m.ir.ode.states] == ["y[run=1]", "y[run=2]", "y[run=3]"]
    assert [p.name for p in m.ir.parameters] == ["k", "mu0", "y0[run=1]", "y0[run=2]", "y0[run=3]", "sigma"]
    assert [str(a) for a in m.ir.parameters[2].args] == ["mu0", "2"]          # the shared hyperparameter
    assert [o.name for o in m.ir.observations] == ["d.y[run=1]", "d.y[run=2]", "d.y[run=3]"]
    assert all(o.values.size == 6 for o in m.ir.observations)
    assert [n for n, _ in m.ir.derived] == ["half_life", "y0_share[run=1]", "y0_share[run=2]", "y0_share[run=3]"]
    assert m.checked.experiment.labels == ("1", "2", "3")
    assert str(m.ir.ode.inits[1]) == "y0[run=2]"


def test_split_model_has_the_density_of_the_hand_copied_model(tmp_path):
    long_rows = (GOOD / "runs.csv").read_text().split()
    data = np.array([[float(v) for v in r.split(",")] for r in long_rows[1:]])
    (tmp_path / "wide.csv").write_text("t,y1,y2,y3\n" + "\n".join(
        f"{t:g}," + ",".join(f"{data[(data[:, 0] == r) & (data[:, 1] == t)][0, 2]:.4f}" for r in (1, 2, 3))
        for t in np.unique(data[:, 1])) + "\n")
    (tmp_path / "wide.msml").write_text("""model wide
time t in [0, 4]
state y1, y2, y3
data d = csv("wide.csv")
param k ~ LogNormal(0, 1)
param mu0 ~ Normal(5, 2)
param a1 ~ Normal(mu0, 2)
param a2 ~ Normal(mu0, 2)
param a3 ~ Normal(mu0, 2)
param sigma ~ HalfNormal(1)
equation der(y1) = -k * y1
equation der(y2) = -k * y2
equation der(y3) = -k * y3
init y1 = a1
init y2 = a2
init y3 = a3
observe d.y1 ~ Normal(y1, sigma)
observe d.y2 ~ Normal(y2, sigma)
observe d.y3 ~ Normal(y3, sigma)
""")
    split = msml_dsl.compile_file(GOOD / "experiment_decay.msml").program
    wide = msml_dsl.compile_file(tmp_path / "wide.msml").program
    values = {"k": 0.6, "mu0": 4.5, "sigma": 0.2, "y0[run=1]": 5.1, "y0[run=2]": 2.9, "y0[run=3]": 6.2}
    renamed = {"a1": 5.1, "a2": 2.9, "a3": 6.2, **{k: v for k, v in values.items() if "[" not in k}}
    u_split, _ = split.potential_and_grad(split.to_unconstrained({k: np.array([v]) for k, v in values.items()}))
    u_wide, _ = wide.potential_and_grad(wide.to_unconstrained({k: np.array([v]) for k, v in renamed.items()}))
    assert u_split == pytest.approx(u_wide, rel=1e-10)


def test_experiments_may_have_their_own_times_and_missing_columns(tmp_path):
    rows = ["run,t,y,z", "1,0,5,1", "1,1,3,", "1,2,2,", "2,0.5,4,", "2,3,1,", "7,0,6,2", "7,1,4,1"]
    path = _model(tmp_path, """model m
time t in [0, 4]
state y
data d = csv("runs.csv")
experiment run = d.run
param k ~ LogNormal(0, 1)
param y0 ~ Normal(5, 2) per run
param sigma ~ HalfNormal(1)
equation der(y) = -k * y
init y = y0
observe d.y ~ Normal(y, sigma)
observe d.z ~ Normal(y / 3, sigma)
""", rows)
    m = msml_dsl.compile_file(path)
    names = [o.name for o in m.ir.observations]
    assert names == ["d.y[run=1]", "d.z[run=1]", "d.y[run=2]", "d.y[run=7]", "d.z[run=7]"]   # no z in run 2
    assert m.ir.observations[2].times.tolist() == [0.5, 3.0]
    assert m.ir.ode.output_times.tolist() == [0.0, 0.5, 1.0, 2.0, 3.0]


def test_time_order_is_checked_within_each_experiment(tmp_path):
    text = """model m
time t in [0, 4]
state y
data d = csv("runs.csv")
experiment run = d.run
param y0 ~ Normal(5, 2) per run
param sigma ~ HalfNormal(1)
equation der(y) = -y
init y = y0
observe d.y ~ Normal(y, sigma)
"""
    msml_dsl.check_file(_model(tmp_path, text, ["run,t,y", "1,0,5", "2,0,4", "1,1,3", "2,1,2"]))   # interleaved
    with pytest.raises(MsmlError) as info:
        msml_dsl.check_file(_model(tmp_path, text, ["run,t,y", "1,0,5", "1,2,3", "2,0,4", "1,1,2"]))
    assert [d.code for d in info.value.diagnostics] == ["E308"]
    assert "line 5" in info.value.diagnostics[0].message and "within each experiment" in info.value.diagnostics[0].message


def test_python_api_compiles_experiment_text_like_a_file():
    text = (GOOD / "experiment_decay.msml").read_text()
    m = msml_dsl.compile_source(text, name="decay.msml", base_dir=GOOD)
    assert [o.name for o in m.ir.observations] == ["d.y[run=1]", "d.y[run=2]", "d.y[run=3]"]
    assert m.checked.experiment.copies[0] == ("y", ("y[run=1]", "y[run=2]", "y[run=3]"))


def test_a_column_constant_within_each_experiment_is_a_covariate_of_its_equations():
    m = msml_dsl.compile_file(GOOD / "experiment_dose.msml")
    assert [str(i) for i in m.ir.ode.inits] == ["1.0/V", "2.0/V", "1.0/V"]     # dose of runs 1, 2, 3
