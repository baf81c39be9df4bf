"""The golden corpus: every bad model gives exactly its recorded messages; every good one checks.

Regenerate the expected files after an intended change of wording with
``pytest tests/test_golden.py --update-goldens`` and review the diff.
"""

import os
from pathlib import Path

import pytest

from msml_dsl.api import check_file
from msml_dsl.errors import MsmlError, format_diagnostics

GOLDEN = Path(__file__).parent / "golden"
BAD = sorted(p.name for p in (GOLDEN / "bad").glob("*.msml"))
GOOD = sorted(p.name for p in (GOLDEN / "good").glob("*.msml"))


@pytest.fixture
def in_dir(monkeypatch):
    def go(sub):
        monkeypatch.chdir(GOLDEN / sub)
    return go


def test_corpus_is_large_enough():
    assert len(BAD) >= 40 and len(GOOD) >= 10


@pytest.mark.parametrize("name", BAD)
def test_bad_model_messages(name, in_dir, update_goldens):
    in_dir("bad")
    with pytest.raises(MsmlError) as info:
        check_file(name)
    text = format_diagnostics(info.value.diagnostics, info.value.sources) + "\n"
    expected = Path(name).with_suffix(".expected")
    if update_goldens or not expected.exists():
        expected.write_text(text, encoding="utf-8")
    assert text == expected.read_text(encoding="utf-8")
    assert info.value.exit_code == 2
    first = info.value.diagnostics[0]
    if first.span is not None:
        assert f"{name}:{first.span.line}:{first.span.column}" in text


@pytest.mark.parametrize("name", GOOD)
def test_good_model_checks(name, in_dir):
    in_dir("good")
    check_file(name)
