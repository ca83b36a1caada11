"""What a delivery tells people, as short chat messages. Pure: the sending is a task."""

from __future__ import annotations

import dataclasses
import enum
import re


class NoticeKind(enum.Enum):
    CI_FAILED = "ci-failed"
    STAGING_DEPLOYED = "staging-deployed"
    APPROVAL_WAITING = "approval-waiting"
    PRODUCTION_RELEASED = "production-released"
    RELEASE_FAILED = "release-failed"
    SWITCHED_BACK = "switched-back"
    ROLLED_BACK = "rolled-back"
    NIGHTLY_FAILED = "nightly-failed"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    kind: NoticeKind
    service: str
    version: str
    environment: str = ""
    detail: str = ""  # one line: why it failed, who approved, what serves now
    link: str = ""  # the run in the Prefect UI
    command: str = ""  # what to type to act on it


MAX_DETAIL = 200
_BLOCK_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9-]*/[^/\s]+$")

_HEADLINES = {
    NoticeKind.CI_FAILED: "CI failed",
    NoticeKind.STAGING_DEPLOYED: "deployed",
    NoticeKind.APPROVAL_WAITING: "waiting for approval",
    NoticeKind.PRODUCTION_RELEASED: "released",
    NoticeKind.RELEASE_FAILED: "release failed",
    NoticeKind.SWITCHED_BACK: "switched back",
    NoticeKind.ROLLED_BACK: "rolled back",
    NoticeKind.NIGHTLY_FAILED: "nightly run failed",
}


def subject(notice: Notice) -> str:
    """`stock-api 1.4.2 → production: released`."""
    where = f" → {notice.environment}" if notice.environment else ""
    return f"{notice.service} {notice.version}{where}: {_HEADLINES[notice.kind]}"


def body(notice: Notice) -> str:
    """The detail, the link and the command, one per line; nothing else."""
    detail = " ".join(notice.detail.split())
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 1] + "…"
    lines = [detail, notice.link, f"`{notice.command}`" if notice.command else ""]
    return "\n".join(line for line in lines if line)


def block_reference_problem(value: str) -> str | None:
    """A notification block is named with its type: `custom-webhook/team-chat`."""
    if _BLOCK_REFERENCE.match(value):
        return None
    return (
        f"{value!r} is not a notification block reference; expected "
        "'<block type slug>/<block name>', like 'slack-webhook/team' or 'custom-webhook/chat'"
    )


def checked_block_reference(value: str | None) -> str | None:
    """A pydantic validator's body: the reference itself, or ValueError saying what is wrong."""
    problem = block_reference_problem(value) if value is not None else None
    if problem:
        raise ValueError(problem)
    return value
