"""A release's host operations as Prefect task runs: each `DeployHost` call shows in the UI.

`TrackedHost` wraps a host (over SSH in the flows) so every operation is a task run of the
flow, named after what it does; the tasks themselves only call the host. Retries are set where
repeating is safe (reading state, pulling), never on the switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deliver.commands import CommandResult
from deliver.errors import HostUnreachable, RemoteCommandFailed
from deliver.host import DeployHost
from deliver.planning.release import HostState, RunningSlot, Slot
from deliver.planning.target import HostView, TargetView
from deliver.tasks.ssh_host import open_ssh_hosts


def _retry_when(*transient: type[Exception]) -> Any:
    """A retry condition: retry only these errors, never a rejected host key or bad block."""

    def condition(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except transient:
            return True
        except Exception:
            return False
        return False

    return condition


# Each task takes a host, which holds a live connection: never part of a cache key or persisted.
UNCACHED: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


@task(**UNCACHED, name="inspect_host", task_run_name="inspect-{host.view.ref}")
def inspect_host(host: DeployHost) -> tuple[list[RunningSlot], Slot | None]:
    return host.inspect()


@task(
    **UNCACHED,
    name="read_host_state",
    task_run_name="read-state-{host.view.ref}",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_retry_when(HostUnreachable),
)
def read_host_state(host: DeployHost) -> HostState:
    return host.read_state()


@task(**UNCACHED, name="write_host_state", task_run_name="write-state-{host.view.ref}")
def write_host_state(host: DeployHost, state: HostState) -> None:
    host.write_state(state)


@task(
    **UNCACHED,
    name="pull_image",
    task_run_name="pull-{image}",
    retries=2,
    retry_delay_seconds=[1, 4],
    retry_condition_fn=_retry_when(HostUnreachable, RemoteCommandFailed),
)
def pull_image(host: DeployHost, image: str) -> bool:
    pulled = host.pull(image)
    where = host.view.address
    get_run_logger().info("Pulled %s on %s" if pulled else "%s is already on %s", image, where)
    return pulled


@task(**UNCACHED, name="start_slot", task_run_name="start-{slot.value}")
def start_slot(host: DeployHost, slot: Slot, image: str, version: str, run: str) -> str:
    return host.start_slot(slot, image, version, run)


@task(**UNCACHED, name="stop_slot", task_run_name="stop-{slot.value}")
def stop_slot(host: DeployHost, slot: Slot) -> None:
    host.stop_slot(slot)


@task(**UNCACHED, name="switch_traffic", task_run_name="switch-to-{slot.value}")
def switch_traffic(host: DeployHost, slot: Slot) -> None:
    """Never retried: a half-done switch is for the release to undo, not to repeat."""
    host.switch(slot)
    on = f" on {host.view.name}" if host.view.name else ""
    get_run_logger().info("Traffic switched to the %s slot%s", slot.value, on)


@task(**UNCACHED, name="image_labels")
def image_labels(host: DeployHost, image: str) -> dict[str, str]:
    return host.image_labels(image)


@task(**UNCACHED, name="prune_images")
def prune_images(host: DeployHost, images: Sequence[str]) -> list[str]:
    return host.prune(images)


@task(**UNCACHED, name="run_migration", task_run_name="migrate-{host.view.ref}")
def run_migration(host: DeployHost, image: str, command: Sequence[str]) -> CommandResult:
    """Never retried: a migration that failed halfway is for its author to look at."""
    result = host.run_once(image, command)
    logger = get_run_logger()
    for line in (result.stdout + result.stderr).splitlines()[-200:]:
        logger.info("migrate | %s", line)
    return result


@task(**UNCACHED, name="boot_accessories", task_run_name="accessories-{host.view.ref}")
def boot_accessories(host: DeployHost) -> list[str]:
    booted = host.boot_accessories()
    if booted:
        get_run_logger().info("Booted %s on %s", ", ".join(booted), host.view.address)
    return booted


class TrackedHost:
    """A `DeployHost` whose every call is one of the task runs above."""

    def __init__(self, host: DeployHost) -> None:
        self.host = host

    @property
    def view(self) -> HostView:
        return self.host.view

    def inspect(self) -> tuple[list[RunningSlot], Slot | None]:
        return inspect_host(self.host)

    def pull(self, image: str) -> bool:
        return pull_image(self.host, image)

    def start_slot(self, slot: Slot, image: str, version: str, run: str) -> str:
        return start_slot(self.host, slot, image, version, run)

    def stop_slot(self, slot: Slot) -> None:
        stop_slot(self.host, slot)

    def switch(self, slot: Slot) -> None:
        switch_traffic(self.host, slot)

    def read_state(self) -> HostState:
        return read_host_state(self.host)

    def write_state(self, state: HostState) -> None:
        write_host_state(self.host, state)

    def image_labels(self, image: str) -> dict[str, str]:
        return image_labels(self.host, image)

    def prune(self, images: Sequence[str]) -> list[str]:
        return prune_images(self.host, images)

    def run_once(self, image: str, command: Sequence[str]) -> CommandResult:
        return run_migration(self.host, image, command)

    def boot_accessories(self) -> list[str]:
        return boot_accessories(self.host)


@contextlib.contextmanager
def open_target(
    block: str,
    image: str | None = None,
    *,
    service: str | None = None,
    with_env: bool = True,
) -> Iterator[tuple[TargetView, tuple[DeployHost, ...]]]:
    """The DeployTarget's view and its hosts for the service `image` was built for (else the
    target's app_name), each call a task run; one SSH connection per host for as long as it is
    open (one release step). Without `with_env`, for reading state only: no secret is read."""
    with open_ssh_hosts(block, image, service=service, with_env=with_env) as (view, hosts):
        yield view, tuple(TrackedHost(host) for host in hosts)
