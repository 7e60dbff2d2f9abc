"""Log line -> the failure it announces, if any: a CUDA out-of-memory error, a lost NCCL/Gloo peer, an exception.

The progress tracker (``trainrun.metrics.progress``) runs every line of every replica through
:func:`log_signal` and keeps each replica's latest signal; ``trainrun.plan.causes`` reads it to tell why a
replica failed (the pod only says "exited with code 1"). The names are the causes of
``spec.runPolicy.restartOn`` and ``failOn``. Pure.
"""

from __future__ import annotations

import re

CUDA_OOM = "CudaOOM"
COMMUNICATION_ERROR = "CommunicationError"
USER_ERROR = "UserError"

_CUDA_OOM = re.compile(
    r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|CUDA error: out of memory|HIP out of memory"
)
# What PyTorch's process groups and the NCCL/Gloo libraries print when a peer goes away or a collective
# times out: the other replicas' view of a lost node, a dead process or a cut network.
_COMMUNICATION = re.compile(
    r"NCCL error|ncclInternalError|ncclSystemError|ncclRemoteError|ncclUnhandledCudaError|DistBackendError"
    r"|ProcessGroupNCCL.*(?:[Tt]imeout|[Ww]atchdog)|NCCL communicator was aborted|\[(?:\.\./)*third_party/gloo"
    r"|gloo/transport|Gloo connectFullMesh failed|Connection closed by peer|Connection reset by peer"
    r"|RendezvousConnectionError|RendezvousTimeoutError|DistNetworkError"
)
# Every line that announces one of these has one of these words (a cheap test before the expressions).
_WORDS = re.compile("rror|xception|memory|NCCL|nccl|loo|peer|Rendezvous")
# The last line of a Python traceback: "ValueError: ...", "torch.distributed.DistBackendError: ..." (also
# what trainrun.status.failure looks for in a container's last words).
EXCEPTION_LINE = re.compile(r"^(\w+\.)*\w+(Error|Exception)\b.*")


def mentions_failure(text: str) -> bool:
    """Whether a line (or many, joined) has a word every failure line has: False means no signal in it."""
    return _WORDS.search(text) is not None


def log_signal(line: str) -> str | None:
    """CudaOOM, CommunicationError or UserError for a line that announces one (most lines: None).

    An exception line is a UserError unless it is about memory or a peer (checked first: PyTorch raises
    NCCL and CUDA memory failures as exceptions too)."""
    if not mentions_failure(line):
        return None  # most lines: no regular expression run
    if _CUDA_OOM.search(line):
        return CUDA_OOM
    if _COMMUNICATION.search(line):
        return COMMUNICATION_ERROR
    if EXCEPTION_LINE.match(line.strip()):
        return USER_ERROR
    return None
