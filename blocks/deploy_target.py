"""`DeployTarget`: one environment's deploy host, or its fleet of hosts, with checks and keys."""

from __future__ import annotations

import re
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from deliver.planning.release import ENVIRONMENT_NAME
from deliver.planning.runtime import ENV_NAME, environment_network, secret_reference_problem
from deliver.spec import SmokeCheck

SlotPorts = dict[Literal["blue", "green"], int]
# Fields a fleet names per host; a single-host target sets them at the top level.
PER_HOST = ("host", "slot_ports", "state_dir", "nginx_upstream_file")
KEBAB = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class FleetHost(BaseModel):
    """One host of a fleet, with its own nginx in front of its two slots."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$", description="Short name, like web-2.")
    host: str = Field(description="SSH host name or address.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    host_keys: list[str] = Field(
        default_factory=list, description="Pinned public host keys; default: the target's."
    )
    slot_ports: SlotPorts = Field(description="Host port of each slot, bound on its loopback.")
    service_host: str = Field(default="127.0.0.1", description="Address the slots are probed at.")
    state_dir: str = Field(description="Folder on the host for its release state and history.")
    nginx_upstream_file: str = Field(description="The host's nginx upstream file.")
    nginx_command: list[str] | None = Field(
        default=None, description="The host's nginx with its arguments; default: the target's."
    )
    front_url: str = Field(description="URL of the host's own nginx, checked after its switch.")


EnvValues = dict[str, str]
# NAME -> a Prefect Secret block's name, or `block.field` for a field of a JSON secret.
SecretReferences = dict[str, str]


def _env_names(env: dict[str, str]) -> dict[str, str]:
    for name in env:
        if not ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
    return env


def _secret_references(secrets: dict[str, str]) -> dict[str, str]:
    for reference in _env_names(secrets).values():
        if problem := secret_reference_problem(reference):
            raise ValueError(problem)
    return secrets


class ServicePlacement(BaseModel):
    """Where one more service lives on the target's host: its own slots, state and front."""

    model_config = ConfigDict(extra="forbid")

    slot_ports: SlotPorts = Field(description="Host port of each of its slots, on loopback.")
    state_dir: str | None = Field(
        default=None, description="Its release state and history; default <state_dir>/<name>."
    )
    nginx_upstream_file: str | None = Field(
        default=None, description="Its nginx upstream file, for blue-green behind nginx."
    )
    front_url: str | None = Field(default=None, description="URL of its nginx.")
    nginx_command: list[str] | None = Field(
        default=None, description="Its nginx with its arguments; default: the target's."
    )
    env: EnvValues = Field(default_factory=dict, description="Values over the target's env.")
    secrets: SecretReferences = Field(
        default_factory=dict, description="Secret references over the target's secrets."
    )

    _names = field_validator("env")(lambda cls, v: _env_names(v))
    _refs = field_validator("secrets")(lambda cls, v: _secret_references(v))


class Accessory(BaseModel):
    """A container the environment's services use (a database, a cache): booted when absent,
    never replaced or restarted by a release; its data lives in a named volume."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, description="Image, like postgres:15.")
    env: EnvValues = Field(default_factory=dict, description="Plain env values.")
    secrets: SecretReferences = Field(default_factory=dict, description="Secret env values.")
    data_path: str | None = Field(
        default=None,
        pattern=r"^/",
        description="Where its data lives inside; a named volume is mounted there.",
    )
    publish: int | None = Field(
        default=None, ge=1, le=65535, description="A host loopback port to publish it on."
    )
    container_port: int | None = Field(
        default=None, ge=1, le=65535, description="The container port `publish` maps to."
    )
    health: list[str] = Field(
        default_factory=list, description="A command run inside it until it exits 0."
    )
    health_timeout_s: float = Field(default=60.0, gt=0, le=600)
    used_by: list[str] = Field(
        default_factory=list,
        description="The services whose releases boot it when absent; default every service.",
    )

    _names = field_validator("env")(lambda cls, v: _env_names(v))
    _refs = field_validator("secrets")(lambda cls, v: _secret_references(v))

    def used_by_service(self, service: str) -> bool:
        return not self.used_by or service in self.used_by

    @model_validator(mode="after")
    def _publish_needs_port(self) -> Accessory:
        if (self.publish is None) != (self.container_port is None):
            raise ValueError("publish and container_port go together")
        return self


class DeployTarget(Block):
    """An environment's deploy host, or fleet of hosts, reached over SSH with pinned host keys."""

    _block_type_name = "Deploy Target"
    _block_type_slug = "deploy-target"
    _description = "Where and how the release flow deploys one environment of a service."
    model_config = ConfigDict(hide_input_in_errors=True)  # errors never show the key

    environment: str = Field(
        pattern=ENVIRONMENT_NAME.pattern,
        description="The environment's name; releases to production wait for an approval.",
    )
    host: str | None = Field(
        default=None, description="SSH host name or address of the deploy host (not for a fleet)."
    )
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    user: str = Field(description="SSH user that runs docker on the host(s).")
    private_key: SecretStr = Field(description="The deploy key, OpenSSH private key format.")
    host_keys: list[str] = Field(
        default_factory=list, description="Pinned public host keys, like 'ssh-ed25519 AAAA...'."
    )
    app_name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$", description="Container name prefix.")
    container_port: int = Field(default=8000, description="Port the service listens on inside.")
    slot_ports: SlotPorts | None = Field(
        default=None, description="Host port of each slot, bound on the host's loopback."
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
    state_dir: str | None = Field(
        default=None, description="Folder on the host for the release state and history."
    )
    nginx_upstream_file: str | None = Field(
        default=None, description="The upstream file a release rewrites (blue-green behind nginx)."
    )
    nginx_command: list[str] | None = Field(
        default=None, description="nginx with its -p/-c arguments; -t and -s reload are added."
    )
    front_url: str | None = Field(
        default=None, description="URL of the front (a fleet's load balancer), for smoke checks."
    )
    drain_s: float = Field(default=3.0, ge=0, description="Old slot keeps serving this long.")
    staging_target: str | None = Field(
        default=None,
        description="For production: the DeployTarget whose live image a release must match, "
        "checked before the approval wait and again after it.",
    )
    hosts: list[FleetHost] = Field(
        default_factory=list,
        description="A fleet: its hosts, released in this order, each switched blue-green.",
    )
    max_unavailable: int = Field(
        default=1, ge=1, description="A fleet's hosts switched at once (one batch)."
    )
    env: EnvValues = Field(default_factory=dict, description="Env values of every service here.")
    secrets: SecretReferences = Field(
        default_factory=dict,
        description="Secret env values: NAME to a Secret block, or block.field of a JSON one.",
    )
    services: dict[str, ServicePlacement] = Field(
        default_factory=dict,
        description="More services on this host, beside app_name: their slots and overrides.",
    )
    accessories: dict[str, Accessory] = Field(
        default_factory=dict,
        description="Containers the services use, on the (first) host, reachable by name on "
        "the environment's network.",
    )
    network: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$",
        description="Docker network of the slots, migrations and accessories; default "
        "deliver-<environment> when there are accessories.",
    )

    _env_names = field_validator("env")(lambda cls, v: _env_names(v))
    _secret_refs = field_validator("secrets")(lambda cls, v: _secret_references(v))

    @field_validator("services", "accessories")
    @classmethod
    def _kebab_names(cls, value: dict[str, object]) -> dict[str, object]:
        for name in value:
            if not KEBAB.match(name):
                raise ValueError(f"{name!r}: name it in lowercase kebab-case")
        return value

    @property
    def network_name(self) -> str | None:
        if self.network is None and self.accessories:
            return environment_network(self.environment)
        return self.network

    @model_validator(mode="after")
    def _one_host_or_a_fleet(self) -> DeployTarget:
        if self.hosts and self.services:
            raise ValueError(
                "services: placements are for a single-host target; a fleet serves its app_name"
            )
        if self.hosts:
            given = [name for name in PER_HOST if getattr(self, name) is not None]
            if given:
                raise ValueError(f"a fleet names {', '.join(given)} per host, under hosts")
            names = [h.name for h in self.hosts]
            if len(set(names)) != len(names):
                raise ValueError("each host of a fleet needs its own name")
            if not self.host_keys and not all(h.host_keys for h in self.hosts):
                raise ValueError("host_keys: pin each host's key, here or on every host")
            if self.nginx_command is None and not all(h.nginx_command for h in self.hosts):
                raise ValueError("nginx_command: set it here or on every host")
            return self
        required = ("host", "slot_ports", "state_dir")
        missing = [name for name in required if getattr(self, name) is None]
        missing += [] if self.host_keys else ["host_keys"]
        if missing:
            raise ValueError(f"a single-host target needs {', '.join(missing)} (or hosts: a fleet)")
        return self
