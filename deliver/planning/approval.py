"""Approval decisions: one-time codes (RFC 6238) and the policy a resume must meet. Pure."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import struct
from collections.abc import Collection, Mapping

from deliver.planning.release import HostState, Outcome

TOTP_STEP_S = 30


def totp(secret: bytes, *, at: float, digits: int = 6, step_s: int = 30) -> str:
    """The RFC 6238 time-based code (HMAC-SHA1) for `secret` at unix time `at`."""
    counter = int(at // step_s)
    digest = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def decode_secret(secret_b32: str) -> bytes:
    """A base32 secret as authenticator apps show it (spaces and padding optional)."""
    cleaned = secret_b32.replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def verify_totp(secret_b32: str, code: str, *, at: float, window: int = 1) -> bool:
    """Whether `code` is valid now or within `window` steps either side (clock drift)."""
    return totp_step(secret_b32, code, at=at, window=window) is not None


def totp_step(secret_b32: str, code: str, *, at: float, window: int = 1) -> int | None:
    """The 30 s time step `code` is valid for, now or within `window` steps either side."""
    secret = decode_secret(secret_b32)
    now = int(at // TOTP_STEP_S)
    for step in range(now - window, now + window + 1):
        if hmac.compare_digest(code.strip(), totp(secret, at=step * TOTP_STEP_S)):
            return step
    return None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PolicyView:
    approvers: tuple[str, ...]
    allow_self_approval: bool
    totp_secrets: Mapping[str, str]  # approver -> base32 secret; a code is required for them
    emergency_rollback: tuple[str, ...] = ()  # may approve their own production rollback
    require_codes: bool = False  # every approver must give a code (the block's default: True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    decision: str  # approve or reject
    approver: str
    reason: str
    code: str


def refusal(
    policy: PolicyView,
    decision: Decision,
    *,
    requester: str,
    at: float,
    used_steps: Collection[int] = (),
    rollback: bool = False,
) -> str | None:
    """Why a resume does not meet the policy, or None when it does. For a `rollback`, a person
    the policy lists for emergency rollbacks may approve their own, with their one-time code."""
    emergency = (
        rollback
        and decision.approver == requester
        and decision.approver in policy.emergency_rollback
    )
    if decision.decision not in {"approve", "reject"}:
        return f"decision must be approve or reject, not {decision.decision!r}"
    if decision.approver not in policy.approvers and not emergency:
        return f"{decision.approver!r} is not an approver ({', '.join(policy.approvers)})"
    if decision.decision == "reject" and not decision.reason.strip():
        return "a rejection needs a reason"
    what = "rollback" if rollback else "release"
    if (
        decision.decision == "approve"
        and decision.approver == requester
        and not policy.allow_self_approval
        and not emergency
    ):
        return f"{requester!r} requested this {what} and may not approve it"
    secret = policy.totp_secrets.get(decision.approver)
    if secret is None:
        if policy.require_codes:
            return f"the policy requires a one-time code, and {decision.approver!r} has no secret"
        return None
    step = totp_step(secret, decision.code, at=at)
    if step is None:
        return f"the one-time code for {decision.approver!r} is missing or wrong"
    if step in used_steps:
        return f"that one-time code of {decision.approver!r} was used already; wait for the next"
    return None


def staging_evidence(staging: HostState, image: str) -> str:
    """What staging's record says of `image`: since when it serves, and what passed there."""
    live = staging.live
    if live is None or live.image != image:
        return "not live there"
    released = next(
        (r for r in reversed(staging.history) if r.image == image and r.outcome is Outcome.LIVE),
        None,
    )
    if released is None:
        return f"live since {live.since}; its release is not in staging's history"
    if not released.checks:
        return f"live since {live.since}; which checks ran there was not recorded"
    return f"live since {live.since}; passed there: {'; '.join(released.checks)}"


def evidence_markdown(
    *,
    image: str,
    version: str,
    git_sha: str,
    requested_by: str,
    production: HostState,
    staging: HostState,
    ci: str,
    candidate: str = "",
) -> str:
    """What the approver sees on the resume form."""
    live = production.live
    now = f"{live.version} (`{live.image}`) since {live.since}" if live else "nothing yet"
    return (
        f"## Release {version} to production\n\n"
        f"- image: `{image}`\n- commit: `{git_sha}`\n- requested by: {requested_by}\n"
        f"- production now: {now}\n"
        f"- staging: {staging_evidence(staging, image)}\n"
        + (f"- candidate: {candidate}\n" if candidate else "")
        + "\n"
        f"### CI\n\n{ci.removeprefix('# ')}\n\n"
        "Approve or reject below: your name, and a reason (required to reject). "
        "Approvers with a one-time code secret must give their current code."
    )


def rollback_evidence_markdown(
    *,
    environment: str,
    to_version: str,
    image: str,
    requested_by: str,
    production: HostState,
    emergency: tuple[str, ...],
) -> str:
    """What the approver of a production rollback sees on the resume form."""
    live = production.live
    now = f"{live.version} (`{live.image}`) since {live.since}" if live else "nothing"
    recorded = next(
        (r for r in reversed(production.history) if r.image == image and r.outcome is Outcome.LIVE),
        None,
    )
    before = f"it went live at {recorded.at}" if recorded else "no release of it is recorded here"
    emergency_text = (
        f"{', '.join(emergency)} may approve their own rollback with their one-time code."
        if emergency
        else "Nobody may approve their own rollback."
    )
    return (
        f"## Roll {environment} back to {to_version}\n\n"
        f"- image: `{image}` ({before})\n- requested by: {requested_by}\n"
        f"- {environment} now: {now}\n\n"
        "It goes live through the release's own steps (start, health, switch, smoke, switch back "
        "on failure); the schema stays as the last migration left it. "
        f"{emergency_text} Approvers with a one-time code secret must give their current code."
    )
