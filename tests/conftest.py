import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite tests/golden/bad/*.expected from the current messages")


@pytest.fixture
def update_goldens(request):
    return request.config.getoption("--update-goldens") or os.environ.get("MSML_UPDATE_GOLDENS") == "1"


@pytest.fixture(autouse=True)
def _clear_pyro_param_store():
    try:
        import pyro
    except ImportError:  # pragma: no cover
        yield
        return
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
