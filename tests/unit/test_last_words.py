"""A failed replica's last words: the exception it died of, found under torchrun's report of it.

A container's termination message (FallbackToLogsOnError) is the last 2 KB of its log; under torchrun
that tail ends with torchrun's own traceback and ChildFailedError banner, so its last line is a row of
'='. The status must still name the child's exception, as a local run does from the whole log.
"""

from __future__ import annotations

import pytest
from trainrun.status.failure import error_line

CHILD = """starting
Traceback (most recent call last):
  File "/workspace/code/train.py", line 3, in <module>
    raise RuntimeError("boom at step 3")
RuntimeError: boom at step 3
"""
TORCHRUN_REPORT = """E1130 08:18:42.861000 27760 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1) local_rank: 0 (pid: 27815) of binary: /usr/bin/python3
Traceback (most recent call last):
  File "/usr/local/bin/torchrun", line 8, in <module>
    sys.exit(main())
             ^^^^^^
  File "/usr/local/lib/python3.11/dist-packages/torch/distributed/launcher/api.py", line 386, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-30_08:18:42
  host      : fail-worker-0
  rank      : 1 (local_rank: 0)
  exitcode  : 1 (pid: 27815)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


@pytest.mark.parametrize(
    ("log_tail", "expected"),
    [
        (CHILD + TORCHRUN_REPORT, "RuntimeError: boom at step 3"),
        # The 2 KB tail may start inside the child's traceback: its exception line is still there.
        ((CHILD + TORCHRUN_REPORT)[40:], "RuntimeError: boom at step 3"),
        (CHILD, "RuntimeError: boom at step 3"),
        ("loading\ntorch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1\n", "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1"),
        # No exception (a shell script's exit 3): the last line said.
        ("step 1\nout of patience\n\n", "out of patience"),
        # torchrun's report alone (the child printed nothing): nothing of the banner is taken as the cause.
        (TORCHRUN_REPORT, None),
        ("", None),
        (None, None),
    ],
    ids=["torchrun", "tail-cut", "plain", "dotted-name", "no-exception", "report-only", "empty", "none"],
)
def test_error_line(log_tail: str | None, expected: str | None) -> None:
    assert error_line(log_tail) == expected
