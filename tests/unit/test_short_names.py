"""A short name picks the newest run of that name, whatever became of it: the verbs say which run that was
and go on with the flags that found it (``--local``, ``-n``)."""

from __future__ import annotations

from pathlib import Path

from run_folders import local_run
from trainrun.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()
OLDER, NEWER = "quickstart-20261205-100000", "quickstart-20261205-110000"
COPIED = {"uri": "file:///tmp/elsewhere", "manifestUri": "file:///tmp/elsewhere/manifest.json", "fileCount": 3, "bytes": 10}


def artifacts(runs_dir: Path, *arguments: str) -> tuple[int, str]:
    result = runner.invoke(app, ["artifacts", *arguments, "--local", "--runs-dir", str(runs_dir)])
    return result.exit_code, result.output


def test_a_cancelled_newest_run_names_itself_and_the_newest_run_that_copied(tmp_path: Path) -> None:
    local_run(tmp_path, name="quickstart", folder_name=OLDER, status={"phase": "Completed", "artifacts": COPIED})
    newer = local_run(tmp_path, name="quickstart", folder_name=NEWER, status={"phase": "Cancelled"})
    for extra in ([], ["-o", "json"]):
        code, output = artifacts(tmp_path, "quickstart", *extra)
        assert (code, output) == (
            1,
            f"error: {NEWER} (Cancelled) has copied nothing to {newer.default_artifacts_uri}; "
            f"the newest run that did: trainrun artifacts {OLDER} --local\n",
        )


def test_a_run_still_going_is_waited_for_and_a_failed_one_described(tmp_path: Path) -> None:
    running = local_run(tmp_path, name="going", status={"phase": "Running"})
    code, output = artifacts(tmp_path, "going")
    assert (code, output) == (
        1,
        f"error: {running.path.name} (Running) has copied nothing to {running.default_artifacts_uri} yet; "
        f"trainrun wait {running.path.name} --local waits for it\n",
    )
    failed = local_run(tmp_path, name="broken", status={"phase": "Failed"})
    code, output = artifacts(tmp_path, "broken")
    assert code == 1
    assert output.endswith(f"; why: trainrun describe {failed.path.name} --local\n")
