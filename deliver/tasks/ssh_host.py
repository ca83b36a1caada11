"""A deploy host over SSH: the `DeployHost` protocol as docker and nginx commands on the host.

`open_target(block)` loads a `DeployTarget` once and gives its view (one host, or a fleet's
hosts) and an `SshHost` per host. Each host borrows one verified connection for as long as the
target is open (one release step) and hands it back when the step ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence

from pydantic import SecretStr

from blocks.deploy_target import DeployTarget, FleetHost
from deliver.errors import BlockInvalid, DeployTargetInvalid, RemoteCommandFailed
from deliver.planning.release import (
    HostState,
    RunningSlot,
    Slot,
    container_name,
    nginx_upstream,
)
from deliver.planning.target import HostView, TargetView
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
LABELS = ("slot", "version", "image", "run", "host")
PS_FORMAT = "|".join(f'{{{{.Label "dev.deliver.{label}"}}}}' for label in LABELS)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostSettings:
    """One host of a target with every setting resolved: what its SSH commands need."""

    view: HostView
    environment: str
    app_name: str
    address: SshAddress
    private_key: SecretStr
    host_keys: tuple[str, ...]
    container_port: int
    state_dir: str
    registry_block: str
    nginx_upstream_file: str | None
    nginx_command: tuple[str, ...] | None


def host_ref(block: str, host: str) -> str:
    """How runs name one host of a fleet (block names cannot hold '@')."""
    return f"{block}@{host}"


def load_target(block: str) -> DeployTarget:
    try:
        return load_block(DeployTarget, block)
    except BlockInvalid as exc:
        raise DeployTargetInvalid(block=block, field=exc.field, detail=exc.detail) from None
    except ValueError as exc:  # no such block; its message names it and holds no value
        raise DeployTargetInvalid(block=block, field="(block)", detail=str(exc)) from None


def target_settings(block: str) -> tuple[TargetView, tuple[HostSettings, ...]]:
    """The target's view and its hosts' settings; keys are parsed, so a malformed block fails
    here, before any host is touched."""
    target = load_target(block)
    fleet: list[FleetHost | None] = [*target.hosts] or [None]
    hosts = tuple(_settings(block, target, fleet_host) for fleet_host in fleet)
    for host in hosts:
        load_private_key(host.private_key.get_secret_value(), block=block)
        pinned_host_keys(host.address, host.host_keys, block=host.view.ref)
    view = TargetView(
        block=block,
        environment=target.environment,
        app_name=target.app_name,
        hosts=tuple(host.view for host in hosts),
        health_path=target.health_path,
        health_timeout_s=target.health_timeout_s,
        smoke=tuple(target.smoke_checks),
        keep_versions=target.keep_versions,
        drain_s=target.drain_s,
        max_unavailable=target.max_unavailable,
        front_url=target.front_url if target.hosts else None,
        staging_target=target.staging_target,
    )
    return view, hosts


def _settings(block: str, target: DeployTarget, fleet_host: FleetHost | None) -> HostSettings:
    """A fleet's host (`fleet_host`) falls back to the target's settings where it sets none;
    a single-host target (`fleet_host` None) sets them all itself."""
    if fleet_host is None:
        if (target.nginx_upstream_file is None) != (target.nginx_command is None):
            detail = "nginx_upstream_file and nginx_command go together"
            raise DeployTargetInvalid(block=block, field="nginx_command", detail=detail)
        assert target.host and target.slot_ports and target.state_dir is not None  # noqa: S101, PT018 (the block's validator)
        name, ref, host, port = "", block, target.host, target.port
        slot_ports, state_dir = target.slot_ports, target.state_dir
        service_host, upstream_file = target.service_host, target.nginx_upstream_file
        host_keys, nginx = target.host_keys, target.nginx_command
        front_url = target.front_url if upstream_file else None
    else:
        name, ref = fleet_host.name, host_ref(block, fleet_host.name)
        host, port = fleet_host.host, fleet_host.port
        slot_ports, state_dir = fleet_host.slot_ports, fleet_host.state_dir
        service_host, upstream_file = fleet_host.service_host, fleet_host.nginx_upstream_file
        host_keys = fleet_host.host_keys or target.host_keys
        nginx = fleet_host.nginx_command or target.nginx_command
        front_url = fleet_host.front_url
    address = SshAddress(host=host, port=port, user=target.user)
    return HostSettings(
        view=HostView(
            ref=ref,
            name=name,
            address=str(address),
            service_host=service_host,
            slot_ports={Slot(slot): port for slot, port in slot_ports.items()},
            front_url=front_url,
        ),
        environment=target.environment,
        app_name=target.app_name,
        address=address,
        private_key=target.private_key,
        host_keys=tuple(host_keys),
        container_port=target.container_port,
        state_dir=state_dir,
        registry_block=target.registry_block,
        nginx_upstream_file=upstream_file,
        nginx_command=tuple(nginx) if nginx else None,
    )


CONNECTIONS = ConnectionPool()


class SshHost:
    """`DeployHost` over one SSH connection, opened on first use and kept while the host is
    open; a connection that dropped is opened again on the next command."""

    def __init__(self, settings: HostSettings) -> None:
        self.settings = settings
        self._remote: Remote | None = None
        self._borrowed: contextlib.ExitStack | None = None

    @property
    def view(self) -> HostView:
        return self.settings.view

    def close(self) -> None:
        if self._borrowed is not None:
            self._borrowed.close()
        self._remote, self._borrowed = None, None

    def _connection(self) -> Remote:
        if self._remote is not None and self._remote.alive:
            return self._remote
        self.close()
        settings = self.settings
        secret = settings.private_key.get_secret_value()

        def open_new() -> Remote:
            key = load_private_key(secret, block=settings.view.ref)
            known = pinned_host_keys(settings.address, settings.host_keys, block=settings.view.ref)
            return Remote(settings.address, private_key=key, host_keys=known)

        borrowed = contextlib.ExitStack()
        pool_key = ConnectionPool.key(settings.address, secret, settings.host_keys)
        self._remote = borrowed.enter_context(CONNECTIONS.borrow(pool_key, open_new))
        self._borrowed = borrowed
        return self._remote

    def _container(self, slot: Slot) -> str:
        settings = self.settings
        return container_name(settings.app_name, settings.environment, slot, settings.view.name)

    def inspect(self) -> tuple[list[RunningSlot], Slot | None]:
        settings, remote = self.settings, self._connection()
        listed = remote.run(
            [
                "docker",
                "ps",
                "--filter",
                f"label=dev.deliver.app={settings.app_name}",
                "--filter",
                f"label=dev.deliver.environment={settings.environment}",
                "--format",
                PS_FORMAT,
            ]
        )
        upstream = ""
        if settings.nginx_upstream_file:
            upstream = remote.run(["cat", settings.nginx_upstream_file], check=False).stdout
        running = []
        for line in listed.stdout.splitlines():
            parts = line.split("|")
            # Hosts sharing an engine (the sandbox's fleet) see each other's: keep this host's.
            if len(parts) == 5 and parts[0] in {"blue", "green"} and parts[4] == self.view.name:
                slot, version, image, run, _ = parts
                running.append(RunningSlot(slot=Slot(slot), version=version, image=image, run=run))
        serving = next(
            (slot for slot, port in self.view.slot_ports.items() if f":{port};" in upstream), None
        )
        return running, serving

    def pull(self, image: str) -> bool:
        """By digest, with a throwaway docker config; the password goes on stdin only. An image
        by digest is its content, so one the host already has is not pulled again."""
        remote = self._connection()
        if remote.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False).ok:
            return False
        registry = load_credentials(self.settings.registry_block)
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
        return True

    def start_slot(self, slot: Slot, image: str, version: str, run: str) -> str:
        settings, remote, name = self.settings, self._connection(), self._container(slot)
        labels = {
            "dev.deliver.app": settings.app_name,
            "dev.deliver.environment": settings.environment,
            "dev.deliver.host": self.view.name,
            "dev.deliver.slot": slot.value,
            "dev.deliver.version": version,
            "dev.deliver.run": run,
            "dev.deliver.image": image,
        }
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
                *[arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")],
                "--publish",
                f"127.0.0.1:{self.view.slot_ports[slot]}:{settings.container_port}",
                image,
            ]
        )
        return started.stdout.strip()

    def stop_slot(self, slot: Slot) -> None:
        self._connection().run(["docker", "rm", "-f", self._container(slot)], check=False)

    def switch(self, slot: Slot) -> None:
        """Swap nginx's upstream file atomically, test the config, reload."""
        settings = self.settings
        if settings.nginx_upstream_file is None or settings.nginx_command is None:
            raise DeployTargetInvalid(
                block=self.view.ref, field="nginx_upstream_file", detail="not set"
            )
        upstream = nginx_upstream(slot_port=self.view.slot_ports[slot], host=self.view.service_host)
        live = settings.nginx_upstream_file
        staged = f"{live}.new"
        remote = self._connection()
        remote.write_file(staged, upstream.encode())
        remote.run(
            ["sh", "-c", SWITCH_SCRIPT, "switch_traffic", live, staged, *settings.nginx_command]
        )

    def read_state(self) -> HostState:
        path = f"{self.settings.state_dir}/{STATE_FILE}"
        found = self._connection().run(["cat", path], check=False)
        return HostState.from_json(
            json.loads(found.stdout) if found.ok and found.stdout.strip() else None
        )

    def write_state(self, state: HostState) -> None:
        remote = self._connection()
        remote.run(["mkdir", "-p", self.settings.state_dir])
        content = json.dumps(state.to_json(), indent=2).encode()
        remote.write_file(f"{self.settings.state_dir}/{STATE_FILE}", content)

    def image_labels(self, image: str) -> dict[str, str]:
        found = self._connection().run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
            check=False,
        )
        try:
            labels = json.loads(found.stdout) if found.ok else None
        except json.JSONDecodeError:
            return {}
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def prune(self, images: Sequence[str]) -> list[str]:
        """One still in use is left (docker refuses) and returned."""
        left = []
        remote = self._connection()
        for image in images:
            try:
                remote.run(["docker", "image", "rm", image])
            except RemoteCommandFailed:
                left.append(image)
        return left


@contextlib.contextmanager
def open_ssh_hosts(block: str) -> Iterator[tuple[TargetView, tuple[SshHost, ...]]]:
    """The target's view and an open `SshHost` per host, closed (connections returned to the
    pool) when the step ends."""
    view, settings = target_settings(block)
    hosts = tuple(SshHost(host) for host in settings)
    try:
        yield view, hosts
    finally:
        for host in hosts:
            host.close()
