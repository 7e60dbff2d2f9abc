"""An MLflow tracking server and model registry over its REST API 2.0, on aiohttp (no mlflow import).

Model versions are registered exactly once per TrainingRun: :meth:`MlflowClient.register` first looks
for a version of the model carrying the run's uid tag (``model-versions/search`` with a tag filter) and
creates one (with that tag, in the same request) only when there is none, so a reconcile that runs twice
or an operator killed between the call and its status write finds the version it made. Tracked runs are
found the same way (``runs/search`` by the uid tag) and written with ``runs/log-batch``, whose batch also
carries the high-water mark of the metric records sent (``SENT_TAG``). Errors: connection failures,
timeouts, 5xx and 429 are :class:`RegistryUnavailable` (tried again); any other answer that is not a
success is :class:`RegistryRefused` with the server's words. The request bodies are built by the pure
functions at the top of this module (``tests/unit/test_registry.py``).

Used through ``trainrun.registry.client_for`` by the controller, the local runner and the CLI.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from trainrun.base.registry import (
    RUN_UID_TAG,
    SENT_TAG,
    RegistryRefused,
    RegistryUnavailable,
    VersionInfo,
    VersionRequest,
)
from trainrun.metrics import is_master
from trainrun.status.shapes import rfc3339, timestamp

API = "/api/2.0/mlflow"
REQUEST_SECONDS = 30.0
# runs/log-batch limits of MLflow's server: 1000 metrics, 100 params, 100 tags, 1000 items in all.
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS = 1000, 100, 100
PARAM_VALUE_MAX = 6000
TAG_VALUE_MAX = 5000
SEARCH_PAGE = 1000
Object = dict[str, Any]


# ---- pure: request bodies and answers ----


def quoted(text: str) -> str:
    """A string literal of MLflow's search filter grammar."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def version_filter(name: str | None, run_uid: str | None = None, *, tag: str = RUN_UID_TAG) -> str:
    """The ``model-versions/search`` filter for a model's versions, or the one of a run (or sweep: ``tag``)."""
    clauses = [f"name = {quoted(name)}"] if name is not None else []
    if run_uid is not None:
        clauses.append(f"tags.`{tag}` = {quoted(run_uid)}")
    return " and ".join(clauses)


def tag_list(tags: Iterable[tuple[str, str]]) -> list[Object]:
    """Tags as MLflow takes them, values cut to what it stores."""
    return [{"key": key, "value": value[:TAG_VALUE_MAX]} for key, value in tags]


def create_version_body(request: VersionRequest) -> Object:
    """``model-versions/create``: the version with every tag, the run's uid among them, in one request."""
    body: Object = {
        "name": request.name,
        "source": request.source,
        "tags": tag_list([*request.tags, (request.uid_tag, request.run_uid)]),
    }
    if request.run_id is not None:
        body["run_id"] = request.run_id
    if request.description is not None:
        body["description"] = request.description
    return body


def version_info(version: Mapping[str, Any]) -> VersionInfo:
    """A ``ModelVersion`` of MLflow's answers."""
    created = version.get("creation_timestamp")
    created_at = rfc3339_ms(int(created)) if created is not None else None
    return VersionInfo(
        name=str(version.get("name")),
        version=str(version.get("version")),
        source=str(version.get("source") or ""),
        created=created_at,
        status=version.get("status"),
        run_id=version.get("run_id") or None,
        description=version.get("description") or None,
        tags={str(tag.get("key")): str(tag.get("value")) for tag in version.get("tags") or []},
    )


def rfc3339_ms(count: int) -> str:
    """MLflow's milliseconds since the epoch as RFC 3339."""
    return rfc3339(datetime.fromtimestamp(count / 1000, UTC))


def milliseconds(moment: str) -> int:
    """An RFC 3339 time as MLflow's timestamps count it."""
    parsed = timestamp(moment)
    if parsed is None:
        raise ValueError(f"not an RFC 3339 time: {moment!r}")
    return int(parsed.timestamp() * 1000)


def metric_rows(records: Iterable[Mapping[str, Any]]) -> list[Object]:
    """Metric records (``trainrun.metrics.observer.metric_record``: time, replica, epoch, step, values) as
    MLflow metrics: one per value, its step the record's (else 0) and its time the line's."""
    rows: list[Object] = []
    for record in records:
        moment = record.get("time")
        at = milliseconds(str(moment)) if moment else 0
        step = record.get("step")
        for key, value in record.items():
            if key in ("time", "replica", "epoch", "step", "final") or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                rows.append({"key": key, "value": float(value), "timestamp": at, "step": int(step) if isinstance(step, int) else 0})
    return rows


def tracked_rows(lines: Iterable[str]) -> list[Object]:
    """The MLflow metrics of a tracked run from metric records (JSON lines of a run's metrics channel or
    metrics.jsonl): the Master's, without the final line (a repeat of the best epoch's numbers, which the
    built-in trainer prints last)."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and is_master(str(record.get("replica") or "")) and not record.get("final"):
            records.append(record)
    return metric_rows(records)


def log_batch_bodies(
    run_id: str,
    *,
    metrics: Sequence[Object] = (),
    params: Sequence[tuple[str, str]] = (),
    tags: Sequence[tuple[str, str]] = (),
) -> list[Object]:
    """``runs/log-batch`` bodies within the server's limits, params first; the tags go in one request with
    the last metrics (so a high-water mark among them is written only with the metrics it covers)."""
    param_rows = [{"key": key, "value": value[:PARAM_VALUE_MAX]} for key, value in params]
    bodies: list[Object] = [
        {"run_id": run_id, "params": param_rows[start : start + BATCH_PARAMS]} for start in range(0, len(param_rows), BATCH_PARAMS)
    ]
    room = BATCH_METRICS - BATCH_TAGS  # a metrics batch leaves room for the tags within the 1000 items
    bodies += [{"run_id": run_id, "metrics": list(metrics[start : start + room])} for start in range(0, len(metrics), room)]
    tag_rows = tag_list(tags)
    if tag_rows and bodies and "metrics" in bodies[-1] and len(tag_rows) <= BATCH_TAGS:
        bodies[-1]["tags"] = tag_rows
    else:
        bodies += [{"run_id": run_id, "tags": tag_rows[start : start + BATCH_TAGS]} for start in range(0, len(tag_rows), BATCH_TAGS)]
    return bodies


def error_words(status: int, text: str) -> str:
    """The server's own words from an error answer (its JSON's error_code and message when it has them)."""
    try:
        document = json.loads(text)
    except ValueError:
        return f"HTTP {status}: {text.strip()[:300] or 'no answer body'}"
    if isinstance(document, dict) and document.get("message"):
        code = document.get("error_code")
        return f"{code}: {document['message']}" if code else str(document["message"])
    return f"HTTP {status}: {text.strip()[:300]}"


# ---- the client ----


@dataclass(frozen=True)
class MlflowCredentials:
    """How to authenticate: a bearer token, or a user and password (MLflow's basic-auth app)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MlflowCredentials:
        return cls(
            token=env.get("MLFLOW_TRACKING_TOKEN") or None,
            username=env.get("MLFLOW_TRACKING_USERNAME") or None,
            password=env.get("MLFLOW_TRACKING_PASSWORD") or None,
        )

    def headers(self) -> dict[str, str]:
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username is not None:
            pair = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}


class MlflowClient:
    """One MLflow server. Open a session per use (``async with``) or call :meth:`close`."""

    def __init__(self, uri: str, credentials: MlflowCredentials | None = None, *, timeout: float = REQUEST_SECONDS) -> None:
        self.uri = uri.rstrip("/")
        self.credentials = credentials or MlflowCredentials()
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MlflowClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def where(self) -> str:
        parsed = urlsplit(self.uri)
        return f"{parsed.scheme}://{parsed.hostname}{':' + str(parsed.port) if parsed.port else ''}"

    async def call(self, method: str, path: str, *, body: Object | None = None, params: Mapping[str, str] | None = None) -> Object:
        """One REST call; its JSON answer. Raises RegistryUnavailable or RegistryRefused."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.credentials.headers(), timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        url = f"{self.uri}{API}/{path}"
        try:
            async with self._session.request(method, url, json=body, params=params) as answer:
                text = await answer.text()
                status = answer.status
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise RegistryUnavailable(f"MLflow at {self.where} cannot be reached: {error or type(error).__name__}") from None
        if status >= 500 or status == 429:
            raise RegistryUnavailable(f"MLflow at {self.where} answered {path}: {error_words(status, text)}")
        if status >= 400:
            raise RegistryRefused(f"MLflow at {self.where} refused {path}: {error_words(status, text)}")
        try:
            document = json.loads(text) if text.strip() else {}
        except ValueError:
            raise RegistryRefused(f"{self.where} is not an MLflow server: {path} answered {text.strip()[:200]!r}") from None
        return document if isinstance(document, dict) else {}

    # -- model registry --

    async def ensure_model(self, name: str) -> None:
        """Create the registered model unless it exists."""
        try:
            await self.call("POST", "registered-models/create", body={"name": name})
        except RegistryRefused as error:
            if "RESOURCE_ALREADY_EXISTS" not in str(error):
                raise

    async def search_versions(self, name: str | None = None, run_uid: str | None = None, *, tag: str = RUN_UID_TAG) -> list[VersionInfo]:
        """Every version of a model (or of every model), or the versions a run (a sweep: ``tag``) registered;
        oldest first."""
        found: list[VersionInfo] = []
        token: str | None = None
        while True:
            params = {"max_results": str(SEARCH_PAGE)}
            query = version_filter(name, run_uid, tag=tag)
            if query:
                params["filter"] = query
            if token:
                params["page_token"] = token
            answer = await self.call("GET", "model-versions/search", params=params)
            found += [version_info(item) for item in answer.get("model_versions") or []]
            token = answer.get("next_page_token")
            if not token:
                break
        return sorted(found, key=lambda item: (item.name, int(item.version) if item.version.isdigit() else 0))

    async def register(self, request: VersionRequest) -> tuple[VersionInfo, bool]:
        """The run's version of the model: the one it registered before (False), else a new one (True)."""
        await self.ensure_model(request.name)
        earlier = await self.search_versions(request.name, request.run_uid, tag=request.uid_tag)
        if earlier:
            return earlier[0], False
        answer = await self.call("POST", "model-versions/create", body=create_version_body(request))
        return version_info(answer.get("model_version") or {}), True

    async def get_version(self, name: str, version: str) -> VersionInfo:
        answer = await self.call("GET", "model-versions/get", params={"name": name, "version": version})
        return version_info(answer.get("model_version") or {})

    # -- tracking --

    async def experiment_id(self, name: str) -> str:
        """The experiment's id, created when it does not exist."""
        try:
            answer = await self.call("GET", "experiments/get-by-name", params={"experiment_name": name})
            return str(answer["experiment"]["experiment_id"])
        except RegistryRefused as error:
            if "RESOURCE_DOES_NOT_EXIST" not in str(error):
                raise
        try:
            answer = await self.call("POST", "experiments/create", body={"name": name})
            return str(answer["experiment_id"])
        except RegistryRefused as error:
            if "RESOURCE_ALREADY_EXISTS" not in str(error):
                raise
            answer = await self.call("GET", "experiments/get-by-name", params={"experiment_name": name})
            return str(answer["experiment"]["experiment_id"])

    async def find_run(self, experiment_id: str, run_uid: str) -> Object | None:
        """The tracked run of a TrainingRun (by its uid tag), with its data (tags), or None."""
        answer = await self.call(
            "POST",
            "runs/search",
            body={"experiment_ids": [experiment_id], "filter": f"tags.`{RUN_UID_TAG}` = {quoted(run_uid)}", "max_results": 1},
        )
        runs = answer.get("runs") or []
        return runs[0] if runs else None

    async def tracked_run(
        self, experiment: str, run_uid: str, *, name: str, start: str, tags: Sequence[tuple[str, str]]
    ) -> tuple[str, int]:
        """The tracked run of a TrainingRun in ``experiment`` (created unless one carries its uid), and the
        metric records already sent to it (its high-water mark, ``SENT_TAG``)."""
        experiment_id = await self.experiment_id(experiment)
        found = await self.find_run(experiment_id, run_uid)
        if found is None:
            return await self.create_run(experiment_id, name=name, start=start, tags=tags), 0
        mark = run_tags(found).get(SENT_TAG, "0")
        return str(found["info"]["run_id"]), int(mark) if mark.isdigit() else 0

    async def create_run(self, experiment_id: str, *, name: str, start: str, tags: Sequence[tuple[str, str]]) -> str:
        answer = await self.call(
            "POST",
            "runs/create",
            body={"experiment_id": experiment_id, "run_name": name, "start_time": milliseconds(start), "tags": tag_list(tags)},
        )
        return str(answer["run"]["info"]["run_id"])

    async def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[Object] = (),
        params: Sequence[tuple[str, str]] = (),
        tags: Sequence[tuple[str, str]] = (),
    ) -> None:
        for body in log_batch_bodies(run_id, metrics=metrics, params=params, tags=tags):
            await self.call("POST", "runs/log-batch", body=body)

    async def end_run(self, run_id: str, *, status: str, end: str | None) -> None:
        body: Object = {"run_id": run_id, "status": status}
        if end is not None:
            body["end_time"] = milliseconds(end)
        await self.call("POST", "runs/update", body=body)


def run_tags(run: Mapping[str, Any]) -> dict[str, str]:
    """A tracked run's tags, from a ``runs/search`` or ``runs/get`` answer."""
    data = run.get("data") or {}
    return {str(tag.get("key")): str(tag.get("value")) for tag in data.get("tags") or []}
