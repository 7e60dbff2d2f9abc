"""Annotations this product writes on a TrainingRun's metadata, named once.

``trainrun.local.folder`` stamps a local run with its run folder; ``trainrun.client`` reads it back for
the CLI (``run folder: ...`` and ``describe``), so neither the facade nor the CLI imports the local
backend for a name. Pure.
"""

from __future__ import annotations

RUN_DIR_ANNOTATION = "trainrun.dev/run-dir"
