"""``trainrun.Client(backend="local")``: create, wait, get, list, metrics, artifacts, logs, download, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from localrun import FinishedRun, sample
from trainrun import Client
from trainrun.cli.main import app
from trainrun.client import RunNotFound, WaitTimeout
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # real training processes


def quick_document(name: str) -> dict[str, object]:
    document = sample("quickstart.yaml")
    document["metadata"]["name"] = name
    document["spec"]["hyperparameters"].update({"epochs": 1})
    document["spec"]["hyperparameters"]["extra"]["synthetic-samples"] = "512"
    return document


def test_create_runs_detached_and_wait_returns_it_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    client = Client(backend="local", runs_dir=tmp_path / "runs")
    created = client.create(quick_document("detached"))
    assert created["status"]["phase"] == "Preparing"
    finished = client.wait("detached", timeout=180)
    assert finished["status"]["phase"] == "Completed", finished["status"]
    assert [run["metadata"]["name"] for run in client.list()] == ["detached"]
    metrics = client.metrics("detached")
    assert metrics["latest"]["epoch_train_loss"] == metrics["history"][-1]["epoch_train_loss"]
    assert metrics["key"].startswith("val_loss=")
    lines = list(client.logs("detached"))
    assert lines and {replica for replica, _ in lines} == {"master-0", "worker-0"}
    worker = [line for _, line in client.logs("detached", replica="worker-0")]
    assert [line.split(") ")[1].split(" at ")[0] for line in worker] == ["starting", "finished"]  # who, when
    assert client.delete("detached") is True
    with pytest.raises(RunNotFound):
        client.get("detached")


def test_wait_times_out_and_cancel_stops_a_detached_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    client = Client(backend="local", runs_dir=tmp_path / "runs")
    document = quick_document("cancelled")
    document["spec"]["hyperparameters"]["epochs"] = 50
    client.create(document)
    with pytest.raises(WaitTimeout):
        client.wait("cancelled", timeout=1)
    waited = CliRunner().invoke(
        app, ["wait", "cancelled", "--timeout", "1s", "--local", "--runs-dir", str(tmp_path / "runs")]
    )
    assert waited.exit_code == 2, waited.output
    client.wait("cancelled", phases=("Running",), timeout=60)
    followed = client.logs("cancelled", follow=True)
    # Following a live run: lines arrive while it trains, metric lines among them.
    seen: list[tuple[str, str]] = []
    for replica, line in followed:
        seen.append((replica, line))
        if line.startswith("trainrun:metric "):
            break
    assert client.get("cancelled")["status"]["phase"] == "Running"
    assert ("master-0", "trainrun:metric") in {(replica, line.split(" ")[0]) for replica, line in seen}
    client.cancel("cancelled")
    finished = client.wait("cancelled", timeout=60)
    assert finished["status"]["phase"] == "Cancelled"
    assert finished["status"]["message"].startswith("cancelled (trainrun cancel, or spec.cancel: true)")
    seen += list(followed)  # the follow ends once the run has finished, having said all
    folder = Path(finished["metadata"]["annotations"]["trainrun.dev/run-dir"])
    written = [(path.stem, line) for path in (folder / "logs").glob("*.log") for line in path.read_text().splitlines()]
    assert sorted(seen) == sorted(written)


def test_the_client_reads_a_run_made_by_the_cli(quickstart: FinishedRun, tmp_path: Path) -> None:
    client = Client(backend="local", runs_dir=quickstart.runs_dir)
    run = client.get("quickstart")
    assert run["status"]["phase"] == "Completed"
    assert client.status("quickstart").artifacts is not None
    lines = [line for _, line in client.logs("quickstart", replica="master-0")]
    assert lines == (quickstart.folder / "logs" / "master-0.log").read_text().splitlines()
    artifacts = client.artifacts("quickstart")
    assert artifacts["uri"] == f"file://{quickstart.artifacts}"
    assert {"model.pt", "model.ts", "triton/quickstart/1/model.pt", "triton/quickstart/config.pbtxt"} <= {
        entry["path"] for entry in artifacts["manifest"]["files"]
    }  # the Triton model is named after the run
    copied = client.download("quickstart", tmp_path / "copy")
    assert (copied / "model.ts").read_bytes() == (quickstart.artifacts / "model.ts").read_bytes()
    assert json.loads((copied / "run.json").read_text())


def test_unknown_runs_and_replicas_are_named(quickstart: FinishedRun) -> None:
    client = Client(backend="local", runs_dir=quickstart.runs_dir)
    with pytest.raises(RunNotFound, match="no local run called 'nope'"):
        client.get("nope")
    with pytest.raises(RunNotFound, match="no replica 'worker-7'.*master-0, worker-0"):
        list(client.logs("quickstart", replica="worker-7"))


@pytest.mark.parametrize(
    ("content", "count", "expected"),
    [
        (b"a\nb\nc\n", 1, b"c\n"),
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
        (b"a\nb\nc", 1, b"c"),  # a last line still being written
        (b"a\nb\nc\n", 0, b""),
        (b"", 3, b""),
        (b"x" * 200_000 + b"\n" + b"y" * 100_000 + b"\n", 1, b"y" * 100_000 + b"\n"),  # across read blocks
    ],
)
def test_the_last_lines_of_a_log_file_are_found_from_its_end(
    tmp_path: Path, content: bytes, count: int, expected: bytes
) -> None:
    from trainrun.client.local import offset_of_last_lines

    path = tmp_path / "replica.log"
    path.write_bytes(content)
    assert content[offset_of_last_lines(path, count) :] == expected
