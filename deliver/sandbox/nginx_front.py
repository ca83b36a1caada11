"""nginx in front of production, proxying to whichever slot the upstream file names; one more
per host of the production fleet, and the fleet's load balancer in front of those."""

from __future__ import annotations

from pathlib import Path

from deliver import commands
from deliver.errors import ComponentFailed
from deliver.planning.release import Slot as ReleaseSlot
from deliver.planning.release import green_marker, nginx_upstreams, serving_slot
from deliver.sandbox.component import Context, Daemon, SystemTool, http_probe
from deliver.sandbox.config import LOOPBACK, Environment, Slot
from deliver.sandbox.render import nginx_balancer_config, nginx_config

NGINX = SystemTool(program="nginx", package="nginx")


class NginxFront(Daemon):
    """Production's nginx; with `fleet_host` the nginx on that host of the fleet; with
    `service` the nginx in front of that second service's production slots (orders-api)."""

    tools = (NGINX,)

    def __init__(self, fleet_host: str | None = None, *, service: str | None = None) -> None:
        self.fleet_host, self.service = fleet_host, service
        suffix = fleet_host or service
        self.name = f"nginx-{suffix}" if suffix else "nginx"  # type: ignore[misc]

    def address(self, ctx: Context) -> str:
        return f"http://{LOOPBACK}:{self.port(ctx)}"

    def port(self, ctx: Context) -> int:
        if self.service:
            return ctx.config.orders_front_port
        return ctx.config.fleet[self.fleet_host].front if self.fleet_host else ctx.config.nginx_port

    def _slot_ports(self, ctx: Context) -> dict[ReleaseSlot, int]:
        if self.fleet_host:
            host = ctx.config.fleet[self.fleet_host]
            return {ReleaseSlot.BLUE: host.blue, ReleaseSlot.GREEN: host.green}
        ports = ctx.config.orders_slot_ports if self.service else ctx.config.slot_ports
        production = ports[Environment.PRODUCTION]
        return {ReleaseSlot(slot.value): production[slot] for slot in Slot}

    def command(self, ctx: Context) -> list[str]:
        """nginx as a release runs it: the DeployTarget's nginx_command."""
        return [*self._base_argv(ctx)]

    def paths(self, ctx: Context) -> dict[str, Path]:
        folder = ctx.dir(self.name)
        return {
            "prefix": folder,
            "config": folder / "nginx.conf",
            "upstream": folder / "production-upstream.conf",
            "pid": folder / "nginx.pid",
        }

    def prepare(self, ctx: Context) -> None:
        paths = self.paths(ctx)
        (paths["prefix"] / "scratch").mkdir(exist_ok=True)
        self._write_slot_groups(paths["upstream"], self._slot_ports(ctx))
        paths["config"].write_text(
            nginx_config(
                port=self.port(ctx),
                prefix=paths["prefix"],
                upstream_file=paths["upstream"],
                pid_file=paths["pid"],
            )
        )
        check = commands.run([*self._base_argv(ctx), "-t"], timeout_s=30)
        if not check.ok:
            raise ComponentFailed(component=self.name, detail=f"nginx -t: {check.stderr.strip()}")
        if not self.fleet_host and not self.service:
            ctx.state.set_fact("nginx_upstream_file", str(paths["upstream"]))
            ctx.state.set_fact("nginx_config_file", str(paths["config"]))

    @staticmethod
    def _write_slot_groups(upstream: Path, ports: dict[ReleaseSlot, int]) -> None:
        """The slots' groups, blue serving, unless there already; an upstream file of one group
        (a sandbox made before slot markers) keeps the slot it named."""
        groups = nginx_upstreams(slot_ports=ports)
        existing = upstream.read_text() if upstream.exists() else ""
        if existing == groups:
            return
        if serving_slot(existing, green_marked=False, slot_ports=ports) is ReleaseSlot.GREEN:
            Path(green_marker(str(upstream))).touch()
        upstream.write_text(groups)

    def _base_argv(self, ctx: Context) -> list[str]:
        paths = self.paths(ctx)
        return [
            self.tool_path(self.tools[0]),
            "-p",
            str(paths["prefix"]),
            "-c",
            str(paths["config"]),
            "-e",
            str(paths["prefix"] / "error.log"),
        ]

    def argv(self, ctx: Context) -> list[str]:
        return [*self._base_argv(ctx), "-g", "daemon off;"]

    def probe(self, ctx: Context) -> str | None:
        return http_probe(f"{self.address(ctx)}/__front/health", timeout_s=2.0)


class FleetBalancer(Daemon):
    """The fleet's front: round robin over each host's nginx, as a load balancer would."""

    name = "nginx-fleet-front"
    tools = (NGINX,)

    def address(self, ctx: Context) -> str:
        return ctx.config.fleet_front_url

    def port(self, ctx: Context) -> int:
        return ctx.config.fleet_front_port

    def prepare(self, ctx: Context) -> None:
        folder = ctx.dir(self.name)
        (folder / "scratch").mkdir(exist_ok=True)
        fronts = [host.front for host in ctx.config.fleet.values()]
        config = nginx_balancer_config(
            port=self.port(ctx), prefix=folder, host_ports=fronts, pid_file=folder / "nginx.pid"
        )
        (folder / "nginx.conf").write_text(config)

    def argv(self, ctx: Context) -> list[str]:
        folder = ctx.dir(self.name)
        return [
            self.tool_path(NGINX),
            "-p",
            str(folder),
            "-c",
            str(folder / "nginx.conf"),
            "-e",
            str(folder / "error.log"),
            "-g",
            "daemon off;",
        ]

    def probe(self, ctx: Context) -> str | None:
        return http_probe(f"{self.address(ctx)}/__front/health", timeout_s=2.0)
