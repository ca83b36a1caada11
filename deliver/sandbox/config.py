"""Where the sandbox keeps its state and which loopback ports it uses. Pure: no I/O."""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from pathlib import Path

LOOPBACK = "127.0.0.1"
LOCAL_BASE_IMAGE = "local/debian-python:bookworm"
PUBLIC_BASE_IMAGE = "python:3.12-slim"


class Environment(enum.Enum):
    STAGING = "staging"
    PRODUCTION = "production"


class Slot(enum.Enum):
    BLUE = "blue"
    GREEN = "green"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FleetHostPorts:
    """One host of the sandbox's production fleet: its sshd, its two slots, its own nginx."""

    ssh: int
    blue: int
    green: int
    front: int


def _fleet_ports() -> dict[str, FleetHostPorts]:
    return {
        f"fleet-{n}": FleetHostPorts(
            ssh=2230 + n, blue=8301 + 10 * n, green=8302 + 10 * n, front=8180 + n
        )
        for n in (1, 2, 3)
    }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SandboxConfig:
    """Everything that decides where the sandbox lives; two configs never share a port."""

    state_dir: Path
    registry_port: int = 5001
    ssh_ports: Mapping[Environment, int] = dataclasses.field(
        default_factory=lambda: {Environment.STAGING: 2222, Environment.PRODUCTION: 2223}
    )
    nginx_port: int = 8080
    advisory_port: int = 8090
    # The Docker bridge's address on this machine (dockerd --bip): the one address the CI job
    # containers can reach the advisory mirror at, since the worker's loopback is not theirs.
    docker_bridge_gateway: str = "172.17.0.1"
    chat_port: int = 8091
    postgres_port: int = 5433
    prefect_port: int = 4200
    slot_ports: Mapping[Environment, Mapping[Slot, int]] = dataclasses.field(
        default_factory=lambda: {
            Environment.STAGING: {Slot.BLUE: 8201, Slot.GREEN: 8202},
            Environment.PRODUCTION: {Slot.BLUE: 8101, Slot.GREEN: 8102},
        }
    )
    # orders-api, the second service on staging's and production's hosts, and its own front.
    orders_slot_ports: Mapping[Environment, Mapping[Slot, int]] = dataclasses.field(
        default_factory=lambda: {
            Environment.STAGING: {Slot.BLUE: 8211, Slot.GREEN: 8212},
            Environment.PRODUCTION: {Slot.BLUE: 8111, Slot.GREEN: 8112},
        }
    )
    orders_front_port: int = 8082
    qa_slot_ports: Mapping[Slot, int] = dataclasses.field(
        default_factory=lambda: {Slot.BLUE: 8401, Slot.GREEN: 8402}
    )
    fleet: Mapping[str, FleetHostPorts] = dataclasses.field(default_factory=_fleet_ports)
    fleet_front_port: int = 8180
    work_pool: str = "sandbox-process"

    @property
    def registry_address(self) -> str:
        return f"{LOOPBACK}:{self.registry_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.prefect_port}/api"

    @property
    def advisory_url(self) -> str:
        """The OSV query endpoint of the sandbox's advisory mirror, as pip-audit's --osv-url:
        on the Docker bridge, where the worker's scan and the job container's audit reach it."""
        return f"http://{self.docker_bridge_gateway}:{self.advisory_port}/v1/query"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect" / "home"

    @property
    def production_front_url(self) -> str:
        return f"http://{LOOPBACK}:{self.nginx_port}"

    @property
    def orders_front_url(self) -> str:
        """Production's nginx in front of orders-api."""
        return f"http://{LOOPBACK}:{self.orders_front_port}"

    @property
    def fleet_front_url(self) -> str:
        """The load balancer in front of the fleet's hosts."""
        return f"http://{LOOPBACK}:{self.fleet_front_port}"

    def ssh_port(self, host: str) -> int:
        """The sshd port of an environment's host, or of a fleet host."""
        for environment, port in self.ssh_ports.items():
            if environment.value == host:
                return port
        return self.fleet[host].ssh

    def component_dir(self, name: str) -> Path:
        return self.state_dir / name

    @property
    def prefect_auth_file(self) -> Path:
        """The server's API auth string (`user:password`, mode 0600), made by `sandbox up`."""
        return self.state_dir / "prefect" / "api-auth"

    def prefect_env(self) -> dict[str, str]:
        """Settings for any Prefect process that talks to this sandbox's server."""
        env = {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": LOOPBACK,
            "PREFECT_SERVER_API_PORT": str(self.prefect_port),
        }
        if self.prefect_auth_file.exists():
            env["PREFECT_API_AUTH_STRING"] = self.prefect_auth_file.read_text().strip()
        return env

    def used_ports(self) -> list[int]:
        ports = [self.registry_port, self.nginx_port, self.prefect_port, self.advisory_port]
        ports += [self.chat_port, self.postgres_port]
        ports.extend(self.ssh_ports.values())
        for slots in [*self.slot_ports.values(), *self.orders_slot_ports.values()]:
            ports.extend(slots.values())
        ports.append(self.orders_front_port)
        ports.append(self.fleet_front_port)
        ports.extend(self.qa_slot_ports.values())
        for host in self.fleet.values():
            ports += [host.ssh, host.blue, host.green, host.front]
        return ports


def default_state_dir(environ: Mapping[str, str], cwd: Path) -> Path:
    """DELIVER_SANDBOX_DIR if set, else `.sandbox` at the project root above `cwd`."""
    if configured := environ.get("DELIVER_SANDBOX_DIR"):
        return Path(configured).resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "prefect.yaml").is_file():
            return folder / ".sandbox"
    return Path.home() / ".local" / "state" / "deliver" / "sandbox"


def config_from_env(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> SandboxConfig:
    environ = os.environ if environ is None else environ
    state_dir = default_state_dir(environ, cwd or Path.cwd())
    return SandboxConfig(state_dir=state_dir)
