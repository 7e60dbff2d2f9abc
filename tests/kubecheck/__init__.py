"""Ask Kubernetes' own Go code (tests/kubecheck/main.go) what it makes of our objects and values.

Used by unit tests that must agree with Kubernetes, not with our reading of it: kstatus' health of a
TrainingRun in every phase, and the API server's quantity parser against the spec model's. The
binary is built and cached by tests/cluster/build.sh (component kubecheck, from Go modules), which
tests/run.sh runs before pytest; where it is missing (a unit-test run on a fresh machine) those tests
skip, saying how to build it: the unit tests never build Go code.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import CLUSTER_SCRIPTS_DIR


@cache
def binary() -> Path:
    """The cached kubecheck of this source and cli-utils version (common.sh names it); skips the test when
    it is not built."""
    located = subprocess.run(
        ["bash", "-c", f'source "{CLUSTER_SCRIPTS_DIR / "common.sh"}" && printf %s "$KUBECHECK"'],
        capture_output=True, text=True, check=True,
    )
    path = Path(located.stdout)
    if not path.is_file():
        pytest.skip(f"kubecheck is not built ({path}): bash tests/cluster/build.sh builds it (tests/run.sh does)")
    return path


def ask(question: str, items: list[Any]) -> list[dict[str, Any]]:
    """One answer per item: ``kstatus`` for objects, ``quantity`` for strings (see main.go)."""
    completed = subprocess.run(
        [str(binary()), question], input=json.dumps(items), capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    answers: list[dict[str, Any]] = json.loads(completed.stdout)
    assert len(answers) == len(items)
    return answers
