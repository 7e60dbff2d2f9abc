"""Hyperparameter sweeps: a TrainingSweep's trials, its Optuna study rebuilt from them, and the plan.

The sweep's pure core, beside ``trainrun.plan`` (the TrainingRun's): called by the operator's sweep
controller (``trainrun.controller.sweeps``). Nothing here does I/O or imports a Kubernetes client.

  study   the Optuna study rebuilt from the trials: suggestions (seeded) and pruning decisions
  trials  trial objects made from the template, and read back into what the study needs
  plan    plan_sweep: a sweep and its trials -> trials to create, trials to stop, Events, status
"""

from __future__ import annotations

from trainrun.sweep.plan import SweepPlan, TrialPatch, plan_sweep

__all__ = ["SweepPlan", "TrialPatch", "plan_sweep"]
