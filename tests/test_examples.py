"""The Python-API scripts in examples/ run to the end (slow: each fits a real model)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(script):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=ROOT, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
