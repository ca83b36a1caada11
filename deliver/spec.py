"""The pipeline an application repo declares in `deliver.yaml`, validated at the edge.

A malformed spec fails with the file, the field and what was expected, before anything runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from deliver.errors import SpecError
from deliver.planning.inputs import (
    refused_if,
    relative_path_problem,
    repository_problem,
    requirement_problem,
)

SPEC_FILE = "deliver.yaml"
Severity = Literal["critical", "high", "medium", "low", "unknown"]
SEVERITY_ORDER: tuple[Severity, ...] = ("critical", "high", "medium", "low", "unknown")
CHECK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


def _inside(value: str) -> str:
    return refused_if(relative_path_problem(value), value)


def _repository(value: str) -> str:
    return refused_if(repository_problem(value), value)


# A path (or glob) relative to the repository or the app folder, that cannot leave it.
PathInRepository = Annotated[str, AfterValidator(_inside)]
# What git may be pointed at: a local path, a URL, user@host:path; never an option.
RepositoryLocation = Annotated[str, AfterValidator(_repository)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckSpec(_Strict):
    """One check: a command run in the app's environment, from the app's folder."""

    name: Annotated[str, Field(description="Short kebab-case name shown in the UI.")]
    run: Annotated[list[str], Field(min_length=1, description="The command as an argument list.")]
    inputs: list[PathInRepository] = Field(
        default=["**/*.py", "pyproject.toml"],
        description="Glob patterns of the files the check reads; its cache key hashes them.",
    )
    retries: int = Field(
        default=0, ge=0, le=3, description="Retries for a check marked flaky; 0 otherwise."
    )
    timeout_s: int = Field(default=600, gt=0, le=3600, description="Seconds before it is killed.")

    @field_validator("name")
    @classmethod
    def _kebab(cls, value: str) -> str:
        if not CHECK_NAME.match(value):
            raise ValueError("a lowercase kebab-case name of at most 40 characters, like 'lint'")
        return value


class EnvironmentSpec(_Strict):
    """The job container the checks run in, and the app environment installed into it with uv:
    the repository's dependency files plus the tools."""

    image: str | None = Field(
        default=None,
        description="Image of the job container; default the Dockerfile's base image.",
    )
    requirements: list[PathInRepository] | None = Field(
        default=None,
        description="Requirement files to install; default every requirements*.txt of the app "
        "(ignored when the app has a uv.lock, which is installed frozen).",
    )
    extras: list[str] = Field(default=["test"], description="Optional-dependency groups to add.")
    groups: list[str] = Field(
        default_factory=list, description="Dependency groups of pyproject.toml to add."
    )
    tools: list[str] = Field(
        default=["ruff", "mypy", "bandit", "pip-audit", "pytest", "pytest-cov"],
        description="Requirement strings of the check tools, pinned as the team wishes.",
    )

    @field_validator("tools")
    @classmethod
    def _requirements_only(cls, tools: list[str]) -> list[str]:
        for tool in tools:
            refused_if(requirement_problem(tool), tool)
        return tools


class ImageSpec(_Strict):
    name: Annotated[str, Field(description="Repository name in the registry, like 'stock-api'.")]
    dockerfile: PathInRepository = Field(
        default="Dockerfile", description="Path relative to the context."
    )
    context: PathInRepository = Field(
        default=".", description="Build context relative to the app folder."
    )
    build_args: dict[str, str] = Field(default_factory=dict, description="Non-secret build args.")

    @field_validator("name")
    @classmethod
    def _image_name(cls, value: str) -> str:
        if not IMAGE_NAME.match(value):
            raise ValueError("a lowercase registry repository name like 'team/service'")
        return value


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def _env_names(env: dict[str, str]) -> dict[str, str]:
    for name in env:
        if not ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
    return env


# Env values may name a service's generated credentials: {services.postgres.password}.
TemplatedEnv = Annotated[dict[str, str], AfterValidator(_env_names)]


class ContainerSpec(_Strict):
    port: int = Field(ge=1, le=65535, description="Port the service listens on in the container.")
    health_path: str = Field(default="/health", pattern=r"^/", description="Health endpoint.")
    health_timeout_s: float = Field(default=30.0, gt=0, le=600)
    env: TemplatedEnv = Field(
        default_factory=dict,
        description="Env of the container test; it joins the run's services when there are any.",
    )


class ServiceSpec(_Strict):
    """A container the checks and the container test need, as GitHub Actions' `services:`."""

    image: str = Field(min_length=1, description="Image, like postgres:15 or redis:7.")
    env: TemplatedEnv = Field(
        default_factory=dict,
        description="Its env; {services.NAME.password} is a password generated for the run.",
    )
    health: list[str] = Field(
        default_factory=list,
        description="A command run inside it until it exits 0, like [pg_isready, -U, app].",
    )
    health_timeout_s: float = Field(default=60.0, gt=0, le=600)
    ports: list[int] = Field(
        default_factory=list,
        description="Container ports to publish on the worker's loopback (for debugging); "
        "the checks reach the service by its name on the run's network either way.",
    )

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        if any(not 1 <= port <= 65535 for port in ports):
            raise ValueError("ports are container ports between 1 and 65535")
        return ports


class SmokeCheck(_Strict):
    """An HTTP request a release makes after deploying, and what it must answer."""

    path: str = Field(pattern=r"^/")
    status: int = Field(default=200, ge=100, le=599)
    json_field: str | None = Field(default=None, description="A top-level field that must exist.")
    equals: str | int | float | bool | None = Field(default=None, description="Its value.")

    @model_validator(mode="after")
    def _equals_needs_field(self) -> SmokeCheck:
        if self.equals is not None and self.json_field is None:
            raise ValueError("'equals' needs 'json_field' to say which field to compare")
        return self


class ContainerOptionsSpec(_Strict):
    """What `docker run` gets beside the image on a deploy host."""

    memory: str | None = Field(
        default=None, pattern=r"^[1-9][0-9]*[kmg]?$", description="Memory limit, like 512m."
    )
    cpus: float | None = Field(default=None, gt=0, le=64, description="CPU limit, like 0.5.")
    read_only: bool = Field(default=False, description="A read-only root, with a tmpfs /tmp.")


class ReleaseSpec(_Strict):
    """What a release needs beside the container's port, health path and smoke checks: it is
    recorded with the image, so a release of a digest runs it as it was tested."""

    env: list[str] = Field(
        default_factory=list,
        description="Env names the service requires; a release fails before any host changes "
        "if its environment gives one no value.",
    )
    migrate: list[str] = Field(
        default_factory=list,
        description="The migration command, run once per release in a one-off container of "
        "the new image before any switch, like [alembic, upgrade, head].",
    )
    options: ContainerOptionsSpec = ContainerOptionsSpec()

    @field_validator("env")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return names


class ScanPolicy(_Strict):
    fail_on: list[Severity] = Field(
        default=["critical", "high"], description="Severities that fail the build."
    )
    fail_when_unreachable: bool = Field(
        default=True, description="An advisory service that cannot be reached fails the scan."
    )


class PipelineSpec(_Strict):
    service: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$", description="The service's name.")
    checks: list[CheckSpec] = Field(min_length=1)
    environment: EnvironmentSpec = EnvironmentSpec()
    image: ImageSpec
    container: ContainerSpec
    smoke: list[SmokeCheck] = Field(default_factory=list)
    release: ReleaseSpec = ReleaseSpec()
    scan: ScanPolicy = ScanPolicy()
    services: dict[str, ServiceSpec] = Field(default_factory=dict)
    env: TemplatedEnv = Field(
        default_factory=dict, description="Env of every check, e.g. DATABASE_URL."
    )

    @field_validator("services")
    @classmethod
    def _service_names(cls, services: dict[str, ServiceSpec]) -> dict[str, ServiceSpec]:
        for name in services:
            if not SERVICE_NAME.match(name):
                raise ValueError(f"{name!r}: a service is named in lowercase kebab-case")
        return services

    @model_validator(mode="after")
    def _templates_name_services(self) -> PipelineSpec:
        declared = set(self.services)
        envs = {"env": self.env, "container.env": self.container.env}
        envs.update({f"services.{n}.env": s.env for n, s in self.services.items()})
        for where, env in envs.items():
            for name, value in env.items():
                for service in template_services(value):
                    if service not in declared:
                        raise ValueError(
                            f"{where}.{name} names the service {service!r}, "
                            f"which services: does not declare"
                        )
        return self

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: list[CheckSpec]) -> list[CheckSpec]:
        names = [check.name for check in checks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"check names must be unique; repeated: {', '.join(duplicates)}")
        return checks


SERVICE_TEMPLATE = re.compile(r"\{services\.([a-z][a-z0-9-]*)\.(password|host)\}")


def template_services(value: str) -> set[str]:
    """The services an env value's templates name."""
    return {match[1] for match in SERVICE_TEMPLATE.finditer(value)}


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def parse_spec(text: str, *, source: str) -> PipelineSpec:
    """Parse and validate a spec; SpecError names `source`, the field and what is expected."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(source=source, field="(file)", problem=f"not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(source=source, field="(top level)", problem="expected a mapping of fields")
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        problem = first["msg"].removeprefix("Value error, ")
        raise SpecError(source=source, field=_field_path(first["loc"]), problem=problem) from exc


def load_spec(path: Path) -> PipelineSpec:
    if not path.is_file():
        raise SpecError(source=str(path), field="(file)", problem="no such file")
    return parse_spec(path.read_text(), source=str(path))
