"""``trainrun sweep FILE``: tune a TrainingRun's hyperparameters with a TrainingSweep, on the cluster or here.

On a cluster the sweep is created and the operator runs it (``trainrun get trs``, ``trainrun describe sweep
NAME`` follow it). ``--local`` runs it from this process: trials are local runs, ``parallelism`` at a time,
decided by the operator's own planner (``trainrun.Client.run_sweep``); a line for each trial started,
pruned or failed and each new best, then the trials table, best first. Exit code: 0 when the sweep found a
best trial, 1 when it failed, 130 on Ctrl-C (the running trials are cancelled).
"""

from __future__ import annotations

from typing import Annotated

import typer

from trainrun.cli.common import FileArgument, NamespaceOption, RunsDirOption, add_command, client_for

# The words ``trainrun get`` and ``describe`` take for sweeps before a name, as kubectl's.
SWEEP_KINDS = ("trs", "sweep", "sweeps", "trainingsweep", "trainingsweeps")


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    add_command(app, "sweep", sweep_command)


def sweep_command(
    context: typer.Context,
    file: FileArgument,
    local: Annotated[
        bool, typer.Option("--local", help="Run the trials as local runs from this process (no cluster).")
    ] = False,
    runs_dir: RunsDirOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Create a TrainingSweep (the operator runs its trials), or run it here with --local.

    Exit code with --local: 0 a best trial was found, 1 the sweep failed, 130 Ctrl-C.
    """
    from trainrun.client.documents import single_training_sweep
    from trainrun.spec import load_training_sweep
    from trainrun.spec.status import Phase
    from trainrun.sweep import SweepPlan

    document = single_training_sweep(file)
    load_training_sweep(document, local=local)  # a broken file is named before anything is started
    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    name = str((document.get("metadata") or {}).get("name"))
    if not local:
        client.create_sweep(document)
        print(f"trainingsweep.trainrun.dev/{name} created (trainrun get trs {name}; trainrun describe sweep {name})")
        return
    from trainrun.cli.sweepviews import describe_sweep
    from trainrun.cli.views import show

    told: set[tuple[str, str]] = set()

    def report(decided: SweepPlan) -> None:
        for event in decided.events:
            if (event.reason, event.message) not in told:
                told.add((event.reason, event.message))
                print(f"{event.reason}: {event.message}", flush=True)

    try:
        finished = client.run_sweep(document, on_plan=report)
    except KeyboardInterrupt:
        print(f"sweep {name} stopped: its running trials are cancelled")
        raise typer.Exit(130) from None
    show(describe_sweep(finished))
    phase = (finished.get("status") or {}).get("phase")
    raise typer.Exit(0 if phase == Phase.COMPLETED else 1)
