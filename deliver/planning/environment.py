"""What the app environment is installed from, decided from the repository's files alone. Pure.

The environment is what the repository has: a `uv.lock` (installed frozen), else its
`requirements*.txt` and the `[project]` dependencies of its `pyproject.toml`, with the extras
and dependency groups the spec names, plus the check tools. Every line that reaches uv is a
requirement or a nested file inside the repository, never an installer option.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import shlex
import tomllib
from collections.abc import Mapping

from deliver.planning.inputs import relative_path_problem, requirement_problem
from deliver.spec import EnvironmentSpec

PYPROJECT = "pyproject.toml"
UV_LOCK = "uv.lock"
DEFAULT_REQUIREMENTS = "requirements*.txt"
RUNTIME_REQUIREMENTS = "requirements.txt"  # the app's own; requirements-*.txt are its tooling
LOCKED = "locked-requirements.txt"  # uv.lock exported, inside the environment
# How environments are built (uv, bytecode compiled): a change here must not reuse old ones.
BUILD_RECIPE = "uv-venv-compiled-1"
NESTING_OPTIONS = ("-r", "--requirement", "-c", "--constraint")


class EnvironmentProblem(ValueError):
    """A dependency file uv must not be given as it is."""


def logical_lines(text: str) -> list[str]:
    """A requirements file's lines with comments dropped and `\\` continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            lines.append(joined)
    if pending.strip():
        lines.append(pending.strip())
    return lines


def without_hashes(line: str) -> str:
    """A requirement line without its `--hash=` pins (uv checks them from the file itself)."""
    return " ".join(word for word in line.split() if not word.startswith("--hash="))


def nested_files(name: str, text: str) -> list[str]:
    """The files a requirements file includes with -r or -c, relative to the app folder.

    Raises EnvironmentProblem for an installer option or a path outside the repository."""
    folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
    nested: list[str] = []
    for number, line in enumerate(logical_lines(text), start=1):
        where = f"{name} line {number}"
        words = line.split()
        option = words[0].split("=", 1)[0]
        if option in NESTING_OPTIONS:
            target = words[0].split("=", 1)[1] if "=" in words[0] else " ".join(words[1:2])
            if problem := relative_path_problem(target):
                raise EnvironmentProblem(f"{where}: {problem}")
            nested.append(folder + target)
            continue
        if problem := requirement_problem(without_hashes(line)):
            raise EnvironmentProblem(
                f"{where}: {problem}; only requirements, -r FILE and -c FILE are read"
            )
    return nested


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InstallPlan:
    lock: bool  # install uv.lock frozen (with the spec's extras and groups)
    requirement_files: tuple[str, ...]  # relative to the app folder, in order
    requirements: tuple[str, ...]  # pyproject's dependencies, extras, groups and the tools
    runtime: tuple[str, ...]  # what the app needs at run time: its audit's roots
    extras: tuple[str, ...]  # the spec's extras the pyproject defines
    groups: tuple[str, ...]  # the spec's dependency groups the pyproject defines
    # What the environment depends on, name -> text: every file read, but of pyproject.toml
    # only its dependency tables (a tool's settings changing rebuilds nothing).
    sources: Mapping[str, str]


def _pyproject_requirements(
    pyproject: Mapping[str, object], spec: EnvironmentSpec
) -> tuple[list[str], list[str]]:
    """(runtime dependencies, extras' and groups' requirements) of a pyproject table."""
    project = pyproject.get("project", {})
    if not isinstance(project, dict):
        return [], []
    runtime = [str(r) for r in project.get("dependencies", [])]
    optional = project.get("optional-dependencies", {})
    extra = [str(r) for name in spec.extras for r in optional.get(name, [])]
    groups = pyproject.get("dependency-groups", {})
    if isinstance(groups, dict):
        for group in spec.groups:
            extra.extend(r for r in groups.get(group, []) if isinstance(r, str))
    return runtime, extra


def _dependency_tables(pyproject: Mapping[str, object]) -> dict[str, str]:
    if not pyproject:
        return {}
    project = pyproject.get("project", {})
    tables = {
        "dependencies": project.get("dependencies") if isinstance(project, dict) else None,
        "optional-dependencies": (
            project.get("optional-dependencies") if isinstance(project, dict) else None
        ),
        "dependency-groups": pyproject.get("dependency-groups"),
    }
    return {PYPROJECT: json.dumps(tables, sort_keys=True)}


def install_plan(files: Mapping[str, str], spec: EnvironmentSpec) -> InstallPlan:
    """What to install, from the app folder's files (name -> text: its pyproject.toml, uv.lock
    and requirement files, nested ones included). Raises EnvironmentProblem naming the file."""
    pyproject: dict[str, object] = {}
    if PYPROJECT in files:
        try:
            pyproject = tomllib.loads(files[PYPROJECT])
        except tomllib.TOMLDecodeError as exc:
            raise EnvironmentProblem(f"{PYPROJECT} is not valid TOML: {exc}") from exc
    runtime, extra = _pyproject_requirements(pyproject, spec)
    project = pyproject.get("project", {})
    optional = project.get("optional-dependencies", {}) if isinstance(project, dict) else {}
    groups = pyproject.get("dependency-groups", {})
    for requirement in [*runtime, *extra]:
        if problem := requirement_problem(requirement):
            raise EnvironmentProblem(f"{PYPROJECT} dependencies: {problem}")
    lock = UV_LOCK in files
    requirement_files: list[str] = []
    if not lock:
        requirement_files = list(requirement_file_names(files, spec))
        runtime_file = files.get(RUNTIME_REQUIREMENTS, "")
        runtime += [
            without_hashes(line)
            for line in logical_lines(runtime_file)
            if not line.startswith("-") and RUNTIME_REQUIREMENTS in requirement_files
        ]
    return InstallPlan(
        lock=lock,
        requirement_files=tuple(requirement_files),
        requirements=tuple(dict.fromkeys([*([] if lock else [*runtime, *extra]), *spec.tools])),
        runtime=tuple(runtime),
        extras=tuple(e for e in spec.extras if isinstance(optional, dict) and e in optional),
        groups=tuple(g for g in spec.groups if isinstance(groups, dict) and g in groups),
        sources={**files, **_dependency_tables(pyproject)},
    )


def requirement_file_names(files: Mapping[str, str], spec: EnvironmentSpec) -> list[str]:
    """The requirement files to install: the spec's, or every top-level requirements*.txt."""
    if spec.requirements is not None:
        return list(spec.requirements)
    return sorted(n for n in files if "/" not in n and fnmatch.fnmatch(n, DEFAULT_REQUIREMENTS))


def environment_digest(plan: InstallPlan, image_id: str) -> str:
    """Of everything the environment is built from: a cached one is reused while it matches."""
    material = json.dumps(
        {
            "recipe": BUILD_RECIPE,
            "image": image_id,
            "files": sorted(plan.sources.items()),
            "lock": plan.lock,
            "requirement_files": plan.requirement_files,
            "requirements": sorted(plan.requirements),
            "extras": sorted(plan.extras),
            "groups": sorted(plan.groups),
        }
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def install_script(plan: InstallPlan, *, uv: str, env: str, app: str) -> str:
    """The `sh -c` script that builds the environment at `env` inside the job image."""
    python = f"{env}/bin/python"
    steps = [[uv, "venv", "--quiet", "--python", "python3", env]]
    if plan.lock:
        export = [uv, "export", "--frozen", "--no-emit-project", "--no-hashes", "--quiet"]
        export += [f"--extra={extra}" for extra in plan.extras]
        export += [f"--group={group}" for group in plan.groups]
        steps.append([*export, "--directory", app, "--output-file", f"{env}/{LOCKED}"])
    install = [uv, "pip", "install", "--quiet", "--python", python]
    for name in plan.requirement_files:
        install += ["--requirement", f"{app}/{name}"]
    if plan.lock:
        install += ["--requirement", f"{env}/{LOCKED}"]
    if plan.requirements:
        install += ["--", *plan.requirements]
    if plan.lock or plan.requirement_files or plan.requirements:
        steps.append(install)
    return "set -e\n" + "\n".join(shlex.join(step) for step in steps)
