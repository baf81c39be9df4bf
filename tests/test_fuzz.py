"""Broken input never crashes the checker: random edits of good models give located errors or pass."""

import random
from pathlib import Path

import pytest

from msml_dsl.data.csv_source import load_data
from msml_dsl.errors import MsmlError
from msml_dsl.ir.model_ir import lower_to_ir
from msml_dsl.semantics.checker import check
from msml_dsl.symbolic.builder import build_symbolic
from msml_dsl.syntax.parser import parse_file

GOOD = Path(__file__).parent / "golden" / "good"
TOKENS = ["(", ")", "[", "]", "=", "~", ",", "^", "der(", "param", "x", "1e", "-", "#", '"', "\\\n", "\n", " ",
          "Normal(", "state", "k[0]", "..", "@", "0"]


@pytest.mark.parametrize("seed", range(6))
def test_random_edits_never_crash(seed, tmp_path, monkeypatch):
    rng = random.Random(seed)
    sources = sorted(GOOD.glob("*.msml"))
    for csv in GOOD.glob("*.csv"):
        (tmp_path / csv.name).write_text(csv.read_text())
    monkeypatch.chdir(tmp_path)
    for i in range(60):
        text = rng.choice(sources).read_text()
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(text) + 1)
            if rng.random() < 0.5 and text:
                text = text[:pos] + text[pos + rng.randint(1, 6):]
            else:
                text = text[:pos] + rng.choice(TOKENS) + text[pos:]
        path = tmp_path / f"m{i}.msml"
        path.write_text(text)
        try:
            checked = check(parse_file(path.name))
            lower_to_ir(build_symbolic(checked), load_data(checked))
        except MsmlError as exc:
            assert exc.diagnostics, text
            for d in exc.diagnostics:
                assert d.message and d.code.startswith(("E", "W")), d
