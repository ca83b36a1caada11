"""nginx in front of production, proxying to whichever slot the upstream file names."""

from __future__ import annotations

import subprocess
from pathlib import Path

from deliver.errors import ComponentFailed
from deliver.planning.release import nginx_upstream
from deliver.sandbox.component import Context, Daemon, SystemTool, http_probe
from deliver.sandbox.config import Environment, Slot
from deliver.sandbox.render import nginx_config


class NginxFront(Daemon):
    name = "nginx"
    tools = (SystemTool(program="nginx", package="nginx"),)

    def address(self, ctx: Context) -> str:
        return ctx.config.production_front_url

    def port(self, ctx: Context) -> int:
        return ctx.config.nginx_port

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
        if not paths["upstream"].exists():
            blue = ctx.config.slot_ports[Environment.PRODUCTION][Slot.BLUE]
            paths["upstream"].write_text(nginx_upstream(slot_port=blue))
        paths["config"].write_text(
            nginx_config(
                port=ctx.config.nginx_port,
                prefix=paths["prefix"],
                upstream_file=paths["upstream"],
                pid_file=paths["pid"],
            )
        )
        check = subprocess.run(
            [*self._base_argv(ctx), "-t"], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise ComponentFailed(component=self.name, detail=f"nginx -t: {check.stderr.strip()}")
        ctx.state.set_fact("nginx_upstream_file", str(paths["upstream"]))
        ctx.state.set_fact("nginx_config_file", str(paths["config"]))

    def _base_argv(self, ctx: Context) -> list[str]:
        paths = self.paths(ctx)
        return [
            self.tool_path(self.tools[0]),
            "-p", str(paths["prefix"]),
            "-c", str(paths["config"]),
            "-e", str(paths["prefix"] / "error.log"),
        ]  # fmt: skip

    def argv(self, ctx: Context) -> list[str]:
        return [*self._base_argv(ctx), "-g", "daemon off;"]

    def probe(self, ctx: Context) -> str | None:
        return http_probe(f"{ctx.config.production_front_url}/__front/health", timeout_s=2.0)
