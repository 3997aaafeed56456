"""Puts molecule/shared on the path for the scenario's tests (labtest helpers)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
