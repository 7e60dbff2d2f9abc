"""The operator's configuration: node pools that the platform team maps to scheduling rules.

Read by the renderer (pool -> nodeSelector, tolerations, affinity, GPU resource name) and by
validation (unknown pool, more GPUs than a pool's nodes have). The operator loads it from the
ConfigMap ``trainrun-operator-config`` (key ``config.yaml``); ``trainrun render --config FILE`` and the
local runner read the same YAML from a file. Pure: parsing and checks only.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from trainrun.spec.model import ApiModel, FreeFormObject, Toleration

CONFIG_MAP_NAME = "trainrun-operator-config"
CONFIG_MAP_KEY = "config.yaml"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/trainrun/operator:0.1.0"


class Pool(ApiModel):
    """A named group of nodes, e.g. a100 or t4, and how pods get there."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels of the pool.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations for the pool's taints.")
    affinity: FreeFormObject | None = Field(default=None, description="Pod affinity for the pool.")
    gpu_resource: str = Field(default=DEFAULT_GPU_RESOURCE, description="Extended resource name of the GPUs.")
    gpus_per_node: int | None = Field(
        default=None, ge=0, description="GPUs on each node; a replica asking for more is refused up front."
    )


class OperatorConfig(ApiModel):
    """Everything the platform team configures for the operator."""

    pools: dict[str, Pool] = Field(default_factory=dict, description="Node pools by name.")
    default_pool: str | None = Field(default=None, description="Pool of runs that name none.")
    operator_image: str = Field(
        default=DEFAULT_OPERATOR_IMAGE, description="Image of the uploader Job and the input/code staging init containers."
    )

    def pool_named(self, name: str | None) -> tuple[str | None, Pool | None]:
        """The pool a run lands on (its own, else the default) and its settings; (None, None) when none applies."""
        chosen = name or self.default_pool
        if chosen is None:
            return None, None
        return chosen, self.pools.get(chosen)


def parse_operator_config(data: dict[str, Any] | None) -> OperatorConfig:
    """Build an OperatorConfig from the YAML document's data (None or empty gives the defaults)."""
    return OperatorConfig.model_validate(data or {})
