"""trainrun: run PyTorch training as Kubeflow PyTorchJobs on GPU node pools, or locally.

The package is a small pure core (``spec`` -> ``render`` -> ``status``, ``metrics``) with thin
adapters around it (``kube``, ``storage``, ``controller``, ``local``, ``client``, ``cli``).
Notebook users import :class:`trainrun.Client`; the CLI ``trainrun`` sits on the same client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from trainrun.client import Client


def __getattr__(name: str) -> Any:
    # The client pulls in the Kubernetes client and obstore; import it only when asked for, so
    # that ``import trainrun.spec`` stays light for the operator's pure core and for validation.
    if name == "Client":
        from trainrun.client import Client

        return Client
    raise AttributeError(name)


__all__ = ["Client", "__version__"]
