"""One way to run a command, here or over SSH, and one result: exit code, output, tail.

`run` captures; `run_streamed` hands each output line to a callback as it comes and keeps the
tail. Both bound what they keep and how long they wait, and redact the command and its output
once, here: no caller sees an unredacted secret. `deliver.tasks.ssh.Remote.run` returns the
same `CommandResult` for a command on a deploy host.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from deliver.redaction import redact

TAIL_LINES = 40
MAX_OUTPUT = 4 * 1024 * 1024  # characters kept of each stream; the rest is cut, and said so


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    """What a command did. `stdout` and `stderr` are redacted; a streamed command's output is
    merged into `stdout` and holds its last `TAIL_LINES` lines."""

    command: str  # as a shell would read it, redacted
    where: str  # "local", or the deploy host's user@host:port
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def tail(self, count: int = 15) -> str:
        """The last `count` lines of its output (stderr after stdout), or "(no output)"."""
        lines = [*self.stdout.splitlines(), *self.stderr.splitlines()]
        return "\n".join(lines[-count:]).strip() or "(no output)"


def result_of(
    argv: Sequence[str],
    *,
    where: str,
    exit_code: int,
    stdout: str,
    stderr: str,
    duration_s: float,
    timed_out: bool = False,
) -> CommandResult:
    """The result, redacted and bounded: the one place either happens."""
    return CommandResult(
        command=redact(shlex.join(argv)),
        where=where,
        exit_code=exit_code,
        stdout=redact(_bounded(stdout)),
        stderr=redact(_bounded(stderr)),
        duration_s=round(duration_s, 3),
        timed_out=timed_out,
    )


def _bounded(text: str) -> str:
    if len(text) <= MAX_OUTPUT:
        return text
    return f"(first {len(text) - MAX_OUTPUT} characters cut)\n" + text[-MAX_OUTPUT:]


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout_s: float = 300,
) -> CommandResult:
    """Run `argv` here and capture its output; a missing program is exit 127, a command past
    `timeout_s` is killed and `timed_out`."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
            timeout=timeout_s,
        )
    except FileNotFoundError as exc:
        return _not_found(argv, exc)
    except subprocess.TimeoutExpired as exc:
        return result_of(
            argv,
            where="local",
            exit_code=-9,
            stdout=_text(exc.stdout),
            stderr=_text(exc.stderr) + f"\n(killed after {timeout_s:.0f} s)",
            duration_s=time.monotonic() - started,
            timed_out=True,
        )
    return result_of(
        argv,
        where="local",
        exit_code=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        duration_s=time.monotonic() - started,
    )


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _not_found(argv: Sequence[str], exc: FileNotFoundError) -> CommandResult:
    line = f"{argv[0]}: command not found ({exc.strerror})"
    return result_of(argv, where="local", exit_code=127, stdout="", stderr=line, duration_s=0.0)


def run_streamed(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600,
    on_line: Callable[[str], None] = lambda _line: None,
) -> CommandResult:
    """Run `argv`, passing each output line (stdout and stderr merged, redacted) to `on_line`;
    past `timeout_s` its whole process group is killed."""
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
        missing = _not_found(argv, exc)
        on_line(missing.stderr)
        return missing
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
    return result_of(
        argv,
        where="local",
        exit_code=exit_code,
        stdout="\n".join(kept),
        stderr="",
        duration_s=time.monotonic() - started,
        timed_out=timed_out.is_set(),
    )
