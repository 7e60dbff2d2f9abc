"""Entry point: `python -m trainrun_trainer [flags]` and the `trainrun-train` script.

Parses flags and env (trainrun_trainer.config), runs the training (trainrun_trainer.training),
and turns a TrainerError into one clear line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from trainrun_trainer.config import parse_config
from trainrun_trainer.errors import TrainerError
from trainrun_trainer.training import run_training

USAGE_ERROR_EXIT = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer; returns the process exit status."""
    try:
        run_training(parse_config(sys.argv[1:] if argv is None else argv))
    except TrainerError as error:
        print(f"trainrun_trainer: error: {error}", file=sys.stderr, flush=True)
        return USAGE_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
