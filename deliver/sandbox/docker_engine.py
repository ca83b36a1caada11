"""The Docker engine: the user's own when one answers, else dockerd started by the sandbox."""

from __future__ import annotations

import os

import docker
import docker.errors

from deliver.errors import ComponentFailed, MissingSystemPackages
from deliver.sandbox.component import ComponentStatus, Context, Daemon, SystemTool

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST", DEFAULT_SOCKET)


def engine_problem() -> str | None:
    """None when the engine at DOCKER_HOST (or the default socket) answers a ping."""
    try:
        client = docker.DockerClient(base_url=engine_address(), timeout=5)
    except docker.errors.DockerException as exc:
        return f"no Docker engine at {engine_address()}: {exc}"
    try:
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        return f"the Docker engine at {engine_address()} does not answer: {exc}"
    finally:
        client.close()
    return None


class DockerEngine(Daemon):
    name = "docker-engine"
    startup_timeout = 60.0
    tools = (SystemTool(program="dockerd", package="docker.io"),)

    def tools_needed(self, ctx: Context) -> list[SystemTool]:
        if self._running_record(ctx) or engine_problem() is None:
            return []
        return list(self.tools)

    def address(self, ctx: Context) -> str:
        return engine_address()

    def argv(self, ctx: Context) -> list[str]:
        pid_file = ctx.dir(self.name) / "docker.pid"
        bridge = f"--bip={ctx.config.docker_bridge_gateway}/16"
        return [self.tool_path(self.tools[0]), "--pidfile", str(pid_file), bridge]

    def probe(self, ctx: Context) -> str | None:
        return engine_problem()

    def up(self, ctx: Context) -> ComponentStatus:
        if self._running_record(ctx) is None and engine_problem() is None:
            ctx.say(f"{self.name}: using the engine at {engine_address()}")
            return self.status(ctx)
        if self._running_record(ctx) is None:
            if "DOCKER_HOST" in os.environ:
                detail = f"{engine_problem()}; start that engine or unset DOCKER_HOST"
                raise ComponentFailed(component=self.name, detail=detail)
            if os.geteuid() != 0:
                raise MissingSystemPackages(
                    packages=["docker.io"],
                    reason="no Docker engine answers and only root can start dockerd; "
                    "start Docker or set DOCKER_HOST",
                )
        return super().up(ctx)

    def status(self, ctx: Context) -> ComponentStatus:
        if self._running_record(ctx):
            return super().status(ctx)
        problem = engine_problem()
        return ComponentStatus(
            name=self.name,
            address=engine_address(),
            healthy=problem is None,
            detail=problem or "healthy (not started by the sandbox)",
        )
