"""The release's HTTP checks and waits as Prefect task runs: the `Probes` of `deliver.host`."""

from __future__ import annotations

import time
from typing import Any

from prefect import task

from deliver.errors import HealthCheckFailed, SmokeCheckFailed
from deliver.tasks.http import smoke_failures, wait_for_health, wait_for_upstream
from deliver.tasks.progress import Progress, progress_key


@task(name="check_health", task_run_name="health-{url}")
def check_health(url: str, deadline_s: float, key: str, where: str) -> float:
    """`key` names the wait's progress artifact; `where` names the host in a failure."""
    result = wait_for_health(url, deadline_s=deadline_s, progress_key=key)
    if not result.healthy:
        raise HealthCheckFailed(where=f"{url} on {where}", detail=result.detail)
    return result.elapsed_s


@task(name="smoke_test", task_run_name="smoke-{base_url}")
def smoke_test(base_url: str, checks: tuple[Any, ...], upstream: str | None = None) -> int:
    failures = smoke_failures(base_url, checks, upstream=upstream)
    if failures:
        raise SmokeCheckFailed(where=base_url, failures=failures)
    return len(checks)


@task(name="await_switch", task_run_name="await-{upstream}")
def await_switch(url: str, upstream: str) -> None:
    switched, seen = wait_for_upstream(url, upstream)
    if not switched:
        raise HealthCheckFailed(where=url, detail=f"still answered by {seen}, not {upstream}")


@task(name="drain", task_run_name="drain-{seconds}s")
def drain(seconds: float, what: str, key: str) -> None:
    """Let requests in flight on the old slots finish before they stop."""
    shown = Progress(key, f"Drain of {what}, {seconds:g} s")
    started = time.monotonic()
    while (waited := time.monotonic() - started) < seconds:
        shown.update(100 * waited / seconds)
        time.sleep(min(0.25, seconds - waited))
    shown.done()


class HttpProbes:
    """`Probes` over HTTP for one environment's releases; progress shows under its keys."""

    def __init__(self, service: str, environment: str) -> None:
        self._health_key = progress_key("health", service, environment)
        self._drain_key = progress_key("drain", service, environment)

    def health(self, url: str, deadline_s: float, where: str) -> None:
        check_health(url, deadline_s, self._health_key, where)

    def smoke(self, base_url: str, checks: tuple[Any, ...], upstream: str | None) -> None:
        smoke_test(base_url, checks, upstream)

    def await_upstream(self, url: str, upstream: str) -> None:
        await_switch(url, upstream)

    def drain(self, seconds: float, what: str) -> None:
        drain(seconds, what, self._drain_key)
