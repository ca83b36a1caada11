"""The block types every credential of a delivery lives in.

Our own types where nothing fits (`DeployTarget`, `ApprovalPolicy`); Prefect's and its
collections' where they do: registry credentials (prefect-docker) and plain secrets such as a
webhook secret (`prefect.blocks.system.Secret`).
"""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from prefect_docker.credentials import DockerRegistryCredentials

from blocks.approval_policy import ApprovalPolicy
from blocks.deploy_target import DeployTarget

BLOCK_TYPES: tuple[type[Block], ...] = (
    DeployTarget,
    ApprovalPolicy,
    DockerRegistryCredentials,
    Secret,
)
