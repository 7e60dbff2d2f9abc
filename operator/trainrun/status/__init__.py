"""Observations of a run (PyTorchJob, pods, Events, uploader Job) -> its status: phase, cause, conditions.

The pure decision core between the operator's reads and its status writes: the operator's reconcile
(``trainrun.controller.operator``, through ``trainrun.plan``) calls ``compute_status`` with what it saw and ``phase_event`` to
announce a phase change. The local runner (``trainrun.local.runner``) calls it too, with its replica
processes and its copy written as the same objects (``trainrun.local.observe``), so a local run reads
in the same words; it takes ``kstatus_conditions`` and ``phase_event`` from here for the phases it
records itself (staging, a replica that cannot start, a cancel). Nothing here does I/O or imports a
Kubernetes client.

  shapes       defensive readers of raw API dicts
  observe      raw dicts -> typed views of the job, pods, Events and uploader
  failure      the cause of a stuck or failed run, in words that name the replica and the fix
  phase        the decision table: views -> phase, reason, message
  conditions   the kstatus conditions Ready, Reconciling, Stalled
  transitions  the Event for a phase change
  compute      compute_status, which ties them together
"""

from __future__ import annotations

from trainrun.status.compute import compute_status, count_replicas
from trainrun.status.observe import replica_name
from trainrun.status.transitions import PhaseEvent, phase_event

__all__ = ["PhaseEvent", "compute_status", "count_replicas", "phase_event", "replica_name"]
