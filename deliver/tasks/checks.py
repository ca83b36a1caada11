"""One check of the app (lint, types, tests, ...) run as a task inside the run's job container."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

from deliver.commands import run_streamed
from deliver.errors import CheckFailed
from deliver.planning.ci import (
    TestCounts,
    check_cache_key,
    expand_command,
    parse_coverage,
    parse_junit,
)
from deliver.planning.sarif import NotSarif, runs_of, summary_lines
from deliver.spec import CheckSpec
from deliver.tasks.app_environment import CONTAINER_TMP, writable_by_container
from deliver.tasks.job import REPORTS, Job, containers_of, docker_cli_env


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
    sarif: str = ""  # the SARIF runs the check wrote (JSON), kept with a cached result
    made_in: str = ""  # the flow run that ran it, named when a later run reuses the result


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


def check_key(
    check: CheckSpec,
    *,
    app_dir: Path,
    environment_digest: str,
    placeholders: Mapping[str, str],
    untrusted: bool,
) -> str:
    """The key a check's outcome is kept under: the same whether the run looks it up before
    any task runs or the check's task run computes it."""
    trust = {"trust": "untrusted" if untrusted else "trusted"}
    return check_cache_key(
        check,
        files_digest=files_digest(app_dir, check.inputs),
        environment_digest=environment_digest,
        placeholders={**placeholders, **trust},
    )


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    job: Job = parameters["job"]
    return check_key(
        parameters["check"],
        app_dir=job.app_dir,
        environment_digest=job.environment.frozen_digest,
        placeholders=parameters["placeholders"],
        untrusted=job.untrusted,
    )


@task(
    name="run_check",
    task_run_name="check-{check.name}",
    cache_key_fn=_cache_key,
    persist_result=True,
)
def run_check(check: CheckSpec, job: Job, placeholders: dict[str, str]) -> CheckResult:
    """Run one check in the job container, streaming its output to the run log; raises
    CheckFailed when it fails."""
    logger = get_run_logger()
    containers_of(job.run_label).ensure_job()  # the first check that is not a cache hit starts it
    reports = job.reports_dir / check.name
    shutil.rmtree(reports, ignore_errors=True)
    writable_by_container(reports)
    argv = expand_command(check.run, {**placeholders, "reports": f"{REPORTS}/{check.name}"})
    exec_in_job = ["docker", "exec", "--user", job.user, "--workdir", job.workdir]
    exec_in_job += ["--env", f"COVERAGE_FILE={CONTAINER_TMP}/.coverage-{check.name}"]
    result = run_streamed(
        [*exec_in_job, job.container, *argv],
        cwd=job.reports_dir,
        env=docker_cli_env(),
        timeout_s=check.timeout_s,
        on_line=lambda line: logger.info("%s | %s", check.name, line),
    )
    junit, coverage = reports / "junit.xml", reports / "coverage.json"
    runs = sarif_runs(reports, job.folder_in_repo)
    found = summary_lines(runs)
    for line in found:
        logger.info("%s | sarif: %s", check.name, line)
    outcome = CheckResult(
        name=check.name,
        passed=result.ok,
        exit_code=result.exit_code,
        duration_s=round(result.duration_s, 3),
        command=" ".join(check.run),
        tail=result.tail(30),
        tests=parse_junit(junit.read_text()) if junit.exists() else None,
        coverage=round(parse_coverage(coverage.read_text()), 2) if coverage.exists() else None,
        sarif=json.dumps(runs) if runs else "",
        made_in=str(flow_run.get_id() or ""),
    )
    if not outcome.passed:
        # A tool writing SARIF to a file may print nothing: its results say what failed.
        tail = "\n".join([outcome.tail, *found]).strip()
        raise CheckFailed(
            name=check.name,
            exit_code=result.exit_code,
            where=job.workdir,
            tail=tail,
            sarif=outcome.sarif,
        )
    return outcome


MAX_SARIF_BYTES = 8 * 1024 * 1024


def sarif_runs(reports: Path, folder_in_repo: str) -> list[dict[str, Any]]:
    """The runs of every `*.sarif` the check wrote in its reports folder; one that is too big
    or not SARIF is named in the log and skipped."""
    runs: list[dict[str, Any]] = []
    for path in sorted(reports.glob("*.sarif")):
        if not path.is_file() or path.stat().st_size > MAX_SARIF_BYTES:
            get_run_logger().warning("%s: skipped, not a file under 8 MiB", path.name)
            continue
        try:
            runs += runs_of(path.read_text(errors="replace"), prefix=folder_in_repo)
        except NotSarif as exc:
            get_run_logger().warning("%s: skipped, %s", path.name, exc)
    return runs
