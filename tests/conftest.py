"""Session fixtures: the real sandbox, one per test session, and Prefect pointed at its server.

Each component fixture adds its pytest marker to the tests that use it, so `-m "not sshd"`
deselects exactly the tests that need the SSH hosts.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deliver import sandbox
from deliver.errors import DeliveryError
from deliver.sandbox.config import SandboxConfig
from deliver.sandbox.prefect_server import ensure_prefect_auth
from deliver.sandbox.state import SandboxState

CONFIG = sandbox.config_from_env()
# Before Prefect is imported anywhere: every Prefect client in the tests talks to the sandbox
# server with the sandbox's private PREFECT_HOME, never the user's profile.
CONFIG.prefect_home.mkdir(parents=True, exist_ok=True)
ensure_prefect_auth(CONFIG)
os.environ.update(CONFIG.prefect_env())

PROJECT_DIR = Path(__file__).resolve().parents[1]
FIXTURE_MARKERS = {
    "docker_engine": "docker",
    "base_image": "docker",
    "registry": "registry",
    "ssh_hosts": "sshd",
    "nginx_front": "nginx",
    "prefect_api": "prefect_server",
}


# `make test` runs the suite on two pytest-xdist workers, a module at a time on either, except:
# these modules release to the sandbox's stock-api hosts (staging, production, the fleet, their
# nginx, the host states `reset_hosts` clears), so they run one after another on one worker;
DEPLOY_HOSTS_GROUP = "deploy-hosts"
DEPLOY_HOSTS_MODULES = {
    "test_release",
    "test_delivery_history",
    "test_fleet",
    "test_secret_leaks",
    "test_ui",
    "test_ssh_hosts",
    "test_deploy_host_contract",
    "test_pull_credentials",
    "test_nginx_front",
}
# and these apply the deployments whose triggers release any green CI run on main: they run
# alone, after the rest (`pytest -m serial`).
SERIAL_MODULES = {"test_deployments"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
        if item.path.stem in SERIAL_MODULES:
            item.add_marker("serial")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Work units for the workers: a module each, the deploy-host modules one unit together
    (the biggest, so it is handed out first)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndDeployHosts(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return DEPLOY_HOSTS_GROUP if Path(module).stem in DEPLOY_HOSTS_MODULES else module

    return ModulesAndDeployHosts(config, log)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The linters run beside the suite from the start, when it includes them (on a worker of
    a parallel run, when the first lint test asks: every worker collects every test)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(item.get_closest_marker("lint") for item in session.items):
        from tests.test_code_quality import start_linters

        start_linters()


@pytest.fixture(scope="session")
def sandbox_config() -> SandboxConfig:
    return CONFIG


@pytest.fixture(scope="session")
def sandbox_state(sandbox_config: SandboxConfig) -> SandboxState:
    """The running sandbox: brought up once per session unless every component is healthy
    already (a status read costs about 2 s, a warm `up` 10); the workers of a parallel run
    take turns."""
    lock = sandbox_config.state_dir / "tests-up.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with lock.open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            statuses = sandbox.status(sandbox_config)
            if not all(status.healthy for status in statuses):
                statuses = sandbox.up(sandbox_config, say=lambda _message: None)
    except DeliveryError as exc:
        pytest.fail(
            f"The sandbox could not be brought up: {exc}\n"
            "Run `deliver sandbox up` (as root on a fresh machine) to see each step, then rerun.",
            pytrace=False,
        )
    unhealthy = [s for s in statuses if not s.healthy]
    if unhealthy:
        details = "; ".join(f"{s.name}: {s.detail}" for s in unhealthy)
        pytest.fail(f"Sandbox unhealthy ({details}). Run `deliver sandbox status`.", pytrace=False)
    os.environ.update(sandbox_config.prefect_env())  # now with the API auth string, for commands
    return SandboxState.load(sandbox_config.state_dir)


@pytest.fixture(scope="session")
def docker_engine(sandbox_state: SandboxState) -> Iterator[object]:
    import docker

    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(sandbox_state: SandboxState) -> str:
    return str(sandbox_state.fact("base_image"))


@pytest.fixture(scope="session")
def registry(sandbox_state: SandboxState, sandbox_config: SandboxConfig) -> dict[str, str]:
    return {"address": sandbox_config.registry_address, **sandbox_state.credentials("registry")}


@pytest.fixture(scope="session")
def ssh_hosts(
    sandbox_state: SandboxState, sandbox_config: SandboxConfig
) -> dict[str, dict[str, object]]:
    hosts: dict[str, dict[str, object]] = {}
    for environment, port in sandbox_config.ssh_ports.items():
        folder = sandbox_config.component_dir(f"ssh-{environment.value}")
        hosts[environment.value] = {
            "port": port,
            "deploy_key": folder / "deploy_key",
            "known_hosts": folder / "known_hosts",
            "host_key_pub": folder / "host_key.pub",
        }
    return hosts


@pytest.fixture(scope="session")
def nginx_front(sandbox_state: SandboxState, sandbox_config: SandboxConfig) -> dict[str, object]:
    return {
        "url": sandbox_config.production_front_url,
        "upstream_file": Path(str(sandbox_state.fact("nginx_upstream_file"))),
        "config_file": Path(str(sandbox_state.fact("nginx_config_file"))),
    }


@pytest.fixture(scope="session")
def prefect_api(sandbox_state: SandboxState, sandbox_config: SandboxConfig) -> Iterator[str]:
    """Prefect settings pointing at the sandbox server for the whole session."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    env = sandbox_config.prefect_env()  # now with the auth string `sandbox up` made
    updates = {
        PREFECT_API_URL: sandbox_config.prefect_api_url,
        PREFECT_API_AUTH_STRING: env.get("PREFECT_API_AUTH_STRING"),
    }
    with temporary_settings(updates=updates):
        yield sandbox_config.prefect_api_url
