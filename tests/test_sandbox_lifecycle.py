"""A second, partial sandbox on other ports: `up` is idempotent, `down` stops only its own pids."""

import dataclasses
import socket

import pytest

from deliver import sandbox
from deliver.errors import PortInUse
from deliver.sandbox.config import Environment, SandboxConfig
from deliver.sandbox.processes import ProcessRecord, is_running
from deliver.sandbox.state import SandboxState

PARTIAL = ["registry", "ssh-staging", "nginx"]


def shifted(state_dir) -> SandboxConfig:
    return SandboxConfig(
        state_dir=state_dir,
        registry_port=15001,
        ssh_ports={Environment.STAGING: 12222, Environment.PRODUCTION: 12223},
        nginx_port=18080,
        prefect_port=14200,
        advisory_port=18090,
        chat_port=18091,
    )


def records(config: SandboxConfig) -> dict[str, ProcessRecord]:
    found = {}
    for name, data in SandboxState.load(config.state_dir).data["components"].items():
        record = ProcessRecord.from_json(data)
        if record:
            found[name] = record
    return found


def test_second_sandbox_up_down_leaves_the_first_alone(sandbox_state, sandbox_config, tmp_path):
    """Up twice keeps the same pids; down stops exactly those; the main sandbox keeps running."""
    config = shifted(tmp_path / "box")
    main_before = records(sandbox_config)
    try:
        first = sandbox.up(config, only=PARTIAL, say=lambda _m: None)
        assert all(status.healthy for status in first)
        started = records(config)
        assert set(started) == set(PARTIAL)
        again = sandbox.up(config, only=PARTIAL, say=lambda _m: None)
        assert all(status.healthy for status in again)
        assert records(config) == started
    finally:
        stopped = sandbox.down(config, say=lambda _m: None)
    assert sorted(stopped) == sorted(PARTIAL)
    assert not any(is_running(record) for record in started.values())
    assert records(config) == {}
    assert records(sandbox_config) == main_before
    assert all(is_running(record) for record in main_before.values())
    assert sandbox.down(config, say=lambda _m: None) == []


def test_port_taken_by_a_stranger_is_refused(tmp_path):
    """A port in use by a process the sandbox did not start is an error, and nothing is started."""
    config = dataclasses.replace(shifted(tmp_path / "box"), registry_port=15002)
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 15002))
        stranger.listen()
        with pytest.raises(PortInUse, match=r"127\.0\.0\.1:15002"):
            sandbox.up(config, only=["registry"], say=lambda _m: None)
    assert records(config) == {}


def test_status_of_a_never_started_sandbox(tmp_path):
    """Status of an empty sandbox reports each daemon as not started, without starting anything."""
    statuses = sandbox.status(shifted(tmp_path / "box"), only=PARTIAL)
    assert [(s.name, s.healthy, s.detail) for s in statuses] == [
        (name, False, "not started") for name in PARTIAL
    ]
