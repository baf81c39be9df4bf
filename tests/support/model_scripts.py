"""Load a model folder's script (``models/<name>/simulate.py``) under a name of its own.

Every model folder has a ``simulate.py``; importing them as ``simulate`` through ``sys.path``
hands a later test whichever folder was imported first (``sys.modules`` caches the name).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_model_script(folder: Path, script: str = "simulate") -> ModuleType:
    """The module ``folder/script.py``, e.g. ``load_model_script(MODELS / "lorenz_sysid").TRUE_TERMS``."""
    path = Path(folder) / f"{script}.py"
    spec = importlib.util.spec_from_file_location(f"_model_{Path(folder).name}_{script}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
