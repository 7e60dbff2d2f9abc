"""The Kubernetes adapter: the only package that imports a Kubernetes client.

Used by the operator (``trainrun.controller``) and the cluster backend of ``trainrun.Client``.
"""

from trainrun.kube.api import DEFAULT_FIELD_MANAGER, KindNotServed, KubeApi, KubeError, load_api_client

__all__ = ["DEFAULT_FIELD_MANAGER", "KindNotServed", "KubeApi", "KubeError", "load_api_client"]
