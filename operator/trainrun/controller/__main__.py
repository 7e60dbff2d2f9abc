"""``trainrun-operator`` (also ``python -m trainrun.controller``): the operator process.

What the Deployment in ``manifests/`` runs, and what the integration tests start. Parses the flags,
then runs kopf with the handlers of ``trainrun.controller.handlers``: all namespaces unless
``--namespace`` names some, with leader election on a Lease unless ``--no-leader-election``.
Environment: TRAINRUN_OPERATOR_NAMESPACE (where the Lease and the config ConfigMap live),
POD_NAME (this replica's identity), TRAINRUN_METRICS_PORT (/metrics, /healthz, /readyz).
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="trainrun-operator", description="The TrainingRun operator: TrainingRuns -> Kubeflow PyTorchJobs."
    )
    parser.add_argument(
        "--namespace", action="append", default=[], metavar="NS", help="watch this namespace (repeat; default: all)"
    )
    parser.add_argument(
        "--no-leader-election", dest="leader_election", action="store_false",
        help="act at once, without holding the Lease (one replica only)",
    )
    parser.add_argument("--verbose", action="store_true", help="log what every reconcile does")
    arguments = parser.parse_args(argv)
    # kopf imports the `kubernetes` package only to recognise its model objects, which the operator never
    # passes it; that import is a third of the process's memory (measured: 77 -> 53 MB at start).
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

    import kopf

    from trainrun.base.redact import redact_logs
    from trainrun.controller import handlers
    from trainrun.kube.aioclient import use_small_tls_read_buffers

    handlers.options = handlers.Options(namespaces=arguments.namespace, leader_election=arguments.leader_election)
    kopf.configure(verbose=arguments.verbose)
    if not arguments.verbose:  # one "Handler 'on_sweep_event' succeeded" line per TrainingSweep event is noise
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    redact_logs()  # a URL with credentials in it (an endpoint, a signed URL) is never logged as it is
    use_small_tls_read_buffers()
    # asyncio's own loop, not uvloop's: with uvloop an API server outage crashed kopf's watcher on reconnect
    # (aiohttp's happy eyeballs: "File descriptor N is used by transport"; the outage test and the chaos soak).
    kopf.run(standalone=True, clusterwide=not arguments.namespace, namespaces=arguments.namespace)


if __name__ == "__main__":
    main()
