"""Makes tests/training's helper modules and (when the repo is not pip-installed) the
trainrun_trainer package importable, and gives each test an output folder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if importlib.util.find_spec("trainrun_trainer") is None:
    sys.path.insert(0, str(HERE.parents[1] / "training"))


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """Where the trainer under test writes ($OUTPUT_DIR)."""
    return tmp_path / "outputs"
