"""What a finished release says of itself: event, report headline and notice. Pure."""

from __future__ import annotations

import dataclasses

import pytest

from deliver.planning.events import OUTCOME_SCHEMA, RELEASE_FINISHED
from deliver.planning.notices import NoticeKind, subject
from deliver.planning.outcome import FinishedRelease
from deliver.planning.release import Approval, Outcome

APPROVAL = Approval(approver="alice", reason="tests pass", at="t")


def finished(outcome: Outcome, environment: str = "production", **extra: object) -> FinishedRelease:
    fields: dict[str, object] = {
        "service": "app",
        "environment": environment,
        "outcome": outcome,
        "version": "1.2",
        "image": "reg/app@sha256:" + "1" * 64,
        "git_sha": "abcdef1",
        "requested_by": "bob",
        "at": "2026-01-01T00:00:00+00:00",
        "previous": ("1.1", "1234567"),
        "labels": {"org.opencontainers.image.created": "2025-12-31T23:00:00Z"},
        **extra,
    }
    return FinishedRelease(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outcome", "environment", "extra", "kind", "detail", "headline"),
    [
        (
            Outcome.LIVE,
            "staging",
            {},
            NoticeKind.STAGING_DEPLOYED,
            "requested by bob; replaced 1.1",
            "1.2 is live",
        ),
        (
            Outcome.LIVE,
            "production",
            {"approval": APPROVAL},
            NoticeKind.PRODUCTION_RELEASED,
            "approved by alice: tests pass; replaced 1.1",
            "1.2 is live",
        ),
        (
            Outcome.FAILED,
            "production",
            {"detail": "health failed\nmore"},
            NoticeKind.RELEASE_FAILED,
            "health failed — 1.1 is serving",
            "1.2 failed; 1.1 kept serving",
        ),
        (
            Outcome.SWITCHED_BACK,
            "production",
            {"detail": "smoke failed"},
            NoticeKind.SWITCHED_BACK,
            "smoke failed — 1.1 is serving",
            "1.2 failed in production and was switched back",
        ),
        (
            Outcome.ROLLED_BACK,
            "production",
            {},
            NoticeKind.ROLLED_BACK,
            "by bob; replaced 1.1",
            "rolled back to 1.2",
        ),
    ],
)
def test_each_outcome_says_the_same_thing_everywhere(
    outcome, environment, extra, kind, detail, headline
):
    """The event, the report and the notice name one outcome, each in its own form."""
    release = finished(outcome, environment, **extra)
    event = release.event()
    assert event["event"] == RELEASE_FINISHED
    assert event["payload"]["outcome"] == outcome.value
    assert event["payload"]["schema"] == OUTCOME_SCHEMA
    assert event["payload"]["commit_time"] == "2025-12-31T23:00:00Z"
    assert event["resource"]["deliver.outcome"] == outcome.value
    notice = release.notice(link="http://ui/run")
    assert (notice.kind, notice.detail) == (kind, detail)
    assert release.report(None).splitlines()[0] == f"# app → {environment}: {headline}"


def test_a_first_release_has_nothing_to_replace():
    release = finished(Outcome.FAILED, previous=None, detail="boom")
    assert release.notice(link="").detail == "boom — nothing is serving"
    assert "First release to this environment." in release.report(None)
    assert release.event()["payload"]["replaced"] is None


def test_the_report_lists_commits_and_the_approval():
    report = finished(Outcome.LIVE, approval=APPROVAL).report(["abc1234 fix: a bug"])
    assert "### Fixes\n\n- a bug (`abc1234`)" in report  # grouped by Conventional Commits
    assert "- approved by alice at t: tests pass" in report
    assert subject(finished(Outcome.LIVE).notice(link="")) == "app 1.2 → production: released"


def test_a_release_version_gets_a_changelog_grouped_by_conventional_commits():
    """feat/fix/... in their sections, breaking changes first, the rest under Other; a short
    sha version (not from a v* tag) gets none."""
    from deliver.planning.outcome import FinishedRelease
    from deliver.planning.release import Outcome
    from deliver.planning.report import changelog_lines

    commits = [
        "a1b2c3d feat(api)!: orders have a note",
        "b2c3d4e fix: totals round down",
        "c3d4e5f Merge branch 'x'",
        "d4e5f6a docs: the expand/contract rule",
    ]
    release = FinishedRelease(
        service="orders-api",
        environment="production",
        outcome=Outcome.LIVE,
        version="1.4.0",
        image="reg/orders-api@sha256:" + "1" * 64,
        git_sha="a1b2c3d",
        requested_by="ci",
        at="2026-12-06T00:00:00Z",
        previous=("1.3.2", "9f9f9f9"),
    )
    text = release.changelog(commits) or ""
    assert text.startswith("# orders-api 1.4.0: changes since 1.3.2")
    sections = [line for line in text.splitlines() if line.startswith("### ")]
    assert sections == [
        "### Breaking changes",
        "### Features",
        "### Fixes",
        "### Documentation",
        "### Other",
    ]
    assert "- **api:** orders have a note (`a1b2c3d`)" in text
    assert "- Merge branch 'x' (`c3d4e5f`)" in text
    assert "### Fixes" in release.report(commits)
    short_sha = dataclasses.replace(release, environment="staging", version="a1b2c3d")
    assert short_sha.changelog(commits) is None
    assert changelog_lines(["0a0a0a0 plain subject"]) == ["- `0a0a0a0 plain subject`"]
