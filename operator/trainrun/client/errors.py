"""Errors of ``trainrun.Client`` that the CLI shows as one line (no traceback).

Raised by both backends; the CLI's error handler prints ``str(error)``.
"""

from __future__ import annotations


class ClientError(RuntimeError):
    """Something the user asked for cannot be done; the message says what and what to do."""


class RunNotFound(ClientError, LookupError):
    """No TrainingRun by that name (in that namespace, or in that runs folder)."""


class WaitTimeout(ClientError, TimeoutError):
    """The run did not reach the phases waited for in time."""
