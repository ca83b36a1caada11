"""Status badges: what they say for each state (pure), how the server serves them (a stand-in
state source), and the same badges read from events on the sandbox's Prefect server."""

from __future__ import annotations

import datetime
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import pytest

from deliver.planning.badges import ci_badge, environment_badge, live_version
from deliver.planning.events import (
    CI_FAILED,
    CI_STARTED,
    CI_SUCCEEDED,
    ci_progress,
    ci_succeeded,
    release_finished,
)
from deliver.planning.metrics import ReleaseRecord
from deliver.planning.release import Outcome
from deliver.webhook_server import BadgeSource, RunningServer, WebhookSettings, serve
from tests.test_webhook_planning import SECRET

T0 = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def record(
    minute: int, outcome: Outcome, version: str, replaced: str | None = None
) -> ReleaseRecord:
    return ReleaseRecord(
        at=T0 + datetime.timedelta(minutes=minute),
        environment="production",
        outcome=outcome,
        version=version,
        replaced=replaced,
    )


def text_of(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # noqa: S314 (our own output)
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.mark.parametrize(
    ("event", "message"),
    [(CI_SUCCEEDED, "passing"), (CI_FAILED, "failing"), (CI_STARTED, "running"), (None, "unknown")],
)
def test_ci_badge_says_what_the_latest_run_did(event, message):
    assert text_of(ci_badge(event).svg()) == ["ci", message]


def test_live_version_follows_releases_rollbacks_and_switch_backs():
    live = [record(1, Outcome.LIVE, "1.0.0")]
    assert live_version(live, "production") == "1.0.0"
    failed = [*live, record(2, Outcome.FAILED, "1.1.0", replaced="1.0.0")]
    assert live_version(failed, "production") == "1.0.0"
    switched = [*live, record(3, Outcome.SWITCHED_BACK, "1.2.0", replaced="1.0.0")]
    assert live_version(switched, "production") == "1.0.0"
    rolled = [*live, record(4, Outcome.LIVE, "1.3.0"), record(5, Outcome.ROLLED_BACK, "1.0.0")]
    assert live_version(list(reversed(rolled)), "production") == "1.0.0"
    assert live_version(live, "staging") is None


def test_environment_badge_escapes_what_it_shows():
    svg = environment_badge("production", "1.0.0<script>").svg()
    assert "<script>" not in svg
    assert text_of(svg) == ["production", "1.0.0<script>"]
    assert text_of(environment_badge("staging", None).svg()) == ["staging", "nothing live"]


class Recorded:
    """A stand-in state source: what the events would say."""

    def __init__(self) -> None:
        self.ci: str | None = CI_SUCCEEDED
        self.releases = [record(1, Outcome.LIVE, "2.0.1")]
        self.down = False

    def latest(self, service: str, ref: str) -> str | None:
        if self.down:
            raise httpx.ConnectError("the API is down")
        return self.ci if (service, ref) == ("stock-api", "main") else None

    def recent(self, service: str, environment: str) -> list[ReleaseRecord]:
        return self.releases if service == "stock-api" else []


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def server(recorded: Recorded) -> Iterator[RunningServer]:
    source = BadgeSource(latest_ci_event=recorded.latest, recent_releases=recorded.recent)
    running = serve(
        WebhookSettings(secret=SECRET, ci_defaults={}),
        port=0,
        starter=lambda settings, run: "unused",
        badges=source,
    )
    yield running
    running.shutdown()


def get(server: RunningServer, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.server_address[1]}{path}", headers=headers)


def test_the_server_serves_badges_that_revalidate(server, recorded):
    answer = get(server, "/badges/stock-api/ci.svg?branch=main")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/svg+xml"
    assert answer.headers["cache-control"] == "no-cache, max-age=0"
    assert text_of(answer.text) == ["ci", "passing"]
    unchanged = get(server, "/badges/stock-api/ci.svg", **{"If-None-Match": answer.headers["etag"]})
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    recorded.ci = CI_FAILED
    changed = get(server, "/badges/stock-api/ci.svg", **{"If-None-Match": answer.headers["etag"]})
    assert changed.status_code == 200
    assert text_of(changed.text) == ["ci", "failing"]
    assert text_of(get(server, "/badges/stock-api/ci.svg?branch=dev").text) == ["ci", "unknown"]
    assert text_of(get(server, "/badges/stock-api/production.svg").text) == ["production", "2.0.1"]


def test_bad_badge_names_are_404_and_a_down_api_is_503(server, recorded):
    assert get(server, "/badges/Stock_API/ci.svg").status_code == 404
    assert get(server, "/badges/stock-api/ci.svg?branch=a%20b").status_code == 404
    assert get(server, "/badges/stock-api/ci.png").status_code in (404, 405)
    recorded.down = True
    assert get(server, "/badges/stock-api/ci.svg").status_code == 503


@pytest.mark.prefect_server
def test_badges_read_the_servers_events(prefect_api):
    from prefect.events import emit_event

    from deliver.webhook_server import prefect_badge_source

    service = f"badge-{uuid.uuid4().hex[:8]}"
    common = {"service": service, "ref": "main", "kind": "branch"}
    emit_event(**ci_progress(event=CI_STARTED, **common))
    time.sleep(0.05)  # events are ordered by when they occurred
    emit_event(**ci_succeeded(**common, image="i", version="1.0.0", sha="abc"))
    released = {"service": service, "environment": "staging", "git_sha": "abc"}
    emit_event(
        **release_finished(
            **released,
            outcome=Outcome.LIVE,
            version="1.0.0",
            at=T0.isoformat(),
            commit_time=None,
            replaced=None,
        )
    )
    running = serve(
        WebhookSettings(secret=SECRET, ci_defaults={}),
        port=0,
        starter=lambda settings, run: "unused",
        badges=prefect_badge_source(),
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # the server persists events a moment after they arrive
            ci = text_of(get(running, f"/badges/{service}/ci.svg").text)
            live = text_of(get(running, f"/badges/{service}/staging.svg").text)
            if (ci, live) == (["ci", "passing"], ["staging", "1.0.0"]):
                break
            assert time.monotonic() < deadline, (ci, live)
            time.sleep(0.5)
    finally:
        running.shutdown()
