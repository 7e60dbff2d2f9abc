"""The URL paths the operator's API client (``trainrun.kube.aioclient.Resource.path``) builds."""

from __future__ import annotations

import pytest
from trainrun.kube.aioclient import PODS, SECRETS, Resource

TRAINING_RUNS = Resource("trainrun.dev", "v1alpha1", "trainingruns")


@pytest.mark.parametrize(
    ("resource", "arguments", "path"),
    [
        (PODS, {}, "/api/v1/pods"),
        (PODS, {"namespace": "team-a"}, "/api/v1/namespaces/team-a/pods"),
        (SECRETS, {"namespace": "team-a", "name": "creds"}, "/api/v1/namespaces/team-a/secrets/creds"),
        (TRAINING_RUNS, {"namespace": "a", "name": "r", "subresource": "status"}, "/apis/trainrun.dev/v1alpha1/namespaces/a/trainingruns/r/status"),
        # A name that is not a valid object name stays one path segment: never another resource's address.
        (SECRETS, {"namespace": "team-a", "name": "18/other"}, "/api/v1/namespaces/team-a/secrets/18%2Fother"),
        (SECRETS, {"namespace": "a/b", "name": "x"}, "/api/v1/namespaces/a%2Fb/secrets/x"),
    ],
)
def test_paths(resource: Resource, arguments: dict[str, str], path: str) -> None:
    assert resource.path(**arguments) == path
