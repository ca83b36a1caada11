"""The sandbox approvers' authenticator: their TOTP secrets live in the sandbox's state, as an
approver's would live in their phone's app. `make demo APPROVE=1`, `deliver sandbox code` and
the tests take their one-time codes from here."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deliver.planning.approval import TOTP_STEP_S, decode_secret, totp
from deliver.sandbox.state import SandboxState

DEMO_APPROVER = "demo-approver"
APPROVERS = (DEMO_APPROVER, "alice")
HANDED_OUT = "approver-codes.json"  # steps whose code was handed out, per approver


def credentials_name(approver: str) -> str:
    return f"approver-{approver}"


def approver_secret(state: SandboxState, approver: str) -> str:
    """The approver's base32 TOTP secret, made on first use."""
    found = state.credentials(credentials_name(approver))
    if not found:
        found = {"totp_secret": base64.b32encode(secrets.token_bytes(20)).decode()}
        state.set_credentials(credentials_name(approver), found)
    return found["totp_secret"]


def one_time_code(state_dir: Path, approver: str) -> str:
    """A code of `approver` no process has been handed yet. A code is accepted once within its
    window (the step before, its own, the one after), so the sandbox hands out the current
    step's and the next one's; past that, it waits for the next step."""
    secret = decode_secret(
        SandboxState.load(state_dir).credentials(credentials_name(approver))["totp_secret"]
    )
    while True:
        now = time.time()
        current = int(now // TOTP_STEP_S)
        with _handed_out(state_dir) as handed:
            taken = set(handed.get(approver, [])) | _used_on_server(approver)
            for step in (current, current + 1):
                if step not in taken:
                    kept = [s for s in handed.get(approver, []) if s >= current - 2]
                    handed[approver] = [*kept, step]
                    return totp(secret, at=step * TOTP_STEP_S)
        time.sleep((current + 1) * TOTP_STEP_S - now + 0.05)


@contextlib.contextmanager
def _handed_out(state_dir: Path) -> Iterator[dict[str, list[int]]]:
    """The handed-out steps, read and written back under an exclusive lock: two processes
    (the demo, `deliver sandbox code`, test workers) never get the same code."""
    path = state_dir / HANDED_OUT
    with (state_dir / f"{HANDED_OUT}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        handed: dict[str, list[int]] = json.loads(path.read_text()) if path.exists() else {}
        yield handed
        path.write_text(json.dumps(handed))


def _used_on_server(approver: str) -> set[int]:
    """What the release flows remember as used (a code typed in the UI, say)."""
    from prefect.variables import Variable  # Prefect only now: its settings are set by then

    from deliver.tasks.approval import used_codes_variable

    stored: Any = Variable.get(used_codes_variable(approver), default=[])
    return {int(step) for step in stored} if isinstance(stored, list) else set()
