"""The application's own environment for its checks: a venv reused while its inputs are the same."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import shutil
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger, task

from deliver import commands
from deliver.commands import run_streamed
from deliver.errors import EnvironmentFailed
from deliver.planning.inputs import requirement_problem
from deliver.spec import EnvironmentSpec

# Run with the environment's own python: the pinned closure of the app's runtime dependencies.
_RUNTIME_CLOSURE = """
import json, re, sys
from importlib import metadata
wanted = [re.split(r"[ ;<>=!~\\[]", r, maxsplit=1)[0] for r in json.loads(sys.argv[1])]
seen = {}
while wanted:
    name = wanted.pop()
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        continue
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    seen[key] = dist.version
    for req in dist.requires or []:
        if "extra ==" not in req:
            wanted.append(re.split(r"[ ;<>=!~\\[(]", req, maxsplit=1)[0])
print("\\n".join(f"{k}=={v}" for k, v in sorted(seen.items())))
"""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AppEnvironment:
    path: Path
    digest: str  # of what was asked for: dependencies, extras, tools, python
    frozen_digest: str  # of what was installed (pip freeze): the tools' actual versions
    runtime_requirements: Path  # pinned closure of the app's runtime dependencies

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"


def declared_dependencies(app_dir: Path, spec: EnvironmentSpec) -> tuple[list[str], list[str]]:
    """(runtime, extras) requirement strings from the app's pyproject.toml."""
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        return [], []
    project = tomllib.loads(pyproject.read_text()).get("project", {})
    runtime = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    extras = [req for extra in spec.extras for req in optional.get(extra, [])]
    for requirement in [*runtime, *extras]:
        if problem := requirement_problem(str(requirement)):
            raise _fail(app_dir, f"pyproject.toml dependencies: {problem}")
    return runtime, extras


def environment_digest(app_dir: Path, spec: EnvironmentSpec) -> str:
    runtime, extras = declared_dependencies(app_dir, spec)
    python = ".".join(map(str, sys.version_info[:3]))
    material = json.dumps([sorted(runtime), sorted(extras), sorted(spec.tools), python])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _fail(app_dir: Path, detail: str) -> EnvironmentFailed:
    return EnvironmentFailed(app_dir=str(app_dir), detail=detail)


@task(name="prepare_app_environment")
def prepare_app_environment(
    app_dir: Path, spec: EnvironmentSpec, cache_dir: Path
) -> AppEnvironment:
    """A venv with the app's dependencies and the check tools, built once per distinct digest."""
    logger = get_run_logger()
    digest = environment_digest(app_dir, spec)
    path = cache_dir / "envs" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f"{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / ".ready").exists():
            logger.info("Reusing the app environment %s (inputs unchanged)", digest)
        else:
            _build(path, app_dir, spec, logger.info)
    return AppEnvironment(
        path=path,
        digest=digest,
        frozen_digest=(path / ".frozen-digest").read_text().strip(),
        runtime_requirements=path / "runtime-requirements.txt",
    )


def _build(path: Path, app_dir: Path, spec: EnvironmentSpec, log: Callable[[str], None]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    runtime, extras = declared_dependencies(app_dir, spec)
    log(f"Building the app environment at {path}")
    created = run_streamed([sys.executable, "-m", "venv", str(path)], cwd=app_dir, on_line=log)
    if not created.ok:
        raise _fail(app_dir, f"python -m venv failed:\n{created.tail()}")
    python = str(path / "bin" / "python")
    requirements = [*runtime, *extras, *spec.tools]
    if requirements:
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        installed = run_streamed(
            [*pip, "--", *requirements], cwd=app_dir, on_line=log, timeout_s=900
        )
        if not installed.ok:
            raise _fail(app_dir, f"pip install failed:\n{installed.tail()}")
    freeze = commands.run([python, "-m", "pip", "freeze", "--all"], timeout_s=120)
    if not freeze.ok:
        raise _fail(app_dir, f"pip freeze failed:\n{freeze.tail()}")
    frozen = hashlib.sha256(freeze.stdout.encode()).hexdigest()[:32]
    closure = commands.run([python, "-c", _RUNTIME_CLOSURE, json.dumps(runtime)], timeout_s=120)
    if not closure.ok:
        raise _fail(app_dir, f"reading the runtime dependencies failed:\n{closure.tail()}")
    (path / "runtime-requirements.txt").write_text(closure.stdout.strip() + "\n")
    (path / ".frozen-digest").write_text(frozen + "\n")
    (path / ".ready").write_text("")


@task(name="fresh_app_environment")
def fresh_app_environment(app_dir: Path, spec: EnvironmentSpec, path: Path) -> AppEnvironment:
    """A new venv at `path` with the newest versions the app's requirements allow; nothing
    reused. What it resolved to is in `installed_versions(...)`."""
    logger = get_run_logger()
    _build(path, app_dir, spec, logger.info)
    return AppEnvironment(
        path=path,
        digest=environment_digest(app_dir, spec),
        frozen_digest=(path / ".frozen-digest").read_text().strip(),
        runtime_requirements=path / "runtime-requirements.txt",
    )


def installed_versions(environment: AppEnvironment) -> dict[str, str]:
    """name -> version of every distribution in the environment."""
    listed = commands.run(
        [str(environment.bin_dir / "python"), "-m", "pip", "list", "--format", "json"],
        timeout_s=120,
    )
    if not listed.ok:
        raise EnvironmentFailed(app_dir=str(environment.path), detail=listed.tail())
    return {item["name"]: item["version"] for item in json.loads(listed.stdout)}
