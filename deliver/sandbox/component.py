"""What every sandbox component offers, and the base for those that are a daemon we start."""

from __future__ import annotations

import abc
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx

from deliver.errors import ComponentFailed, PortInUse
from deliver.sandbox import processes
from deliver.sandbox.config import LOOPBACK, SandboxConfig
from deliver.sandbox.state import SandboxState


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SystemTool:
    """A program a component runs, and the Debian package that provides it."""

    program: str
    package: str

    def path(self) -> str | None:
        found = shutil.which(self.program)
        if found:
            return found
        for folder in ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"):
            candidate = Path(folder) / self.program
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        return None


def http_probe(url: str, *, timeout_s: float = 2.0) -> str | None:
    """None when `url` answers 200, else what it did instead."""
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"GET {url} failed: {exc}"
    return None if response.status_code == 200 else f"GET {url} answered {response.status_code}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ComponentStatus:
    name: str
    address: str
    healthy: bool
    detail: str
    pid: int | None = None
    managed: bool = False  # started by this sandbox, so `down` stops it

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    config: SandboxConfig
    state: SandboxState
    say: Callable[[str], None]

    def dir(self, name: str) -> Path:
        folder = self.config.component_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class Component(abc.ABC):
    name: ClassVar[str]

    def tools_needed(self, ctx: Context) -> list[SystemTool]:
        """System tools `up` would need on this machine, as things stand now."""
        return []

    @abc.abstractmethod
    def up(self, ctx: Context) -> ComponentStatus: ...

    @abc.abstractmethod
    def status(self, ctx: Context) -> ComponentStatus: ...

    def down(self, ctx: Context) -> bool:
        """Stop what `up` started; True if something was stopped."""
        return False


class Daemon(Component):
    """A server process the sandbox starts, records by pid, probes for health and stops."""

    startup_timeout: ClassVar[float] = 30.0
    tools: ClassVar[tuple[SystemTool, ...]] = ()

    @abc.abstractmethod
    def address(self, ctx: Context) -> str: ...

    def port(self, ctx: Context) -> int | None:
        return None

    def prepare(self, ctx: Context) -> None:
        """Write configuration and keys before starting; must be idempotent."""

    @abc.abstractmethod
    def argv(self, ctx: Context) -> list[str]: ...

    def env(self, ctx: Context) -> Mapping[str, str] | None:
        return None

    def cwd(self, ctx: Context) -> Path | None:
        return None

    @abc.abstractmethod
    def probe(self, ctx: Context) -> str | None:
        """None when healthy, else what is wrong."""

    def tools_needed(self, ctx: Context) -> list[SystemTool]:
        return [] if self._running_record(ctx) else list(self.tools)

    def log_path(self, ctx: Context) -> Path:
        return ctx.dir(self.name) / f"{self.name}.log"

    def tool_path(self, tool: SystemTool) -> str:
        found = tool.path()
        if found is None:
            msg = f"{tool.program} not found; install the Debian package {tool.package}"
            raise ComponentFailed(component=self.name, detail=msg)
        return found

    def _running_record(self, ctx: Context) -> processes.ProcessRecord | None:
        record = processes.ProcessRecord.from_json(ctx.state.component(self.name))
        return record if record and processes.is_running(record) else None

    def up(self, ctx: Context) -> ComponentStatus:
        record = self._running_record(ctx)
        if record is None:
            record = self._start(ctx)
        else:
            ctx.say(f"{self.name}: already running (pid {record.pid})")
        self._wait_healthy(ctx, record)
        return self.status(ctx)

    def _start(self, ctx: Context) -> processes.ProcessRecord:
        port = self.port(ctx)
        if port is not None and processes.port_accepts(port):
            raise PortInUse(component=self.name, address=f"{LOOPBACK}:{port}")
        self.prepare(ctx)
        ctx.say(f"{self.name}: starting on {self.address(ctx)}")
        record = processes.spawn(
            self.argv(ctx), log_path=self.log_path(ctx), env=self.env(ctx), cwd=self.cwd(ctx)
        )
        started = {**record.to_json(), "address": self.address(ctx), "started_at": time.time()}
        ctx.state.set_component(self.name, started)
        return record

    def _wait_healthy(self, ctx: Context, record: processes.ProcessRecord) -> None:
        problems: list[str] = []

        def healthy_or_exited() -> bool:
            if not processes.is_running(record):
                problems.append(f"the process exited (code {processes.exited_code(record)})")
                return True
            problem = self.probe(ctx)
            if problem:
                problems.append(problem)
            return problem is None

        finished = processes.wait_until(healthy_or_exited, timeout=self.startup_timeout)
        if finished and processes.is_running(record):
            return
        processes.stop(record)
        ctx.state.forget_component(self.name)
        detail = problems[-1] if problems else f"no answer within {self.startup_timeout:.0f} s"
        raise ComponentFailed(component=self.name, detail=detail, log_path=str(self.log_path(ctx)))

    def status(self, ctx: Context) -> ComponentStatus:
        address = self.address(ctx)
        recorded = processes.ProcessRecord.from_json(ctx.state.component(self.name))
        if recorded is None:
            detail = "not started"
            return ComponentStatus(name=self.name, address=address, healthy=False, detail=detail)
        if not processes.is_running(recorded):
            detail = f"stopped (pid {recorded.pid} is gone)"
            return ComponentStatus(name=self.name, address=address, healthy=False, detail=detail)
        problem = self.probe(ctx)
        return ComponentStatus(
            name=self.name,
            address=address,
            healthy=problem is None,
            detail=problem or "healthy",
            pid=recorded.pid,
            managed=True,
        )

    def down(self, ctx: Context) -> bool:
        recorded = processes.ProcessRecord.from_json(ctx.state.component(self.name))
        if recorded is None:
            return False
        stopped = processes.stop(recorded)
        ctx.state.forget_component(self.name)
        if stopped:
            ctx.say(f"{self.name}: stopped (pid {recorded.pid})")
        return stopped
