"""`DeployTarget`: one environment's deploy host, its slots, checks and credentials."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr

from deliver.spec import SmokeCheck


class DeployTarget(Block):
    """An environment's deploy host, reached over SSH with a pinned host key."""

    _block_type_name = "Deploy Target"
    _block_type_slug = "deploy-target"
    _description = "Where and how the release flow deploys one environment of a service."
    model_config = ConfigDict(hide_input_in_errors=True)  # errors never show the key

    environment: Literal["staging", "production"] = Field(description="The environment's name.")
    host: str = Field(description="SSH host name or address of the deploy host.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    user: str = Field(description="SSH user that runs docker on the host.")
    private_key: SecretStr = Field(description="The deploy key, OpenSSH private key format.")
    host_keys: list[str] = Field(
        min_length=1, description="Pinned public host keys, like 'ssh-ed25519 AAAA...'."
    )
    app_name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$", description="Container name prefix.")
    container_port: int = Field(default=8000, description="Port the service listens on inside.")
    slot_ports: dict[Literal["blue", "green"], int] = Field(
        description="Host port of each slot, bound on the host's loopback."
    )
    service_host: str = Field(
        default="127.0.0.1", description="Address the orchestrator probes the slots at."
    )
    health_path: str = Field(default="/health", pattern=r"^/", description="Health endpoint.")
    health_timeout_s: float = Field(default=30.0, gt=0, description="Deadline for health.")
    smoke_checks: list[SmokeCheck] = Field(default_factory=list, description="After deploying.")
    keep_versions: int = Field(default=3, ge=1, le=20, description="Images kept for rollback.")
    registry_block: str = Field(
        default="sandbox-registry", description="DockerRegistryCredentials block to pull with."
    )
    state_dir: str = Field(description="Folder on the host for the release state and history.")
    nginx_upstream_file: str | None = Field(
        default=None, description="The upstream file a release rewrites (blue-green behind nginx)."
    )
    nginx_command: list[str] | None = Field(
        default=None, description="nginx with its -p/-c arguments; -t and -s reload are added."
    )
    front_url: str | None = Field(default=None, description="URL of the front, for smoke checks.")
    drain_s: float = Field(default=3.0, ge=0, description="Old slot keeps serving this long.")
