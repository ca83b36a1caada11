"""Daemons are tracked by pid and kernel start time, and the state file is private."""

import stat
import sys

from deliver.sandbox import processes
from deliver.sandbox.state import SandboxState


def sleeper(tmp_path):
    return processes.spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "log"
    )


def test_spawned_process_is_running_until_stopped(tmp_path):
    """A spawned daemon is seen running, and `stop` ends it."""
    record = sleeper(tmp_path)
    assert processes.is_running(record)
    assert processes.stop(record, timeout=5)
    assert not processes.is_running(record)


def test_reused_pid_is_not_mistaken_for_ours(tmp_path):
    """A live pid whose start time differs from the record is not ours, and stop leaves it alone."""
    record = sleeper(tmp_path)
    impostor = processes.ProcessRecord(pid=record.pid, start_ticks=record.start_ticks + 1)
    try:
        assert not processes.is_running(impostor)
        assert processes.stop(impostor) is False
        assert processes.is_running(record)
    finally:
        processes.stop(record, timeout=5)


def test_stopping_a_gone_process_reports_nothing_stopped(tmp_path):
    """Stopping twice is harmless: the second call stops nothing."""
    record = sleeper(tmp_path)
    processes.stop(record, timeout=5)
    assert processes.stop(record) is False


def test_state_file_is_private_and_round_trips(tmp_path):
    """Credentials land in a 0600 file and load back unchanged."""
    state = SandboxState.load(tmp_path)
    state.set_credentials("registry", {"username": "u", "password": "p"})
    mode = stat.S_IMODE((tmp_path / "state.json").stat().st_mode)
    assert mode == 0o600
    assert SandboxState.load(tmp_path).credentials("registry") == {"username": "u", "password": "p"}
