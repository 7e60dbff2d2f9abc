"""Annotations and labels this product writes on a TrainingRun's metadata, named once.

``trainrun.local.folder`` stamps a local run with its run folder; ``trainrun.client`` reads it back for
the CLI (``run folder: ...`` and ``describe``), so neither the facade nor the CLI imports the local
backend for a name. A sweep (``trainrun.sweep``) marks its trials: the sweep's label, the trial's number,
parameters and sampler notes, a pruned trial's mark, and the metric whose values the trial's status keeps
by position (``SERIES_ANNOTATION``: read by the status builder and the log followers). Pure.
"""

from __future__ import annotations

RUN_DIR_ANNOTATION = "trainrun.dev/run-dir"
SERIES_ANNOTATION = "trainrun.dev/series"
SWEEP_LABEL = "trainrun.dev/sweep"
TRIAL_NUMBER_ANNOTATION = "trainrun.dev/trial"
PARAMETERS_ANNOTATION = "trainrun.dev/parameters"
SAMPLER_NOTES_ANNOTATION = "trainrun.dev/sampler-notes"
PRUNED_ANNOTATION = "trainrun.dev/pruned"
