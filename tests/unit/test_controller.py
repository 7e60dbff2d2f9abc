"""The controller's reconcile is one pass: ``plan`` once, no storage awaited, slow work's results as facts.

``trainrun.controller.operator.Controller`` with its watch caches filled by hand and an API client that
records what it is asked (no cluster): a reconcile plans once, applies, posts, writes status once and
returns while the manifest read it started still waits on the object store; the read's result comes back
as a fact that the next reconcile (which the read's end asks for) turns into Completed. A child the API
server refuses is kept as a fact: that reconcile writes nothing, the next one reports the refusal and
applies nothing until the plan's window is over. The status this process wrote stands in for older bodies
from the watch until it sees the written version (compared for equality, never as numbers); the echo of a
write, before or after its answer, queues no pass. A new log follower takes the cached pods at once.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from factories import pod, pytorchjob, uploader_job
from run_factory import document
from trainrun.controller import operator as controller_module
from trainrun.controller.informers import key_of
from trainrun.controller.operator import JOB, UPLOADER, Controller, WrittenStatuses
from trainrun.kube.aioclient import ApiError
from trainrun.plan import Attempts, Plan, SealedLogs, projections
from trainrun.spec import load_training_run
from trainrun.spec.status import Artifacts, TrainingRunStatus
from trainrun.storage import StorageError

Object = dict[str, Any]
KEY = ("default", "run")


def seen(controller: Controller, body: Object) -> None:
    """The runs' watch brings ``body`` (listed, added or modified), projected as its informer keeps it."""
    projected = projections.training_run(body)
    controller.run_changed(controller.runs.get(key_of(projected)), projected)


URI = "s3://models/run"
ARTIFACTS = Artifacts(uri=URI, manifest_uri=f"{URI}/manifest.json", file_count=3, bytes=1234)


class RecordingKube:
    """Answers the controller's writes as an API server would, recording them; ``refuse`` makes apply fail."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.status_patches: list[Object] = []
        self.refuse: str | None = None
        self.version = 100
        self.statuses: dict[str, Object] = {}  # each run's status as the server keeps it (the patches merged)

    async def apply(self, obj: Object, *, field_manager: str) -> Object:
        self.calls.append(f"apply {obj['kind']}")
        if self.refuse is not None:
            raise ApiError(self.refuse, status=422, reason="Invalid")
        return obj

    async def patch_merge(self, resource: Any, namespace: str, name: str, patch: Object, subresource: str | None = None) -> Object:
        self.calls.append(f"patch {resource.plural}" + (f"/{subresource}" if subresource else ""))
        self.version += 1
        if subresource == "status":
            self.status_patches.append(patch["status"])
            self.statuses[name] = merged(self.statuses.get(name, {}), patch["status"])
        return {"metadata": {"name": name, "resourceVersion": f"v{self.version}"}, "status": self.statuses.get(name, {})}

    async def delete(self, resource: Any, namespace: str, name: str) -> bool:
        self.calls.append(f"delete {resource.plural}")
        return True

    async def create(self, resource: Any, namespace: str, body: Object) -> Object:
        self.calls.append(f"create {resource.plural}")
        return body


def merged(target: Object, patch: Object) -> Object:
    """A JSON merge patch (RFC 7386) applied to ``target``."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


class SlowStore:
    """An artifact reader whose manifest read waits until the test lets it answer."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[Artifacts] = asyncio.get_running_loop().create_future()
        self.reads = 0

    async def read_manifest(self, run: Any, log_archive: str | None) -> Artifacts:
        self.reads += 1
        return await self.answer


def run_body(*, phase: str | None = None, version: str = "v1", **spec: Any) -> Object:
    body = document(image="ghcr.io/acme/trainer:1.0", distribution={"workers": 1}, **spec)
    body["metadata"] = {"name": "run", "namespace": "default", "uid": "uid-1", "generation": 1, "resourceVersion": version}
    body["status"] = {"phase": phase, "observedGeneration": 1} if phase else {}
    return body


def controller_with(kube: RecordingKube, monkeypatch: pytest.MonkeyPatch) -> tuple[Controller, list[int]]:
    """A controller on ``kube`` whose ``plan`` calls are counted (one number per reconcile)."""
    controller = Controller(kube, operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
    plans: list[int] = []
    counted = controller_module.plan

    def counting_plan(*args: Any, **kwargs: Any) -> Any:
        plans[-1] += 1
        return counted(*args, **kwargs)

    monkeypatch.setattr(controller_module, "plan", counting_plan)
    original = controller.reconcile

    async def reconcile(key: tuple[str, str]) -> float | None:
        plans.append(0)
        return await original(key)

    controller.reconcile = reconcile  # type: ignore[method-assign]
    return controller, plans


def child(kind: str, obj: Object, run: str = "run") -> Object:
    obj = copy.deepcopy(dict(obj))
    obj["metadata"].setdefault("labels", {})["trainrun.dev/run"] = run
    obj["metadata"]["namespace"] = "default"
    return obj


def uploaded(
    kube: RecordingKube, store: SlowStore, monkeypatch: pytest.MonkeyPatch
) -> tuple[Controller, list[int], controller_module.RunMemory]:
    """A controller knowing a run whose job succeeded, whose uploader succeeded and whose logs are sealed:
    what is left is reading the manifest (from ``store``)."""
    controller, plans = controller_with(kube, monkeypatch)
    controller.artifacts = store  # type: ignore[assignment]
    seen(controller, run_body(phase="Uploading", output={"uri": URI}))
    controller.children.change(JOB, None, child(JOB, pytorchjob().succeeded().started()))
    controller.children.change(UPLOADER, None, child(UPLOADER, uploader_job().succeeded()))
    memory = controller.memory.setdefault(KEY, controller_module.RunMemory())
    memory.attempts["seal"] = Attempts(result=SealedLogs(metrics={"loss": 0.1}, key_metric="loss=0.1"))
    return controller, plans, memory


def in_loop(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


def test_a_reconcile_plans_once_and_never_waits_for_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        kube, store = RecordingKube(), SlowStore()
        controller, plans, memory = uploaded(kube, store, monkeypatch)

        await controller.reconcile(KEY)  # returns while the manifest read waits on the store
        await asyncio.sleep(0)  # the read's task starts
        assert plans == [1] and store.reads == 1 and not store.answer.done()
        assert memory.attempts["manifest"].running
        assert "reading the manifest" in kube.status_patches[-1]["message"]
        await controller.reconcile(KEY)  # the read is still under way: not started twice
        assert plans == [1, 1] and store.reads == 1

        store.answer.set_result(ARTIFACTS)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert memory.attempts["manifest"].result == ARTIFACTS  # a fact now, and the run is queued again
        assert KEY in controller.queue._queued
        await controller.reconcile(KEY)
        assert plans == [1, 1, 1]
        assert kube.status_patches[-1]["phase"] == "Completed"
        assert kube.status_patches[-1]["artifacts"]["fileCount"] == 3
        assert kube.statuses["run"]["metrics"] == {"loss": 0.1}

    in_loop(scenario)


def test_a_failed_read_is_a_fact_with_the_stores_words(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        kube, store = RecordingKube(), SlowStore()
        controller, plans, memory = uploaded(kube, store, monkeypatch)
        await controller.reconcile(KEY)
        store.answer.set_exception(StorageError("cannot reach https://***@store:9000: connection refused"))
        for _ in range(3):
            await asyncio.sleep(0)
        failed = memory.attempts["manifest"]
        assert (failed.failures, failed.running, failed.result) == (1, False, None)
        after = await controller.reconcile(KEY)
        assert plans == [1, 1]
        assert kube.status_patches[-1]["reason"] == "UploadNotVerified"
        assert "connection refused (attempt 1); trying again in 5 s" in kube.status_patches[-1]["message"]
        assert after is not None and 0 < after <= 5 and store.reads == 1  # not before its back-off

    in_loop(scenario)


def test_a_refused_child_is_a_fact_and_the_next_pass_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        kube = RecordingKube()
        kube.refuse = "PyTorchJob.kubeflow.org \"run\" is invalid: spec.x: Invalid value"
        controller, plans = controller_with(kube, monkeypatch)
        seen(controller, run_body())
        assert await controller.reconcile(KEY) == 0.0  # plan again at once: nothing of this plan is true
        assert kube.calls == ["apply PyTorchJob"] and kube.status_patches == []
        after = await controller.reconcile(KEY)
        assert plans == [1, 1]
        assert kube.calls == ["apply PyTorchJob", "create events", "patch trainingruns/status"]
        assert "spec.x: Invalid value" in kube.status_patches[-1]["message"]
        assert after is not None and after > 250  # not applied again before the window is over

    in_loop(scenario)


def test_the_written_status_stands_in_for_older_bodies_until_its_version_comes() -> None:
    async def scenario() -> None:
        kube = RecordingKube()
        controller = Controller(kube, operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
        seen(controller, run_body(version="v1"))
        await controller.reconcile(KEY)
        written = kube.status_patches[-1]
        version = controller.written[KEY].version
        # An event from before the write (kopf may deliver it late): the written status is kept.
        seen(controller, run_body(version="v0"))
        assert controller.runs[KEY]["status"]["phase"] == written["phase"]
        # "v10" > "v9" as numbers would say nothing here: versions are opaque, only the written one counts.
        seen(controller, run_body(version="v99"))
        assert controller.runs[KEY]["status"]["phase"] == written["phase"]
        seen(controller, {**run_body(version=version), "status": {"phase": "Queued", "reason": "x"}})
        assert KEY not in controller.written and controller.runs[KEY]["status"]["reason"] == "x"

    in_loop(scenario)


def test_the_echo_of_its_own_status_write_queues_no_reconcile_and_any_other_change_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch brings back every status write; a body that differs from the cached one (which took the written
    status from the API server's answer) in nothing but its resourceVersion queues no pass. A change to the spec,
    the metadata or the status, a deletion, or the first listing does; a relisting that finds nothing new does not."""

    async def scenario() -> None:
        kube = RecordingKube()
        controller = Controller(kube, operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
        seen(controller, run_body(version="v1"))
        await controller.reconcile(KEY)
        queued: list[tuple[str, str]] = []
        monkeypatch.setattr(controller.queue, "add", lambda key, after=0.0: queued.append(key))
        written = controller.written[KEY]
        echo = {**run_body(version=written.version), "status": copy.deepcopy(written.status)}
        seen(controller, echo)
        assert queued == [] and controller.runs[KEY]["metadata"]["resourceVersion"] == written.version
        seen(controller, {**copy.deepcopy(echo), "metadata": {**echo["metadata"], "resourceVersion": "v500"}})
        assert queued == []  # another echo-like event: still nothing new to decide from
        changed_spec = copy.deepcopy(echo)
        changed_spec["metadata"]["resourceVersion"], changed_spec["spec"]["image"] = "v501", "ghcr.io/acme/trainer:1.1"
        seen(controller, changed_spec)
        someone_elses_status = {**copy.deepcopy(changed_spec), "status": {**written.status, "message": "edited by hand"}}
        someone_elses_status["metadata"]["resourceVersion"] = "v502"
        seen(controller, someone_elses_status)
        deleting = copy.deepcopy(someone_elses_status)
        deleting["metadata"].update(resourceVersion="v503", deletionTimestamp="2026-12-06T00:00:00Z")
        seen(controller, deleting)
        seen(controller, {**copy.deepcopy(deleting), "metadata": {**deleting["metadata"], "resourceVersion": "v504"}})
        controller.run_changed(controller.runs[KEY], None)  # deleted
        assert queued == [KEY] * 4  # the relisting found nothing new but the version

    in_loop(scenario)


def test_a_write_whose_version_the_watch_brought_before_its_answer_keeps_its_own_status() -> None:
    """kopf hands on only the latest of the events that come close together: the first write's version never
    comes, and the second's comes before the API server's answer to it, so it is first given the first write's
    status. The answer puts the second write's status back, and nothing stands in for it any more (else the next
    pass would decide from the older status: a RegistryFailing Event posted once a failed try)."""

    async def scenario() -> None:
        written = WrittenStatuses()
        cached: dict[str, Any] = {"metadata": {"resourceVersion": "1"}, "status": {"reason": "Registering"}}
        written.wrote(KEY, {"metadata": {"resourceVersion": "2"}, "status": {"reason": "Registering", "message": "first"}}, cached)
        second = {"reason": "RegistryUnavailable", "message": "attempt 1"}
        body: dict[str, Any] = {"metadata": {"resourceVersion": "3"}, "status": dict(second)}
        written.stand_in(KEY, body)  # before the answer: all this process knows is its first write
        assert body["status"]["message"] == "first"
        written.wrote(KEY, {"metadata": {"resourceVersion": "3"}, "status": dict(second)}, body)
        assert body["status"] == second and KEY not in written
        later: dict[str, Any] = {"metadata": {"resourceVersion": "4"}, "status": {**second, "message": "attempt 2"}}
        written.stand_in(KEY, later)
        assert later["status"]["message"] == "attempt 2"

    in_loop(scenario)


class EchoFirstKube(RecordingKube):
    """An API server whose watch brings each status write to the controller before the write's answer comes."""

    def __init__(self, *, someone_else: Object | None = None) -> None:
        super().__init__()
        self.controller: Controller | None = None
        self.someone_else = someone_else or {}  # what another writer changed in the status before the echo

    async def patch_merge(self, resource: Any, namespace: str, name: str, patch: Object, subresource: str | None = None) -> Object:
        answer = await super().patch_merge(resource, namespace, name, patch, subresource)
        if subresource == "status" and self.controller is not None:
            echo = {**run_body(version=answer["metadata"]["resourceVersion"]), "status": {**answer["status"], **self.someone_else}}
            seen(self.controller, echo)
        return answer


@pytest.mark.parametrize(("someone_else", "passes"), [({}, 0), ({"message": "edited by hand"}, 1)])
def test_the_echo_of_a_status_write_that_comes_before_its_answer_queues_no_reconcile(
    monkeypatch: pytest.MonkeyPatch, someone_else: Object, passes: int
) -> None:
    """The watch may bring a status write's version before the API server's answer to it: the body with the
    status of the write under way is that write (nothing older stands in for it any more), and queues no pass;
    a body with any other status does."""

    async def scenario() -> None:
        kube = EchoFirstKube(someone_else=someone_else)
        controller = Controller(kube, operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
        kube.controller = controller
        seen(controller, run_body(version="v1"))
        queued: list[tuple[str, str]] = []
        monkeypatch.setattr(controller.queue, "add", lambda key, after=0.0: queued.append(key))
        await controller.reconcile(KEY)
        assert kube.status_patches, "the first pass writes a status"
        assert len(queued) == passes and controller.written.under_way == {}
        if not someone_else:
            assert controller.runs[KEY]["status"] == kube.statuses["run"] and KEY not in controller.written

    in_loop(scenario)


class FakeFollower:
    def __init__(self, *, superseded: bool = False) -> None:
        self.pods: list[list[str]] = []
        self.gone: list[list[str]] = []
        self.superseded = superseded
        self.stopped = False

    def update(self, pods: list[Object], gone: Iterable[Object] = ()) -> None:
        self.pods.append([pod["metadata"]["name"] for pod in pods])
        self.gone.append([pod["metadata"]["name"] for pod in gone])

    async def stop(self) -> None:
        self.stopped = True


@pytest.mark.parametrize("archive_fails", [False, True])
def test_a_new_log_follower_takes_the_pods_at_once_and_a_pass_comes_only_for_the_archives_trouble(
    monkeypatch: pytest.MonkeyPatch, archive_fails: bool
) -> None:
    """The follower a pass asked for starts reading the pods the caches hold as soon as it exists (the passes
    after it keep it fed); a pass is queued only when the status has something new to say: the archive cannot
    be opened."""

    async def scenario() -> None:
        controller = Controller(RecordingKube(), operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
        seen(controller, run_body(phase="Running"))
        controller.children.change(controller_module.POD, None, child(controller_module.POD, pod("run-master-0").running()))
        follower = FakeFollower()

        async def new_follower(*args: Any) -> FakeFollower:
            return follower

        async def open_archive(*args: Any) -> None:
            if archive_fails:
                raise StorageError("s3://logs/run: access denied")

        monkeypatch.setattr(controller, "_follower", new_follower)
        monkeypatch.setattr(controller, "_open_archive", open_archive)
        queued: list[tuple[str, str]] = []
        monkeypatch.setattr(controller.queue, "add", lambda key, after=0.0: queued.append(key))
        memory = controller.memory.setdefault(KEY, controller_module.RunMemory())
        run = load_training_run(controller.runs[KEY])
        await controller._start_following(KEY, memory, run, "s3://logs/run")
        assert follower.pods == [["run-master-0"]]
        assert queued == ([KEY] if archive_fails else [])
        assert (memory.archive_problem is not None) is archive_fails

    in_loop(scenario)


def test_a_superseded_follower_is_replaced_by_one_that_resumes_from_the_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower that found its next segment written by another one (stopped while its write was under way) has
    stopped reading: the next pass that follows the run drops it, and a new follower, which loads the archive as it
    is now, takes the pods."""

    async def scenario() -> None:
        controller = Controller(RecordingKube(), operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
        seen(controller, run_body(phase="Running"))
        controller.children.change(controller_module.POD, None, child(controller_module.POD, pod("run-master-0").running()))
        superseded, fresh = FakeFollower(superseded=True), FakeFollower()

        async def new_follower(*args: Any) -> FakeFollower:
            return fresh

        async def open_archive(*args: Any) -> None:
            return None

        monkeypatch.setattr(controller, "_follower", new_follower)
        monkeypatch.setattr(controller, "_open_archive", open_archive)
        memory = controller.memory.setdefault(KEY, controller_module.RunMemory())
        memory.logs = superseded  # type: ignore[assignment]
        run = load_training_run(controller.runs[KEY])
        decided = Plan(status=TrainingRunStatus(), status_patch={}, logs="follow", log_archive="s3://logs/run", run=run)
        controller._follow(KEY, memory, decided)
        await asyncio.wait_for(memory.tasks[controller_module.FOLLOW], timeout=5)
        assert memory.logs is fresh and fresh.pods == [["run-master-0"]]
        assert superseded.pods == []  # not fed again: it reads no more

    in_loop(scenario)


def test_a_pod_deleted_after_its_container_started_reaches_the_follower_as_gone() -> None:
    """A replica pod that started and was deleted between two passes (a cancellation, its node's pods collected)
    is never among the pods the caches hold at a pass: the controller keeps it as last seen and hands it to the
    follower as gone, whose start no follower read is then declared (RunLogs.update). One deleted before its
    container started ran nothing and is not handed over; a run forgotten has its gone pods forgotten."""

    async def scenario() -> None:
        controller = Controller(RecordingKube(), operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
        seen(controller, run_body(phase="Running"))
        started = child(controller_module.POD, pod("run-worker-0").running())
        never_started = child(controller_module.POD, pod("run-worker-1"))
        for obj in (started, never_started):
            controller._on_pod(None, obj)
            controller._on_pod(obj, None)
        follower = FakeFollower()
        memory = controller.memory.setdefault(KEY, controller_module.RunMemory())
        memory.logs = follower  # type: ignore[assignment]
        run = load_training_run(controller.runs[KEY])
        controller._follow(KEY, memory, Plan(status=TrainingRunStatus(), status_patch={}, logs="follow", log_archive="s3://logs/run", run=run))
        assert follower.pods == [[]] and follower.gone == [["run-worker-0"]]
        await controller._forget(KEY)
        assert KEY not in controller.gone_starts and follower.stopped
        # The pods of a run deleted (its job's pods go after it), or of one whose logs are read to their end (its
        # clean-up), are not kept: nothing would ever let them go.
        controller.run_changed(controller.runs[KEY], None)
        controller._on_pod(None, started)
        controller._on_pod(started, None)
        assert KEY not in controller.gone_starts
        final = run_body(phase="Completed")
        final["status"]["metricsFinal"] = True
        seen(controller, final)
        controller._on_pod(None, started)
        controller._on_pod(started, None)
        assert KEY not in controller.gone_starts

    in_loop(scenario)


def test_a_run_without_an_archive_has_its_logs_read_to_the_end_before_its_metrics_are_final(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finished run whose logs are not archived is still read to the end (for the last metrics) before its
    status says the metrics are final; what was read before stays when the new reader finds no pod left."""

    async def scenario() -> None:
        kube = RecordingKube()
        controller, plans = controller_with(kube, monkeypatch)
        body = run_body(phase="Running")
        body["status"].update(metrics={"loss": 0.2, "accuracy": 0.9}, keyMetric="loss=0.2")
        kube.statuses["run"] = copy.deepcopy(body["status"])
        seen(controller, body)
        controller.children.change(JOB, None, child(JOB, pytorchjob().succeeded().started()))
        await controller.reconcile(KEY)
        memory = controller.memory[KEY]
        assert kube.status_patches[-1]["phase"] == "Completed" and "metricsFinal" not in kube.status_patches[-1]
        assert "seal" in memory.tasks  # a follower without an archive, finishing
        await asyncio.wait_for(memory.tasks["seal"], timeout=10)
        assert memory.attempts["seal"].result is not None and KEY in controller.queue._queued
        await controller.reconcile(KEY)
        assert kube.status_patches[-1]["metricsFinal"] is True
        kept = kube.statuses["run"]
        assert (kept["metrics"], kept["keyMetric"]) == ({"loss": 0.2, "accuracy": 0.9}, "loss=0.2")  # no pod left to read
        await controller.reconcile(KEY)
        assert "seal" not in memory.tasks and memory.logs is None  # read once, never again
        assert plans == [1, 1, 1]

    in_loop(scenario)


def test_the_events_watch_leaves_out_server_side_only_what_no_reconcile_reads() -> None:
    """The Events watch's field selector skips our own objects' Events and the frequent reasons of the scheduler,
    the kubelet and the job controllers; never a reason the status or the restart causes read (EVENT_REASONS),
    so nothing a run's status needs is filtered away before its cache sees it."""
    from trainrun.plan import EVENT_REASONS

    selector = controller_module.EVENT_FIELD_SELECTOR
    terms = selector.split(",")
    skipped = {term.removeprefix("reason!=") for term in terms if term.startswith("reason!=")}
    assert skipped == set(controller_module.SKIPPED_EVENT_REASONS) and not skipped & EVENT_REASONS
    assert {"Scheduled", "SuccessfulCreatePod"} <= skipped
    assert "involvedObject.kind!=TrainingRun" in terms
    assert all(term.startswith(("reason!=", "involvedObject.kind!=")) for term in terms)  # ANDed exclusions only


def test_a_watch_counts_the_changes_it_delivers_and_the_ones_that_changed_nothing() -> None:
    """trainrun_watch_events_total{resource, effect}: a change to a field the operator keeps is "changed" (and reaches
    on_change), one to a field it does not keep, a bookmark or a deletion of an object it never kept is "same"."""
    from trainrun.controller import telemetry
    from trainrun.controller.informers import Informer
    from trainrun.kube.aioclient import PODS
    from trainrun.plan import projections

    pod = {"metadata": {"name": "run-master-0", "namespace": "ml", "resourceVersion": "1"}, "status": {"phase": "Pending"}}
    running = {**pod, "metadata": {**pod["metadata"], "resourceVersion": "2"}, "status": {"phase": "Running"}}
    touched = {**running, "metadata": {**running["metadata"], "resourceVersion": "3", "annotations": {"unread": "x"}}}
    stranger = {"metadata": {"name": "other", "namespace": "ml", "resourceVersion": "4"}}
    stream = [("ADDED", pod), ("MODIFIED", running), ("MODIFIED", touched), ("BOOKMARK", {"metadata": {"resourceVersion": "5"}}),
              ("DELETED", stranger), ("DELETED", {**touched, "metadata": {**touched["metadata"], "resourceVersion": "6"}})]

    class Kube:
        async def watch(self, *_: Any, **__: Any) -> Any:
            for item in stream:
                yield item

    def count(effect: str) -> float:
        return telemetry.REGISTRY.get_sample_value("trainrun_watch_events_total", {"resource": "pods", "effect": effect}) or 0.0

    changes: list[tuple[Any, Any]] = []
    informer = Informer(Kube(), PODS, "ml", project=projections.pod, on_change=lambda old, new: changes.append((old, new)))  # type: ignore[arg-type]
    before = count("changed"), count("same")
    version = asyncio.run(informer._watch("0"))
    assert version == "6"  # where the next watch starts: the last version delivered
    assert (count("changed") - before[0], count("same") - before[1]) == (3, 3)
    assert [(old is None, new is None) for old, new in changes] == [(True, False), (False, False), (False, True)]
    assert informer.store == {}


def test_new_metric_values_are_written_at_once_then_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower's first values get a pass at once; more within METRICS_WRITE_SECONDS wait for the end of that
    interval (one pass takes them all); values after it get a pass at once again."""

    async def scenario() -> None:
        controller = Controller(RecordingKube(), operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
        added: list[float] = []
        monkeypatch.setattr(controller.queue, "add", lambda key, after=0.0: added.append(round(after, 1)))
        interval = controller_module.METRICS_WRITE_SECONDS
        controller._metrics_changed(KEY)
        assert added == [], "a run this process does not follow any more"
        memory = controller.memory[KEY] = controller_module.RunMemory()
        for _ in range(3):
            controller._metrics_changed(KEY)
        assert added == [0.0, interval, interval], "at once, then one pass at the end of the interval for the rest"
        assert memory.metrics_pass_at is not None
        memory.metrics_pass_at -= 2 * interval  # that pass was made, an interval and more ago
        controller._metrics_changed(KEY)
        assert added[-1] == 0.0

    in_loop(scenario)
