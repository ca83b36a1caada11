"""`deliver init`: a first `deliver.yaml` guessed from what a repository holds. Pure.

The caller reads the files (`RepoFacts.files`, path -> text, and the folder names); this
decides every field, renders the spec with a comment on each guess, and lists what to check.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from typing import Any

_EXPOSE = re.compile(r"^\s*EXPOSE\s+(\d+)", re.IGNORECASE | re.MULTILINE)
_HEALTH_URL = re.compile(r"HEALTHCHECK[^\n]*?https?://[^/\s'\"]+(/[\w./-]*)", re.IGNORECASE)
_ENV_READ = re.compile(
    r"""(?:os\.environ(?:\.get)?\s*[\[(]\s*|os\.getenv\s*\(\s*|required\(\s*)["']([A-Z][A-Z0-9_]*)["']"""
)
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
POSTGRES_DRIVERS = {"psycopg", "psycopg2", "psycopg2-binary", "asyncpg", "psycopg-binary"}
REDIS_CLIENTS = {"redis", "aioredis"}
# Env names a service of this shape reads that its runtime, not the team, sets.
NOT_THE_TEAMS = {"PORT", "HOME", "PATH", "HOSTNAME", "PYTHONPATH"}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RepoFacts:
    folder_name: str
    files: Mapping[str, str]  # path relative to the app folder -> text (the few that matter)
    python_files: Mapping[str, str]  # every .py outside tests, for env names
    directories: frozenset[str]  # top-level folder names


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InitPlan:
    text: str  # the commented deliver.yaml
    guesses: tuple[str, ...]  # what was guessed from what, one line each
    to_check: tuple[str, ...]  # what the team must look at before the first run


def _kebab(name: str) -> str:
    kebab = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return kebab if re.match(r"^[a-z]", kebab or "") else f"app-{kebab or 'service'}"


def _requirement_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.strip().startswith(("#", "-")):
            continue
        if match := _REQUIREMENT_NAME.match(line):
            names.add(match[1].lower().replace("_", "-"))
    return names


def _package(facts: RepoFacts, project: Mapping[str, Any], service: str) -> str | None:
    """The importable package the service ships: a top-level folder with an __init__.py."""
    candidates = [str(project.get("name", "")).replace("-", "_"), service.replace("-", "_")]
    for candidate in candidates:
        if candidate and f"{candidate}/__init__.py" in facts.files:
            return candidate
    packages = sorted(
        {path.split("/", 1)[0] for path in facts.python_files if path.endswith("/__init__.py")}
        - {"tests", "test", "migrations"}
    )
    return packages[0] if packages else None


def plan_init(facts: RepoFacts) -> InitPlan:
    """The spec for the repository `facts` describe."""
    guesses: list[str] = []
    to_check: list[str] = []
    pyproject: dict[str, Any] = {}
    if "pyproject.toml" in facts.files:
        try:
            pyproject = tomllib.loads(facts.files["pyproject.toml"])
        except tomllib.TOMLDecodeError:
            to_check.append("pyproject.toml does not parse; nothing was read from it")
    project = pyproject.get("project", {}) if isinstance(pyproject.get("project"), dict) else {}
    tools = pyproject.get("tool", {}) if isinstance(pyproject.get("tool"), dict) else {}
    service = _kebab(str(project.get("name") or facts.folder_name))
    guesses.append(
        f"service {service}: from "
        + ("pyproject's [project] name" if project.get("name") else "the folder's name")
    )
    package = _package(facts, project, service)
    requirement_files = sorted(p for p in facts.files if re.match(r"^requirements[^/]*\.txt$", p))
    runtime_requirements = [p for p in requirement_files if "dev" not in p and "test" not in p]
    dependencies = {
        name
        for text in (facts.files[p] for p in requirement_files)
        for name in _requirement_names(text)
    }
    dependencies |= _requirement_names("\n".join(str(d) for d in project.get("dependencies", [])))
    for extra in (project.get("optional-dependencies") or {}).values():
        dependencies |= _requirement_names("\n".join(str(d) for d in extra))
    has_tests = bool({"tests", "test"} & facts.directories)
    extras = [e for e in ("test", "dev") if e in (project.get("optional-dependencies") or {})]

    dockerfile = re.sub(r"\\\n", " ", facts.files.get("Dockerfile", ""))  # continued lines
    port = int(m[1]) if (m := _EXPOSE.search(dockerfile)) else 8000
    if m:
        guesses.append(f"container port {port}: the Dockerfile's EXPOSE")
    else:
        to_check.append("container.port: no EXPOSE in the Dockerfile; 8000 is a guess")
    health = h[1] if (h := _HEALTH_URL.search(dockerfile)) else "/health"
    if h:
        guesses.append(f"health path {health}: the Dockerfile's HEALTHCHECK")
    else:
        to_check.append(f"container.health_path: {health} is a guess; it must answer 200")
    if not dockerfile:
        to_check.append("there is no Dockerfile: add one (CI builds the image from it)")

    checks: list[tuple[str, list[str], list[str] | None]] = [
        ("lint", ["ruff", "check", "--output-format", "concise", "."], None)
    ]
    tool_names = ["ruff"]
    if "format" in tools.get("ruff", {}) if isinstance(tools.get("ruff"), dict) else False:
        checks.append(("format", ["ruff", "format", "--check", "."], None))
    if "mypy" in tools and package:
        checks.append(("types", ["mypy", package], None))
        tool_names.append("mypy")
        guesses.append("a types check: pyproject configures mypy")
    if has_tests:
        coverage = [f"--cov={package}", "--cov-fail-under=70"] if package else []
        reports = ["--cov-report=json:{reports}/coverage.json"] if package else []
        # `python -m pytest` puts the app's folder on sys.path, as a plain `pytest` does not
        # for a repository without packaging configuration.
        run = ["python", "-m", "pytest", "-q", *coverage, *reports]
        run.append("--junitxml={reports}/junit.xml")
        inputs = ["**/*.py", "pyproject.toml", *requirement_files]
        checks.append(("tests", run, [i for i in inputs if i in facts.files or "*" in i]))
        tool_names += ["pytest", "pytest-cov"]
        guesses.append("a tests check with a 70% coverage gate: there is a tests folder")
        if package:
            to_check.append("the coverage gate (--cov-fail-under=70): set it to what you hold")
    if package:
        bandit = ["bandit", "-q", "-r", package, "-f", "sarif", "-o", "{reports}/bandit.sarif"]
        checks.append(("security", bandit, [f"{package}/**/*.py"]))
        tool_names.append("bandit[sarif]")
    audit = ["pip-audit", "--strict", "--no-deps", "--disable-pip", "-r", "{requirements}"]
    audit += ["-s", "osv", "--osv-url", "{advisory_url}"]
    checks.append(("dependencies", audit, [*requirement_files] or ["pyproject.toml"]))
    tool_names.append("pip-audit")

    services: dict[str, dict[str, Any]] = {}
    env: dict[str, str] = {}
    if dependencies & POSTGRES_DRIVERS or "alembic" in dependencies:
        services["postgres"] = {
            "image": "postgres:15",
            "env": {
                "POSTGRES_USER": "app",
                "POSTGRES_DB": "app",
                "POSTGRES_PASSWORD": "{services.postgres.password}",
            },
            "health": ["pg_isready", "-h", "127.0.0.1", "-U", "app", "-d", "app"],
        }
        scheme = "postgresql+psycopg" if "psycopg" in dependencies else "postgresql"
        env["DATABASE_URL"] = f"{scheme}://app:{{services.postgres.password}}@postgres:5432/app"
        guesses.append("a postgres service and DATABASE_URL: a PostgreSQL driver is a dependency")
        to_check.append("env.DATABASE_URL: the name and URL scheme your code reads")
    if dependencies & REDIS_CLIENTS:
        services["redis"] = {"image": "redis:7", "health": ["redis-cli", "ping"]}
        env["REDIS_URL"] = "redis://redis:6379/0"
        guesses.append("a redis service and REDIS_URL: a Redis client is a dependency")
    read_env = sorted(
        {name for text in facts.python_files.values() for name in _ENV_READ.findall(text)}
        - NOT_THE_TEAMS
    )
    required = [name for name in read_env if name in env or name.endswith(("_URL", "_DSN"))]
    for name in required:
        env.setdefault(name, "")
    if read_env:
        guesses.append(f"the code reads {', '.join(read_env)} from its environment")
    if required:
        to_check.append(
            f"release.env ({', '.join(required)}): each environment's DeployTarget must give "
            "these values (secrets from Secret blocks)"
        )
    migrate = ["alembic", "upgrade", "head"] if "alembic.ini" in facts.files else []
    if migrate:
        guesses.append("release.migrate: alembic upgrade head, as there is an alembic.ini")
    spec = _render(
        service=service,
        tools=tool_names,
        extras=extras,
        checks=checks,
        services=services,
        env={k: v for k, v in env.items() if v},
        port=port,
        health=health,
        required=required,
        migrate=migrate,
        uv_lock="uv.lock" in facts.files,
        runtime_requirements=runtime_requirements,
    )
    return InitPlan(text=spec, guesses=tuple(guesses), to_check=tuple(to_check))


def _flow(values: list[str]) -> str:
    return "[" + ", ".join(_scalar(v) for v in values) + "]"


def _scalar(value: str) -> str:
    if re.match(r"^[A-Za-z0-9_./:=-]+$", value) and value not in {"true", "false", "null"}:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render(
    *,
    service: str,
    tools: list[str],
    extras: list[str],
    checks: list[tuple[str, list[str], list[str] | None]],
    services: Mapping[str, Mapping[str, Any]],
    env: Mapping[str, str],
    port: int,
    health: str,
    required: list[str],
    migrate: list[str],
    uv_lock: bool,
    runtime_requirements: list[str],
) -> str:
    lines = [
        f"# The delivery pipeline of {service}, written by `deliver init`: check each line",
        "# marked CHECK, then run `deliver ci --sandbox` (see the README's 'Your own service').",
        f"service: {service}",
        "",
        "environment:",
        "  # The app's environment is built with uv from "
        + ("its uv.lock (frozen)" if uv_lock else "its requirements files and pyproject.toml")
        + ", then these tools.",
        f"  tools: {_flow(tools)}",
    ]
    if extras:
        lines.append(f"  extras: {_flow(extras)}")
    lines += ["", "checks:"]
    for name, run, inputs in checks:
        lines += [f"  - name: {name}", f"    run: {_flow(run)}"]
        if inputs:
            lines.append(f"    inputs: {_flow(inputs)}")
    if services:
        lines += [
            "",
            "# Containers the checks and the container test need, by name on the run's network.",
        ]
        lines.append("services:")
        for name, service_spec in services.items():
            lines += [f"  {name}:", f"    image: {service_spec['image']}"]
            if service_spec.get("env"):
                lines.append("    env:")
                lines += [f"      {k}: {_scalar(v)}" for k, v in service_spec["env"].items()]
            lines.append(f"    health: {_flow(service_spec['health'])}")
    if env:
        lines += ["", "# What the checks see. CHECK: the names your code reads.", "env:"]
        lines += [f"  {k}: {_scalar(v)}" for k, v in env.items()]
    lines += [
        "",
        "image:",
        f"  name: {service}",
        "",
        "container:",
        f"  port: {port}  # CHECK: the port the service listens on",
        f"  health_path: {health}  # CHECK: answers 200 when the service is healthy",
    ]
    if env:
        lines.append("  env:")
        lines += [f"    {k}: {_scalar(v)}" for k, v in env.items()]
    lines += [
        "",
        "# After each release, through its front: what must answer.",
        "smoke:",
        f"  - {{path: {health}, status: 200}}",
        "",
        "# What every release of an image built from this commit runs with.",
        "release:",
        f"  env: {_flow(required)}  # CHECK: names each environment must give a value",
    ]
    if migrate:
        lines.append(f"  migrate: {_flow(migrate)}  # once per release, before any switch")
    if runtime_requirements:
        lines.append(f"# Runtime requirements found: {', '.join(runtime_requirements)}.")
    return "\n".join(lines) + "\n"
