"""Delivery metrics (the four DORA keys) from the releases' own events. Pure.

- deployment frequency: production releases that went live, per day of the window;
- lead time for changes: commit time to live in production (median, and each);
- change failure rate: of the releases that reached production traffic, the share that failed
  there: switched back by the release itself, or later by an operator's rollback;
- time to restore: from such a failure to the next production release that went live.
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from deliver.planning.events import outcome_of
from deliver.planning.release import Outcome


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseRecord:
    """One `deliver.release.finished` event."""

    at: datetime.datetime
    environment: str
    outcome: Outcome
    version: str
    commit_time: datetime.datetime | None = None
    replaced: str | None = None  # for a rollback: the version it took out of service

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ReleaseRecord:
        commit = payload.get("commit_time")
        return cls(
            at=_instant(payload["at"]),
            environment=str(payload["environment"]),
            outcome=outcome_of(payload),
            version=str(payload["version"]),
            commit_time=_instant(commit) if commit else None,
            replaced=payload.get("replaced"),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Restore:
    failed_version: str
    failed_at: datetime.datetime
    restored_by: str | None  # the next live version, None while none has gone live
    seconds: float | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryMetrics:
    environment: str
    since: datetime.datetime
    until: datetime.datetime
    releases: int  # went live
    deployments_per_day: float
    lead_times_s: tuple[float, ...]
    median_lead_time_s: float | None
    changes: int  # reached production traffic
    failures: int
    change_failure_rate: float | None
    restores: tuple[Restore, ...]
    median_time_to_restore_s: float | None
    blocked: int  # failed before taking any traffic: no harm done, not a change

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["since"], data["until"] = self.since.isoformat(), self.until.isoformat()
        data["restores"] = [
            {**dataclasses.asdict(r), "failed_at": r.failed_at.isoformat()} for r in self.restores
        ]
        return data


def _instant(text: str) -> datetime.datetime:
    value = datetime.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def parse_window(text: str) -> datetime.timedelta:
    """`30d`, `12h`, `90m` or `45s`."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise ValueError(f"{text!r} is not a window; expected a number and d, h, m or s: 30d")
    return datetime.timedelta(**{units[unit]: int(number)})


def compute(
    records: Iterable[ReleaseRecord],
    *,
    since: datetime.datetime,
    until: datetime.datetime,
    environment: str = "production",
) -> DeliveryMetrics:
    ordered = sorted(
        (r for r in records if r.environment == environment and since <= r.at <= until),
        key=lambda r: r.at,
    )
    live = [r for r in ordered if r.outcome is Outcome.LIVE]
    failures: list[tuple[str, datetime.datetime]] = [
        (r.version, r.at) for r in ordered if r.outcome is Outcome.SWITCHED_BACK
    ]
    for rollback in (r for r in ordered if r.outcome is Outcome.ROLLED_BACK):
        # The release an operator rolled back failed: the last live one of that version.
        earlier = [r for r in live if r.at < rollback.at and r.version == rollback.replaced]
        if earlier:
            failures.append((earlier[-1].version, rollback.at))
    failures.sort(key=lambda failure: failure[1])
    restores = []
    for version, failed_at in failures:
        after = next((r for r in live if r.at > failed_at), None)
        seconds = (after.at - failed_at).total_seconds() if after else None
        restores.append(
            Restore(
                failed_version=version,
                failed_at=failed_at,
                restored_by=after.version if after else None,
                seconds=seconds,
            )
        )
    lead_times = tuple(
        (r.at - r.commit_time).total_seconds() for r in live if r.commit_time is not None
    )
    changes = len(live) + sum(1 for r in ordered if r.outcome is Outcome.SWITCHED_BACK)
    restored = [r.seconds for r in restores if r.seconds is not None]
    days = max((until - since).total_seconds() / 86400, 1e-9)
    return DeliveryMetrics(
        environment=environment,
        since=since,
        until=until,
        releases=len(live),
        deployments_per_day=len(live) / days,
        lead_times_s=lead_times,
        median_lead_time_s=statistics.median(lead_times) if lead_times else None,
        changes=changes,
        failures=len(failures),
        change_failure_rate=len(failures) / changes if changes else None,
        restores=tuple(restores),
        median_time_to_restore_s=statistics.median(restored) if restored else None,
        blocked=sum(1 for r in ordered if r.outcome is Outcome.FAILED),
    )


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def table_rows(metrics: DeliveryMetrics) -> list[dict[str, str]]:
    """The four keys as rows for a table artifact or the terminal."""
    rate = metrics.change_failure_rate
    unrestored = sum(1 for r in metrics.restores if r.seconds is None)
    return [
        {
            "metric": "deployment frequency",
            "value": f"{metrics.deployments_per_day:.2f} per day",
            "basis": f"{metrics.releases} releases went live",
        },
        {
            "metric": "lead time for changes",
            "value": duration_text(metrics.median_lead_time_s) + " (median)",
            "basis": f"{len(metrics.lead_times_s)} releases with a commit time",
        },
        {
            "metric": "change failure rate",
            "value": "-" if rate is None else f"{rate:.0%}",
            "basis": f"{metrics.failures} of {metrics.changes} changes failed in production",
        },
        {
            "metric": "time to restore",
            "value": duration_text(metrics.median_time_to_restore_s) + " (median)",
            "basis": f"{len(metrics.restores) - unrestored} restored, {unrestored} not yet",
        },
    ]
