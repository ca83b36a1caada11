"""Production as a fleet: the sandbox's three SSH hosts, each with its own nginx, behind one
load balancer. A release rolls host by host (or in batches), and a failure on any host leaves
every host on the old version."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from blocks.deploy_target import DeployTarget
from deliver.errors import HealthCheckFailed, ReleaseError
from deliver.prefect_api import log_messages
from tests.images import push_sample
from tests.load import Load
from tests.nginx import serve_blue
from tests.test_release import ProductionRelease, run_release

FLEET = "production-fleet"
QUICK = "production-fleet-test"  # the sandbox's fleet with a short health deadline
REPOSITORY = "fleet-test"
VERSIONS = {"f1": "4.0.1", "f2": "4.0.2", "f3": "4.0.3"}
HOSTS = ("fleet-1", "fleet-2", "fleet-3")


def reset_fleet(docker_engine: Any, sandbox_config: Any) -> None:
    """No fleet containers, no fleet host state, each host's nginx on its blue slot."""
    for host in HOSTS:
        found = docker_engine.containers.list(
            all=True, filters={"label": f"dev.deliver.host={host}"}
        )
        for container in found:
            container.remove(force=True)
        state = sandbox_config.state_dir / "hosts" / host / "release-state.json"
        state.unlink(missing_ok=True)
        upstream = sandbox_config.component_dir(f"nginx-{host}") / "production-upstream.conf"
        ports = sandbox_config.fleet[host]
        serve_blue(upstream, {"blue": ports.blue, "green": ports.green})


@pytest.fixture(scope="module")
def fleet_images(docker_engine, registry, base_image, sandbox_config, prefect_api):
    reset_fleet(docker_engine, sandbox_config)
    fleet = cast(DeployTarget, DeployTarget.load(FLEET))
    DeployTarget(**{**fleet.model_dump(), "health_timeout_s": 2.0}).save(QUICK, overwrite=True)
    found = {
        name: push_sample(
            docker_engine, registry, base_image, REPOSITORY, name, {"VERSION": version}
        )
        for name, version in VERSIONS.items()
    }
    yield found
    reset_fleet(docker_engine, sandbox_config)


def release_to_fleet(image: str, version: str, block: str = QUICK) -> tuple[Any, Any]:
    """Staging first (production takes only what staging serves), then the fleet, approved."""
    state, result = run_release(image, "staging", version)
    assert state.is_completed(), result
    production = ProductionRelease(image, version, target_block=block)
    production.decide(reason="fleet test")
    return production.result()


def served(url: str) -> str | None:
    try:
        return str(httpx.get(f"{url}/health", timeout=2).json()["version"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def fleet_versions(sandbox_config: Any) -> dict[str, Any]:
    """What each host's own nginx serves, and what its recorded state says is live."""
    found = {}
    for host in HOSTS:
        path = sandbox_config.state_dir / "hosts" / host / "release-state.json"
        live = json.loads(path.read_text())["live"] if path.exists() else None
        front = f"http://127.0.0.1:{sandbox_config.fleet[host].front}"
        found[host] = (served(front), live["version"] if live else None)
    return found


class Hang:
    """The host's new slot hangs as it starts: `docker pause` on its start event."""

    def __init__(self, docker_engine: Any, host: str, version: str) -> None:
        labels = [f"dev.deliver.host={host}", f"dev.deliver.version={version}"]
        filters = {"type": "container", "event": "start", "label": labels}
        self.events = docker_engine.events(decode=True, filters=filters)
        self.docker, self.paused = docker_engine, cast(list[str], [])
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        for event in self.events:
            self.docker.containers.get(event["id"]).pause()
            self.paused.append(event["Actor"]["Attributes"]["name"])

    def close(self) -> None:
        self.events.close()


def test_first_release_rolls_in_batches_of_two(fleet_images, sandbox_config):
    """max_unavailable 2: fleet-1 and fleet-2 start and switch together, then fleet-3."""
    fleet = cast(DeployTarget, DeployTarget.load(QUICK))
    DeployTarget(**{**fleet.model_dump(), "max_unavailable": 2}).save(QUICK, overwrite=True)
    state, result = release_to_fleet(fleet_images["f1"], "4.0.1")
    assert state.is_completed(), result
    assert fleet_versions(sandbox_config) == {h: ("4.0.1", "4.0.1") for h in HOSTS}
    logs = log_messages(state.state_details.flow_run_id)
    batches = [line for line in logs if line.startswith("Batch ")]
    assert batches == [
        f"Batch 1: {QUICK}@fleet-1, {QUICK}@fleet-2",
        f"Batch 2: {QUICK}@fleet-3",
    ]
    DeployTarget(**{**fleet.model_dump(), "max_unavailable": 1}).save(QUICK, overwrite=True)


def test_fleet_rollout_reaches_every_host_without_a_failed_request(fleet_images, sandbox_config):
    """The next release, host by host under load: every host ends on it, and no request
    through the fleet's front fails."""
    assert fleet_versions(sandbox_config) == {h: ("4.0.1", "4.0.1") for h in HOSTS}
    load = Load(f"{sandbox_config.fleet_front_url}/health")
    try:
        state, second = release_to_fleet(fleet_images["f2"], "4.0.2")
    finally:
        outcomes = load.finish()
    assert state.is_completed(), second
    assert second.previous == "4.0.1"
    assert fleet_versions(sandbox_config) == {h: ("4.0.2", "4.0.2") for h in HOSTS}
    assert outcomes["failed"] == 0, outcomes
    print(f"requests through the fleet's front during the rollout: {dict(outcomes)}")
    assert outcomes["4.0.1"] > 0, outcomes  # the old version served until the switches,
    assert outcomes["4.0.2"] > 0, outcomes  # then the new one
    assert {served(sandbox_config.fleet_front_url) for _ in range(9)} == {"4.0.2"}


def test_health_failing_on_the_second_host_switches_the_first_back(
    fleet_images, sandbox_config, docker_engine
):
    """The new version hangs on fleet-2 after fleet-1 switched: the rollout halts before
    fleet-3, fleet-1 goes back, and all three serve the old version again."""
    before = fleet_versions(sandbox_config)
    assert before == {h: ("4.0.2", "4.0.2") for h in HOSTS}, "runs after the good rollout"
    hang = Hang(docker_engine, "fleet-2", "4.0.3")
    try:
        state, error = release_to_fleet(fleet_images["f3"], "4.0.3")
    finally:
        hang.close()
    assert hang.paused == ["stock-api-production-fleet-2-green"]
    assert state.is_failed()
    assert isinstance(error, HealthCheckFailed)
    assert "fleet-2" in str(error)
    assert error.rolled_back
    assert fleet_versions(sandbox_config) == before
    assert {served(sandbox_config.fleet_front_url) for _ in range(9)} == {"4.0.2"}
    candidates = docker_engine.containers.list(
        all=True, filters={"label": "dev.deliver.version=4.0.3"}
    )
    assert [c.name for c in candidates if "fleet" in c.name] == []
    logs = log_messages(state.state_details.flow_run_id)
    switches = [line for line in logs if line.startswith("Traffic switched")]
    assert switches == [
        "Traffic switched to the green slot on fleet-1",
        "Traffic switched to the blue slot on fleet-1",
    ]  # fleet-3 was never touched
    history = json.loads(
        (sandbox_config.state_dir / "hosts" / "fleet-3" / "release-state.json").read_text()
    )["history"]
    assert (history[-1]["outcome"], history[-1]["version"]) == ("failed", "4.0.3")


def test_rollback_returns_every_host_to_a_kept_version(fleet_images, sandbox_config):
    """`rollback` of a fleet: every host back on 4.0.1 the same way, host by host."""
    from flows.release import RollbackParameters, rollback_here
    from tests.policies import rollbacks_without_approval

    parameters = RollbackParameters(
        environment="production",
        target_block=QUICK,
        to_version="4.0.1",
        requested_by="tester",
        approval_policy=rollbacks_without_approval(),
    )
    state = rollback_here(parameters)
    assert state.is_completed(), state.result(raise_on_failure=False)
    assert fleet_versions(sandbox_config) == {h: ("4.0.1", "4.0.1") for h in HOSTS}
    assert {served(sandbox_config.fleet_front_url) for _ in range(9)} == {"4.0.1"}
    history = json.loads(
        (sandbox_config.state_dir / "hosts" / "fleet-2" / "release-state.json").read_text()
    )["history"]
    assert (history[-1]["outcome"], history[-1]["version"]) == ("rolled-back", "4.0.1")


class LoseSshd:
    """On the host's candidate start, its sshd dies with every session it serves (SIGKILL to
    the listener and its children), as a host that drops off the network mid-release would."""

    def __init__(self, docker_engine: Any, sandbox_config: Any, host: str, version: str) -> None:
        labels = [f"dev.deliver.host={host}", f"dev.deliver.version={version}"]
        filters = {"type": "container", "event": "start", "label": labels}
        saved = json.loads((sandbox_config.state_dir / "state.json").read_text())
        self.listener = int(saved["components"][f"ssh-{host}"]["pid"])
        self.events = docker_engine.events(decode=True, filters=filters)
        self.killed: list[int] = []
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        for _ in self.events:
            for pid in [*_descendants(self.listener), self.listener]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
            return

    def close(self) -> None:
        self.events.close()


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_an_sshd_lost_mid_release_still_switches_the_others_back(
    fleet_images, sandbox_config, docker_engine
):
    """fleet-2's sshd dies as its candidate starts, after fleet-1 switched: fleet-1 still goes
    back (though switching fleet-2 back fails), the failure is recorded where it can be and
    reported, and once fleet-2's sshd is back the next release converges."""
    from deliver import sandbox
    from tests.test_delivery_history import _release_reports

    assert fleet_versions(sandbox_config) == {h: ("4.0.1", "4.0.1") for h in HOSTS}
    lose = LoseSshd(docker_engine, sandbox_config, "fleet-2", "4.0.3")
    try:
        state, error = release_to_fleet(fleet_images["f3"], "4.0.3")
    finally:
        lose.close()
    assert lose.killed, "fleet-2's sshd was never stopped"
    try:
        assert state.is_failed()
        assert isinstance(error, ReleaseError), error
        assert error.rolled_back
        assert {served(sandbox_config.fleet_front_url) for _ in range(9)} == {"4.0.1"}
        assert fleet_versions(sandbox_config)["fleet-1"] == ("4.0.1", "4.0.1")
        outcomes = {
            host: json.loads(
                (sandbox_config.state_dir / "hosts" / host / "release-state.json").read_text()
            )["history"][-1]["outcome"]
            for host in ("fleet-1", "fleet-3")
        }
        assert outcomes == {"fleet-1": "switched-back", "fleet-3": "failed"}
        report = _release_reports("release-stock-api-production")[0]
        assert report.splitlines()[0] == (
            "# stock-api → production: 4.0.3 failed in production and was switched back"
        )
    finally:
        sandbox.up(sandbox_config, only=["ssh-fleet-2"], say=lambda _message: None)
    state, result = release_to_fleet(fleet_images["f3"], "4.0.3")
    assert state.is_completed(), result
    assert fleet_versions(sandbox_config) == {h: ("4.0.3", "4.0.3") for h in HOSTS}
