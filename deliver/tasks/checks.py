"""One check of the app (lint, types, tests, ...) run as a task in the app's own environment."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from deliver.commands import run_streamed
from deliver.errors import CheckFailed
from deliver.planning.ci import (
    TestCounts,
    check_cache_key,
    expand_command,
    parse_coverage,
    parse_junit,
)
from deliver.spec import CheckSpec
from deliver.tasks.app_environment import AppEnvironment


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    name: str
    passed: bool
    exit_code: int
    duration_s: float
    command: str
    tail: str
    tests: TestCounts | None = None
    coverage: float | None = None


def files_digest(app_dir: Path, patterns: list[str]) -> str:
    """sha256 over (relative path, content) of every file matching `patterns`, in sorted order."""
    digest = hashlib.sha256()
    matched: set[str] = set()
    for pattern in patterns:
        matched.update(path.relative_to(app_dir).as_posix() for path in app_dir.glob(pattern))
    for relative in sorted(matched):
        path = app_dir / relative
        if path.is_file() and "/.venv/" not in f"/{relative}":
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    check: CheckSpec = parameters["check"]
    environment: AppEnvironment = parameters["environment"]
    return check_cache_key(
        check,
        files_digest=files_digest(parameters["app_dir"], check.inputs),
        environment_digest=environment.frozen_digest,
        placeholders=parameters["placeholders"],
    )


def check_env(environment: AppEnvironment, cache_dir: Path) -> dict[str, str]:
    """Only what a check needs: the app's venv first on PATH; nothing of the orchestrator's."""
    return {
        "PATH": f"{environment.bin_dir}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(environment.path),
        "HOME": str(cache_dir / "home"),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MYPY_CACHE_DIR": str(cache_dir / "mypy" / environment.frozen_digest),
        "RUFF_CACHE_DIR": str(cache_dir / "ruff"),
    }


@task(
    name="run_check",
    task_run_name="check-{check.name}",
    cache_key_fn=_cache_key,
    persist_result=True,
)
def run_check(
    check: CheckSpec,
    app_dir: Path,
    environment: AppEnvironment,
    placeholders: dict[str, str],
    cache_dir: Path,
) -> CheckResult:
    """Run one check, streaming its output to the run log; raises CheckFailed when it fails."""
    logger = get_run_logger()
    reports = app_dir.parent / f".reports-{check.name}"
    reports.mkdir(parents=True, exist_ok=True)
    argv = expand_command(check.run, {**placeholders, "reports": str(reports)})
    argv[0] = (
        str(environment.bin_dir / argv[0]) if (environment.bin_dir / argv[0]).exists() else argv[0]
    )
    (cache_dir / "home").mkdir(parents=True, exist_ok=True)
    result = run_streamed(
        argv,
        cwd=app_dir,
        env=check_env(environment, cache_dir),
        timeout_s=check.timeout_s,
        on_line=lambda line: logger.info("%s | %s", check.name, line),
    )
    junit, coverage = reports / "junit.xml", reports / "coverage.json"
    outcome = CheckResult(
        name=check.name,
        passed=result.ok,
        exit_code=result.exit_code,
        duration_s=round(result.duration_s, 3),
        command=" ".join(check.run),
        tail=result.tail(30),
        tests=parse_junit(junit.read_text()) if junit.exists() else None,
        coverage=round(parse_coverage(coverage.read_text()), 2) if coverage.exists() else None,
    )
    if not outcome.passed:
        raise CheckFailed(
            name=check.name, exit_code=result.exit_code, where=str(app_dir), tail=outcome.tail
        )
    return outcome
