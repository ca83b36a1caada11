"""The sandbox approvers' authenticator: their TOTP secrets live in the sandbox's state, as an
approver's would live in their phone's app. `make demo APPROVE=1`, `deliver sandbox code` and
the tests take their one-time codes from here."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from deliver.planning.approval import TOTP_STEP_S, decode_secret, totp
from deliver.sandbox.state import SandboxState

DEMO_APPROVER = "demo-approver"
APPROVERS = (DEMO_APPROVER, "alice")

_used: dict[str, set[int]] = {}
_lock = threading.Lock()


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
    """A code of `approver` this process has not handed out yet. A code is accepted once
    within its window (the step before, its own, the one after), so one process can approve
    up to three times a step; past that it waits for the next step."""
    secret = decode_secret(
        SandboxState.load(state_dir).credentials(credentials_name(approver))["totp_secret"]
    )
    while True:
        now = time.time()
        current = int(now // TOTP_STEP_S)
        with _lock:
            used = _used.setdefault(approver, set()) | _used_on_server(approver)
            for step in (current, current + 1):
                if step not in used:
                    _used[approver].add(step)
                    return totp(secret, at=step * TOTP_STEP_S)
        time.sleep((current + 1) * TOTP_STEP_S - now + 0.05)


def _used_on_server(approver: str) -> set[int]:
    """What the release flows remember as used (another process may have used a code)."""
    from prefect.variables import Variable  # Prefect only now: its settings are set by then

    from deliver.tasks.approval import used_codes_variable

    stored: Any = Variable.get(used_codes_variable(approver), default=[])
    return {int(step) for step in stored} if isinstance(stored, list) else set()
