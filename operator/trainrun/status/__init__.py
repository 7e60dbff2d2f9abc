"""Observations of a run (its job, pods, Events, uploader Job) -> its status: phase, cause, conditions.

The pure decision core between what is observed and the status that is written: ``build_status``
turns a ``StatusInput`` into the whole ``TrainingRunStatus``, and ``phase_event`` announces a phase
change. Called by the operator's plan (``trainrun.plan``) and by the local runner
(``trainrun.local.runner``, with its processes written as the same objects by ``trainrun.local.observe``),
so a local run reads in the same words as one on a cluster. Nothing here does I/O or imports a
Kubernetes client.

  shapes       defensive readers of raw API dicts
  observe      raw dicts -> typed views of the job, pods, Events and uploader
  failure      the cause of a stuck or failed run, in words that name the replica and the fix
  phase        the decision table: views -> phase, reason, message
  conditions   the kstatus conditions Ready, Reconciling, Stalled
  progress     progress, pace, ETA and the hang rule
  transitions  the Event for a phase change
  build        build_status, which ties them together
"""

from __future__ import annotations

from trainrun.status.build import StatusInput, build_status, count_replicas
from trainrun.status.observe import replica_name
from trainrun.status.transitions import PhaseEvent, phase_event

__all__ = ["PhaseEvent", "StatusInput", "build_status", "count_replicas", "phase_event", "replica_name"]
