"""A deploy host over SSH: the `DeployHost` protocol as docker and nginx commands on the host.

`open_target(block)` loads a `DeployTarget` once and gives its view (one host, or a fleet's
hosts) and an `SshHost` per host. Each host borrows one verified connection for as long as the
target is open (one release step) and hands it back when the step ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from pydantic import SecretStr

from blocks.deploy_target import DeployTarget, FleetHost, ServicePlacement
from deliver.commands import CommandResult
from deliver.errors import AccessoryDown, BlockInvalid, DeployTargetInvalid, RemoteCommandFailed
from deliver.planning.release import (
    HostState,
    RunningSlot,
    Slot,
    container_name,
    green_marker,
    nginx_upstreams,
    serving_slot,
)
from deliver.planning.runtime import (
    AccessoryRun,
    ContainerOptions,
    EnvFile,
    RuntimeFacts,
    accessory_container,
    accessory_volume,
    environment_network,
)
from deliver.planning.target import HostView, TargetView
from deliver.tasks.loading import load_block
from deliver.tasks.registry import load_credentials
from deliver.tasks.runtime import accessory_runs, image_facts, service_env
from deliver.tasks.ssh import (
    ConnectionPool,
    Remote,
    SshAddress,
    load_private_key,
    pinned_host_keys,
)

STATE_FILE = "release-state.json"
# The slots' upstream groups are loaded (checked, then a reload) only when they changed: on a
# host's first release, or new slot ports. The switch itself creates or removes the marker
# nginx reads per request, so it never closes a client's connection.
SWITCH_SCRIPT = """
set -eu
groups="$1"; staged="$2"; marker="$3"; slot="$4"; shift 4
if cmp -s "$staged" "$groups"; then
  rm -f "$staged"
else
  if [ -f "$groups" ]; then cp -f "$groups" "$groups.prev"; fi
  mv -f "$staged" "$groups"
  if ! "$@" -t 2>&1; then
    if [ -f "$groups.prev" ]; then mv -f "$groups.prev" "$groups"; fi
    echo "nginx -t refused the slots' upstream groups: the proxied location must pick" \
      "the group by the slot marker (see the README's 'Your own nginx')" >&2
    exit 3
  fi
  "$@" -s reload
fi
if [ "$slot" = green ]; then : > "$marker"; else rm -f "$marker"; fi
"""
# The upstream file, then a line saying the green marker is there, if it is.
SERVING_SCRIPT = """cat -- "$1" 2>/dev/null || true; if [ -f "$2" ]; then echo "$3"; fi"""
GREEN_MARKED = "# deliver: green is marked live"
# One remote shell logs in and pulls: the registry password lives in a docker config in memory
# (/dev/shm where there is one) only while the shell runs, and is removed when it exits or is
# hung up on (a release killed mid-pull drops its SSH connection), never left on the host.
PULL_SCRIPT = """
set -eu
image="$1"; registry="$2"; user="$3"
base=/dev/shm; [ -d "$base" ] && [ -w "$base" ] || base="${TMPDIR:-/tmp}"
config=$(mktemp -d "$base/deliver-pull.XXXXXXXXXX")
cleanup() { rm -rf "$config"; }
trap cleanup EXIT
trap 'cleanup; exit 129' HUP
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 141' PIPE
DOCKER_CONFIG="$config" docker login --username "$user" --password-stdin "$registry" >/dev/null
DOCKER_CONFIG="$config" docker pull --quiet "$image"
"""
ONE_OFF_TIMEOUT_S = 900.0  # a migration's deadline
AUDIT_FILE = "audit.jsonl"
APPEND_SCRIPT = """
umask 077
if [ -L "$1" ]; then echo "$1 is a symbolic link: refusing to write through it" >&2; exit 4; fi
cat >> "$1"
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
    network: str | None = None
    env: EnvFile = dataclasses.field(default_factory=EnvFile)
    options: ContainerOptions = dataclasses.field(default_factory=ContainerOptions)
    accessories: tuple[AccessoryRun, ...] = ()  # booted on the target's first host only
    environment_dir: str = ""  # the environment's own folder on the host: its audit log

    def env_file(self, container: str) -> str:
        return f"{self.state_dir}/env/{container}.env"


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


def target_settings(
    block: str,
    *,
    target: DeployTarget | None = None,
    facts: RuntimeFacts | None = None,
    env: EnvFile | None = None,
    accessories: Sequence[AccessoryRun] = (),
) -> tuple[TargetView, tuple[HostSettings, ...]]:
    """The target's view and its hosts' settings for one service: the image's (`facts`), else
    the target's own `app_name`. Keys are parsed, so a malformed block fails here, before any
    host is touched."""
    target = target or load_target(block)
    facts = facts or legacy_facts(target)
    placement = service_placement(block, target, facts.service)
    fleet: list[FleetHost | None] = [*target.hosts] or [None]
    runtime = _Runtime(
        facts=facts,
        placement=placement,
        network=target.network_name,
        env=env or EnvFile(),
        accessories=tuple(accessories),
    )
    hosts = tuple(
        _settings(block, target, fleet_host, runtime, first=index == 0)
        for index, fleet_host in enumerate(fleet)
    )
    for host in hosts:
        load_private_key(host.private_key.get_secret_value(), block=block)
        pinned_host_keys(host.address, host.host_keys, block=host.view.ref)
    view = TargetView(
        block=block,
        environment=target.environment,
        app_name=facts.service,
        hosts=tuple(host.view for host in hosts),
        health_path=facts.health_path,
        health_timeout_s=facts.health_timeout_s,
        smoke=tuple(facts.smoke),
        keep_versions=target.keep_versions,
        drain_s=target.drain_s,
        max_unavailable=target.max_unavailable,
        front_url=target.front_url if target.hosts else None,
        staging_target=target.staging_target,
        migrate=facts.migrate,
        accessories=tuple(accessory.name for accessory in accessories),
    )
    return view, hosts


def legacy_facts(target: DeployTarget) -> RuntimeFacts:
    """The target's own service, as its block describes it: for an image CI did not label."""
    return RuntimeFacts(
        service=target.app_name,
        port=target.container_port,
        health_path=target.health_path,
        health_timeout_s=target.health_timeout_s,
        smoke=tuple(target.smoke_checks),
    )


def service_placement(block: str, target: DeployTarget, service: str) -> ServicePlacement | None:
    """None for the target's own `app_name` (its top-level slots); else `services.<service>`."""
    if service == target.app_name:
        return None
    if service not in target.services:
        detail = (
            f"no place for the service {service!r} here: add services.{service} with its "
            f"slot_ports (this target serves {target.app_name}"
            + (f" and {', '.join(sorted(target.services))})" if target.services else ")")
        )
        raise DeployTargetInvalid(block=block, field="services", detail=detail)
    return target.services[service]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Runtime:
    facts: RuntimeFacts
    placement: ServicePlacement | None
    network: str | None
    env: EnvFile
    accessories: tuple[AccessoryRun, ...]


def _settings(
    block: str,
    target: DeployTarget,
    fleet_host: FleetHost | None,
    runtime: _Runtime,
    *,
    first: bool,
) -> HostSettings:
    """A fleet's host (`fleet_host`) falls back to the target's settings where it sets none;
    a single-host target (`fleet_host` None) sets them all itself, and a service placed beside
    its app_name has its own slots, state and front."""
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
        environment_dir = target.state_dir
        if (placed := runtime.placement) is not None:
            slot_ports = placed.slot_ports
            state_dir = placed.state_dir or f"{target.state_dir}/{runtime.facts.service}"
            upstream_file, front_url = placed.nginx_upstream_file, placed.front_url
            nginx = placed.nginx_command or nginx
            if upstream_file and not (front_url and nginx):
                detail = f"services.{runtime.facts.service}: nginx_upstream_file needs front_url "
                detail += "and the target's nginx_command"
                raise DeployTargetInvalid(block=block, field="services", detail=detail)
    else:
        name, ref = fleet_host.name, host_ref(block, fleet_host.name)
        host, port = fleet_host.host, fleet_host.port
        slot_ports, state_dir = fleet_host.slot_ports, fleet_host.state_dir
        service_host, upstream_file = fleet_host.service_host, fleet_host.nginx_upstream_file
        host_keys = fleet_host.host_keys or target.host_keys
        nginx = fleet_host.nginx_command or target.nginx_command
        front_url = fleet_host.front_url
        environment_dir = fleet_host.state_dir
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
        app_name=runtime.facts.service,
        address=address,
        private_key=target.private_key,
        host_keys=tuple(host_keys),
        container_port=runtime.facts.port,
        state_dir=state_dir,
        registry_block=target.registry_block,
        nginx_upstream_file=upstream_file,
        nginx_command=tuple(nginx) if nginx else None,
        network=runtime.network,
        env=runtime.env,
        options=runtime.facts.options,
        accessories=runtime.accessories if first else (),
        environment_dir=environment_dir,
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
        upstream, green_marked = "", False
        if settings.nginx_upstream_file:
            marker = green_marker(settings.nginx_upstream_file)
            argv = ["sh", "-c", SERVING_SCRIPT, "serving", settings.nginx_upstream_file, marker]
            upstream = remote.run([*argv, GREEN_MARKED], check=False).stdout
            green_marked = GREEN_MARKED in upstream.splitlines()
        running = []
        for line in listed.stdout.splitlines():
            parts = line.split("|")
            # Hosts sharing an engine (the sandbox's fleet) see each other's: keep this host's.
            if len(parts) == 5 and parts[0] in {"blue", "green"} and parts[4] == self.view.name:
                slot, version, image, run, _ = parts
                running.append(RunningSlot(slot=Slot(slot), version=version, image=image, run=run))
        serving = serving_slot(upstream, green_marked=green_marked, slot_ports=self.view.slot_ports)
        return running, serving

    def pull(self, image: str) -> bool:
        """By digest, logged in through a throwaway docker config that the remote shell removes
        however it ends (PULL_SCRIPT); the password goes on stdin only. An image by digest is
        its content, so one the host already has is not pulled again."""
        remote = self._connection()
        if remote.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False).ok:
            return False
        registry = load_credentials(self.settings.registry_block)
        remote.run(
            [
                "sh",
                "-c",
                PULL_SCRIPT,
                "pull_image",
                image,
                registry.registry_url,
                registry.username,
            ],
            stdin=registry.password.get_secret_value().encode(),
        )
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
                *self._runtime_arguments(name),
                image,
            ]
        )
        return started.stdout.strip()

    def _runtime_arguments(self, container: str) -> list[str]:
        """The network, options and env file of a container of the service; the env file is
        written first (mode 0600, the deploy user's), so no value is on a command line."""
        settings = self.settings
        args = settings.options.arguments()
        if settings.network:
            self._ensure_network(settings.network)
            args += ["--network", settings.network]
        if settings.env.values:
            path = self._write_env_file(container, settings.env)
            args += ["--env-file", path]
        return args

    def _write_env_file(self, container: str, env: EnvFile) -> str:
        remote, path = self._connection(), self.settings.env_file(container)
        remote.run(["mkdir", "-p", "-m", "700", path.rsplit("/", 1)[0]])
        remote.write_file(path, env.render())
        return path

    def _ensure_network(self, network: str) -> None:
        remote = self._connection()
        if not remote.run(["docker", "network", "inspect", network], check=False).ok:
            created = remote.run(["docker", "network", "create", network], check=False)
            if not created.ok and "already exists" not in created.stderr:
                remote.run(["docker", "network", "inspect", network])  # raises, with its stderr

    def stop_slot(self, slot: Slot) -> None:
        name = self._container(slot)
        self._connection().run(["docker", "rm", "-f", name], check=False)
        self._connection().run(["rm", "-f", self.settings.env_file(name)], check=False)

    def run_once(self, image: str, command: Sequence[str]) -> CommandResult:
        """`command` in a one-off container of `image`, with the service's env and network;
        removed when it ends, with its env file. Its result, whatever the exit code."""
        settings, remote = self.settings, self._connection()
        name = f"{settings.app_name}-{settings.environment}-once-{secrets.token_hex(4)}"
        labels = [
            "--label",
            f"dev.deliver.app={settings.app_name}",
            "--label",
            "dev.deliver.once=1",
        ]
        try:
            arguments = self._runtime_arguments(name)
            return remote.run(
                ["docker", "run", "--rm", "--name", name, *labels, *arguments, image, *command],
                check=False,
                timeout_s=ONE_OFF_TIMEOUT_S,
            )
        finally:
            remote.run(["rm", "-f", settings.env_file(name)], check=False)

    def boot_accessories(self) -> list[str]:
        """Boot each accessory that is absent and wait for its health; one that exists but is
        not running, or not healthy, is an error: a release never replaces or restarts one."""
        settings, booted = self.settings, []
        for accessory in settings.accessories:
            container = accessory_container(settings.environment, accessory.name)
            status = self._connection().run(
                ["docker", "inspect", "--format", "{{.State.Status}}", container], check=False
            )
            if not status.ok:
                self.boot_accessory(accessory)
                booted.append(accessory.name)
            elif status.stdout.strip() != "running":
                raise AccessoryDown(
                    accessory=accessory.name,
                    where=self.view.address,
                    detail=f"its container is {status.stdout.strip()}",
                    environment=settings.environment,
                )
            else:
                self._await_accessory(accessory, deadline_s=min(accessory.health_timeout_s, 10))
        return booted

    def boot_accessory(self, accessory: AccessoryRun) -> None:
        """Start it (its volume is created with it, or reused); its env file is removed once
        docker has read it."""
        settings, remote = self.settings, self._connection()
        network = settings.network or environment_network(settings.environment)
        self._ensure_network(network)
        container = accessory_container(settings.environment, accessory.name)
        args = accessory.run_arguments(settings.environment, network)
        path = ""
        try:
            if accessory.env.values:
                path = self._write_env_file(container, accessory.env)
                args += ["--env-file", path]
            remote.run(["docker", "run", *args, accessory.image])
        finally:
            if path:
                remote.run(["rm", "-f", path], check=False)
        self._await_accessory(accessory, deadline_s=accessory.health_timeout_s)

    def _await_accessory(self, accessory: AccessoryRun, *, deadline_s: float) -> None:
        if not accessory.health:
            return
        container = accessory_container(self.settings.environment, accessory.name)
        deadline = time.monotonic() + deadline_s
        while True:
            probe = self._connection().run(
                ["docker", "exec", container, *accessory.health], check=False, timeout_s=30
            )
            if probe.ok:
                return
            if time.monotonic() > deadline:
                raise AccessoryDown(
                    accessory=accessory.name,
                    where=self.view.address,
                    detail=f"{' '.join(accessory.health)} failed for {deadline_s:.0f} s: "
                    f"{probe.tail(3) or probe.exit_code}",
                    environment=self.settings.environment,
                )
            time.sleep(0.5)

    def switch(self, slot: Slot) -> None:
        """Mark `slot` live for nginx (SWITCH_SCRIPT), loading the slots' groups first if they
        are not the ones in place."""
        settings = self.settings
        if settings.nginx_upstream_file is None or settings.nginx_command is None:
            raise DeployTargetInvalid(
                block=self.view.ref, field="nginx_upstream_file", detail="not set"
            )
        groups = nginx_upstreams(slot_ports=self.view.slot_ports, host=self.view.service_host)
        live = settings.nginx_upstream_file
        staged = f"{live}.new"
        remote = self._connection()
        remote.write_file(staged, groups.encode())
        argv = ["sh", "-c", SWITCH_SCRIPT, "switch_traffic", live, staged, green_marker(live)]
        remote.run([*argv, slot.value, *settings.nginx_command])

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

    def container(self, slot: Slot) -> str:
        return self._container(slot)

    def follow_logs(
        self,
        container: str,
        write: Callable[[str], None],
        *,
        since: str | None = None,
        lines: int | None = None,
        follow: bool = False,
    ) -> int:
        """`docker logs` of one of the host's containers, redacted, as it comes."""
        argv = ["docker", "logs", "--timestamps"]
        argv += ["--since", since] if since else []
        argv += ["--tail", str(lines)] if lines is not None else []
        argv += ["--follow"] if follow else []
        return self._connection().stream([*argv, container], write)

    def accessory(self, name: str) -> AccessoryRun:
        found = [a for a in self.settings.accessories if a.name == name]
        if not found:
            names = ", ".join(a.name for a in self.settings.accessories) or "none"
            detail = f"no accessory {name!r} (declared: {names})"
            raise DeployTargetInvalid(block=self.view.ref, field="accessories", detail=detail)
        return found[0]

    def accessory_state(self, name: str) -> dict[str, str]:
        """Its container's status, start time and image, and its volume; "absent" if none."""
        container = accessory_container(self.settings.environment, name)
        found = self._connection().run(
            [
                "docker",
                "inspect",
                "--format",
                "{{.State.Status}}|{{.State.StartedAt}}|{{.Config.Image}}",
                container,
            ],
            check=False,
        )
        status, started, image = ([*found.stdout.strip().split("|"), "", "", ""])[:3]
        volume = accessory_volume(self.settings.environment, name)
        has_volume = self._connection().run(["docker", "volume", "inspect", volume], check=False)
        return {
            "name": name,
            "container": container,
            "status": status if found.ok else "absent",
            "started_at": started if found.ok else "",
            "image": image if found.ok else self.accessory(name).image,
            "volume": volume if has_volume.ok else "",
        }

    def remove_accessory(self, name: str, *, volume: bool) -> None:
        remote = self._connection()
        remote.run(["docker", "rm", "-f", accessory_container(self.settings.environment, name)])
        if volume:
            volume_name = accessory_volume(self.settings.environment, name)
            remote.run(["docker", "volume", "rm", "--force", volume_name])

    def append_audit(self, entry: Mapping[str, str]) -> None:
        """One line of the environment's audit log on the host (the deploy user's alone)."""
        path = f"{self.settings.environment_dir}/{AUDIT_FILE}"
        line = (json.dumps(dict(entry), sort_keys=True) + "\n").encode()
        self._connection().run(["sh", "-c", APPEND_SCRIPT, "append_audit", path], stdin=line)

    def read_audit(self) -> list[dict[str, str]]:
        path = f"{self.settings.environment_dir}/{AUDIT_FILE}"
        found = self._connection().run(["cat", path], check=False)
        entries = []
        for line in found.stdout.splitlines() if found.ok else []:
            with contextlib.suppress(json.JSONDecodeError):
                entries.append({str(k): str(v) for k, v in json.loads(line).items()})
        return entries

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
def open_ssh_hosts(
    block: str,
    image: str | None = None,
    *,
    service: str | None = None,
    with_env: bool = True,
    all_accessories: bool = False,
) -> Iterator[tuple[TargetView, tuple[SshHost, ...]]]:
    """The target's view and an open `SshHost` per host, closed (connections returned to the
    pool) when the step ends. With `image`, for the service CI labelled it with, else for
    `service` (default the target's app_name); `with_env` reads its env and the accessories'
    (secrets included), else only its state and containers are to be read. The accessories are
    those the service uses, or with `all_accessories` every one of the environment."""
    target = load_target(block)
    facts = image_facts(target, block, image) if image else None
    if facts is None and service is not None and service != target.app_name:
        facts = dataclasses.replace(legacy_facts(target), service=service)
    service_facts = facts or legacy_facts(target)
    env = service_env(target, service_facts) if with_env else EnvFile()
    used_by = None if all_accessories else service_facts.service
    accessories = accessory_runs(target, used_by, with_env=with_env)
    view, settings = target_settings(
        block, target=target, facts=facts, env=env, accessories=accessories
    )
    hosts = tuple(SshHost(host) for host in settings)
    try:
        yield view, hosts
    finally:
        for host in hosts:
            host.close()
