"""The CLI's and the Python client's way to the Kubernetes API server: apply, get, list, patch, delete,
events, pod logs.

A thin typed facade over the official ``kubernetes`` client's dynamic client, so any kind (TrainingRun,
PyTorchJob, Pod, Job, Event) is handled the same way and objects travel as plain dicts. Used by the
cluster backend of ``trainrun.Client`` (and so the CLI) and its log streams (``trainrun.kube.logs``).
The operator never loads it (an import contract holds that): its client is ``trainrun.kube.aioclient``.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from trainrun.kube.body import CHARSET, encode_body

Object = dict[str, Any]
DEFAULT_FIELD_MANAGER = "trainrun"
# With its charset named, the kubernetes package sends the body's bytes as they are (for the bare media type
# it would json.dumps them again); the API server reads the media type without its parameters.
APPLY_CONTENT_TYPE = f"application/apply-patch+yaml; charset={CHARSET}"


class KubeError(RuntimeError):
    """An API call that failed, with the server's own message."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KindNotServed(KubeError):
    """The cluster does not serve this kind (its CRD is not installed, e.g. no training-operator)."""


def _error_from(error: ApiException, what: str) -> KubeError:
    message = error.reason or "error"
    try:
        body = json.loads(error.body or "{}")
        message = body.get("message") or message
    except (TypeError, ValueError):
        pass
    return KubeError(f"{what}: {message}", status=error.status)


# What the client raises when the API server cannot be reached or a connection breaks (not an HTTP answer).
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)
_Parameters = ParamSpec("_Parameters")
_Result = TypeVar("_Result")


def _unreachable_error(error: BaseException) -> KubeError:
    text = " ".join(str(error).split()) or type(error).__name__
    return KubeError(f"cannot reach the API server: {text}")


def _reaching(
    method: Callable[Concatenate[KubeApi, _Parameters], _Result],
) -> Callable[Concatenate[KubeApi, _Parameters], _Result]:
    """Turn a connection failure in an API call into KubeError, so that callers handle one error type."""

    @functools.wraps(method)
    def call(api: KubeApi, /, *args: _Parameters.args, **kwargs: _Parameters.kwargs) -> _Result:
        try:
            return method(api, *args, **kwargs)
        except _UNREACHABLE as error:
            raise _unreachable_error(error) from None

    return call


class StreamCloser:
    """Ends a streaming response (a followed log) from another thread: its reader sees the end of it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None
        self.closed = False

    def attach(self, response: urllib3.BaseHTTPResponse) -> None:
        with self._lock:
            self._response = response
            closed = self.closed
        if closed:
            self._shut(response)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            response = self._response
        if response is not None:
            self._shut(response)

    @staticmethod
    def _shut(response: urllib3.BaseHTTPResponse) -> None:
        with contextlib.suppress(Exception):  # already closed, or the socket is gone: ended either way
            response.shutdown()


def load_api_client(*, kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client from the in-cluster service account, else the kubeconfig (``$KUBECONFIG`` or ~/.kube/config)."""
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (config.ConfigException, FileNotFoundError, OSError) as error:
        raise KubeError(
            f"cannot load a kubeconfig ({error}); set --kubeconfig or $KUBECONFIG, or use --local"
        ) from None
    return client.ApiClient(configuration)


class KubeApi:
    """Generic access to any kind, by apiVersion and kind, with objects as dicts."""

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.api_client = load_api_client(kubeconfig=kubeconfig, context=context)
        self._dynamic: DynamicClient | None = None

    @property
    def dynamic(self) -> DynamicClient:
        # Discovery costs requests: do it on first use, not at construction.
        if self._dynamic is None:
            self._dynamic = DynamicClient(self.api_client)
        return self._dynamic

    @_reaching
    def resource(self, api_version: str, kind: str) -> Any:
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            # A CRD may have been installed since discovery was cached.
            self.dynamic.resources.invalidate_cache()
            try:
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise KindNotServed(f"the cluster does not serve {kind} ({api_version}): is its CRD installed?") from None

    @_reaching
    def apply(self, obj: Object, *, field_manager: str = DEFAULT_FIELD_MANAGER, force: bool = True) -> Object:
        """Server-side apply: create or update to exactly this intent, idempotently."""
        what = f"apply {obj['kind']} {obj['metadata']['name']}"
        try:
            return self._apply_once(obj, field_manager=field_manager, force=force)
        except ApiException as error:
            if error.status != 404:
                raise _error_from(error, what) from None
        # An apply never 404s for a missing object, only for a kind the server stopped serving (its CRD
        # went after discovery was cached): discover again, which raises KindNotServed if it is gone.
        self.dynamic.resources.invalidate_cache()
        try:
            return self._apply_once(obj, field_manager=field_manager, force=force)
        except ApiException as error:
            raise _error_from(error, what) from None

    def _apply_once(self, obj: Object, *, field_manager: str, force: bool) -> Object:
        metadata = obj["metadata"]
        resource = self.resource(obj["apiVersion"], obj["kind"])
        query = [("fieldManager", field_manager), *([("force", "true")] if force else [])]
        # Not the dynamic client's server_side_apply: it sends json.dumps(obj), whose escapes of characters
        # outside the BMP the API server's YAML decoder refuses (trainrun.kube.body).
        return self._call_json(
            "PATCH", resource.path(name=metadata["name"], namespace=metadata.get("namespace")), query, body=obj,
            content_type=APPLY_CONTENT_TYPE,
        )

    @_reaching
    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> Object | None:
        """The object, or None when it does not exist."""
        resource = self.resource(api_version, kind)
        try:
            return self._get_json(resource.path(name=name, namespace=namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise _error_from(error, f"get {kind} {name}") from None

    @_reaching
    def list(
        self, api_version: str, kind: str, namespace: str | None, *, label_selector: str | None = None
    ) -> builtins.list[Object]:
        """Objects of a kind in a namespace (None: all namespaces), optionally by label selector."""
        resource = self.resource(api_version, kind)
        query = [("labelSelector", label_selector)] if label_selector else []
        try:
            listing = self._get_json(resource.path(namespace=namespace), query)
        except ApiException as error:
            raise _error_from(error, f"list {kind}") from None
        return [cast(Object, item) for item in listing.get("items") or []]

    def _get_json(self, path: str, query: builtins.list[tuple[str, str]] | None = None) -> Object:
        """GET path as plain JSON. The dynamic client would wrap the answer in ResourceInstance objects
        and back: measured as most of the operator's CPU with 40 runs (the namespace's events)."""
        return self._call_json("GET", path, query or [])

    def _call_json(
        self,
        method: str,
        path: str,
        query: builtins.list[tuple[str, str]],
        *,
        body: Object | None = None,
        content_type: str | None = None,
    ) -> Object:
        """One call with plain JSON in and out; a body goes as the bytes of ``encode_body``."""
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = self.api_client.call_api(
            path,
            method,
            query_params=query,
            header_params=headers,
            body=None if body is None else encode_body(body),
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        return cast(Object, json.loads(response.data))

    @_reaching
    def delete(self, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
        """Delete with foreground propagation; False when it was already gone."""
        resource = self.resource(api_version, kind)
        try:
            resource.delete(name=name, namespace=namespace, body={"propagationPolicy": "Foreground"})
        except NotFoundError:
            return False
        except ApiException as error:
            raise _error_from(error, f"delete {kind} {name}") from None
        return True

    @_reaching
    def patch_merge(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        patch: Object,
        *,
        subresource: str | None = None,
    ) -> Object:
        """JSON merge patch of the object or of a subresource such as ``status``."""
        resource = self.resource(api_version, kind)
        target = getattr(resource, subresource) if subresource else resource
        try:
            result = self.dynamic.patch(
                target, body=patch, name=name, namespace=namespace, content_type="application/merge-patch+json"
            )
        except ApiException as error:
            raise _error_from(error, f"patch {kind} {name}") from None
        return cast(Object, result.to_dict())

    @_reaching
    def events(self, namespace: str, *, involved_names: Iterable[str]) -> builtins.list[Object]:
        """Events about the named objects, oldest first."""
        wanted = set(involved_names)
        events = [
            event
            for event in self.list("v1", "Event", namespace)
            if event.get("involvedObject", {}).get("name") in wanted
        ]
        return sorted(events, key=lambda event: event.get("lastTimestamp") or event.get("eventTime") or "")

    def pod_logs(
        self,
        name: str,
        namespace: str,
        *,
        container: str,
        follow: bool = False,
        tail_lines: int | None = None,
        timestamps: bool = False,
        since_seconds: int | None = None,
        closer: StreamCloser | None = None,
    ) -> Iterator[str]:
        """A pod's log lines; with follow, they keep coming until the container ends.

        timestamps prefixes each line with its RFC 3339 time and a space; since_seconds starts at the
        lines written that many seconds ago; ``closer.close()`` ends the lines from another thread.
        """
        core = client.CoreV1Api(self.api_client)
        arguments: dict[str, Any] = {"container": container, "follow": follow, "_preload_content": False}
        if tail_lines is not None:
            arguments["tail_lines"] = tail_lines
        if timestamps:
            arguments["timestamps"] = True
        if since_seconds is not None:
            arguments["since_seconds"] = since_seconds
        try:
            response = core.read_namespaced_pod_log(name, namespace, **arguments)
        except ApiException as error:
            raise _error_from(error, f"logs of pod {name}") from None
        except _UNREACHABLE as error:
            raise _unreachable_error(error) from None
        if closer is not None:
            closer.attach(response)
        try:
            pending = b""
            for chunk in response.stream(amt=65536, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace")
            if pending:
                yield pending.decode("utf-8", errors="replace")
        except _UNREACHABLE as error:
            if closer is not None and closer.closed:
                return  # closed on purpose
            # The kubelet ends a followed stream abruptly when the container stops or restarts.
            raise KubeError(f"log stream of pod {name} broke off: {error}") from None
        finally:
            response.release_conn()
