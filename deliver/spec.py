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
    """The app's own environment for its checks: its declared dependencies plus the tools."""

    extras: list[str] = Field(default=["test"], description="Optional-dependency groups to add.")
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


class ContainerSpec(_Strict):
    port: int = Field(ge=1, le=65535, description="Port the service listens on in the container.")
    health_path: str = Field(default="/health", pattern=r"^/", description="Health endpoint.")
    health_timeout_s: float = Field(default=30.0, gt=0, le=600)


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
    scan: ScanPolicy = ScanPolicy()

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: list[CheckSpec]) -> list[CheckSpec]:
        names = [check.name for check in checks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"check names must be unique; repeated: {', '.join(duplicates)}")
        return checks


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
