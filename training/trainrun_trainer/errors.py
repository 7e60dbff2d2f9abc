"""The one exception type the trainer raises for bad input (flags, data, weights, checkpoints).

Raised anywhere in `trainrun_trainer`; `__main__.main` prints its message and exits with
status 2, a permanent failure that retrying the replica will not fix.
"""


class TrainerError(Exception):
    """A problem the user must fix; the message names the field or path and the fix."""
