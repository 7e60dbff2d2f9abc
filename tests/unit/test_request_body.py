"""Request bodies carry every character as itself (issue 24, item 2): ``trainrun.kube.body`` writes JSON in
UTF-8 without ASCII escapes, which the API server's YAML decoder (server-side apply) and its JSON decoder
read alike; ``json.dumps``'s surrogate-pair escapes of a character outside the BMP are what the YAML
decoder refused. Then both clients, against a small HTTP server in the test process, send exactly those
bytes for every request with a body: the operator's (apply, create, merge patch, status patch) and the
CLI's server-side apply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml
from http_server import serving
from trainrun.kube.aioclient import PODS, TRAINING_RUNS, AsyncKube, Credentials
from trainrun.kube.api import KubeApi
from trainrun.kube.body import decode_json, encode_body

# Outside the BMP (emoji, a CJK Extension B ideograph, a math letter), CJK and combining marks inside it.
TEXTS = ["\U0001f600\U0001f680", "\U00020bb7\u91ce\u5bb6", "\U0001d4b3", "e\u0301\u0308 a\u20dd", "\u4e2d\u6587 \u65e5\u672c\u8a9e"]
BODY: dict[str, Any] = {
    "apiVersion": "trainrun.dev/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "emoji", "namespace": "ml", "annotations": {f"example.com/t{i}": text for i, text in enumerate(TEXTS)}},
    "spec": {"image": "python:3.11", "command": ["python", "-c", *TEXTS], "env": [{"name": "NOTE", "value": TEXTS[0]}]},
}


def test_the_body_is_utf8_json_without_escapes_and_reads_alike_as_json_and_yaml() -> None:
    encoded = encode_body(BODY)
    assert b"\\u" not in encoded  # no escape of any kind, surrogate pairs included
    for text in TEXTS:
        assert text.encode() in encoded
    assert json.loads(encoded) == BODY
    assert yaml.safe_load(encoded.decode()) == BODY  # JSON is YAML: what server-side apply reads
    # What the operator sent before: the same document, its non-BMP characters as surrogate-pair escapes.
    assert "\\ud83d\\ude00" in json.dumps(BODY) and "\\ud83d" not in encoded.decode()


def test_surrogates_written_as_code_points_become_what_the_api_server_would_read() -> None:
    # YAML reads "\ud83d\ude00" as two surrogate code points, and a lone one as itself; UTF-8 has neither.
    body = {"pair": "\ud83d\ude00", "lone": "a\ud800b"}
    assert json.loads(encode_body(body)) == {"pair": "\U0001f600", "lone": "a\ufffdb"}


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with ``{}`` and records its method, path, content type and body."""

    seen: list[tuple[str, str, str, bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append((self.command, self.path, self.headers.get("Content-Type", ""), self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_PATCH = do_PUT = do_GET = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it
        """Silent."""


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.seen = []
    with serving(Recorder) as url:
        yield url


def test_the_operator_sends_the_encoded_body_in_every_request(server: str) -> None:
    async def send() -> None:
        kube = AsyncKube(lambda: Credentials(server=server, ssl=False, stream_ssl=False))
        try:
            await kube.apply(BODY)
            await kube.create(PODS, "ml", BODY)
            await kube.patch_merge(TRAINING_RUNS, "ml", "emoji", {"status": {"message": TEXTS[0]}}, subresource="status")
        finally:
            await kube.close()

    asyncio.run(send())
    expected = encode_body(BODY)
    assert [(method, kind, body) for method, _, kind, body in Recorder.seen] == [
        ("PATCH", "application/apply-patch+yaml", expected),
        ("POST", "application/json", expected),
        ("PATCH", "application/merge-patch+json", encode_body({"status": {"message": TEXTS[0]}})),
    ]
    assert Recorder.seen[2][1] == "/apis/trainrun.dev/v1alpha1/namespaces/ml/trainingruns/emoji/status"


def test_the_cli_applies_the_encoded_body(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    api = KubeApi(kubeconfig=str(kubeconfig))

    class Resource:
        """What discovery would say of TrainingRuns (the recording server serves no discovery)."""

        @staticmethod
        def path(name: str, namespace: str) -> str:
            return f"/apis/trainrun.dev/v1alpha1/namespaces/{namespace}/trainingruns/{name}"

    monkeypatch.setattr(api, "resource", lambda api_version, kind: Resource())
    api.apply(BODY, field_manager="trainrun-cli")
    [(method, path, kind, body)] = Recorder.seen
    assert (method, kind, body) == ("PATCH", "application/apply-patch+yaml; charset=utf-8", encode_body(BODY))
    assert path == "/apis/trainrun.dev/v1alpha1/namespaces/ml/trainingruns/emoji?fieldManager=trainrun-cli&force=true"


def test_answers_decode_as_the_standard_library_reads_them() -> None:
    """The operator decodes answers and watch events with orjson; the documents it refuses and json reads
    (NaN, a number past a double) still decode, as json reads them; what neither reads is a ValueError."""
    document = {"metadata": {"name": "emoji"}, "text": TEXTS, "count": 3, "ratio": 0.5, "none": None, "flag": True}
    raw = encode_body(document)
    assert decode_json(raw) == decode_json(raw.decode()) == json.loads(raw) == document
    nan = decode_json(b'{"loss": NaN, "big": 1e400}')
    assert nan["loss"] != nan["loss"] and nan["big"] == float("inf")
    with pytest.raises(ValueError):
        decode_json(b"<html>502 Bad Gateway</html>")
