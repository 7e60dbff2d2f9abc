"""Every storage path beside upload/download, on each store (S3, GCS, Azure Blob), and each cloud's credentials.

- the log archive (``trainrun.storage.logstore``): create-only segments (a number written twice is refused:
  on GCS by x-goog-if-generation-match, on Azure by If-None-Match, on S3 by If-None-Match), the seal that
  composes one object per replica from them (each store's own multipart upload: S3's, GCS's XML multipart,
  Azure's blocks), the segments deleted after the seal record, the sealed logs added to the manifest;
- a log follower that crashes and the next one resuming from the archive (``trainrun.controller.logs``);
- a code snapshot and ``trainrun stage-in`` (what a replica's init container runs) from each store;
- the CLI as a process with each form of credentials a pod gets (GCS: a service account's JSON as text, or as
  a file; no credentials at an emulator; Azure: account key, SAS token, connection string): a round trip, and
  no secret in anything it prints, also when it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from emulators import AZURE_ACCOUNT
from stores_under_test import AzureUnderTest, GcsUnderTest, StoreUnderTest
from trainrun.render.children import STAGE_IN_VARIABLE
from trainrun.storage import StorageError, StorageOptions, download, upload_code_snapshot, upload_directory
from trainrun.storage.logarchive import ArchiveState, Segment
from trainrun.storage.logstore import ArchiveConflict, LogArchive, add_to_manifest, read_archived_logs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_run_logs import FakeLogs, finished, follower, pod, until  # noqa: E402

pytestmark = pytest.mark.s3


def segment(sequence: int, **blocks: tuple[str, ...]) -> Segment:
    shipped = {channel: len(lines) for channel, lines in blocks.items()}
    return Segment(ArchiveState(sequence=sequence, shipped=shipped), blocks)


def test_log_archive_segments_are_create_only_and_the_seal_composes_one_object_per_replica(
    tmp_path: Path, store: StoreUnderTest, store_uri: str
) -> None:
    archive_uri = f"{store_uri}/logs"
    big = tuple(f"{index:07d} " + "x" * 120 for index in range(80_000))  # ~10 MB: a multipart composition

    async def scenario() -> None:
        archive = LogArchive(archive_uri, store.options)
        await archive.write(segment(1, **{"master-0": ("one", "two"), "worker-0": ("w1",)}))
        await archive.write(segment(2, **{"master-0": big}))
        with pytest.raises(ArchiveConflict, match=r"0000000002.seg was written by another follower"):
            await archive.write(segment(2, **{"master-0": ("a second writer",)}))
        await archive.write(segment(3, **{"master-0": ("three",), "metrics": ('{"loss": 1}',)}))
        loaded = await LogArchive(archive_uri, store.options).load()
        assert (loaded.sealed, loaded.state.sequence) == (False, 3)
        state = ArchiveState(sequence=3, shipped={"master-0": len(big) + 3, "worker-0": 1, "metrics": 1})
        files = await archive.seal(state)
        assert [record.path for record in files] == ["master-0.log", "metrics.jsonl", "worker-0.log"]
        assert await archive.seal(state) == files  # a second seal finds the first one's record
        manifest = await add_to_manifest(store_uri, store.options, files)
        assert manifest is not None and {"logs/master-0.log", "model.pt"} <= {r.path for r in manifest.files}

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.pt").write_bytes(b"weights")
    upload_directory(tmp_path / "out", store_uri, options=store.options)  # the uploader's copy, before the seal
    asyncio.run(scenario())
    master = store.get(archive_uri, "master-0.log").decode().splitlines()
    assert master == ["one", "two", *big, "three"]
    assert store.get(archive_uri, "worker-0.log") == b"w1\n"
    assert store.get(archive_uri, "metrics.jsonl") == b'{"loss": 1}\n'
    assert sorted(store.listing(archive_uri)) == [".parts/sealed.json", "master-0.log", "metrics.jsonl", "worker-0.log"]
    assert read_archived_logs(archive_uri, store.options)["master-0"] == master
    back = download(store_uri, tmp_path / "back", options=store.options)  # the logs, verified with the model
    assert back.verified and (tmp_path / "back" / "logs" / "master-0.log").read_text().splitlines() == master


def test_the_archives_of_runs_in_one_bucket_share_one_client_and_keep_apart(store: StoreUnderTest, store_uri: str) -> None:
    """A thousand runs archived in one bucket keep one client (connection pool, TLS configuration), not one each;
    each archive still lists, resumes from, seals and deletes only its own objects."""
    first_uri, second_uri = f"{store_uri}/first/logs", f"{store_uri}/second/logs"

    async def scenario() -> None:
        first, second = LogArchive(first_uri, store.options), LogArchive(second_uri, store.options)
        assert first.store is second.store
        await first.write(segment(1, **{"master-0": ("first one",)}))
        await second.write(segment(1, **{"master-0": ("second one",)}))  # its own segment 1: no conflict
        await second.write(segment(2, **{"master-0": ("second two",)}))
        assert (await first.load()).state.sequence == 1
        assert (await second.load()).state.sequence == 2
        await first.seal(ArchiveState(sequence=1, shipped={"master-0": 1}))

    asyncio.run(scenario())
    assert store.get(first_uri, "master-0.log") == b"first one\n"
    assert sorted(store.listing(first_uri)) == [".parts/sealed.json", "master-0.log"]
    assert sorted(store.listing(second_uri)) == [".parts/0000000001.seg", ".parts/0000000002.seg"]  # untouched
    assert read_archived_logs(second_uri, store.options)["master-0"] == ["second one", "second two"]


def test_a_restarted_follower_resumes_from_the_archive_in_the_store(store: StoreUnderTest, store_uri: str) -> None:
    """The operator killed mid-run: the next follower resumes every stream where the newest segment says."""
    kube = FakeLogs()
    kube.write("run-master-0", *(f"line {n}" for n in range(1, 201)))
    kube.write("run-worker-0", "worker up")
    archive_uri = f"{store_uri}/logs"
    pods = [finished("run-master-0", "m"), finished("run-worker-0", "w")]

    async def scenario() -> None:
        first = follower(kube, LogArchive(archive_uri, store.options))
        first.start()
        kube.break_after["run-master-0"] = 70
        first.update([{**pods[0], "status": pod("run-master-0").running()["status"]}])
        await until(lambda: first.sequence >= 1 and first.containers["m/0"].lines >= 70, timeout=30)
        await until(lambda: not first._pending, timeout=30)
        await first.stop()
        second = follower(kube, LogArchive(archive_uri, store.options))
        second.start()
        second.update(pods)
        files = await second.finish()
        assert files is not None and [record.path for record in files] == ["master-0.log", "worker-0.log"]

    asyncio.run(scenario())
    assert store.get(archive_uri, "master-0.log").decode().splitlines() == [f"line {n}" for n in range(1, 201)]
    assert not [key for key in store.listing(archive_uri) if key.endswith(".seg")]


def test_code_snapshot_and_stage_in_from_the_store(tmp_path: Path, store: StoreUnderTest, store_uri: str) -> None:
    """What ``trainrun submit --code`` uploads and a replica's init container (``trainrun stage-in``) fetches."""
    code = tmp_path / "code"
    (code / "pkg" / "__pycache__").mkdir(parents=True)
    (code / "train.py").write_text("print('hi')\n")
    (code / "pkg" / "util.py").write_text("X = 1\n")
    (code / "pkg" / "__pycache__" / "util.pyc").write_bytes(b"\0")
    (code / "data").mkdir()
    (code / "data" / "big.bin").write_bytes(b"d" * 1000)
    (code / ".trainrunignore").write_text("data/\n")
    snapshot = upload_code_snapshot(code, f"{store_uri}/code", options=store.options)
    assert sorted(record.path for record in snapshot.manifest.files) == [".trainrunignore", "pkg/util.py", "train.py"]
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "train.csv").write_text("a,b\n1,2\n")
    upload_directory(dataset, f"{store_uri}/inputs/dataset", options=store.options)

    downloads = [
        {"uri": f"{store_uri}/inputs/dataset", "path": str(tmp_path / "staged" / "inputs" / "dataset")},
        {"uri": f"{store_uri}/code", "path": str(tmp_path / "staged" / "code")},
    ]
    staged = run_cli("stage-in", env={**store.env, STAGE_IN_VARIABLE: json.dumps(downloads)})
    assert staged.returncode == 0, staged.stderr
    assert staged.stdout.count("verified against manifest.json") == 2
    assert (tmp_path / "staged" / "code" / "pkg" / "util.py").read_text() == "X = 1\n"
    assert not (tmp_path / "staged" / "code" / "data").exists()
    assert (tmp_path / "staged" / "inputs" / "dataset" / "train.csv").read_text() == "a,b\n1,2\n"
    assert_no_secret(store, staged)


def run_cli(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI as a pod runs it: a process whose environment holds the Secret's variables (and no others of
    any store: obstore also reads the process's environment)."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "GOOGLE_", "AZURE_", "STORAGE_"))}
    return subprocess.run(
        [sys.executable, "-m", "trainrun.cli", *arguments],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_no_secret(store: StoreUnderTest, completed: subprocess.CompletedProcess[str]) -> None:
    printed = completed.stdout + completed.stderr
    assert not [secret for secret in store.secrets if secret in printed]


GCS_FORMS = ["key-text", "key-file", "application-credentials-file", "emulator-no-credentials"]
AZURE_FORMS = ["key", "sas", "connection-string"]


@pytest.mark.parametrize(
    ("cloud", "form"), [*(("gcs", form) for form in GCS_FORMS), *(("azure", form) for form in AZURE_FORMS)]
)
def test_each_form_of_credentials_a_pod_gets(
    tmp_path: Path, request: pytest.FixtureRequest, cloud: str, form: str
) -> None:
    store: StoreUnderTest
    if cloud == "gcs":
        gcs = GcsUnderTest(request.getfixturevalue("fake_gcs"))
        store, env = gcs, gcs_env(gcs, form, tmp_path)
    else:
        azure = AzureUnderTest(request.getfixturevalue("azurite")).with_form(form)
        store, env = azure, azure.env
    uri = store.uri(f"forms-{form}")
    (tmp_path / "out" / "nested").mkdir(parents=True)
    (tmp_path / "out" / "nested" / "model.pt").write_bytes(os.urandom(9 * 1024 * 1024 + 5))  # multipart
    (tmp_path / "out" / "run.json").write_text("{}")

    uploaded = run_cli("upload", str(tmp_path / "out"), uri, env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    assert "uploaded 2 files" in uploaded.stdout
    assert store.get(uri, "nested/model.pt") == (tmp_path / "out" / "nested" / "model.pt").read_bytes()
    downloaded = run_cli("download", uri, str(tmp_path / "back"), env=env)
    assert downloaded.returncode == 0, downloaded.stderr
    assert "verified against manifest.json" in downloaded.stdout
    assert_no_secret(store, uploaded)
    assert_no_secret(store, downloaded)


def gcs_env(store: GcsUnderTest, form: str, tmp_path: Path) -> dict[str, str]:
    """GCS's credentials as a pod on GKE may get them: a key's JSON in a Secret's key, or mounted as a file and
    named by GOOGLE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS; at an emulator, none at all."""
    server = store.server
    assert server.account is not None
    if form == "emulator-no-credentials":
        return {"STORAGE_EMULATOR_HOST": server.endpoint, **server.ca_env}
    if form == "key-text":
        return server.env
    key_file = tmp_path / "key.json"
    key_file.write_text(server.account.json_text)
    variable = "GOOGLE_SERVICE_ACCOUNT" if form == "key-file" else "GOOGLE_APPLICATION_CREDENTIALS"
    return {variable: str(key_file), **server.ca_env}


@pytest.mark.parametrize("store_name", ["gcs", "azure"])
def test_wrong_keys_as_a_process_are_one_line_without_a_secret(
    tmp_path: Path, request: pytest.FixtureRequest, store_name: str
) -> None:
    store: StoreUnderTest = (
        GcsUnderTest(request.getfixturevalue("fake_gcs"))
        if store_name == "gcs"
        else AzureUnderTest(request.getfixturevalue("azurite"))
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.pt").write_bytes(b"weights")
    refused = run_cli("upload", str(tmp_path / "out"), store.uri("wrong"), env=store.wrong_env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and "access denied" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert_no_secret(store, refused)


def test_a_read_only_sas_token_reads_and_is_refused_writes(tmp_path: Path, azurite: object) -> None:
    store = AzureUnderTest(azurite)  # type: ignore[arg-type]
    uri = store.uri("read-only")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.pt").write_bytes(b"weights")
    upload_directory(tmp_path / "out", uri, options=store.options)
    read_only = {
        "AZURE_STORAGE_ACCOUNT_NAME": AZURE_ACCOUNT,
        "AZURE_STORAGE_SAS_TOKEN": store.server.sas_token(write=False),
        "AZURE_STORAGE_ENDPOINT": store.server.endpoint,
    }
    fetched = run_cli("download", uri, str(tmp_path / "back"), env=read_only)
    assert fetched.returncode == 0, fetched.stderr
    refused = run_cli("upload", str(tmp_path / "out"), uri, env=read_only)
    assert refused.returncode == 1 and "access denied" in refused.stderr
    assert store.server.sas_token(write=False).split("sig=")[-1].split("&")[0] not in refused.stderr


@pytest.mark.parametrize(
    ("uri", "env", "says"),
    [
        (
            "az://trainrun-test/run",
            {},
            "no Azure storage account is named: set AZURE_STORAGE_ACCOUNT_NAME (or AZURE_STORAGE_CONNECTION_STRING), "
            "or name it in the URI: trainrun-test@ACCOUNT.blob.core.windows.net in place of 'trainrun-test'",
        ),
        (
            "az://trainrun-test/run",
            {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey"},
            "AZURE_STORAGE_CONNECTION_STRING: part 2 is not Key=value",
        ),
        ("gs://trainrun-test/run", {"GOOGLE_SERVICE_ACCOUNT_KEY": '{"type": "service_account"}'}, "gs://trainrun-test/run: "),
    ],
    ids=["azure-no-account", "azure-bad-connection-string", "gcs-unreadable-key"],
)
def test_a_store_that_cannot_be_opened_is_one_line(tmp_path: Path, uri: str, env: dict[str, str], says: str) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.pt").write_bytes(b"weights")
    refused = run_cli("upload", str(tmp_path / "out"), uri, env=env)
    assert refused.returncode == 1, refused.stdout
    assert refused.stderr.startswith("error: cannot upload to ") and says in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    with pytest.raises(StorageError, match="cannot open the log archive"):
        LogArchive(f"{uri}/logs", StorageOptions.from_env(env))


@pytest.mark.parametrize(
    ("uri", "env", "hint"),
    [
        ("gs://trainrun-test/run", {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}, "GOOGLE_BASE_URL / STORAGE_EMULATOR_HOST"),
        (
            "az://trainrun-test/run",
            {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/a"},
            "AZURE_STORAGE_ENDPOINT / the connection string's BlobEndpoint",
        ),
    ],
    ids=["gcs", "azure"],
)
def test_an_unreachable_store_names_its_endpoint_and_the_variable(uri: str, env: dict[str, str], hint: str) -> None:
    with pytest.raises(StorageError) as caught:
        download(uri, "/nonexistent-destination", options=StorageOptions.from_env(env))
    message = str(caught.value)
    assert "cannot reach http://127.0.0.1:9" in message and hint in message, message
    assert "a2V5" not in message


def test_azure_over_https_behind_a_private_ca(tmp_path: Path) -> None:
    """Azurite with a certificate of a throwaway CA: trusted with AWS_CA_BUNDLE (as PEM text, as a Secret
    holds it), refused and named without it, not retried."""
    from emulators import start_azurite
    from seaweedfs import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    server = start_azurite(tmp_path / "azurite", tls=tls)
    try:
        store = AzureUnderTest(server)
        uri = store.uri("https")
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "model.pt").write_bytes(os.urandom(9 * 1024 * 1024))
        trusted = {**store.env, "AWS_CA_BUNDLE": tls.ca.read_text()}
        uploaded = run_cli("upload", str(tmp_path / "out"), uri, env=trusted)
        assert uploaded.returncode == 0, uploaded.stderr
        assert store.get(uri, "model.pt") == (tmp_path / "out" / "model.pt").read_bytes()
        untrusted = {key: value for key, value in store.env.items() if key != "AWS_CA_BUNDLE"}
        refused = run_cli("download", uri, str(tmp_path / "back"), env=untrusted)
        assert refused.returncode == 1
        assert f"the TLS certificate of {server.endpoint} is not trusted (UnknownIssuer)" in refused.stderr
    finally:
        server.stop()
