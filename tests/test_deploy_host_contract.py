"""The `DeployHost` contract, checked the same way on the sandbox's sshd and on the memory host.

The SSH host is the production sandbox host under an app of its own ("contract"), with slot
ports and an nginx upstream file no traffic uses: `nginx -t` and the reload run for real, and
what the file names is what `inspect` reports as served.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import docker.errors
import pytest

from blocks.deploy_target import DeployTarget
from deliver.errors import RemoteCommandFailed
from deliver.host import DeployHost
from deliver.planning.release import (
    HistoryRecord,
    HostState,
    Outcome,
    Release,
    RunningSlot,
    Slot,
)
from tests.fakes import Registry, environment, image
from tests.images import push_dockerfile
from tests.nginx import serve_blue

CONTRACT_BLOCK = "contract-production"
PORTS = {"blue": 8501, "green": 8502}


@pytest.fixture(scope="module")
def ssh_contract(docker_engine, registry, base_image, sandbox_config, prefect_api):
    """A DeployTarget on the production sandbox host for an app named "contract", and an image
    pushed to the registry but absent from the host's engine."""
    production = cast(DeployTarget, DeployTarget.load("production"))
    upstream = sandbox_config.component_dir("nginx") / "contract-upstream.conf"
    serve_blue(upstream, PORTS)
    state_dir = sandbox_config.state_dir / "hosts" / "contract"
    (state_dir / "release-state.json").unlink(missing_ok=True)
    fields = {
        **production.model_dump(),
        "app_name": "contract",
        "slot_ports": PORTS,
        "state_dir": str(state_dir),
        "nginx_upstream_file": str(upstream),
    }
    DeployTarget(**fields).save(CONTRACT_BLOCK, overwrite=True)
    dockerfile = (
        f"FROM {base_image}\nLABEL org.opencontainers.image.version=9.0.1\n"
        'CMD ["sleep", "infinity"]\n'
    )
    pushed = push_dockerfile(docker_engine, registry, "contract", dockerfile)
    yield pushed
    _remove_contract_containers(docker_engine)


def _remove_contract_containers(docker_engine: Any) -> None:
    for container in docker_engine.containers.list(
        all=True, filters={"label": "dev.deliver.app=contract"}
    ):
        container.remove(force=True)


@pytest.fixture(params=["memory", "ssh"])
def host_and_image(request: pytest.FixtureRequest) -> Iterator[tuple[DeployHost, str]]:
    """A host with nothing of the app on it, nginx pointing at blue, and an image it can pull."""
    if request.param == "memory":
        registry = Registry()
        pushed = image(1, {"org.opencontainers.image.version": "9.0.1"}, registry)
        _, memory_hosts, _ = environment(registry=registry)
        yield memory_hosts[0], pushed
        return
    from deliver.tasks.ssh_host import open_ssh_hosts

    pushed = request.getfixturevalue("ssh_contract")
    engine = request.getfixturevalue("docker_engine")
    config = request.getfixturevalue("sandbox_config")
    _remove_contract_containers(engine)
    (config.state_dir / "hosts" / "contract" / "release-state.json").unlink(missing_ok=True)
    upstream = config.component_dir("nginx") / "contract-upstream.conf"
    serve_blue(upstream, PORTS)
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.images.remove(pushed, force=True, noprune=True)
    with open_ssh_hosts(CONTRACT_BLOCK) as (_, ssh_hosts):
        yield ssh_hosts[0], pushed


def test_a_new_host_runs_nothing_and_records_nothing(host_and_image):
    host, _ = host_and_image
    assert host.inspect() == ([], Slot.BLUE)
    assert host.read_state() == HostState(live=None, kept=(), history=())


def test_a_pull_of_an_image_the_host_has_does_nothing(host_and_image):
    host, pushed = host_and_image
    assert host.pull(pushed) is True
    assert host.pull(pushed) is False


def test_an_image_the_registry_lacks_is_a_failed_command(host_and_image):
    host, pushed = host_and_image
    missing = pushed.rsplit("@", 1)[0] + "@sha256:" + "0" * 64
    with pytest.raises(RemoteCommandFailed):
        host.pull(missing)


def test_a_started_slot_shows_with_its_version_image_and_run(host_and_image):
    host, pushed = host_and_image
    host.pull(pushed)
    assert host.start_slot(Slot.GREEN, pushed, "9.0.1", "run-1")
    running, _ = host.inspect()
    assert running == [RunningSlot(slot=Slot.GREEN, version="9.0.1", image=pushed, run="run-1")]


def test_starting_a_slot_again_replaces_what_runs_there(host_and_image):
    host, pushed = host_and_image
    host.pull(pushed)
    host.start_slot(Slot.BLUE, pushed, "9.0.1", "run-1")
    host.start_slot(Slot.BLUE, pushed, "9.0.1-again", "run-2")
    running, _ = host.inspect()
    assert [(r.slot, r.version, r.run) for r in running] == [(Slot.BLUE, "9.0.1-again", "run-2")]


def test_stopping_a_slot_twice_is_not_an_error(host_and_image):
    host, pushed = host_and_image
    host.pull(pushed)
    host.start_slot(Slot.BLUE, pushed, "9.0.1", "run-1")
    host.stop_slot(Slot.BLUE)
    host.stop_slot(Slot.BLUE)
    assert host.inspect()[0] == []


def test_a_switch_changes_the_slot_nginx_serves(host_and_image):
    host, _ = host_and_image
    host.switch(Slot.GREEN)
    assert host.inspect()[1] is Slot.GREEN
    host.switch(Slot.BLUE)
    assert host.inspect()[1] is Slot.BLUE


def test_recorded_state_reads_back_as_written(host_and_image):
    host, pushed = host_and_image
    live = Release(version="9.0.1", image=pushed, git_sha="abcdef1", slot=Slot.GREEN, since="t1")
    record = HistoryRecord(at="t1", outcome=Outcome.LIVE, version="9.0.1", image=pushed, began="t0")
    state = HostState(live=live, kept=(pushed,), history=(record,))
    host.write_state(state)
    assert host.read_state() == state


def test_labels_are_read_only_from_images_the_host_has(host_and_image):
    host, pushed = host_and_image
    assert host.image_labels(pushed) == {}
    host.pull(pushed)
    assert host.image_labels(pushed)["org.opencontainers.image.version"] == "9.0.1"


def test_prune_leaves_an_image_a_container_uses(host_and_image):
    host, pushed = host_and_image
    host.pull(pushed)
    host.start_slot(Slot.BLUE, pushed, "9.0.1", "run-1")
    assert host.prune([pushed]) == [pushed]
    host.stop_slot(Slot.BLUE)
    assert host.prune([pushed]) == []
    assert host.pull(pushed) is True  # it was removed


def test_a_symlink_planted_at_the_state_file_is_refused_not_written_through(
    ssh_contract, sandbox_config
):
    """Someone on the host links the state file to another file: the write is refused and the
    other file is untouched (over SSH only: the memory host has no file system)."""
    from deliver.tasks.ssh_host import open_ssh_hosts

    state_dir = sandbox_config.state_dir / "hosts" / "contract"
    state_dir.mkdir(parents=True, exist_ok=True)
    victim = state_dir / "victim.txt"
    victim.write_text("untouched\n")
    state_file = state_dir / "release-state.json"
    state_file.unlink(missing_ok=True)
    state_file.symlink_to(victim)
    try:
        with (
            open_ssh_hosts(CONTRACT_BLOCK) as (_, hosts),
            pytest.raises(RemoteCommandFailed) as refused,
        ):
            hosts[0].write_state(HostState(live=None, kept=(), history=()))
        assert "symbolic link" in str(refused.value)
        assert victim.read_text() == "untouched\n"
        assert state_file.is_symlink()
        assert not [p for p in state_dir.iterdir() if ".json." in p.name]  # no temporary left
    finally:
        state_file.unlink(missing_ok=True)
        victim.unlink(missing_ok=True)


def test_a_one_off_command_runs_to_its_end_and_leaves_nothing_running(host_and_image):
    """What a migration runs in: its result comes back, no container stays."""
    host, pushed = host_and_image
    host.pull(pushed)
    assert host.run_once(pushed, ["true"]).ok
    assert host.inspect() == ([], Slot.BLUE)


def test_an_environment_without_accessories_boots_none(host_and_image):
    host, _ = host_and_image
    assert host.boot_accessories() == []
