"""The operator's asynchronous Kubernetes client: requests and watches on aiohttp, log streams on HTTP/2.

Used only by the operator (``trainrun.controller``), on kopf's event loop: its waiting never holds
a thread, so the operator's thread count does not grow with the number of runs or log streams.
Requests and watches use aiohttp, what kopf itself talks to the API server with. Followed pod logs,
thousands of them at once, share a few HTTP/2 connections (``trainrun.kube.h2logs``: one asyncio
protocol per connection on the h2 state machine): over HTTP/1.1 each stream is a TLS connection of its
own, measured at 311 KB each in this process (asyncio's 256 KB TLS read buffer plus OpenSSL's), which
would be 1.2 GB for 4,000 replicas. (A server reached over plain http, such as ``kubectl proxy``, gets
them over HTTP/1.1 through aiohttp.) The credentials come from kopf's
login (``Credentials``, filled by ``trainrun.controller.handlers``). Objects travel as plain dicts.
The synchronous client of the CLI is ``trainrun.kube.api``.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import functools
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any
from urllib.parse import quote

import aiohttp

from trainrun.kube.body import decode_json, decode_list_page, decode_watch_event, encode_body
from trainrun.kube.h2logs import H2LogClient, Pace, StreamError

Object = dict[str, Any]
DEFAULT_FIELD_MANAGER = "trainrun"
# asyncio gives every TLS connection a read buffer of SSLProtocol.max_size, 256 KiB, allocated whole as the
# connection opens: 10 of the 66 MB of Python objects the operator held at its peak with 300 runs (measured with
# tracemalloc: the request pool's connections, the watches', kopf's own), and more as the pool grows with the
# runs. TLS records are at most 16 KiB, and a read takes as many as fit: a smaller buffer only means more reads
# of a big answer, which the operator's answers (a watch event, a page of a list, log lines) seldom are.
TLS_READ_BUFFER_BYTES = 32 * 1024
# Bounded per line, so one replica printing megabytes without a newline cannot grow the operator.
LogBatch = list[str]  # whole lines of a log stream, as one chunk of it brought them
MAX_LINE_BYTES = 64 * 1024
TRUNCATED_MARKER = " [trainrun: line cut at 64 KiB]"
WATCH_LINE_LIMIT = 4 * 1024 * 1024
# Log streams per HTTP/2 connection, at most. A connection takes at most four fifths of what its server
# allows at once (kube-apiserver 1.36 says 100, its --http2-max-streams-per-connection can raise it; HTTP/2
# asks servers to allow at least 100, and the h2 library assumes 100 until the server says), so streams that
# ended but are not closed there yet leave room and a new stream never waits or is refused. Each connection
# is a TLS session with its buffers (about 300 KB): fewer is less memory per stream.
STREAMS_PER_CONNECTION = 200


@dataclass(frozen=True)
class Resource:
    """A kind the operator reads or writes, as the API addresses it."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection (no name) or of one object, in a namespace or across all."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))  # a name with '/' in it must not address another resource
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)


PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")
CONFIG_MAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")
CLAIMS = Resource("", "v1", "persistentvolumeclaims")
JOBS = Resource("batch", "v1", "jobs")
PYTORCHJOBS = Resource("kubeflow.org", "v1", "pytorchjobs")
TRAINJOBS = Resource("trainer.kubeflow.org", "v1alpha1", "trainjobs")
WORKLOADS = Resource("kueue.x-k8s.io", "v1beta2", "workloads")
LOCAL_QUEUES = Resource("kueue.x-k8s.io", "v1beta2", "localqueues")
TRAINING_RUNS = Resource("trainrun.dev", "v1alpha1", "trainingruns")
TRAINING_SWEEPS = Resource("trainrun.dev", "v1alpha1", "trainingsweeps")
LEASES = Resource("coordination.k8s.io", "v1", "leases")

_BY_KIND = {
    ("v1", "Pod"): PODS,
    ("v1", "Event"): EVENTS,
    ("v1", "ConfigMap"): CONFIG_MAPS,
    ("v1", "Secret"): SECRETS,
    ("v1", "PersistentVolumeClaim"): CLAIMS,
    ("batch/v1", "Job"): JOBS,
    ("kubeflow.org/v1", "PyTorchJob"): PYTORCHJOBS,
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): TRAINJOBS,
    ("trainrun.dev/v1alpha1", "TrainingRun"): TRAINING_RUNS,
    ("coordination.k8s.io/v1", "Lease"): LEASES,
}


def resource_of(obj: Mapping[str, Any]) -> Resource:
    """The resource of an object by its apiVersion and kind (only the kinds the operator handles)."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    if key not in _BY_KIND:
        raise ValueError(f"the operator does not handle {key[1]} ({key[0]})")
    return _BY_KIND[key]


def use_small_tls_read_buffers() -> None:
    """Read buffers of ``TLS_READ_BUFFER_BYTES`` for every TLS connection the process opens from now (asyncio's
    class attribute: aiohttp's, kopf's and the HTTP/2 log client's connections alike). Called once, by the
    operator's entry point (``trainrun.controller.__main__``)."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES


class ApiError(RuntimeError):
    """An API call that failed: the server's answer (status, reason, message), or no answer (status None)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def refused(self) -> bool:
        """The server refused the request itself (invalid, forbidden): retrying the same cannot help.

        A server-side apply of a field the schema does not declare is answered 500 "failed to create
        typed patch object", although it is the request that is wrong."""
        return self.status in (400, 403, 422) or (self.status == 500 and "typed patch object" in str(self))


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to talk to it: what kopf's login found (``kopf.ConnectionInfo``)."""

    server: str
    ssl: SSLContext | bool  # requests and watches (aiohttp, HTTP/1.1); False for plain http
    stream_ssl: SSLContext | bool  # log streams (HTTP/2, ALPN h2 set on it): never the same object as ssl
    authorization: str | None = None  # the Authorization header's value


class AsyncKube:
    """Requests to the API server with the latest credentials (re-read after a 401, as kopf does)."""

    def __init__(self, credentials: Callable[[], Credentials]) -> None:
        self._credentials_source = credentials
        self._credentials: Credentials | None = None
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None
        self._logs: H2LogClient | None = None

    def _sessions(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        credentials = self._credentials_source()
        if self._session is None or self._streams is None or credentials != self._credentials:
            stale = [session for session in (self._session, self._streams) if session is not None]
            for session in stale:
                asyncio.get_running_loop().create_task(session.close())
            if self._logs is not None:
                asyncio.get_running_loop().create_task(self._logs.close())
                self._logs = None
            context = credentials.ssl
            headers = {"Accept": "application/json", "User-Agent": "trainrun-operator"}
            if credentials.authorization:
                headers["Authorization"] = credentials.authorization
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
            # Requests share a bounded pool; long-lived streams (watches, logs) get their own, unbounded one.
            self._session = aiohttp.ClientSession(
                base_url=credentials.server.rstrip("/"),
                connector=aiohttp.TCPConnector(ssl=context, limit=64),
                headers=headers,
                timeout=timeout,
            )
            self._streams = aiohttp.ClientSession(
                base_url=credentials.server.rstrip("/"),
                connector=aiohttp.TCPConnector(ssl=context, limit=0),
                headers=headers,
                timeout=timeout,
                read_bufsize=WATCH_LINE_LIMIT,  # one watch event is one line: room for a big object
            )
            self._credentials = credentials
        return self._session, self._streams

    async def close(self) -> None:
        for session in (self._session, self._streams):
            if session is not None:
                await session.close()
        if self._logs is not None:
            await self._logs.close()
        self._session = self._streams = self._logs = None

    def _log_client(self) -> H2LogClient | None:
        """The HTTP/2 log streams' client (None over plain http: aiohttp's HTTP/1.1 streams then)."""
        self._sessions()
        credentials = self._credentials
        assert credentials is not None
        if not isinstance(credentials.stream_ssl, SSLContext):
            return None
        if self._logs is None:
            headers = {"user-agent": "trainrun-operator"}
            if credentials.authorization:
                headers["authorization"] = credentials.authorization
            self._logs = H2LogClient(
                credentials.server, credentials.stream_ssl, headers, per_connection=STREAMS_PER_CONNECTION
            )
        return self._logs

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
        decode: Callable[[bytes], Any] = decode_json,
    ) -> Object:
        """One call; the answer as JSON (read by ``decode``). Raises ApiError with the server's message."""
        session, _ = self._sessions()
        data = encode_body(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else None
        try:
            async with session.request(
                method,
                path,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _answer_error(response.status, raw.decode("utf-8", "replace"), f"{method} {path}")
                return decode(raw) if raw.strip() else {}
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise ApiError(f"cannot reach the API server ({method} {path}): {_describe(error)}") from None

    async def unserved(self, group_version: str, plurals: Sequence[str]) -> list[str]:
        """Which of ``plurals`` the API server's discovery does not list under ``group_version`` (all of them while
        the group itself is not served: its CRDs not installed, or not yet established after a restart)."""
        try:
            listed = await self.request("GET", f"/apis/{group_version}", timeout=5.0)
        except ApiError as error:
            if error.status == 404:
                return list(plurals)
            raise
        served = {str(entry.get("name")) for entry in listed.get("resources") or [] if isinstance(entry, Mapping)}
        return [plural for plural in plurals if plural not in served]

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Object | None:
        try:
            return await self.request("GET", resource.path(namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, resource: Resource, namespace: str | None, body: Object) -> Object:
        return await self.request("POST", resource.path(namespace), body=body)

    async def update(self, resource: Resource, namespace: str | None, name: str, body: Object) -> Object:
        return await self.request("PUT", resource.path(namespace, name), body=body)

    async def apply(self, obj: Object, *, field_manager: str = DEFAULT_FIELD_MANAGER) -> Object:
        """Server-side apply of the whole intent, taking over conflicting fields (one field manager)."""
        metadata = obj["metadata"]
        return await self.request(
            "PATCH",
            resource_of(obj).path(metadata.get("namespace"), metadata["name"]),
            params={"fieldManager": field_manager, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    async def patch_merge(
        self, resource: Resource, namespace: str | None, name: str, patch: Object, *, subresource: str | None = None
    ) -> Object:
        return await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Delete in the background (children by the garbage collector); False when it was already gone."""
        try:
            await self.request(
                "DELETE", resource.path(namespace, name), body={"propagationPolicy": "Background"}
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def list(
        self, resource: Resource, namespace: str | None, *, params: Mapping[str, str] | None = None, shape: type | None = None
    ) -> tuple[list[Object], str]:
        """(items, resourceVersion of the list), all pages; with the ``shape`` of the kind's watch event
        (``trainrun.kube.body.decode_list_page``) each item holds only the fields its object declares."""
        items: list[Object] = []
        query = dict(params or {})
        query["limit"] = "500"
        decode = functools.partial(decode_list_page, shape=shape)
        while True:
            page = await self.request("GET", resource.path(namespace), params=query, timeout=120.0, decode=decode)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                return items, str(metadata.get("resourceVersion") or "")
            query["continue"] = metadata["continue"]

    async def watch(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        resource_version: str,
        params: Mapping[str, str] | None = None,
        timeout_seconds: int = 300,
        shape: type | None = None,
    ) -> AsyncIterator[tuple[str, Object]]:
        """(type, object) from a watch that starts after resource_version, until the server ends it; with a
        ``shape`` (``trainrun.kube.body.decode_watch_event``) each object holds only the fields it declares.

        A 410 (the version is too old) arrives as ApiError with status 410: list again."""
        _, streams = self._sessions()
        query = {
            **(params or {}),
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        try:
            async with streams.get(
                resource.path(namespace),
                params=query,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30),
            ) as response:
                if response.status >= 400:
                    raise _answer_error(response.status, await response.text(), f"watch {resource.plural}")
                async for raw in response.content:
                    if not raw.strip():
                        continue
                    event = decode_watch_event(raw, shape)
                    kind, obj = str(event.get("type")), event.get("object") or {}
                    if kind == "ERROR":
                        raise _answer_error(int(obj.get("code") or 500), json.dumps(obj), f"watch {resource.plural}")
                    yield kind, obj
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise ApiError(f"watch of {resource.plural} broke off: {_describe(error)}") from None

    async def log_batches(
        self,
        namespace: str,
        pod: str,
        *,
        container: str,
        since_seconds: int | None = None,
        previous: bool = False,
        pace: Pace | None = None,
    ) -> AsyncIterator[LogBatch]:
        """A followed container log with kubelet timestamps, in batches of whole lines as they arrive
        (what came since the last batch: per-line work stays in tight loops), until the container ends.
        ``previous``: the container's last start before this one (ended, so the stream ends with it).
        ``pace``: over HTTP/2, batches come at its releases (``trainrun.kube.h2logs.Pace``); over HTTP/1.1
        as they arrive.

        Lines longer than MAX_LINE_BYTES are cut with a marker; bytes that are not UTF-8 are replaced."""
        query = {"container": container, "follow": "true", "timestamps": "true"}
        if since_seconds is not None:
            query["sinceSeconds"] = str(since_seconds)
        if previous:
            query["previous"] = "true"
        logs = self._log_client()
        path = PODS.path(namespace, pod, "log")
        try:
            if logs is not None:
                async for batch in split_lines(logs.stream(path, query, pace)):
                    yield batch
                return
            _, streams = self._sessions()
            async with streams.get(path, params=query) as response:
                if response.status >= 400:
                    raise _answer_error(response.status, await response.text(), f"logs of pod {pod}")
                async for batch in split_lines(response.content.iter_any()):
                    yield batch
        except StreamError as error:
            if error.status is not None:
                raise _answer_error(error.status, error.body, f"logs of pod {pod}") from None
            raise ApiError(f"log stream of pod {pod} broke off: {error}") from None
        except (aiohttp.ClientError, OSError) as error:
            raise ApiError(f"log stream of pod {pod} broke off: {_describe(error)}") from None


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[LogBatch]:
    """Bytes as they arrive -> batches of whole lines (one batch per chunk that completed any); a line over
    MAX_LINE_BYTES is cut with a marker and the rest of it dropped, so memory per stream stays bounded;
    invalid UTF-8 is replaced, never an error."""
    pending = b""
    cut = False
    async for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            if len(pending) > MAX_LINE_BYTES:
                if not cut:
                    yield [_text(pending[:MAX_LINE_BYTES]) + TRUNCATED_MARKER]
                pending, cut = b"", True
            continue
        end = pending.rfind(b"\n")
        complete, pending = pending[:end], pending[end + 1 :]
        whole = True
        if cut:  # the rest of a line already cut
            rest = complete.find(b"\n")
            complete, cut, whole = complete[rest + 1 :], False, rest >= 0
        if whole:
            # One decode per chunk, not per line; "\r" of CRLF lines only looked for when there is one.
            text = complete.decode("utf-8", errors="replace")
            lines = text.split("\n")
            yield [line.rstrip("\r") for line in lines] if "\r" in text else lines
        if len(pending) > MAX_LINE_BYTES:
            yield [_text(pending[:MAX_LINE_BYTES]) + TRUNCATED_MARKER]
            pending, cut = b"", True
    if pending and not cut:
        yield [_text(pending)]


def _text(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", errors="replace")


def _describe(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _answer_error(status: int, text: str, what: str) -> ApiError:
    message, reason = text.strip()[:500] or f"HTTP {status}", None
    try:
        body = decode_json(text)
        message = str(body.get("message") or message)
        reason = body.get("reason")
    except (TypeError, ValueError, AttributeError):
        pass
    return ApiError(f"{what}: {message}", status=status, reason=reason)
