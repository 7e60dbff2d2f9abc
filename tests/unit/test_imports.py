"""What the operator's and the CLI's processes import before they do anything: Optuna (and numpy with it) only at
a sweep's first study (``trainrun.sweep.plan._study``), 16 MB an operator of TrainingRuns alone never holds."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("optuna", "numpy", "scipy", "torch", "mlflow", "kubernetes")


def loaded_after(*modules: str) -> dict[str, bool]:
    """Which of HEAVY a fresh interpreter holds after importing ``modules`` (as the operator's entry point does:
    the kubernetes package kept out, as ``trainrun.controller.__main__`` keeps it)."""
    script = (
        "import importlib, json, sys\n"
        "sys.modules.setdefault('kubernetes', None)\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        f"print(json.dumps({{name: sys.modules.get(name) is not None for name in {list(HEAVY)!r}}}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    loaded: dict[str, bool] = json.loads(done.stdout)
    return loaded


def test_the_operator_and_the_cli_start_without_optuna_numpy_or_torch() -> None:
    loaded = loaded_after("kopf", "trainrun.controller.handlers", "trainrun.cli.main", "trainrun.client")
    assert not any(loaded.values()), f"imported at start: {[name for name, is_loaded in loaded.items() if is_loaded]}"


def test_a_sweeps_first_study_imports_optuna() -> None:
    assert loaded_after("trainrun.sweep.study")["optuna"]
