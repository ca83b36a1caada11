"""A finished release, and what it says of itself: its event, its report, its notice. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from deliver.planning.events import release_finished
from deliver.planning.notices import Notice, NoticeKind
from deliver.planning.release import APPROVED_ENVIRONMENT, Approval, Outcome
from deliver.planning.report import changelog, is_release_version, release_report

SOURCE_LABEL = "org.opencontainers.image.source"
COMMIT_TIME_LABEL = "org.opencontainers.image.created"  # CI sets it to the commit's time


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FinishedRelease:
    """How a release or rollback of one environment ended, with what the report shows."""

    service: str
    environment: str
    outcome: Outcome
    version: str
    image: str
    git_sha: str
    requested_by: str
    at: str
    previous: tuple[str, str] | None  # (version, git sha) that served before
    approval: Approval | None = None
    timings_s: Mapping[str, float] = dataclasses.field(default_factory=dict)
    detail: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the image's
    migration: str = ""  # what the release's migration printed (its last lines)

    @property
    def source(self) -> str | None:
        """The repository the image was built from, when CI labelled it."""
        return self.labels.get(SOURCE_LABEL) or None

    def event(self) -> dict[str, Any]:
        """`emit_event` arguments for `deliver.release.finished`."""
        return release_finished(
            service=self.service,
            environment=self.environment,
            outcome=self.outcome,
            version=self.version,
            git_sha=self.git_sha,
            at=self.at,
            commit_time=self.labels.get(COMMIT_TIME_LABEL) or None,
            replaced=self.previous[0] if self.previous else None,
            detail=self.detail,
        )

    def report(self, commits: Sequence[str] | None) -> str:
        """The report's markdown; `commits` between the two versions, None if unknown."""
        return release_report(
            service=self.service,
            environment=self.environment,
            outcome=self.outcome,
            version=self.version,
            image=self.image,
            git_sha=self.git_sha,
            requested_by=self.requested_by,
            previous=self.previous,
            approval=dataclasses.asdict(self.approval) if self.approval else None,
            timings_s=self.timings_s,
            commits=commits,
            detail=self.detail,
            migration=self.migration,
        )

    def changelog(self, commits: Sequence[str] | None) -> str | None:
        """For a release of a `v*` version whose commits are known: its grouped changes."""
        if not commits or not is_release_version(self.version) or self.outcome is not Outcome.LIVE:
            return None
        return changelog(
            service=self.service, version=self.version, previous=self.previous, commits=commits
        )

    def changelog_key(self) -> str:
        return f"changelog-{self.service}".lower()

    def report_key(self) -> str:
        return f"release-{self.service}-{self.environment}".lower()

    def report_description(self) -> str:
        return f"{self.service} {self.version} → {self.environment}: {self.outcome}"

    def notice(self, *, link: str) -> Notice:
        """The chat notice: what happened, and for a failure what serves instead."""
        kind, detail = self._notice_kind_and_detail()
        return Notice(
            kind=kind,
            service=self.service,
            version=self.version,
            environment=self.environment,
            detail=detail,
            link=link,
        )

    def _notice_kind_and_detail(self) -> tuple[NoticeKind, str]:
        if self.outcome in {Outcome.FAILED, Outcome.SWITCHED_BACK}:
            kind = NoticeKind.RELEASE_FAILED
            if self.outcome is Outcome.SWITCHED_BACK:
                kind = NoticeKind.SWITCHED_BACK
            first_line = self.detail.splitlines()[0] if self.detail else "failed"
            serving = self.previous[0] if self.previous else "nothing"
            return kind, f"{first_line} — {serving} is serving"
        replaced = f"; replaced {self.previous[0]}" if self.previous else ""
        if self.outcome is Outcome.ROLLED_BACK:
            return NoticeKind.ROLLED_BACK, f"by {self.requested_by}{replaced}"
        if self.environment != APPROVED_ENVIRONMENT:
            return NoticeKind.STAGING_DEPLOYED, f"requested by {self.requested_by}{replaced}"
        if self.approval is None:
            return NoticeKind.PRODUCTION_RELEASED, f"requested by {self.requested_by}{replaced}"
        reason = self.approval.reason or "no reason given"
        return (
            NoticeKind.PRODUCTION_RELEASED,
            f"approved by {self.approval.approver}: {reason}{replaced}",
        )
