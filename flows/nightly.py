"""`nightly`: the app's full test suite on the newest dependency versions its requirements allow,
in a fresh environment, then the benchmarks and the delivery metrics, as one report in the UI.

Scheduled by the `nightly` deployment (prefect.yaml, 0 2 * * * in an explicit timezone). A
failure is notified; an automation also alerts when no nightly run succeeded in 26 hours.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, field_validator

from deliver import commands
from deliver.errors import ChecksFailed, DeliveryError
from deliver.planning.metrics import parse_window, table_rows
from deliver.planning.notices import NoticeKind, checked_block_reference
from deliver.planning.report import NightlyReport, nightly_report
from deliver.planning.services import filled_env
from deliver.prefect_api import delivery_metrics
from deliver.spec import PathInRepository, RepositoryLocation
from deliver.tasks.app_environment import fresh_app_environment, installed_versions, job_image
from deliver.tasks.checks import CheckResult, run_check
from deliver.tasks.job import run_containers
from deliver.tasks.notify import notification_block
from flows.ci import DEFAULT_CACHE_DIR, PUBLIC_OSV
from flows.prepared_app import PreparedApp, checked_out_app

PROJECT_DIR = Path(__file__).resolve().parents[1]
BENCHMARKS = ("ci", "release", "sandbox_up")


class BenchmarkFailed(DeliveryError):
    def __init__(self, *, name: str, detail: str) -> None:
        super().__init__(
            f"Benchmark bench.{name} failed: {detail}. Run `python -m bench.{name}` "
            "from the project root to see it."
        )


class NightlyParameters(BaseModel):
    """What the nightly run tests, measures and reports."""

    model_config = ConfigDict(extra="forbid")

    repo: RepositoryLocation = Field(
        min_length=1, description="Git URL or local path of the application repo."
    )
    ref: str = Field(default="main", description="Branch to test.")
    spec_path: PathInRepository = Field(
        default="deliver.yaml", description="Pipeline spec inside the repo."
    )
    checks: list[str] = Field(
        default_factory=lambda: ["tests"],
        description="Checks of the spec to run in the fresh environment; default its tests.",
    )
    benchmarks: list[str] = Field(
        default_factory=lambda: ["ci --repeat 1"],
        description="Benchmarks of bench/ to run after the tests, each a name and its arguments"
        f" ({', '.join(BENCHMARKS)}); bench.ci --repeat 1 takes about a minute.",
    )
    metrics_window: str = Field(default="30d", description="Window of the delivery metrics.")
    advisory_url: str = Field(default=PUBLIC_OSV, description="OSV query endpoint.")
    cache_dir: str | None = Field(default=None, description="Work dirs; ~/.cache/deliver.")
    notify_block: str | None = Field(
        default=None, description="Notification block as type/name, told when the run fails."
    )

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, value: list[str]) -> list[str]:
        for command in value:
            name = shlex.split(command)[0] if command.strip() else ""
            if name not in BENCHMARKS:
                raise ValueError(f"{command!r}: a benchmark is one of {', '.join(BENCHMARKS)}")
        return value

    @field_validator("metrics_window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_window(value)
        return value

    @field_validator("notify_block")
    @classmethod
    def _notify_block(cls, value: str | None) -> str | None:
        return checked_block_reference(value)


@task(name="run_benchmark", task_run_name="bench-{command}")
def run_benchmark(command: str) -> dict[str, Any]:
    """`python -m bench.<name> <args>` from the project root; its JSON figures."""
    name, *args = shlex.split(command)
    started = time.monotonic()
    done = commands.run(
        [sys.executable, "-m", f"bench.{name}", *args], cwd=PROJECT_DIR, timeout_s=3600
    )
    if not done.ok:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchmarkFailed(name=name, detail=f"exit {done.exit_code}: {tail[-400:]}")
    text = done.stdout[done.stdout.find("{") :]
    try:
        figures: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        raise BenchmarkFailed(name=name, detail="it printed no JSON") from None
    get_run_logger().info("bench.%s took %.0f s", name, time.monotonic() - started)
    return figures


@task(name="publish_nightly_report")
def publish_nightly_report(service: str, markdown: str) -> None:
    """A task, as every Prefect write of the flow: its body runs in a worker thread of an async
    flow, where Prefect's dual sync/async calls would hand back a coroutine."""
    create_markdown_artifact(
        key=f"nightly-{service}", markdown=markdown, description=f"Nightly run of {service}"
    )


@task(name="publish_metrics")
def publish_metrics(window: str) -> list[dict[str, str]]:
    rows = table_rows(delivery_metrics(window))
    create_table_artifact(
        key="delivery-metrics",
        table=rows,
        description=f"Delivery metrics, production, last {window}",
    )
    return rows


@flow(name="nightly", log_prints=True)
async def nightly(parameters: NightlyParameters) -> NightlyReport:
    """Test on fresh dependencies, benchmark, measure; report it all, notify on failure."""
    if parameters.notify_block:
        notification_block(parameters.notify_block)
    cache = Path(parameters.cache_dir) if parameters.cache_dir else DEFAULT_CACHE_DIR
    workdir = cache / "nightly" / str(flow_run.get_id() or "local")
    async with checked_out_app(
        parameters.repo,
        parameters.ref,
        parameters.spec_path,
        workdir,
        notify_block=parameters.notify_block,
        failure=NoticeKind.NIGHTLY_FAILED,
    ) as app:
        # Sync work in a thread that keeps the run's context: no wait for the sync engine's
        # heartbeat join at the end.
        return await asyncio.to_thread(_nightly, parameters, app, workdir)


def _nightly(parameters: NightlyParameters, app: PreparedApp, workdir: Path) -> NightlyReport:
    spec, app_dir = app.spec, app.app_dir
    unknown = sorted(set(parameters.checks) - {check.name for check in spec.checks})
    if unknown:
        raise ValueError(f"{parameters.spec_path} has no check named {', '.join(unknown)}")
    image = job_image(app_dir, spec, dict(spec.image.build_args))
    environment = fresh_app_environment(app_dir, spec.environment, image, workdir / "env")
    placeholders = {
        "advisory_url": parameters.advisory_url,
        "requirements": environment.runtime_requirements,
    }
    fresh = run_check.with_options(refresh_cache=True)  # the point is to run it again
    with run_containers(str(flow_run.get_id() or "local"), spec.services) as containers:
        job = containers.plan_job(
            app.checkout.workdir,
            app_dir,
            environment,
            filled_env(spec.env, containers.access),
            workdir / "cache",
            workdir,
            untrusted=False,
        )
        futures = {
            check.name: fresh.submit(check, job, placeholders)
            for check in spec.checks
            if check.name in parameters.checks
        }
        results = {n: future.result(raise_on_failure=False) for n, future in futures.items()}
    passed = {n: r for n, r in results.items() if isinstance(r, CheckResult)}
    failures = {n: getattr(r, "tail", str(r)) for n, r in results.items() if n not in passed}
    benchmarks = (
        {} if failures else {command: run_benchmark(command) for command in parameters.benchmarks}
    )
    report = NightlyReport(
        service=spec.service,
        sha=app.checkout.resolved.sha,
        checks={name: "passed" if name in passed else "failed" for name in results},
        tests_passed=sum(r.tests.passed for r in passed.values() if r.tests),
        coverage=next((r.coverage for r in passed.values() if r.coverage is not None), None),
        dependencies=installed_versions(environment),
        benchmarks=benchmarks,
        metrics=publish_metrics(parameters.metrics_window),
    )
    publish_nightly_report(spec.service, nightly_report(report, failures))
    if failures:
        summary = "\n".join(f"- {name}:\n{tail[-1500:]}" for name, tail in failures.items())
        raise ChecksFailed(failed=sorted(failures), summary=summary)
    return report
