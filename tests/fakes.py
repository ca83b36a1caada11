"""In-memory stand-ins for a deploy host and the HTTP probes, for fast tests of release logic.

`MemoryHost` honours the `DeployHost` contract that `SshHost` honours on the sandbox's sshd
(tests/test_deploy_host_contract.py runs the same tests on both). `MemoryProbes` answers as
the containers on those hosts would: an image marked unhealthy never answers its health path,
one marked failing fails its smoke checks wherever it serves.

Faults are injected per operation: `host.fail("switch", exc)` makes the next switch raise
`exc`; `fail("switch", exc, on_call=2)` lets the first through and fails the second.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from deliver.commands import CommandResult, result_of
from deliver.errors import (
    AccessoryDown,
    DeployTargetInvalid,
    HealthCheckFailed,
    RemoteCommandFailed,
    SmokeCheckFailed,
)
from deliver.planning.release import HostState, RunningSlot, Slot
from deliver.planning.target import HostView, TargetView
from deliver.spec import SmokeCheck


class Faults:
    """Exceptions to raise on chosen calls of chosen operations; every call is counted."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self._planned: dict[tuple[str, int], BaseException] = {}
        self.log: list[str] = []

    def fail(self, operation: str, error: BaseException, *, on_call: int | None = None) -> None:
        self._planned[(operation, on_call or self.calls[operation] + 1)] = error

    def enter(self, operation: str, detail: str = "") -> None:
        self.calls[operation] += 1
        self.log.append(f"{operation} {detail}".strip())
        error = self._planned.pop((operation, self.calls[operation]), None)
        if error is not None:
            raise error


@dataclasses.dataclass
class Registry:
    """What the image registry holds: image by digest -> its labels."""

    images: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)


class MemoryHost:
    """A deploy host in memory: its images, its two slots' containers, its nginx, its state."""

    def __init__(self, view: HostView, registry: Registry) -> None:
        self._view, self.registry = view, registry
        self.images: set[str] = set()
        self.containers: dict[Slot, RunningSlot] = {}
        self.upstream: Slot | None = Slot.BLUE if view.front_url else None
        self.state_file: str | None = None
        self.faults = Faults()
        self._started = 0
        # The accessories this host is to run (name -> running?), and the one-off commands it ran.
        self.accessories: dict[str, bool | None] = {}
        self.one_offs: list[tuple[str, tuple[str, ...]]] = []
        self.one_off_exit_code = 0

    @property
    def view(self) -> HostView:
        return self._view

    def fail(self, operation: str, error: BaseException, *, on_call: int | None = None) -> None:
        self.faults.fail(operation, error, on_call=on_call)

    def _refuse(self, command: str, stderr: str) -> RemoteCommandFailed:
        return RemoteCommandFailed(
            host=self.view.address, command=command, exit_code=1, stderr=stderr
        )

    def inspect(self) -> tuple[list[RunningSlot], Slot | None]:
        self.faults.enter("inspect")
        running = [self.containers[slot] for slot in sorted(self.containers, key=lambda s: s.value)]
        return running, self.upstream

    def pull(self, image: str) -> bool:
        self.faults.enter("pull", image)
        if image in self.images:
            return False
        if image not in self.registry.images:
            raise self._refuse(f"docker pull --quiet {image}", "manifest unknown")
        self.images.add(image)
        return True

    def start_slot(self, slot: Slot, image: str, version: str, run: str) -> str:
        self.faults.enter("start_slot", f"{slot.value} {version}")
        if image not in self.images:
            raise self._refuse(f"docker run {image}", "Unable to find image locally")
        self.containers[slot] = RunningSlot(slot=slot, version=version, image=image, run=run)
        self._started += 1
        return f"container-{self._started}"

    def stop_slot(self, slot: Slot) -> None:
        self.faults.enter("stop_slot", slot.value)
        self.containers.pop(slot, None)

    def switch(self, slot: Slot) -> None:
        self.faults.enter("switch", slot.value)
        if self.view.front_url is None:
            raise DeployTargetInvalid(
                block=self.view.ref, field="nginx_upstream_file", detail="not set"
            )
        self.upstream = slot

    def read_state(self) -> HostState:
        self.faults.enter("read_state")
        return HostState.from_json(json.loads(self.state_file) if self.state_file else None)

    def write_state(self, state: HostState) -> None:
        self.faults.enter("write_state")
        self.state_file = json.dumps(state.to_json())

    def image_labels(self, image: str) -> dict[str, str]:
        self.faults.enter("image_labels")
        return dict(self.registry.images.get(image, {})) if image in self.images else {}

    def prune(self, images: Sequence[str]) -> list[str]:
        self.faults.enter("prune")
        in_use = {container.image for container in self.containers.values()}
        left = [image for image in images if image in in_use or image not in self.images]
        self.images -= set(images) - set(left)
        return left

    def run_once(self, image: str, command: Sequence[str]) -> CommandResult:
        self.faults.enter("run_once", " ".join(command))
        if image not in self.images:
            raise self._refuse(f"docker run --rm {image}", "Unable to find image locally")
        self.one_offs.append((image, tuple(command)))
        code = self.one_off_exit_code
        return result_of(
            ["docker", "run", "--rm", image, *command],
            where=self.view.address,
            exit_code=code,
            stdout="migrated\n" if code == 0 else "",
            stderr="" if code == 0 else "relation already exists\n",
            duration_s=0.0,
        )

    def boot_accessories(self) -> list[str]:
        """None: absent (booted now); False: its container exists but is stopped."""
        self.faults.enter("boot_accessories")
        booted = []
        for name, running in self.accessories.items():
            if running is None:
                self.accessories[name] = True
                booted.append(name)
            elif not running:
                raise AccessoryDown(
                    accessory=name, where=self.view.address, detail="exited", environment="env"
                )
        return booted

    # What a test reads back.

    @property
    def state(self) -> HostState:
        return HostState.from_json(json.loads(self.state_file) if self.state_file else None)

    def serving(self) -> RunningSlot | None:
        """What users reach: the container behind nginx, or the only one running without it."""
        if self.upstream is not None:
            return self.containers.get(self.upstream)
        running = list(self.containers.values())
        return running[0] if len(running) == 1 else None


class MemoryProbes:
    """The HTTP side of a release, answered from the memory hosts' containers."""

    def __init__(
        self,
        hosts: Sequence[MemoryHost],
        *,
        unhealthy: set[str] | None = None,
        failing_smoke: set[str] | None = None,
        front_url: str | None = None,
    ) -> None:
        self.hosts, self.front_url = hosts, front_url
        self.unhealthy, self.failing_smoke = unhealthy or set(), failing_smoke or set()
        self.unhealthy_on: set[tuple[str, str]] = set()  # (host ref, image)
        self.faults = Faults()
        self.drained: list[float] = []

    def fail(self, operation: str, error: BaseException, *, on_call: int | None = None) -> None:
        self.faults.fail(operation, error, on_call=on_call)

    def _slot_at(self, url: str) -> tuple[MemoryHost, Slot] | None:
        for host in self.hosts:
            for slot in Slot:
                if url.startswith(host.view.slot_url(slot)):
                    return host, slot
        return None

    def _served_at(self, base_url: str) -> list[RunningSlot | None]:
        at_slot = self._slot_at(base_url)
        if at_slot is not None:
            return [at_slot[0].containers.get(at_slot[1])]
        fronted = [host for host in self.hosts if host.view.front_url == base_url]
        if fronted:
            return [host.serving() for host in fronted]
        if base_url == self.front_url:
            return [host.serving() for host in self.hosts]
        raise AssertionError(f"nothing answers at {base_url}")

    def health(self, url: str, deadline_s: float, where: str) -> None:
        self.faults.enter("health", where)
        at_slot = self._slot_at(url)
        container = at_slot[0].containers.get(at_slot[1]) if at_slot else None
        if (
            container is None
            or container.image in self.unhealthy
            or (where, container.image) in self.unhealthy_on
        ):
            raise HealthCheckFailed(where=f"{url} on {where}", detail="connection refused")

    def smoke(self, base_url: str, checks: tuple[Any, ...], upstream: str | None) -> None:
        self.faults.enter("smoke", base_url)
        served = self._served_at(base_url)
        if any(c is None or c.image in self.failing_smoke for c in served):
            raise SmokeCheckFailed(where=base_url, failures=["GET /: answered 500, expected 200"])

    def await_upstream(self, url: str, upstream: str) -> None:
        self.faults.enter("await_upstream", upstream)
        host = next(
            host
            for host in self.hosts
            if host.view.front_url and url.startswith(host.view.front_url)
        )
        if host.upstream is None or host.view.slot_address(host.upstream) != upstream:
            raise HealthCheckFailed(where=url, detail=f"not answered by {upstream}")

    def drain(self, seconds: float, what: str) -> None:
        self.faults.enter("drain", what)
        self.drained.append(seconds)


def host_view(name: str, number: int, *, nginx: bool) -> HostView:
    return HostView(
        ref=f"env@{name}" if name else "env",
        name=name,
        address=f"deploy@10.0.0.{number}:22",
        service_host=f"10.0.0.{number}",
        slot_ports={Slot.BLUE: 8101, Slot.GREEN: 8102},
        front_url=f"http://10.0.0.{number}:8080" if nginx else None,
    )


def environment(
    hosts: int = 1,
    *,
    nginx: bool = True,
    max_unavailable: int = 1,
    environment_name: str = "production",
    keep_versions: int = 3,
    registry: Registry | None = None,
) -> tuple[TargetView, list[MemoryHost], Registry]:
    """An environment of `hosts` memory hosts (one: a target's only host; more: a fleet behind
    a balancer), and the registry they pull from."""
    registry = registry or Registry()
    views = [
        host_view("" if hosts == 1 else f"web-{n}", n, nginx=nginx) for n in range(1, hosts + 1)
    ]
    target = TargetView(
        block="env",
        environment=environment_name,
        app_name="app",
        hosts=tuple(views),
        health_path="/health",
        health_timeout_s=1.0,
        smoke=(SmokeCheck(path="/"),),
        keep_versions=keep_versions,
        drain_s=0.0,
        max_unavailable=max_unavailable,
        front_url="http://10.0.0.100:80" if hosts > 1 else None,
    )
    return target, [MemoryHost(view, registry) for view in views], registry


def image(n: int, labels: Mapping[str, str] | None = None, registry: Registry | None = None) -> str:
    reference = f"reg.example/app@sha256:{n:064x}"
    if registry is not None:
        registry.images[reference] = dict(labels or {})
    return reference
