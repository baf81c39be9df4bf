import sys
from pathlib import Path

# Make the repository root importable when pytest is run without installing msml.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
