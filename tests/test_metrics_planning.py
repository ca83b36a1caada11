"""Delivery metrics and notices as pure logic, on a fixed history."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from deliver.planning.metrics import ReleaseRecord, compute, parse_window, table_rows
from deliver.planning.notices import Notice, NoticeKind, block_reference_problem, body, subject
from deliver.planning.release import Outcome

T0 = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)


def at(hours: float) -> datetime.datetime:
    return T0 + datetime.timedelta(hours=hours)


def record(hours: float, outcome: str, version: str, **extra: Any) -> ReleaseRecord:
    environment = str(extra.pop("environment", "production"))
    return ReleaseRecord(
        at=at(hours), environment=environment, outcome=Outcome(outcome), version=version, **extra
    )


HISTORY = [
    record(10, "live", "1.0", commit_time=at(8)),  # lead 2 h
    record(20, "live", "1.1", commit_time=at(19)),  # lead 1 h
    record(21, "failed", "1.2"),  # never took traffic: not a change
    record(30, "switched-back", "1.3"),  # failure 1 at 30
    record(33, "live", "1.4", commit_time=at(27)),  # lead 6 h; restores failure 1 in 3 h
    record(40, "rolled-back", "1.1", replaced="1.4"),  # failure 2 at 40 (1.4 failed)
    record(41, "live", "1.5"),  # no commit time; restores failure 2 in 1 h
    record(45, "switched-back", "1.6"),  # failure 3, not restored yet
    record(46, "live", "9.9", environment="staging"),  # another environment
    record(200, "live", "2.0", commit_time=at(199)),  # outside the window
]


def test_the_four_keys_of_a_known_history():
    metrics = compute(HISTORY, since=T0, until=at(48))
    assert metrics.releases == 4
    assert metrics.deployments_per_day == pytest.approx(4 / 2)
    assert metrics.lead_times_s == (7200.0, 3600.0, 21600.0)
    assert metrics.median_lead_time_s == 7200.0
    assert (metrics.changes, metrics.failures, metrics.blocked) == (6, 3, 1)
    assert metrics.change_failure_rate == pytest.approx(0.5)
    assert [(r.failed_version, r.restored_by, r.seconds) for r in metrics.restores] == [
        ("1.3", "1.4", 10800.0),
        ("1.4", "1.5", 3600.0),
        ("1.6", None, None),
    ]
    assert metrics.median_time_to_restore_s == pytest.approx(7200.0)
    rows = {row["metric"]: row for row in table_rows(metrics)}
    assert rows["change failure rate"]["value"] == "50%"
    assert rows["time to restore"]["basis"] == "2 restored, 1 not yet"
    assert rows["lead time for changes"]["value"] == "2.0 h (median)"


def test_an_empty_window_has_no_rates():
    metrics = compute([], since=T0, until=at(24))
    assert (metrics.releases, metrics.change_failure_rate, metrics.median_lead_time_s) == (
        0,
        None,
        None,
    )
    assert table_rows(metrics)[2]["value"] == "-"


@pytest.mark.parametrize(("text", "hours"), [("30d", 720), ("12h", 12), ("90m", 1.5)])
def test_windows(text, hours):
    assert parse_window(text) == datetime.timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "d", "0d", "3x", "-1d", "1.5h", "30"])
def test_bad_windows(text):
    with pytest.raises(ValueError, match="is not a window"):
        parse_window(text)


def test_notice_text_is_short_and_names_service_version_environment():
    notice = Notice(
        kind=NoticeKind.APPROVAL_WAITING,
        service="stock-api",
        version="1.4.2",
        environment="production",
        detail="requested by ci-tag\n  waits 3600 s",
        link="http://127.0.0.1:4200/runs/flow-run/abc",
        command='deliver approve abc --approver <you> --reason "<why>"',
    )
    assert subject(notice) == "stock-api 1.4.2 → production: waiting for approval"
    assert body(notice).splitlines() == [
        "requested by ci-tag waits 3600 s",
        "http://127.0.0.1:4200/runs/flow-run/abc",
        '`deliver approve abc --approver <you> --reason "<why>"`',
    ]
    long = Notice(kind=NoticeKind.CI_FAILED, service="s", version="main", detail="x" * 1000)
    assert len(body(long)) == 200


@pytest.mark.parametrize("value", ["sandbox-chat", "custom-webhook/", "/x", "Slack/x", "a/b/c"])
def test_block_references_need_type_and_name(value):
    assert block_reference_problem(value)


def test_block_reference_accepted():
    assert block_reference_problem("slack-webhook/team-chat") is None


def test_payloads_before_the_outcome_schema_are_read_in_todays_words():
    """An event from before the one vocabulary: its "rolled-back" was a release that switched
    back, its "rollback" an operator's rollback; a schema-2 "rolled-back" is the rollback."""
    base = {"at": "2026-01-01T00:00:00+00:00", "environment": "production", "version": "1"}
    old_switch = ReleaseRecord.from_payload({**base, "outcome": "rolled-back"})
    old_rollback = ReleaseRecord.from_payload({**base, "outcome": "rollback"})
    new_rollback = ReleaseRecord.from_payload({**base, "outcome": "rolled-back", "schema": 2})
    assert old_switch.outcome is Outcome.SWITCHED_BACK
    assert old_rollback.outcome is Outcome.ROLLED_BACK
    assert new_rollback.outcome is Outcome.ROLLED_BACK
