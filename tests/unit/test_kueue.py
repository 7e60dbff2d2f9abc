"""A queued run's decisions, without a cluster: Kueue's words in the status, its preemption as a cause,
and a queue the cluster cannot give refused with the field named. The same for both backends.

Kueue suspends a queued job at creation and creates a Workload for it; while the Workload has no quota
(QuotaReserved False) the run is Queued with Kueue's own reason; a Workload evicted because a higher
priority one needed its quota (Evicted True, Preempted) is a whole-run restart of cause Preempted
(``spec.runPolicy.restartOn`` has it by default), so the run goes back to Queued and resumes from its
checkpoint once admitted again.
"""

from __future__ import annotations

from typing import Any

import pytest
from factories import NOW, pod
from run_factory import pools, training_run
from trainrun.plan import Delete, Observed, plan, projections
from trainrun.render.backend import BACKENDS
from trainrun.spec import load_training_run
from trainrun.spec.status import Phase

QUOTA = "couldn't assign flavors to pod set node: insufficient unused quota for nvidia.com/gpu in flavor a100, 8 more needed"
PREEMPTED = (
    "Preempted to accommodate a workload (UID: 6e1c, JobUID: 9f2a) due to prioritization in the ClusterQueue; "
    "preemptor path: /gpus; preemptee path: /gpus"
)


def queued_run(backend: str, **status: Any) -> dict[str, Any]:
    document = training_run(resources={"queue": "gpus", "gpus": 8, "pool": "a100"}).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    document["metadata"].update(name="run", namespace="default", uid="uid-1", generation=1)
    document["status"] = {"observedGeneration": 1, **status}
    return document


def config(backend: str) -> Any:
    return pools().model_copy(update={"backend": backend})


def suspended_job(backend: str, *, created: str = "2026-01-01T10:00:00Z") -> dict[str, Any]:
    """The run's job as the API serves it while Kueue holds it: our render of the run, suspended."""
    document = queued_run(backend)
    rendered = BACKENDS[backend].render_job(load_training_run(document), config(backend))
    rendered["metadata"].update(creationTimestamp=created)
    if backend == "PyTorchJob":
        rendered["spec"]["runPolicy"]["suspend"] = True
        rendered["status"] = {"conditions": [{"type": "Created", "status": "True"}]}
        return projections.pytorchjob(rendered)
    rendered["spec"]["suspend"] = True
    return projections.trainjob(rendered)


def workload(*conditions: tuple[str, str, str, str]) -> dict[str, Any]:
    return projections.workload(
        {
            "metadata": {"name": "trainjob-run-1a2b3", "namespace": "default", "ownerReferences": [{"kind": "TrainJob", "name": "run"}]},
            "status": {
                "conditions": [
                    {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": "2026-01-01T11:00:00Z"}
                    for kind, status, reason, message in conditions
                ]
            },
        }
    )


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_run_waiting_for_quota_is_queued_with_kueues_reason(backend: str) -> None:
    observed = Observed(job=suspended_job(backend), workload=workload(("QuotaReserved", "False", "Pending", QUOTA)))
    decided = plan(queued_run(backend, phase="Queued"), config(backend), observed, now=NOW)
    assert (decided.status.phase, decided.status.reason) == (Phase.QUEUED, "WaitingForAdmission")
    assert decided.status.message == f"waiting for Kueue to admit the {backend} (LocalQueue gpus): {QUOTA}"
    assert decided.actions == ()  # never its suspend: Kueue's
    stalled = next(item for item in decided.status.conditions if item.type == "Stalled")
    assert stalled.status == "False"  # a wait that ends when quota frees up


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_preemption_by_kueue_restarts_the_run_with_cause_preempted(backend: str) -> None:
    evicted = workload(
        ("QuotaReserved", "False", "Pending", QUOTA),
        ("Evicted", "True", "Preempted", PREEMPTED),
        ("Preempted", "True", "InClusterQueue", PREEMPTED),
    )
    observed = Observed(job=suspended_job(backend), workload=evicted)
    decided = plan(queued_run(backend, phase="Running"), config(backend), observed, now=NOW)
    assert [restart.cause for restart in decided.status.restarts] == ["Preempted"]
    assert decided.status.restarts[0].message.startswith("Kueue preempted the run (Preempted to accommodate")
    assert [(type(action), action.kind) for action in decided.actions] == [(Delete, backend)]  # type: ignore[union-attr]
    assert decided.status.reason == "Restarting" and decided.status.phase is Phase.QUEUED  # back in the queue
    # Planned again with that status written: no second restart for the same eviction.
    written = queued_run(backend, **decided.status.model_dump(mode="json", by_alias=True, exclude_none=True))
    again = plan(written, config(backend), observed, now="2026-01-01T12:00:01Z")
    assert len(again.status.restarts) == 1


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_preemption_with_fail_on_fails_the_run(backend: str) -> None:
    document = queued_run(backend, phase="Running")
    document["spec"]["runPolicy"] = {"restartOn": [], "failOn": ["Preempted"]}
    evicted = workload(("Evicted", "True", "Preempted", PREEMPTED))
    decided = plan(document, config(backend), Observed(job=suspended_job(backend), workload=evicted), now=NOW)
    assert (decided.status.phase, decided.status.reason) == (Phase.FAILED, "Preempted")
    assert "not retried (spec.runPolicy.failOn)" in (decided.status.message or "")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_an_eviction_that_is_not_a_preemption_waits_in_the_queue(backend: str) -> None:
    """Kueue evicts for other reasons too (pods not ready in time): the run waits to be admitted again."""
    evicted = workload(("Evicted", "True", "PodsReadyTimeout", "Exceeded the PodsReady timeout default/run"))
    decided = plan(queued_run(backend, phase="Running"), config(backend), Observed(job=suspended_job(backend), workload=evicted), now=NOW)
    assert (decided.status.phase, decided.status.reason) == (Phase.QUEUED, "PodsReadyTimeout")
    assert decided.status.restarts == [] and decided.actions == ()
    assert "evicted by Kueue (PodsReadyTimeout): Exceeded the PodsReady timeout" in (decided.status.message or "")


@pytest.mark.parametrize(
    ("observed", "words"),
    [
        (Observed(kueue_served=False), "the cluster does not serve Kueue (kueue.x-k8s.io Workloads)"),
        (Observed(queue_present=False), "LocalQueue 'gpus' does not exist in namespace default"),
    ],
    ids=["no-kueue", "no-such-localqueue"],
)
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_queue_the_cluster_cannot_give_is_a_stalled_reason_naming_the_field(
    backend: str, observed: Observed, words: str
) -> None:
    decided = plan(queued_run(backend), config(backend), observed, now=NOW)
    assert decided.actions == ()  # no job that would run unqueued
    assert decided.status.message is not None and decided.status.message.startswith("spec.resources.queue: ")
    assert words in decided.status.message
    stalled = next(item for item in decided.status.conditions if item.type == "Stalled")
    assert stalled.status == "True"
    assert decided.status.reason == ("KueueMissing" if not observed.kueue_served else "LocalQueueNotFound")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_queued_and_admitted_run_goes_on_as_any(backend: str) -> None:
    admitted = workload(("QuotaReserved", "True", "QuotaReserved", "Quota reserved"), ("Admitted", "True", "Admitted", "admitted"))
    job = suspended_job(backend)
    job["spec"]["runPolicy"]["suspend"] = False  # Kueue let it go
    job["status"] = {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}], "startTime": "2026-01-01T10:01:00Z"}
    pods = [pod("run-master-0").running(), pod("run-worker-0").running()]
    decided = plan(queued_run(backend, phase="Queued"), config(backend), Observed(job=job, pods=pods, workload=admitted), now=NOW)
    assert (decided.status.phase, decided.status.reason) == (Phase.RUNNING, "Running")
    assert decided.actions == ()
