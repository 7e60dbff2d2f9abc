"""The ``trainrun upload SRC URI``, ``trainrun download URI DST`` and ``trainrun artifacts NAME`` verbs.

``trainrun.cli.main`` calls :func:`register`. ``artifacts`` lists what a run copied (its manifest) or,
with ``--download DIR``, copies it here, as ``az ml job download`` does. The verbs sit on :mod:`trainrun.storage`
(imported when a verb runs, so ``trainrun --help`` stays fast). Credentials come from the
environment (AWS_*, GOOGLE_*, AZURE_STORAGE_*); ``--endpoint-url`` and ``--ca-bundle`` override
AWS_ENDPOINT_URL and AWS_CA_BUNDLE.
Progress is a rich bar on a terminal and a plain line every few seconds otherwise; failures are
one ``error:`` line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trainrun.cli.common import (
    LocalOption,
    NameArgument,
    NamespaceOption,
    OutputFormat,
    OutputOption,
    RunsDirOption,
    add_command,
    again,
    client_for,
    dump_yaml,
    fail,
)
from trainrun.render.children import CREDENTIALS_DIR_VARIABLE, STAGE_IN_VARIABLE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trainrun.client import Client
    from trainrun.storage import ProgressCallback, StorageOptions

EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint (MinIO, SeaweedFS), e.g. http://minio:9000; default: AWS_ENDPOINT_URL.",
    ),
]
CaBundleOption = Annotated[
    str | None,
    typer.Option(
        "--ca-bundle",
        metavar="PEM",
        help="PEM file of a CA to trust besides the system ones (a store behind a private CA); default: AWS_CA_BUNDLE.",
    ),
]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, max=512, metavar="N", help="Files transferred in parallel.")
]
_PLAIN_PROGRESS_EVERY_S = 5.0


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    app.command("upload")(upload_command)
    app.command("download")(download_command)
    app.command("stage-in", hidden=True)(stage_in_command)
    add_command(app, "artifacts", artifacts_command)


def upload_command(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="A folder (uploaded with a manifest.json) or one file.")],
    uri: Annotated[
        str, typer.Argument(metavar="URI", help="Destination: s3://bucket/prefix, gs://, az://, file:// or a path.")
    ],
    endpoint_url: EndpointOption = None,
    ca_bundle: CaBundleOption = None,
    concurrency: ConcurrencyOption = 64,
) -> None:
    """Upload a folder (every file, then manifest.json last) or a single file to object storage."""
    from trainrun.status.phase import human_size
    from trainrun.storage import StorageError, upload_directory, upload_file

    try:
        options = _options(endpoint_url, ca_bundle)
        if src.is_dir():
            with _progress("uploading") as progress:
                result = upload_directory(src, uri, options=options, concurrency=concurrency, progress=progress)
            manifest = result.manifest
            rate = manifest.total_bytes / max(result.elapsed_s, 1e-6)
            skipped = f", skipped {len(result.skipped)} broken links" if result.skipped else ""
            print(
                f"uploaded {_files(manifest.file_count)} ({human_size(manifest.total_bytes)}) to {result.uri} "
                f"in {result.elapsed_s:.1f}s ({human_size(int(rate))}/s{skipped}); manifest: {result.manifest_uri}"
            )
        elif src.is_file():
            with _progress("uploading") as progress:
                record = upload_file(src, uri, options=options, progress=progress)
            print(f"uploaded {src} ({human_size(record.size)}, sha256 {record.sha256}) to {record.path}")
        else:
            fail(f"{src} does not exist: give a folder or a file to upload")
    except StorageError as error:
        fail(str(error))


def download_command(
    uri: Annotated[
        str, typer.Argument(metavar="URI", help="Source: s3://bucket/prefix (or one object), gs://, az://, file://.")
    ],
    dst: Annotated[Path, typer.Argument(metavar="DST", help="Folder to write the files into (created if missing).")],
    endpoint_url: EndpointOption = None,
    ca_bundle: CaBundleOption = None,
    concurrency: ConcurrencyOption = 32,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Do not check files against manifest.json.")] = False,
) -> None:
    """Download a prefix (or one object), checking every file against manifest.json when present."""
    from trainrun.storage import StorageError

    try:
        _download_and_report(
            uri, dst, options=_options(endpoint_url, ca_bundle), verify=not no_verify, concurrency=concurrency
        )
    except StorageError as error:
        fail(str(error))


def stage_in_command() -> None:
    """What a replica pod's stage-in init container runs: download the run's inputs and code snapshot.

    The downloads are JSON in $TRAINRUN_STAGE_IN ([{"uri": ..., "path": ...}], rendered by the operator);
    the credentials come from the environment, with the files of $TRAINRUN_CREDENTIALS_DIR (a mounted
    Secret, one file per variable: how a TrainJob's init container gets them) filling in what it lacks.
    Nothing to download: nothing is done."""
    from trainrun.storage import StorageError, StorageOptions

    downloads = _stage_in_downloads(os.environ.get(STAGE_IN_VARIABLE, ""))
    env = {**_credential_files(os.environ.get(CREDENTIALS_DIR_VARIABLE)), **os.environ}
    try:
        for item in downloads:
            _download_and_report(
                item["uri"], Path(item["path"]), options=StorageOptions.from_env(env), verify=True, concurrency=32
            )
    except StorageError as error:
        fail(str(error))


def _stage_in_downloads(text: str) -> list[dict[str, str]]:
    if not text.strip():
        return []
    try:
        downloads = json.loads(text)
        if not isinstance(downloads, list) or not all(
            isinstance(item, dict) and isinstance(item.get("uri"), str) and isinstance(item.get("path"), str)
            for item in downloads
        ):
            raise ValueError("not a list of {uri, path}")
    except ValueError as error:
        fail(f"${STAGE_IN_VARIABLE} is not a JSON list of {{\"uri\", \"path\"}} objects ({error}): {text[:200]}")
    return downloads


def _credential_files(folder: str | None) -> dict[str, str]:
    """A mounted Secret's files as variables (file name = variable name, content = value)."""
    if not folder:
        return {}
    return {path.name: path.read_text().strip() for path in Path(folder).iterdir() if path.is_file() and not path.name.startswith(".")}


def artifacts_command(
    context: typer.Context,
    name: NameArgument,
    download_to: Annotated[
        Path | None,
        typer.Option(
            "--download", "-d", metavar="DIR", help="Copy the artifacts into this folder, checked against the manifest."
        ),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """List the files a run copied to its output (its manifest; -o wide: whole sha256), or copy them with --download DIR."""
    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    if download_to is not None:
        _download_and_report(
            client.output_uri(name), download_to, options=_options(None, None), verify=True, concurrency=32
        )
        return
    artifacts = client.artifacts(name)
    manifest = artifacts["manifest"]
    if manifest is None:
        fail(_nothing_copied(context, client, name, uri=artifacts["uri"], local=local, namespace=namespace))
    if output in (OutputFormat.YAML, OutputFormat.JSON):
        print(dump_yaml([artifacts]) if output is OutputFormat.YAML else json.dumps(artifacts, indent=2))
        return
    from rich.table import Table

    from trainrun.cli.views import show
    from trainrun.status.phase import human_size

    table = Table("PATH", "SIZE", "SHA256", box=None, header_style="bold")
    for entry in manifest["files"]:
        table.add_row(
            entry["path"],
            human_size(entry["size"]),
            entry["sha256"] if output is OutputFormat.WIDE else entry["sha256"][:16],
        )
    print(
        f"{artifacts['uri']}: {_files(manifest['file_count'])}, {human_size(manifest['total_bytes'])}, "
        f"copied {manifest['created']}"
    )
    show(table)


def _nothing_copied(
    context: typer.Context, client: Client, name: str, *, uri: str, local: bool, namespace: str | None
) -> str:
    """Why there is no manifest, about the run the name picked (locally a short name is the newest run of
    that name, whatever became of it), and the command that goes on: wait for a run still going, else the
    newest run of that name that did copy, else ``describe``."""
    from trainrun.client import run_label, status_of

    run = client.get(name)
    label, phase = run_label(run), status_of(run).phase
    said = f"{label} ({phase or 'Pending'}) has copied nothing to {uri}"
    if phase is None or not phase.finished:
        return f"{said} yet; {again(context, 'wait', label, local=local, namespace=namespace)} waits for it"
    run_name = run["metadata"]["name"]
    copied = [
        run_label(item)
        for item in client.list()
        if item["metadata"]["name"] == run_name and status_of(item).artifacts is not None
    ]
    if copied:
        newest = again(context, "artifacts", copied[-1], local=local, namespace=namespace)
        return f"{said}; the newest run that did: {newest}"
    return f"{said}; why: {again(context, 'describe', label, local=local, namespace=namespace)}"


def _download_and_report(uri: str, dst: Path, *, options: StorageOptions, verify: bool, concurrency: int) -> None:
    """Download with a progress display, then print one summary line."""
    from trainrun.status.phase import human_size
    from trainrun.storage import download

    with _progress("downloading") as progress:
        result = download(uri, dst, options=options, verify=verify, concurrency=concurrency, progress=progress)
    check = "verified against manifest.json" if result.verified else "not verified (no manifest)"
    if not verify:
        check = "not verified (--no-verify)"
    print(
        f"downloaded {_files(len(result.files))} ({human_size(result.total_bytes)}) from {result.uri} "
        f"to {result.destination} in {result.elapsed_s:.1f}s; {check}"
    )
    if result.verified and result.unverified_paths:
        print(f"note: {_files(len(result.unverified_paths))} not in the manifest, not verified")


def _options(endpoint_url: str | None, ca_bundle: str | None) -> StorageOptions:
    from trainrun.storage import StorageOptions

    return StorageOptions.from_env(os.environ).with_flags(endpoint_url=endpoint_url, ca_bundle=ca_bundle)


@contextmanager
def _progress(verb: str) -> Iterator[ProgressCallback]:
    """A progress callback: a rich bar on a terminal (stderr), else a line every few seconds."""
    from trainrun.status.phase import human_size
    from trainrun.storage import TransferProgress

    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(verb, total=None)

            def update_bar(state: TransferProgress) -> None:
                bar.update(
                    task,
                    completed=state.bytes_done,
                    total=state.bytes_total,
                    description=f"{verb} {state.files_done}/{state.files_total} files",
                )

            yield update_bar
        return

    last_line_at = time.monotonic()

    def print_line(state: TransferProgress) -> None:
        nonlocal last_line_at
        now = time.monotonic()
        if now - last_line_at >= _PLAIN_PROGRESS_EVERY_S:
            last_line_at = now
            print(
                f"{verb}: {state.files_done}/{state.files_total} files, "
                f"{human_size(state.bytes_done)} of {human_size(state.bytes_total)}",
                file=sys.stderr,
                flush=True,
            )

    yield print_line


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"

