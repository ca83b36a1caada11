"""What a release runs: the service's own runtime facts, and its env for one environment. Pure.

A service's runtime facts (port, health path, smoke checks, the env names it requires, its
migration command, container options) are declared in its `deliver.yaml` and travel with the
image as one label, so a release of a digest uses the facts that digest was tested with. The
environment's values (plain and secret) come from its `DeployTarget`; a service may override
them. `plan_env` joins the two, refusing a required name with no value before any host changes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from deliver.spec import PipelineSpec, SmokeCheck

RUNTIME_LABEL = "dev.deliver.runtime"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `block` or `block.field`: a Prefect Secret block, or one field of a JSON one.
SECRET_REFERENCE = re.compile(r"^(?P<block>[a-z0-9][a-z0-9-]*)(?:\.(?P<field>[A-Za-z0-9_-]+))?$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ContainerOptions:
    """What `docker run` gets beside the image: limits, and a read-only root."""

    memory: str | None = None
    cpus: float | None = None
    read_only: bool = False

    def arguments(self) -> list[str]:
        args = ["--memory", self.memory] if self.memory else []
        args += ["--cpus", str(self.cpus)] if self.cpus else []
        return args + (["--read-only", "--tmpfs", "/tmp"] if self.read_only else [])  # noqa: S108 (a tmpfs inside the container)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeFacts:
    """A service as every release of one image runs and checks it."""

    service: str
    port: int
    health_path: str = "/health"
    health_timeout_s: float = 30.0
    smoke: tuple[SmokeCheck, ...] = ()
    required_env: tuple[str, ...] = ()
    migrate: tuple[str, ...] = ()
    options: ContainerOptions = dataclasses.field(default_factory=ContainerOptions)

    def to_label(self) -> str:
        return json.dumps(
            {
                "service": self.service,
                "port": self.port,
                "health_path": self.health_path,
                "health_timeout_s": self.health_timeout_s,
                "smoke": [check.model_dump(exclude_none=True) for check in self.smoke],
                "required_env": list(self.required_env),
                "migrate": list(self.migrate),
                "options": dataclasses.asdict(self.options),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_label(cls, text: str) -> RuntimeFacts:
        """The facts a label holds; ValueError says what is wrong with it."""
        try:
            data: dict[str, Any] = json.loads(text)
            options = data.get("options") or {}
            return cls(
                service=str(data["service"]),
                port=int(data["port"]),
                health_path=str(data.get("health_path", "/health")),
                health_timeout_s=float(data.get("health_timeout_s", 30.0)),
                smoke=tuple(SmokeCheck.model_validate(c) for c in data.get("smoke", [])),
                required_env=tuple(str(name) for name in data.get("required_env", [])),
                migrate=tuple(str(arg) for arg in data.get("migrate", [])),
                options=ContainerOptions(
                    memory=options.get("memory"),
                    cpus=options.get("cpus"),
                    read_only=bool(options.get("read_only", False)),
                ),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"the {RUNTIME_LABEL} label is malformed: {exc}") from None


def runtime_facts(spec: PipelineSpec) -> RuntimeFacts:
    """The spec's runtime section with the container test's port and health path."""
    release = spec.release
    return RuntimeFacts(
        service=spec.service,
        port=spec.container.port,
        health_path=spec.container.health_path,
        health_timeout_s=spec.container.health_timeout_s,
        smoke=tuple(spec.smoke),
        required_env=tuple(release.env),
        migrate=tuple(release.migrate),
        options=ContainerOptions(
            memory=release.options.memory,
            cpus=release.options.cpus,
            read_only=release.options.read_only,
        ),
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnvPlan:
    """Where each env value of a release comes from: plain values, and secret references."""

    plain: Mapping[str, str]
    secrets: Mapping[str, str]  # NAME -> `block` or `block.field`

    @property
    def names(self) -> set[str]:
        return set(self.plain) | set(self.secrets)


class MissingEnv(ValueError):
    """Names a service requires that its environment gives no value."""

    def __init__(self, *, service: str, environment: str, names: list[str]) -> None:
        self.names = names
        super().__init__(
            f"{service} requires {', '.join(names)} in {environment}, which sets no value for "
            f"{'it' if len(names) == 1 else 'them'}: add {'it' if len(names) == 1 else 'them'} "
            f"to the DeployTarget's env or secrets (or under services.{service}). "
            "Nothing was changed on any host."
        )


def plan_env(
    facts: RuntimeFacts,
    environment: str,
    *,
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    service_env: Mapping[str, str],
    service_secrets: Mapping[str, str],
) -> EnvPlan:
    """The environment's values, the service's overriding them (a plain value over a secret of
    the same name and back); every name the service requires must have one."""
    plain = {k: v for k, v in env.items() if k not in service_secrets} | dict(service_env)
    secret = {k: v for k, v in secrets.items() if k not in service_env} | dict(service_secrets)
    missing = sorted(set(facts.required_env) - set(plain) - set(secret))
    if missing:
        raise MissingEnv(service=facts.service, environment=environment, names=missing)
    return EnvPlan(plain=plain, secrets=secret)


def secret_reference_problem(reference: str) -> str | None:
    if SECRET_REFERENCE.match(reference):
        return None
    return f"{reference!r} is not a Secret block name, or block.field for one of a JSON secret"


@dataclasses.dataclass(frozen=True, slots=True)
class EnvFile:
    """A release's env, as `docker run --env-file` reads it. Its repr shows names, never values:
    it travels through task parameters and logs."""

    values: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        return f"EnvFile({', '.join(sorted(self.values))})"

    def render(self) -> bytes:
        """One NAME=value a line; docker reads the value literally, so no line break in it."""
        for name, value in self.values.items():
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if "\n" in value or "\r" in value:
                raise ValueError(f"the value of {name} holds a line break, which an env file can't")
        return "".join(f"{name}={value}\n" for name, value in sorted(self.values.items())).encode()


def accessory_container(environment: str, name: str) -> str:
    return f"deliver-{environment}-{name}"


def accessory_volume(environment: str, name: str) -> str:
    return f"deliver-{environment}-{name}-data"


def environment_network(environment: str) -> str:
    """The Docker network an environment's slots, migrations and accessories share."""
    return f"deliver-{environment}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AccessoryRun:
    """An accessory as a host boots it."""

    name: str
    image: str
    env: EnvFile
    data_path: str | None = None
    publish: int | None = None
    container_port: int | None = None
    health: tuple[str, ...] = ()
    health_timeout_s: float = 60.0

    def run_arguments(self, environment: str, network: str) -> list[str]:
        """`docker run` arguments before the image (the env file is added by the host)."""
        args = ["--detach", "--name", accessory_container(environment, self.name)]
        args += ["--restart", "unless-stopped", "--network", network, "--network-alias", self.name]
        args += ["--label", f"dev.deliver.accessory={self.name}"]
        args += ["--label", f"dev.deliver.environment={environment}"]
        if self.data_path:
            args += ["--volume", f"{accessory_volume(environment, self.name)}:{self.data_path}"]
        if self.publish and self.container_port:
            args += ["--publish", f"127.0.0.1:{self.publish}:{self.container_port}"]
        return args
