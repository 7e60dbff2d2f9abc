"""The cluster helpers find kubectl as a bench script run by hand needs: beside the Python running it, else on
PATH, and hand the same one to the shell scripts (``python tests/bench/bench_operator_scale.py`` from any venv)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cluster.harness import CLUSTER_SCRIPTS_DIR, DEFAULT_KUBECTL, find_kubectl, script_env


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho fake kubectl\n")
    path.chmod(0o755)
    return path


def test_beside_the_running_python_then_on_path_then_named(tmp_path: Path) -> None:
    python = tmp_path / "venv" / "bin" / "python"
    on_path = executable(tmp_path / "elsewhere" / "kubectl")
    env = {"PATH": f"{on_path.parent}{os.pathsep}/usr/bin"}
    assert find_kubectl(env, str(python)) == on_path  # no venv kubectl: the one on PATH
    beside = executable(tmp_path / "venv" / "bin" / "kubectl")
    assert find_kubectl(env, str(python)) == beside  # the venv's first: PATH may hold an old one
    named = tmp_path / "named"
    assert find_kubectl({**env, "TRAINRUN_VENV_BIN": str(named)}, str(python)) == named / "kubectl"
    assert find_kubectl({"PATH": str(tmp_path / "none")}, str(tmp_path / "bare" / "python")) == tmp_path / "bare" / "kubectl"


def require_kubectl(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = f'REPO_ROOT={CLUSTER_SCRIPTS_DIR.parents[1]}; source "{CLUSTER_SCRIPTS_DIR / "common.sh"}"; require_kubectl && echo "$KUBECTL"'
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_shell_scripts_take_the_named_kubectl_or_the_one_on_path(tmp_path: Path) -> None:
    on_path = executable(tmp_path / "bin" / "kubectl")
    bare = {"PATH": f"{on_path.parent}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path)}
    if (CLUSTER_SCRIPTS_DIR.parents[1] / ".venv" / "bin" / "kubectl").exists():
        bare["TRAINRUN_VENV_BIN"] = str(tmp_path / "no-such-venv")  # a checkout with its own .venv: pass it over
    found = require_kubectl(bare)
    assert (found.returncode, found.stdout.strip()) == (0, str(on_path)), found.stderr
    named = executable(tmp_path / "venv" / "bin" / "kubectl")
    found = require_kubectl({**bare, "TRAINRUN_VENV_BIN": str(named.parent)})
    assert (found.returncode, found.stdout.strip()) == (0, str(named)), found.stderr
    missing = require_kubectl({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TRAINRUN_VENV_BIN": str(tmp_path / "x")})
    if "kubectl" not in subprocess.run(["bash", "-c", "command -v kubectl"], env={"PATH": "/usr/bin:/bin"},
                                       capture_output=True, text=True, check=False).stdout:
        assert missing.returncode == 1 and f"no kubectl in {tmp_path / 'x'} nor on PATH" in missing.stderr


def test_the_scripts_are_handed_the_kubectl_the_helpers_use() -> None:
    assert script_env()["TRAINRUN_VENV_BIN"] == str(DEFAULT_KUBECTL.parent)
