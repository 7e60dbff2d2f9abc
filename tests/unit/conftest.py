"""Lets the unit tests import their factories as plain modules."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
