"""`deliver metrics`: the four delivery metrics, read from the releases' Prefect events."""

from __future__ import annotations

import argparse
import datetime
import json

from deliver.errors import DeliveryError
from deliver.planning.events import RELEASE_FINISHED
from deliver.planning.metrics import (
    DeliveryMetrics,
    ReleaseRecord,
    compute,
    parse_window,
    table_rows,
)

PAGE = 50  # the server's maximum


class BadWindow(DeliveryError):
    pass


def read_release_records(
    since: datetime.datetime, until: datetime.datetime, service: str | None = None
) -> list[ReleaseRecord]:
    """Every `deliver.release.finished` event in the window, as the server's history keeps it
    (for as long as its PREFECT_SERVER_EVENTS_RETENTION_PERIOD)."""
    from prefect import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    resource = EventResourceFilter(id=[f"deliver.service.{service}"]) if service else None
    query = EventFilter(
        occurred=EventOccurredFilter.model_validate({"since": since, "until": until}),
        event=EventNameFilter(name=[RELEASE_FINISHED]),
        resource=resource,
    )
    records = []
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=query, limit=PAGE)
        while True:
            records += [ReleaseRecord.from_payload(event.payload) for event in page.events]
            if page.next_page is None:
                break
            page = client.read_events_page(str(page.next_page))
    return records


def delivery_metrics(
    window: str, *, environment: str = "production", service: str | None = None
) -> DeliveryMetrics:
    try:
        span = parse_window(window)
    except ValueError as exc:
        raise BadWindow(str(exc)) from None
    until = datetime.datetime.now(datetime.UTC)
    since = until - span
    records = read_release_records(since, until, service)
    return compute(records, since=since, until=until, environment=environment)


def run(args: argparse.Namespace) -> int:
    metrics = delivery_metrics(args.since, environment=args.env, service=args.service)
    if args.json:
        print(json.dumps(metrics.to_json(), indent=2))
        return 0
    print(
        f"Delivery metrics for {metrics.environment}, {args.since} to now "
        f"({metrics.since:%Y-%m-%d %H:%M} UTC onwards):"
    )
    for row in table_rows(metrics):
        print(f"  {row['metric']:<24} {row['value']:<20} {row['basis']}")
    return 0
