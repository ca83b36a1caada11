"""Local commands: streamed line by line to a callback, with the tail kept as data."""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from deliver.redaction import redact

TAIL_LINES = 40


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int
    tail: tuple[str, ...]
    duration_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def tail_text(self, count: int = 15) -> str:
        return "\n".join(self.tail[-count:]) or "(no output)"


def run_streamed(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600,
    on_line: Callable[[str], None] = lambda _line: None,
) -> CommandResult:
    """Run `argv`, passing each output line (stdout and stderr merged) to `on_line`."""
    started = time.monotonic()
    kept: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        line = redact(f"{argv[0]}: command not found ({exc.strerror})")
        on_line(line)
        return CommandResult(argv=tuple(argv), exit_code=127, tail=(line,), duration_s=0.0)
    timed_out = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill_on_timeout)
    timer.start()
    try:
        assert process.stdout is not None  # noqa: S101 (set by stdout=PIPE)
        for raw in process.stdout:
            line = redact(raw.rstrip("\n"))
            kept.append(line)
            on_line(line)
        exit_code = process.wait()
    finally:
        timer.cancel()
    if timed_out.is_set():
        kept.append(f"(killed after {timeout_s:.0f} s)")
    return CommandResult(
        argv=tuple(argv),
        exit_code=exit_code,
        tail=tuple(kept),
        duration_s=time.monotonic() - started,
        timed_out=timed_out.is_set(),
    )
