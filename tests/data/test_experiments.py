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

DECAY = """model m
time t in [0, 4]
state y
data d = csv("runs.csv")
experiment subject = d.subject
param y0 ~ Normal(5, 2) per subject
param sigma ~ HalfNormal(1)
equation der(y) = -y
init y = y0
observe d.y ~ Normal(y, sigma)
"""


def _model(tmp_path, text: str, rows: list[str]) -> Path:
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "m.msml").write_text(text)
    return tmp_path / "m.msml"


def _write_wide_csv(tmp_path) -> None:
    """The golden runs.csv in wide format (t, y1, y2, y3) for the hand-copied models."""
    long_rows = (GOOD / "runs.csv").read_text().split()
    data = np.array([[float(v) for v in r.split(",")] for r in long_rows[1:]])
    (tmp_path / "wide.csv").write_text("t,y1,y2,y3\n" + "\n".join(
        f"{t:g}," + ",".join(f"{data[(data[:, 0] == r) & (data[:, 1] == t)][0, 2]:.4f}" for r in (1, 2, 3))
        for t in np.unique(data[:, 1])) + "\n")


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
    _write_wide_csv(tmp_path)
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
    text = DECAY.replace("subject", "run")
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


# --- experiments named by text (issue 5) -------------------------------------------------------

def test_text_experiment_ids_name_the_experiments_in_order_of_first_appearance(tmp_path):
    rows = ["subject,t,y", "mouse-3,0,5", "patient_A,0,4", "mouse-3,1,3", "7,0,6", "patient_A,1,2", "7,1,4"]
    m = msml_dsl.compile_file(_model(tmp_path, DECAY, rows))
    assert m.checked.experiment.labels == ("mouse-3", "patient_A", "7")   # mixed text and numbers: file order
    assert [p.name for p in m.ir.parameters][:3] == ["y0[subject=mouse-3]", "y0[subject=patient_A]", "y0[subject=7]"]
    assert [o.values.tolist() for o in m.ir.observations] == [[5.0, 3.0], [4.0, 2.0], [6.0, 4.0]]
    assert [o.file_lines.tolist() for o in m.ir.observations] == [[2, 4], [3, 6], [5, 7]]


def test_numeric_ids_stay_sorted_by_value_in_one_spelling_with_every_digit(tmp_path):
    rows = ["subject,t,y", "10,0,5", "2,0,4", "1234567,0,3", "1234568,0,2", "2.0,1,3", "02,2,2.5"]
    checked = msml_dsl.check_file(_model(tmp_path, DECAY, rows))
    assert checked.experiment.labels == ("2", "10", "1234567", "1234568")   # 2, 2.0 and 02 are one experiment
    assert checked.states == ("y",)                                          # the model as written


def test_labels_that_would_break_names_are_rewritten_and_a_clash_is_reported(tmp_path):
    rows = ["subject,t,y", "patient B/2,0,5", "a|b]c,0,4", "x=1,0,3"]
    assert msml_dsl.check_file(_model(tmp_path, DECAY, rows)).experiment.labels == ("patient_B_2", "a_b_c", "x_1")
    with pytest.raises(MsmlError) as info:
        msml_dsl.check_file(_model(tmp_path, DECAY, ["subject,t,y", "patient B,0,5", "patient_B,0,4"]))
    [d] = info.value.diagnostics
    assert d.code == "E315" and "'patient B' (" in d.message and "runs.csv' line 2) and 'patient_B' (" in d.message
    assert "runs.csv' line 3) would both be named subject=patient_B" in d.message


def test_an_empty_text_id_and_time_order_within_text_experiments_are_located(tmp_path):
    with pytest.raises(MsmlError) as info:
        msml_dsl.check_file(_model(tmp_path, DECAY, ["subject,t,y", "A,0,5", "NA,1,4", "B,0,3"]))
    assert [d.code for d in info.value.diagnostics] == ["E312"] and "line 3" in info.value.diagnostics[0].message
    with pytest.raises(MsmlError) as info:
        msml_dsl.check_file(_model(tmp_path, DECAY, ["subject,t,y", "A,0,5", "B,2,4", "A,1,3", "B,1,2"]))
    assert [d.code for d in info.value.diagnostics] == ["E308"] and "line 5" in info.value.diagnostics[0].message


def test_msml_check_says_how_many_experiments_and_abbreviates_many(tmp_path, capsys):
    from msml_dsl.cli import main

    assert main(["check", str(GOOD / "experiment_subjects.msml")]) == 0
    assert "3 experiments (subject = patient_A, mouse-3, patient_B)" in capsys.readouterr().out
    rows = ["subject,t,y"] + [f"s{i},0,{i}" for i in range(1, 41)]
    assert main(["check", str(_model(tmp_path, DECAY, rows))]) == 0
    assert "40 experiments (subject = s1, s2, s3, s4, s5, ..., s40)" in capsys.readouterr().out
    assert main(["check", str(GOOD / "decay_base.msml")]) == 0    # no experiment statement: no count
    assert "experiment" not in capsys.readouterr().out


# --- per-experiment covariates in derive and observe -------------------------------------------

def test_a_derived_quantity_of_a_covariate_is_one_per_experiment_and_map_recovers_it():
    m = msml_dsl.compile_file(GOOD / "experiment_subjects.msml")   # simulated: k0 = 0.5, y0 = 5, 3, 6.5
    assert [n for n, _ in m.ir.derived] == ["k[subject=patient_A]", "k[subject=mouse-3]", "k[subject=patient_B]"]
    assert [str(v) for _, v in m.ir.derived] == ["k0", "2.71828182845905*k0", "1.64872127070013*k0"]
    fit = m.map(seed=0, starts=4)
    assert fit.values["k0"] == pytest.approx(0.5, rel=0.05)
    assert [fit.values[f"y0[subject={s}]"] for s in ("patient_A", "mouse-3", "patient_B")] == \
        pytest.approx([5.0, 3.0, 6.5], abs=0.15)
    assert fit.derived["k[subject=mouse-3]"] == pytest.approx(0.5 * np.e, rel=0.05)


def test_an_observation_reads_its_own_rows_of_a_column(tmp_path):
    rows = ["subject,t,y,scale", "A,0,5,1", "A,1,3,1.5", "B,0,4,2", "B,1,2,2.5"]
    text = DECAY.replace("Normal(y, sigma)", "Normal(y * d.scale, sigma)")
    m = msml_dsl.compile_file(_model(tmp_path, text, rows))
    assert [list(o.covariates.values())[0].tolist() for o in m.ir.observations] == [[1.0, 1.5], [2.0, 2.5]]


# --- per on vector parameters -------------------------------------------------------------------

def test_a_vector_parameter_per_experiment_has_the_density_of_hand_copied_vectors(tmp_path):
    split = msml_dsl.compile_file(GOOD / "experiment_per_vector.msml")
    assert [p.name for p in split.ir.parameters] == ["k", "x0[run=1]", "x0[run=2]", "x0[run=3]", "sigma"]
    assert [p.shape for p in split.ir.parameters[1:4]] == [(2,)] * 3
    assert [str(i) for i in split.ir.ode.inits[:2]] == ["x0[run=1][1]", "x0[run=1][2]"]
    _write_wide_csv(tmp_path)
    (tmp_path / "wide.msml").write_text("model wide\ntime t in [0, 4]\nstate y1, y2, y3, z1, z2, z3\n"
                                        "data d = csv(\"wide.csv\")\nparam k ~ LogNormal(0, 1)\n"
                                        + "".join(f"param a{i}[2] ~ Normal(5, 2)\n" for i in (1, 2, 3))
                                        + "param sigma ~ HalfNormal(1)\n"
                                        + "".join(f"equation der(y{i}) = -k * y{i}\nequation der(z{i}) = k * y{i} - "
                                                  f"z{i}\ninit y{i} = a{i}[1]\ninit z{i} = a{i}[2]\n"
                                                  f"observe d.y{i} ~ Normal(y{i} + z{i}, sigma)\n" for i in (1, 2, 3)))
    wide = msml_dsl.compile_file(tmp_path / "wide.msml").program
    vectors = {1: [5.1, 0.2], 2: [2.9, 0.1], 3: [6.2, 0.3]}
    values = {"k": np.array([0.6]), "sigma": np.array([0.2]),
              **{f"x0[run={r}]": np.array([v]) for r, v in vectors.items()}}
    renamed = {"k": values["k"], "sigma": values["sigma"], **{f"a{r}": np.array([v]) for r, v in vectors.items()}}
    u_split, _ = split.program.potential_and_grad(split.program.to_unconstrained(values))
    u_wide, _ = wide.potential_and_grad(wide.to_unconstrained(renamed))
    assert u_split == pytest.approx(u_wide, rel=1e-10)


def test_text_ids_read_as_a_number_elsewhere_are_not_numbers(tmp_path):
    text = DECAY.replace("Normal(y, sigma)", "Normal(y * d.subject, sigma)")
    with pytest.raises(MsmlError) as info:
        msml_dsl.check_file(_model(tmp_path, text, ["subject,t,y", "1,0,5", "A,0,4"]))
    [d] = info.value.diagnostics
    assert d.code == "E304" and "line 3, column 'subject': 'A' is not a number" in d.message
    assert d.span.line == 10                                           # at the use, not at the experiment


def test_names_from_labels_with_slashes_and_bars_survive_a_netcdf_round_trip(tmp_path):
    from msml_dsl.diagnostics import build_inference_data, load_netcdf, save_netcdf

    rows = ["subject,t,y", "patient/B,0,5", "patient/B,1,3", "a|b c,0,4", "a|b c,1,2"]
    m = msml_dsl.compile_file(_model(tmp_path, DECAY, rows))
    names = [p.name for p in m.ir.parameters]
    assert names == ["y0[subject=patient_B]", "y0[subject=a_b_c]", "sigma"]   # a '/' would fail to save
    data = build_inference_data(posterior={n: np.zeros((1, 3)) for n in names},
                                observed_data={o.name: o.values for o in m.ir.observations})
    save_netcdf(data, tmp_path / "posterior.nc")
    assert list(load_netcdf(tmp_path / "posterior.nc").posterior.data_vars) == names
