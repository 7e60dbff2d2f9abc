"""Pure rendering of a TrainingRun into what runs it: the PyTorchJob and its helpers, and the replica contract.

Callers: the operator's handlers (apply the children), ``trainrun render`` (print them) and the local
runner (the same command and environment as local processes).
"""

from trainrun.render.children import (
    FIELD_MANAGER,
    job_name,
    master_pod_name,
    render_pytorchjob,
    render_uploader_job,
    render_volume_claim,
    uploader_job_name,
    volume_claim_name,
)
from trainrun.render.replica import expand_references, launch_command, operator_env, trainrun_env

__all__ = [
    "FIELD_MANAGER",
    "expand_references",
    "job_name",
    "launch_command",
    "master_pod_name",
    "operator_env",
    "render_pytorchjob",
    "render_uploader_job",
    "render_volume_claim",
    "trainrun_env",
    "uploader_job_name",
    "volume_claim_name",
]
