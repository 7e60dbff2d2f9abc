"""The local backend: a TrainingRun's replicas as processes on this machine, with no cluster.

``trainrun run FILE --local`` and ``trainrun.Client(backend="local")`` use it. The replicas get the
same command and environment as on a cluster (built by ``trainrun.render``); each run lives in its
own folder (``trainrun.local.folder``), which is all the Client needs to read it back.
"""

from trainrun.local.folder import DEFAULT_RUNS_DIR, RunFolder, find_run_folder, nearest_runs_dir, run_folders
from trainrun.local.runner import LocalRunner, prepare_run_folder

__all__ = [
    "DEFAULT_RUNS_DIR",
    "LocalRunner",
    "RunFolder",
    "find_run_folder",
    "nearest_runs_dir",
    "prepare_run_folder",
    "run_folders",
]
