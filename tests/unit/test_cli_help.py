"""Every verb's ``--help`` as a terminal of 80 columns shows it: nothing cut, on/off flags without a value.

Runs the real console script (``python -m trainrun.cli``) with COLUMNS=80, as a user's terminal sets it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

VERBS = ["", "run", "submit", "get", "list", "describe", "logs", "metrics", "cancel", "delete", "wait", "validate",
         "render", "crd", "upload", "download", "artifacts", "sweep"]


def help_text(verb: str) -> str:
    command = [sys.executable, "-m", "trainrun.cli", *([verb] if verb else []), "--help"]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}, check=True)
    return completed.stdout


@pytest.mark.parametrize("verb", VERBS, ids=[verb or "trainrun" for verb in VERBS])
def test_help_fits_80_columns_with_nothing_cut(verb: str) -> None:
    text = help_text(verb)
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, too_wide
    assert "…" not in text  # a cell cut short
    assert "<bool>" not in text  # an on/off flag takes no value


def test_run_help_shows_its_example_and_flags_whole() -> None:
    text = " ".join(help_text("run").split())  # words, whatever the wrapping
    assert "--set hyperparameters.epochs=1" in text
    assert "--set PATH=VALUE" in text
    assert "--local Run the replicas" in text  # a flag: no metavar between it and its help
    assert "--follow / --detach Follow the run" in text
    assert "trainrun-operator-config" in text.replace("- ", "-")  # wrapped at its hyphen at most
