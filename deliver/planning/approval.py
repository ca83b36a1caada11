"""Approval decisions: one-time codes (RFC 6238) and the policy a resume must meet. Pure."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import struct
from collections.abc import Mapping


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
    secret = decode_secret(secret_b32)
    candidates = (totp(secret, at=at + step * 30) for step in range(-window, window + 1))
    return any(hmac.compare_digest(code.strip(), candidate) for candidate in candidates)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PolicyView:
    approvers: tuple[str, ...]
    allow_self_approval: bool
    totp_secrets: Mapping[str, str]  # approver -> base32 secret; a code is required for them


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    decision: str  # approve or reject
    approver: str
    reason: str
    code: str


def refusal(policy: PolicyView, decision: Decision, *, requester: str, at: float) -> str | None:
    """Why a resume does not meet the policy, or None when it does."""
    if decision.decision not in {"approve", "reject"}:
        return f"decision must be approve or reject, not {decision.decision!r}"
    if decision.approver not in policy.approvers:
        return f"{decision.approver!r} is not an approver ({', '.join(policy.approvers)})"
    if decision.decision == "reject" and not decision.reason.strip():
        return "a rejection needs a reason"
    if (
        decision.decision == "approve"
        and decision.approver == requester
        and not policy.allow_self_approval
    ):
        return f"{requester!r} requested this release and may not approve it"
    secret = policy.totp_secrets.get(decision.approver)
    if secret is not None and not verify_totp(secret, decision.code, at=at):
        return f"the one-time code for {decision.approver!r} is missing or wrong"
    return None
