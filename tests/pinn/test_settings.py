import subprocess
import sys

import pytest
import sympy as sp
import torch

from msml_dsl.backends.pinn.expressions import compile_expression
from msml_dsl.backends.pinn.settings import PINN_INFER_OPTIONS, PINN_OPTIONS, resolve_options
from msml_dsl.ir.pde import FieldSpec

from pinn_problems import U, X, T


def test_settings_module_imports_no_torch():
    code = ("import sys; import msml_dsl.backends.pinn.settings as s; "
            "assert 'torch' not in sys.modules and 'sympy' not in sys.modules; print(len(s.PINN_OPTIONS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_option_has_type_default_and_help():
    specs = [PINN_OPTIONS, *PINN_INFER_OPTIONS.values()]
    for spec in specs:
        for name, s in spec.items():
            assert s["type"] in (int, float, str, bool) and s["help"], name
            assert isinstance(s["default"], s["type"]) or (s["type"] is float and isinstance(s["default"], int))
            if "choices" in s:
                assert s["default"] in s["choices"]
    assert set(PINN_INFER_OPTIONS) == {"map", "svi", "laplace", "nuts"}


def test_resolve_options_defaults_conversions_and_errors():
    o = resolve_options(PINN_OPTIONS, {"adam_steps": 10.0, "lr": 1, "output_scale": "false"}, "solver pinn")
    assert o["adam_steps"] == 10 and o["lr"] == 1.0 and o["output_scale"] is False and o["lbfgs_steps"] == 2000
    with pytest.raises(ValueError, match="no option 'adam'"):
        resolve_options(PINN_OPTIONS, {"adam": 1}, "solver pinn")
    with pytest.raises(ValueError, match="whole number"):
        resolve_options(PINN_OPTIONS, {"adam_steps": 1.5}, "solver pinn")
    with pytest.raises(ValueError, match="one of float32, float64"):
        resolve_options(PINN_OPTIONS, {"dtype": "half"}, "solver pinn")
    with pytest.raises(ValueError, match="at least 0"):
        resolve_options(PINN_OPTIONS, {"lr": -1}, "solver pinn")


def test_compiled_residual_names_its_derivatives_and_evaluates():
    lam = sp.Symbol("lambda1", real=True)
    e = compile_expression(sp.Derivative(U, T) + lam * U * sp.Derivative(U, X)
                           - 0.5 * sp.Derivative(U, X, T) + sp.sin(sp.pi * X), {"u": FieldSpec("u", (X, T))})
    assert e.needs == {"u": {(0, 1), (0, 0), (1, 0), (1, 1)}}
    assert e.names == ["lambda1", "x"]
    d = {("u", (0, 1)): torch.tensor([1.0]), ("u", (0, 0)): torch.tensor([2.0]),
         ("u", (1, 0)): torch.tensor([3.0]), ("u", (1, 1)): torch.tensor([4.0])}
    got = e(d, {"lambda1": torch.tensor(0.5), "x": torch.tensor([0.5])})
    assert torch.allclose(got, torch.tensor([1 + 0.5 * 2 * 3 - 2 + 1.0]))
    const = compile_expression(sp.Integer(3), {})
    assert torch.equal(const({}, {}, like=torch.zeros(2)), torch.full((2,), 3.0))


def test_compile_rejects_unknown_functions_and_fields_at_fixed_arguments():
    with pytest.raises(ValueError, match="not a field"):
        compile_expression(sp.Function("v")(X, T), {"u": FieldSpec("u", (X, T))})
    with pytest.raises(ValueError, match="its own arguments"):
        compile_expression(sp.Function("u", real=True)(0, T), {"u": FieldSpec("u", (X, T))})
