"""The deploy host, over SSH: pull, start and stop slots, switch nginx, keep the release state."""

from __future__ import annotations

import dataclasses
import json
from contextlib import AbstractContextManager
from typing import Any

from prefect import get_run_logger, task
from pydantic import SecretStr

from blocks.deploy_target import DeployTarget
from deliver.errors import BlockInvalid, DeployTargetInvalid, HostUnreachable, RemoteCommandFailed
from deliver.planning.release import HostState, RunningSlot, Slot, container_name
from deliver.tasks.loading import load_block
from deliver.tasks.registry import load_credentials
from deliver.tasks.ssh import (
    ConnectionPool,
    Remote,
    SshAddress,
    load_private_key,
    pinned_host_keys,
)

STATE_FILE = "release-state.json"
SWITCH_SCRIPT = """
set -eu
live="$1"; new_content_file="$2"; shift 2
cp -f "$live" "$live.prev"
mv -f "$new_content_file" "$live"
if ! "$@" -t 2>&1; then
  mv -f "$live.prev" "$live"; echo "nginx -t refused the new upstream" >&2; exit 3
fi
"$@" -s reload
"""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TargetView:
    """A DeployTarget without its secrets: what the flow plans with. A fleet's view lists a
    view of each host, whose `block` names that host (`<block>@<host>`) for the tasks."""

    block: str
    environment: str
    address: str
    app_name: str
    service_host: str
    slot_ports: dict[str, int]
    health_path: str
    health_timeout_s: float
    smoke: tuple[Any, ...]
    keep_versions: int
    front_url: str | None
    blue_green: bool
    drain_s: float
    hosts: tuple[TargetView, ...] = ()
    max_unavailable: int = 1

    def slot_address(self, slot: Slot) -> str:
        """host:port of a slot, as nginx's upstream and its X-Deliver-Upstream name it."""
        return f"{self.service_host}:{self.slot_ports[slot.value]}"

    def slot_url(self, slot: Slot) -> str:
        return f"http://{self.slot_address(slot)}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OneHost:
    """One deploy host of a target with every setting resolved: what the SSH tasks act on."""

    ref: str
    name: str  # the fleet host's name; empty for a single-host target
    environment: str
    app_name: str
    host: str
    port: int
    user: str
    private_key: SecretStr
    host_keys: tuple[str, ...]
    container_port: int
    slot_ports: dict[str, int]
    state_dir: str
    registry_block: str
    nginx_upstream_file: str | None
    nginx_command: list[str] | None

    def container(self, slot: Slot) -> str:
        return container_name(self.app_name, self.environment, slot, self.name)


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


def host_ref(block: str, host: str) -> str:
    """How tasks name one host of a fleet (block names cannot hold '@')."""
    return f"{block}@{host}"


def load_target(block: str) -> DeployTarget:
    try:
        return load_block(DeployTarget, block)
    except BlockInvalid as exc:
        raise DeployTargetInvalid(block=block, field=exc.field, detail=exc.detail) from None
    except ValueError as exc:  # no such block; its message names it and holds no value
        raise DeployTargetInvalid(block=block, field="(block)", detail=str(exc)) from None


def load_host(ref: str) -> OneHost:
    """The host `ref` names: a single-host block, or `<block>@<host>` for one host of a fleet.
    A fleet's block alone names its first host, which holds the fleet's recorded state."""
    block, _, name = ref.partition("@")
    target = load_target(block)
    if not target.hosts:
        if name:
            raise DeployTargetInvalid(block=block, field="hosts", detail=f"no host {name!r}")
        assert target.host and target.slot_ports and target.state_dir is not None  # noqa: S101, PT018
        return OneHost(
            ref=ref,
            name="",
            environment=target.environment,
            app_name=target.app_name,
            host=target.host,
            port=target.port,
            user=target.user,
            private_key=target.private_key,
            host_keys=tuple(target.host_keys),
            container_port=target.container_port,
            slot_ports={str(slot): port for slot, port in target.slot_ports.items()},
            state_dir=target.state_dir,
            registry_block=target.registry_block,
            nginx_upstream_file=target.nginx_upstream_file,
            nginx_command=target.nginx_command,
        )
    chosen = next((h for h in target.hosts if h.name == (name or target.hosts[0].name)), None)
    if chosen is None:
        known = ", ".join(h.name for h in target.hosts)
        raise DeployTargetInvalid(block=block, field="hosts", detail=f"no host {name!r}: {known}")
    return OneHost(
        ref=ref,
        name=chosen.name,
        environment=target.environment,
        app_name=target.app_name,
        host=chosen.host,
        port=chosen.port,
        user=target.user,
        private_key=target.private_key,
        host_keys=tuple(chosen.host_keys or target.host_keys),
        container_port=target.container_port,
        slot_ports={str(slot): port for slot, port in chosen.slot_ports.items()},
        state_dir=chosen.state_dir,
        registry_block=target.registry_block,
        nginx_upstream_file=chosen.nginx_upstream_file,
        nginx_command=chosen.nginx_command or target.nginx_command,
    )


CONNECTIONS = ConnectionPool()


def connect(target: OneHost) -> AbstractContextManager[Remote]:
    """A verified connection to the host, reused across a run's steps while idle."""
    address = SshAddress(host=target.host, port=target.port, user=target.user)
    secret = target.private_key.get_secret_value()
    pinned = list(target.host_keys)

    def open_new() -> Remote:
        key = load_private_key(secret, block=target.ref)
        host_keys = pinned_host_keys(address, pinned, block=target.ref)
        return Remote(address, private_key=key, host_keys=host_keys)

    return CONNECTIONS.borrow(ConnectionPool.key(address, secret, pinned), open_new)


@task(name="read_target")
def read_target(block: str) -> TargetView:
    """Load and check the block, and each of a fleet's hosts, before anything touches a host."""
    target = load_target(block)
    if (target.nginx_upstream_file is None) != (target.nginx_command is None) and not target.hosts:
        detail = "nginx_upstream_file and nginx_command go together"
        raise DeployTargetInvalid(block=block, field="nginx_command", detail=detail)
    shared: dict[str, Any] = {
        "environment": target.environment,
        "app_name": target.app_name,
        "health_path": target.health_path,
        "health_timeout_s": target.health_timeout_s,
        "smoke": tuple(target.smoke_checks),
        "keep_versions": target.keep_versions,
        "drain_s": target.drain_s,
    }
    hosts = []
    for ref in [host_ref(block, h.name) for h in target.hosts] or [block]:
        one = load_host(ref)
        load_private_key(one.private_key.get_secret_value(), block=block)
        pinned_host_keys(
            SshAddress(host=one.host, port=one.port, user=one.user), list(one.host_keys), block=ref
        )
        host = next((h for h in target.hosts if h.name == one.name), None)
        hosts.append(
            TargetView(
                block=ref,
                address=f"{one.user}@{one.host}:{one.port}",
                service_host=host.service_host if host else target.service_host,
                slot_ports=one.slot_ports,
                front_url=host.front_url if host else target.front_url,
                blue_green=one.nginx_upstream_file is not None,
                **shared,
            )
        )
    if not target.hosts:
        return hosts[0]
    return TargetView(
        block=block,
        address=f"{len(hosts)} hosts",
        service_host=target.service_host,
        slot_ports={},
        front_url=target.front_url,
        blue_green=True,
        hosts=tuple(hosts),
        max_unavailable=target.max_unavailable,
        **shared,
    )


@task(
    name="read_host_state",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_retry_when(HostUnreachable),
)
def read_host_state(block: str) -> HostState:
    target = load_host(block)
    with connect(target) as remote:
        found = remote.run(["cat", f"{target.state_dir}/{STATE_FILE}"], check=False)
    return HostState.from_json(
        json.loads(found.stdout) if found.ok and found.stdout.strip() else None
    )


@task(name="write_host_state")
def write_host_state(block: str, state: HostState) -> None:
    target = load_host(block)
    with connect(target) as remote:
        remote.run(["mkdir", "-p", target.state_dir])
        content = json.dumps(state.to_json(), indent=2).encode()
        remote.write_file(f"{target.state_dir}/{STATE_FILE}", content)


@task(
    name="pull_image",
    task_run_name="pull-{image}",
    retries=2,
    retry_delay_seconds=[1, 4],
    retry_condition_fn=_retry_when(HostUnreachable, RemoteCommandFailed),
)
def pull_image(block: str, image: str) -> None:
    """Pull by digest with a throwaway docker config; the password goes on stdin only. An image
    by digest is its content, so one the host already has is not pulled again."""
    target = load_host(block)
    with connect(target) as remote:
        if remote.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False).ok:
            get_run_logger().info("%s is already on %s", image, target.host)
            return
    registry = load_credentials(target.registry_block)
    with connect(target) as remote:
        config = remote.run(["mktemp", "-d"]).stdout.strip()
        try:
            remote.run(
                [
                    "env",
                    f"DOCKER_CONFIG={config}",
                    "docker",
                    "login",
                    "--username",
                    registry.username,
                    "--password-stdin",
                    registry.registry_url,
                ],
                stdin=registry.password.get_secret_value().encode(),
            )
            remote.run(["env", f"DOCKER_CONFIG={config}", "docker", "pull", "--quiet", image])
        finally:
            remote.run(["rm", "-rf", config], check=False)
    get_run_logger().info("Pulled %s on %s", image, target.host)


@task(name="start_slot", task_run_name="start-{slot.value}")
def start_slot(block: str, image: str, slot: Slot, version: str, run: str = "") -> str:
    """Start `image` in the idle `slot` (replacing whatever is there); returns its id.

    `run`, the flow run starting it, is kept as a label so that run can find it again.
    """
    target = load_host(block)
    name = target.container(slot)
    port = target.slot_ports[slot.value]
    with connect(target) as remote:
        remote.run(["docker", "rm", "-f", name], check=False)
        started = remote.run(
            [
                "docker",
                "run",
                "--detach",
                "--name",
                name,
                "--restart",
                "unless-stopped",
                "--label",
                f"dev.deliver.app={target.app_name}",
                "--label",
                f"dev.deliver.environment={target.environment}",
                "--label",
                f"dev.deliver.host={target.name}",
                "--label",
                f"dev.deliver.slot={slot.value}",
                "--label",
                f"dev.deliver.version={version}",
                "--label",
                f"dev.deliver.run={run}",
                "--label",
                f"dev.deliver.image={image}",
                "--publish",
                f"127.0.0.1:{port}:{target.container_port}",
                image,
            ]
        )
    return started.stdout.strip()


@task(name="stop_slot", task_run_name="stop-{slot.value}")
def stop_slot(block: str, slot: Slot) -> None:
    target = load_host(block)
    with connect(target) as remote:
        remote.run(["docker", "rm", "-f", target.container(slot)], check=False)


@task(name="switch_traffic", task_run_name="switch-to-{slot.value}")
def switch_traffic(block: str, slot: Slot, upstream: str) -> None:
    """Swap nginx's upstream file atomically, test the config, reload; never retried."""
    target = load_host(block)
    if target.nginx_upstream_file is None or target.nginx_command is None:
        raise DeployTargetInvalid(block=block, field="nginx_upstream_file", detail="not set")
    live = target.nginx_upstream_file
    staged = f"{live}.new"
    with connect(target) as remote:
        remote.write_file(staged, upstream.encode())
        remote.run(
            ["sh", "-c", SWITCH_SCRIPT, "switch_traffic", live, staged, *target.nginx_command]
        )
    on = f" on {target.name}" if target.name else ""
    get_run_logger().info("Traffic switched to the %s slot%s", slot.value, on)


@task(name="prune_images")
def prune_images(block: str, images: list[str]) -> list[str]:
    """Remove images no longer kept; one still in use is left (docker refuses) and reported."""
    target = load_host(block)
    left = []
    with connect(target) as remote:
        for image in images:
            try:
                remote.run(["docker", "image", "rm", image])
            except RemoteCommandFailed:
                left.append(image)
    return left


@task(name="list_images")
def list_images(block: str, repository: str) -> list[str]:
    """Images of `repository` on the host, by digest."""
    target = load_host(block)
    with connect(target) as remote:
        listed = remote.run(
            [
                "docker",
                "image",
                "ls",
                "--digests",
                "--format",
                "{{.Repository}}@{{.Digest}}",
                repository,
            ]
        )
    return sorted({line for line in listed.stdout.split() if "@sha256:" in line})


FORMAT = "|".join(
    [
        '{{.Label "dev.deliver.slot"}}',
        '{{.Label "dev.deliver.version"}}',
        '{{.Label "dev.deliver.image"}}',
        '{{.Label "dev.deliver.run"}}',
        '{{.Label "dev.deliver.host"}}',
    ]
)


@task(name="inspect_host")
def inspect_host(block: str) -> tuple[list[RunningSlot], Slot | None]:
    """The app's running slot containers, and the slot nginx serves (None without nginx)."""
    target = load_host(block)
    with connect(target) as remote:
        listed = remote.run(
            [
                "docker",
                "ps",
                "--filter",
                f"label=dev.deliver.app={target.app_name}",
                "--filter",
                f"label=dev.deliver.environment={target.environment}",
                "--format",
                FORMAT,
            ]
        )
        upstream = (
            remote.run(["cat", target.nginx_upstream_file], check=False).stdout
            if target.nginx_upstream_file
            else ""
        )
    running = []
    for line in listed.stdout.splitlines():
        parts = line.split("|")
        # Hosts sharing an engine (the sandbox's fleet) see each other's: keep this host's.
        if len(parts) == 5 and parts[0] in {"blue", "green"} and parts[4] == target.name:
            slot, version, image, run, _ = parts
            running.append(RunningSlot(slot=Slot(slot), version=version, image=image, run=run))
    serving = None
    for slot, port in target.slot_ports.items():
        if f":{port};" in upstream:
            serving = Slot(slot)
    return running, serving


@task(name="image_labels")
def image_labels(block: str, image: str) -> dict[str, str]:
    """The labels of a pulled image (its commit, source, commit time); empty if it is gone."""
    target = load_host(block)
    with connect(target) as remote:
        found = remote.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
            check=False,
        )
    try:
        labels = json.loads(found.stdout) if found.ok else None
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
