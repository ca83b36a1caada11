"""Start, find and stop the sandbox's daemons by pid, never by name."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# Popen objects of daemons started by this process, kept so they can be reaped (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRecord:
    """A pid plus its kernel start time, so a reused pid is never mistaken for ours."""

    pid: int
    start_ticks: int

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ProcessRecord | None:
        pid, ticks = data.get("pid"), data.get("start_ticks")
        if isinstance(pid, int) and isinstance(ticks, int):
            return cls(pid=pid, start_ticks=ticks)
        return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces; everything after its closing paren splits cleanly.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(record: ProcessRecord) -> bool:
    fields = _stat_fields(record.pid)
    if fields is None or fields[0] in {"Z", "X"}:
        return False
    return int(fields[19]) == record.start_ticks


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin_data: bytes | None = None,
) -> ProcessRecord:
    """Start a daemon in its own session, output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    _children[process.pid] = process
    ticks = start_ticks(process.pid)
    if ticks is None:
        process.wait()
        msg = f"{argv[0]} exited at once (code {process.returncode}); see {log_path}"
        raise RuntimeError(msg)
    return ProcessRecord(pid=process.pid, start_ticks=ticks)


def exited_code(record: ProcessRecord) -> int | None:
    """The exit code if the daemon was started by this process and has exited."""
    process = _children.get(record.pid)
    return process.poll() if process else None


def stop(record: ProcessRecord, *, timeout: float = 15.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`. False if the process was already gone."""
    if not is_running(record):
        _reap(record.pid)
        return False
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_running(record):
            return True
        time.sleep(0.1)
    os.kill(record.pid, signal.SIGKILL)
    _reap(record.pid)
    return True


def _reap(pid: int) -> None:
    process = _children.get(pid)
    if process is not None and process.poll() is not None:
        del _children[pid]


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
