"""``python -m trainrun.local RUN_FOLDER``: supervise a prepared local run in a detached process.

Started by ``trainrun.client.local`` for ``Client.create`` and ``trainrun run --local --detach``; it
writes everything to the run folder and exits with the run's exit code (0 Completed, 1 Failed,
130 Cancelled). ``trainrun cancel`` sends it SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainrun.local.folder import RunFolder
from trainrun.local.runner import LocalRunner
from trainrun.metrics.observer import exit_code


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m trainrun.local RUN_FOLDER", file=sys.stderr)
        return 2
    status = LocalRunner(RunFolder(Path(argv[0]).resolve())).run()
    return exit_code(status.phase)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
