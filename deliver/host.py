"""What a release asks of a deploy host, and of the service's HTTP endpoints.

The release engine (`deliver.rollout`) is written against these two protocols only. Over SSH,
`deliver.tasks.ssh_host.SshHost` implements `DeployHost`; `deliver.tasks.deploy.TrackedHost`
makes each of its calls a Prefect task run, and `deliver.tasks.probes.HttpProbes` probes over
HTTP. `tests/fakes.py` has in-memory versions that pass the same contract tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from deliver.commands import CommandResult
from deliver.planning.release import HostState, RunningSlot, Slot
from deliver.planning.target import HostView


class DeployHost(Protocol):
    """One deploy host. Every method raises a `ReleaseError` for what it could not do."""

    @property
    def view(self) -> HostView: ...

    def inspect(self) -> tuple[list[RunningSlot], Slot | None]:
        """The app's running slot containers, and the slot nginx serves (None without one)."""
        ...

    def pull(self, image: str) -> bool:
        """Make `image` (by digest) present; False when it already was."""
        ...

    def start_slot(self, slot: Slot, image: str, version: str, run: str) -> str:
        """Start `image` in `slot`, replacing what is there, labelled with the run; its id."""
        ...

    def stop_slot(self, slot: Slot) -> None:
        """Remove the slot's container; nothing to remove is not an error."""
        ...

    def switch(self, slot: Slot) -> None:
        """Point the host's nginx at `slot`, for the next request on."""
        ...

    def read_state(self) -> HostState: ...

    def write_state(self, state: HostState) -> None:
        """Replace the recorded state atomically, readable by the deploy user only."""
        ...

    def image_labels(self, image: str) -> dict[str, str]:
        """The labels of an image the host has; empty when it has not."""
        ...

    def prune(self, images: Sequence[str]) -> list[str]:
        """Remove images; returns those left: still used by a container, or not on the host."""
        ...

    def run_once(self, image: str, command: Sequence[str]) -> CommandResult:
        """`command` in a one-off container of `image` with the service's env and network,
        removed when it ends; its result whatever the exit code."""
        ...

    def boot_accessories(self) -> list[str]:
        """Boot the environment's accessories that are absent (those booted); one that is down
        raises AccessoryDown: a release never replaces or restarts one."""
        ...


class Probes(Protocol):
    """What a release checks over HTTP, and the waits between its steps."""

    def health(self, url: str, deadline_s: float, where: str) -> None:
        """Wait until `url` answers 200; raises HealthCheckFailed naming `where` if not."""
        ...

    def smoke(self, base_url: str, checks: tuple[Any, ...], upstream: str | None) -> None:
        """Run the smoke checks; with `upstream`, only answers from that host:port count."""
        ...

    def await_upstream(self, url: str, upstream: str) -> None:
        """Wait until `url` is answered by `upstream` (after a switch)."""
        ...

    def drain(self, seconds: float, what: str) -> None:
        """Let requests in flight finish before an old slot stops."""
        ...
