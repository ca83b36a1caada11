"""A release's steps on one host: probe a slot, move nginx's traffic, smoke, drain.

The release flow runs them on its target's one host, or on each host of a fleet in turn.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task

from deliver.errors import HealthCheckFailed, SmokeCheckFailed
from deliver.planning.release import (
    HostState,
    RunningSlot,
    Slot,
    nginx_upstream,
    reconcile,
    target_slot,
)
from deliver.tasks.deploy import TargetView, inspect_host, switch_traffic, write_host_state
from deliver.tasks.http import smoke_failures, wait_for_health, wait_for_upstream
from deliver.tasks.progress import Progress, progress_key


@task(name="check_health", task_run_name="health-{url}")
def check_health(url: str, deadline_s: float, key: str, where: str = "") -> float:
    """`key` names the wait's progress artifact; `where` names the host in a failure."""
    result = wait_for_health(url, deadline_s=deadline_s, progress_key=key)
    if not result.healthy:
        raise HealthCheckFailed(where=f"{url} on {where}" if where else url, detail=result.detail)
    return result.elapsed_s


def health_key(target: TargetView) -> str:
    return progress_key("health", target.app_name, target.environment)


@task(name="drain", task_run_name="drain-{slot.value}")
def drain(target: TargetView, slot: Slot) -> None:
    """Let requests in flight on the old slot finish before it stops."""
    shown = Progress(
        progress_key("drain", target.app_name, target.environment),
        f"Drain of the {slot.value} slot, {target.drain_s:g} s",
    )
    started = time.monotonic()
    while (waited := time.monotonic() - started) < target.drain_s:
        shown.update(100 * waited / target.drain_s)
        time.sleep(min(0.25, target.drain_s - waited))
    shown.done()


@task(name="smoke_test", task_run_name="smoke-{base_url}")
def smoke_test(base_url: str, checks: tuple[Any, ...], upstream: str | None = None) -> int:
    failures = smoke_failures(base_url, checks, upstream=upstream)
    if failures:
        raise SmokeCheckFailed(where=base_url, failures=failures)
    return len(checks)


@task(name="await_switch", task_run_name="await-{upstream}")
def await_switch(front_url: str, upstream: str) -> None:
    switched, seen = wait_for_upstream(front_url, upstream)
    if not switched:
        raise HealthCheckFailed(where=front_url, detail=f"still answered by {seen}, not {upstream}")


def move_traffic(target: TargetView, slot: Slot) -> str:
    """Switch the host's nginx to `slot` and wait until it answers from there; returns the
    slot's host:port."""
    assert target.front_url is not None  # noqa: S101 (blue_green targets have a front)
    host_port = target.slot_address(slot)
    upstream = nginx_upstream(slot_port=target.slot_ports[slot.value], host=target.service_host)
    switch_traffic(target.block, slot, upstream)
    await_switch(f"{target.front_url}{target.health_path}", host_port)
    return host_port


def surveyed_state(
    block: str, state: HostState, now: str
) -> tuple[HostState, list[RunningSlot], Slot]:
    """The host's state as it really is (reconciled and recorded if it differed), its running
    slots, and the slot a new version starts in."""
    running, serving = inspect_host(block)
    actual = reconcile(state, running, serving, now=now)
    if actual is not None:
        get_run_logger().warning("Host state reconciled: %s is what serves", actual.live)
        write_host_state(block, actual)
        state = actual
    return state, running, target_slot(state, serving)
