"""The one command runner: captured or streamed, bounded, timed out, redacted once."""

from __future__ import annotations

from pathlib import Path

from deliver import commands, redaction

SECRET = "s3cr3t-canary-value"  # noqa: S105 (a canary, not a credential)


def test_a_command_returns_its_output_and_exit_code():
    done = commands.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.exit_code, done.stdout, done.stderr, done.ok) == (3, "out\n", "err\n", False)
    assert done.tail() == "out\nerr"
    assert done.where == "local"


def test_a_missing_program_is_exit_127_not_an_exception():
    done = commands.run(["no-such-program-here"])
    assert done.exit_code == 127
    assert "command not found" in done.stderr


def test_a_command_past_its_timeout_is_killed_and_says_so(tmp_path: Path):
    done = commands.run(["sleep", "5"], timeout_s=0.2)
    assert done.timed_out
    assert not done.ok
    assert "killed after" in done.tail()
    streamed = commands.run_streamed(["sleep", "5"], cwd=tmp_path, timeout_s=0.2)
    assert streamed.timed_out


def test_output_is_bounded():
    done = commands.run(["python3", "-c", f"print('x' * {commands.MAX_OUTPUT + 10})"])
    assert len(done.stdout) < commands.MAX_OUTPUT + 100
    assert done.stdout.startswith("(first ")


def test_a_registered_secret_never_reaches_the_result(tmp_path: Path):
    redaction.register([SECRET])
    done = commands.run(["echo", SECRET])
    assert SECRET not in done.stdout + done.command
    seen: list[str] = []
    streamed = commands.run_streamed(["echo", SECRET], cwd=tmp_path, on_line=seen.append)
    assert SECRET not in "".join(seen) + streamed.stdout + streamed.command


def test_stdin_is_passed_and_closed():
    assert commands.run(["cat"], stdin="piped").stdout == "piped"
    assert commands.run(["cat"]).stdout == ""  # no stdin given: it reads nothing, no hang
