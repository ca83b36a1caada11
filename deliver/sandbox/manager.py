"""Bring the whole sandbox up, report on it, and take down what it started."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Sequence

from deliver import commands
from deliver.errors import MissingSystemPackages, SandboxError
from deliver.sandbox.advisories_mirror import AdvisoryMirror
from deliver.sandbox.base_image import BaseImage
from deliver.sandbox.chat import ChatInbox
from deliver.sandbox.component import Component, ComponentStatus, Context, SystemTool
from deliver.sandbox.config import Environment, SandboxConfig
from deliver.sandbox.docker_engine import DockerEngine
from deliver.sandbox.nginx_front import FleetBalancer, NginxFront
from deliver.sandbox.postgres import DATABASES, PostgresDatabase
from deliver.sandbox.prefect_blocks import ORDERS_SERVICE, PrefectBlocks
from deliver.sandbox.prefect_server import PrefectServer, PrefectWorker
from deliver.sandbox.registry import Registry
from deliver.sandbox.ssh_hosts import SshHost
from deliver.sandbox.stand_in_images import StandInImages
from deliver.sandbox.state import SandboxState


def all_components() -> list[Component]:
    """In start order; `down` goes in reverse."""
    return [
        DockerEngine(),
        BaseImage(),
        StandInImages(),
        Registry(),
        SshHost(Environment.STAGING),
        SshHost(Environment.PRODUCTION),
        NginxFront(),
        NginxFront(service=ORDERS_SERVICE),
        *fleet_components(),
        AdvisoryMirror(),
        ChatInbox(),
        PostgresDatabase(),
        PrefectServer(),
        PrefectWorker(),
        PrefectWorker(index=2),
        PrefectBlocks(),
    ]


def fleet_components() -> list[Component]:
    """Production as a fleet of three hosts, each an sshd with its own nginx, and a balancer."""
    hosts = [f"fleet-{n}" for n in (1, 2, 3)]
    shared = [SshHost(h, deploy_key_of=hosts[0]) for h in hosts]
    return [*shared, *(NginxFront(h) for h in hosts), FleetBalancer()]


def component_names() -> list[str]:
    return [component.name for component in all_components()]


def select(only: Sequence[str] | None) -> list[Component]:
    components = all_components()
    if not only:
        return components
    unknown = sorted(set(only) - {c.name for c in components})
    if unknown:
        known = ", ".join(component_names())
        msg = f"Unknown sandbox component(s): {', '.join(unknown)}. Known: {known}"
        raise SandboxError(msg)
    return [c for c in components if c.name in only]


@contextlib.contextmanager
def _locked(config: SandboxConfig) -> Iterator[SandboxState]:
    """One `up` or `down` at a time per sandbox."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with (config.state_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield SandboxState.load(config.state_dir)


def missing_tools(components: Sequence[Component], ctx: Context) -> list[SystemTool]:
    needed: dict[str, SystemTool] = {}
    for component in components:
        for tool in component.tools_needed(ctx):
            if tool.path() is None:
                needed[tool.package] = tool
    return list(needed.values())


def install_packages(tools: Sequence[SystemTool], say: Callable[[str], None]) -> None:
    """apt-get install the packages of `tools`; only as root on a Debian-like machine."""
    if not tools:
        return
    packages = sorted({tool.package for tool in tools})
    if os.geteuid() != 0:
        raise MissingSystemPackages(packages=packages, reason="only root may install them")
    if shutil.which("apt-get") is None:
        raise MissingSystemPackages(packages=packages, reason="apt-get is not available")
    say(f"installing system packages: {', '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        done = commands.run(argv, env=env, timeout_s=1800)
        if not done.ok:
            reason = f"{argv[1]} failed: {done.tail(5)}"
            raise MissingSystemPackages(packages=packages, reason=reason)


# Not part of the sandbox: what the end-to-end test of the Prefect UI drives it with.
BROWSER_TOOLS = (
    SystemTool(program="chromium", package="chromium"),
    SystemTool(program="chromedriver", package="chromium-driver"),
)


def ensure_packages(config: SandboxConfig, say: Callable[[str], None]) -> list[str]:
    """Install what a cold `up` and the tests would need on this machine; returns the packages
    installed."""
    with _locked(config) as state:
        ctx = Context(config, state, say)
        tools = missing_tools(all_components(), ctx)
        tools += [tool for tool in BROWSER_TOOLS if tool.path() is None]
        install_packages(tools, say)
        return sorted({tool.package for tool in tools})


def choose_database(ctx: Context, database: str | None) -> None:
    """Record which database the Prefect server uses; a running server keeps its own."""
    if database is None:
        return
    if database not in DATABASES:
        raise SandboxError(f"Unknown database {database!r}; choose {' or '.join(DATABASES)}")
    current = ctx.state.fact("database") or "postgres"
    if database != current and PrefectServer().status(ctx).pid is not None:
        raise SandboxError(
            f"The sandbox's Prefect server runs on {current}. Stop it first with "
            f"`deliver sandbox down`, then `deliver sandbox up --database {database}`."
        )
    ctx.state.set_fact("database", database)


def up(
    config: SandboxConfig,
    *,
    only: Sequence[str] | None = None,
    say: Callable[[str], None] = print,
    database: str | None = None,
) -> list[ComponentStatus]:
    """Start the components (all, or `only` those); `database` (postgres, the default, or
    sqlite) is remembered for later `up`s."""
    components = select(only)
    with _locked(config) as state:
        ctx = Context(config, state, say)
        choose_database(ctx, database)
        install_packages(missing_tools(components, ctx), say)
        return [component.up(ctx) for component in components]


def down(
    config: SandboxConfig,
    *,
    only: Sequence[str] | None = None,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Stop, by recorded pid, what `up` started; returns the names of what was stopped."""
    with _locked(config) as state:
        ctx = Context(config, state, say)
        return [c.name for c in reversed(select(only)) if c.down(ctx)]


def status(config: SandboxConfig, *, only: Sequence[str] | None = None) -> list[ComponentStatus]:
    state = SandboxState.load(config.state_dir)
    ctx = Context(config, state, lambda _message: None)
    return [component.status(ctx) for component in select(only)]
