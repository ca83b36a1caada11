"""A real delivery history in the sandbox, then what people see of it: chat notifications, the
release reports in the UI, and the delivery metrics computed from Prefect's events.

History, production side: 3.0.1 live, 3.0.2 live, 3.0.3 fails its smoke checks after the
switch and is switched back (failure 1), 3.0.4 live (restores 1), an operator rolls 3.0.4 back
(failure 2), 3.0.5 live (restores 2). Hand-computed: 4 releases live, 5 changes reached
production traffic, 2 failed (40%), both restored.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import subprocess
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from blocks.deploy_target import DeployTarget
from deliver.cli.ci import run_ci
from deliver.planning.metrics import compute
from deliver.planning.registry import read_push_stream
from deliver.prefect_api import read_release_records
from deliver.sandbox.services.chat_inbox import Inbox
from flows.ci import CiParameters
from flows.release import RollbackParameters, rollback_here
from tests.chat import chat_block
from tests.conftest import PROJECT_DIR
from tests.policies import rollbacks_without_approval
from tests.test_release import ProductionRelease, reset_hosts, run_release

NOTIFY = "custom-webhook/history-chat"
TOKEN = "history-chat-token-0123456789"  # noqa: S105 (a test receiver's)
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
# version -> (build args, commit time written in the image's label as CI writes it)
BUILDS: dict[str, tuple[dict[str, str], datetime.datetime]] = {
    "3.0.1": ({}, NOW - datetime.timedelta(hours=5)),
    "3.0.2": ({}, NOW - datetime.timedelta(hours=4)),
    "3.0.3": ({"BROKEN_STATS": "true"}, NOW - datetime.timedelta(hours=3)),
    "3.0.4": ({}, NOW - datetime.timedelta(hours=2)),
    "3.0.5": ({}, NOW - datetime.timedelta(hours=1)),
}


@pytest.fixture(scope="module")
def inbox(prefect_api) -> Iterator[Inbox]:
    from deployments.automations import AlertSettings, ensure_alerts

    # A run killed during the alert drill leaves its 10 s alerts pointed at this chat.
    ensure_alerts(AlertSettings(notify_block="custom-webhook/sandbox-chat"))
    with chat_block("history-chat", TOKEN) as box:
        yield box


@pytest.fixture(scope="module")
def images(docker_engine, registry, base_image, sandbox_config, prefect_api) -> dict[str, str]:
    reset_hosts(docker_engine, sandbox_config)
    repository = f"{registry['address']}/history-api"
    auth = {"username": registry["username"], "password": registry["password"]}
    found = {}
    for version, (args, committed) in BUILDS.items():
        docker_engine.images.build(
            path=str(PROJECT_DIR / "examples" / "stock-api"),
            tag=f"{repository}:{version}",
            buildargs={"BASE_IMAGE": base_image, "VERSION": version, **args},
            rm=True,
            labels={"org.opencontainers.image.created": committed.isoformat()},
        )
        stream = docker_engine.api.push(
            repository, tag=version, stream=True, decode=True, auth_config=auth
        )
        outcome = read_push_stream(stream)
        assert outcome.digest, outcome.error
        found[version] = f"{repository}@{outcome.digest}"
    return found


Window = tuple[datetime.datetime, datetime.datetime]


def _timed(action: Any) -> tuple[Any, Window]:
    began = datetime.datetime.now(datetime.UTC)
    outcome = action()
    ended = datetime.datetime.now(datetime.UTC)
    # Events carry whole seconds.
    return outcome, (began.replace(microsecond=0), ended.replace(microsecond=0) + _SECOND)


_SECOND = datetime.timedelta(seconds=1)


def _ship(image: str, version: str, staging_block: str = "staging") -> tuple[Any, Window]:
    """Staging through `staging_block`, then production through a target that names it."""
    state, result = run_release(
        image, "staging", version, target_block=staging_block, notify_block=NOTIFY
    )
    assert state.is_completed(), result
    production_block = "production"
    if staging_block != "staging":
        production_block = f"production-after-{staging_block}"
        target = cast(DeployTarget, DeployTarget.load("production"))
        fields = {**target.model_dump(), "staging_target": staging_block}
        DeployTarget(**fields).save(production_block, overwrite=True)

    def production() -> Any:
        running = ProductionRelease(
            image, version, target_block=production_block, notify_block=NOTIFY
        )
        running.decide(reason=f"ship {version}")
        return running.result()

    return _timed(production)


@pytest.fixture(scope="module")
def history(images, inbox, sandbox_config) -> dict[str, Any]:
    """The runs, each with the window it ran in."""
    started = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    staging = cast(DeployTarget, DeployTarget.load("staging"))
    DeployTarget(**{**staging.model_dump(), "smoke_checks": []}).save(
        "staging-no-smoke", overwrite=True
    )  # the broken build must reach staging to be offered to production
    windows: dict[str, Window] = {}
    outcomes: dict[str, Any] = {}
    for version in ("3.0.1", "3.0.2", "3.0.3", "3.0.4"):
        block = "staging-no-smoke" if version == "3.0.3" else "staging"
        outcomes[version], windows[version] = _ship(images[version], version, block)
    back = RollbackParameters(
        environment="production",
        requested_by="oncall",
        notify_block=NOTIFY,
        approval_policy=rollbacks_without_approval(),
    )
    outcomes["rollback"], windows["rollback"] = _timed(lambda: rollback_here(back))
    outcomes["3.0.5"], windows["3.0.5"] = _ship(images["3.0.5"], "3.0.5")
    return {"started": started, "windows": windows, "outcomes": outcomes}


def test_the_history_ran_as_planned(history):
    outcomes = history["outcomes"]
    for version in ("3.0.1", "3.0.2", "3.0.4", "3.0.5"):
        state, result = outcomes[version]
        assert state.is_completed(), result
    state, error = outcomes["3.0.3"]
    assert state.is_failed()
    assert "Smoke checks failed" in str(error)
    assert outcomes["rollback"].is_completed()
    assert outcomes["rollback"].result().version == "3.0.2"


def test_each_notification_arrives_once_with_its_text(history, inbox):
    texts = [message["text"] for message in inbox.messages()]
    subjects = [text.splitlines()[0] for text in texts]
    expected = []
    for version in ("3.0.1", "3.0.2", "3.0.3", "3.0.4", "3.0.5"):
        expected += [
            f"*stock-api {version} → staging: deployed*",
            f"*stock-api {version} → production: waiting for approval*",
        ]
        if version == "3.0.3":
            expected.append(f"*stock-api {version} → production: switched back*")
        else:
            expected.append(f"*stock-api {version} → production: released*")
        if version == "3.0.4":
            expected.append("*stock-api 3.0.2 → production: rolled back*")
    assert sorted(subjects) == sorted(expected)
    by_subject = dict(zip(subjects, texts, strict=True))
    waiting = by_subject["*stock-api 3.0.5 → production: waiting for approval*"]
    assert "`deliver approve " in waiting
    assert '--approver <you> --code <your code> --reason "<why>"`' in waiting
    assert "/runs/flow-run/" in waiting  # the link to the run in the UI
    released = by_subject["*stock-api 3.0.5 → production: released*"]
    assert "approved by demo-approver: ship 3.0.5; replaced 3.0.2" in released
    failed = by_subject["*stock-api 3.0.3 → production: switched back*"]
    assert "Smoke checks failed" in failed
    assert "3.0.2 is serving" in failed
    assert "by oncall; replaced 3.0.4" in by_subject["*stock-api 3.0.2 → production: rolled back*"]
    assert not any(TOKEN in text for text in texts)


def _release_reports(key: str) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> list[str]:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC,
                limit=50,
            )
            return [str(artifact.data) for artifact in found]

    return asyncio.run(read())


def test_release_reports_keep_each_environments_history(history):
    reports = _release_reports("release-stock-api-production")[:6]  # newest first
    assert [report.splitlines()[0] for report in reports] == [
        "# stock-api → production: 3.0.5 is live",
        "# stock-api → production: rolled back to 3.0.2",
        "# stock-api → production: 3.0.4 is live",
        "# stock-api → production: 3.0.3 failed in production and was switched back",
        "# stock-api → production: 3.0.2 is live",
        "# stock-api → production: 3.0.1 is live",
    ]
    newest = reports[0]
    assert "- approved by demo-approver at " in newest
    assert ": ship 3.0.5" in newest
    assert "- before: 3.0.2 (`" in newest
    assert "| total |" in newest
    assert "- what failed: Smoke checks failed" in reports[3]
    assert _release_reports("release-stock-api-staging")[0].startswith(
        "# stock-api → staging: 3.0.5 is live"
    )
    for step in ("health", "drain"):  # progress artifacts of the last production release
        assert float(_release_reports(f"{step}-stock-api-production")[0]) == 100.0


def _records_when_stored(since: datetime.datetime, count: int) -> list[Any]:
    """The events are stored a moment after they are sent."""
    deadline = time.monotonic() + 60
    while True:
        until = datetime.datetime.now(datetime.UTC)
        records = [
            r
            for r in read_release_records(since, until, "stock-api")
            if r.environment == "production"
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(1)


def _between(value: float | None, low: datetime.timedelta, high: datetime.timedelta) -> bool:
    return value is not None and low.total_seconds() <= value <= high.total_seconds()


def test_metrics_from_the_history_match_the_hand_computed_ones(history):
    started, windows = history["started"], history["windows"]
    records = _records_when_stored(started, 6)
    until = datetime.datetime.now(datetime.UTC)
    metrics = compute(records, since=started, until=until)
    assert (metrics.releases, metrics.changes, metrics.failures, metrics.blocked) == (4, 5, 2, 0)
    assert metrics.change_failure_rate == pytest.approx(0.4)
    days = (until - started).total_seconds() / 86400
    assert metrics.deployments_per_day == pytest.approx(4 / days)
    # Lead time: each live release's commit time (its label) to the moment it went live.
    live = ("3.0.1", "3.0.2", "3.0.4", "3.0.5")
    assert len(metrics.lead_times_s) == 4
    for version, lead in zip(live, metrics.lead_times_s, strict=True):
        began, ended = windows[version]
        committed = BUILDS[version][1]
        assert _between(lead, began - committed, ended - committed), (version, lead)
    # Time to restore: from each failure to the next release that went live.
    first, second = metrics.restores
    assert (first.failed_version, first.restored_by) == ("3.0.3", "3.0.4")
    assert (second.failed_version, second.restored_by) == ("3.0.4", "3.0.5")
    assert _between(
        first.seconds,
        windows["3.0.4"][0] - windows["3.0.3"][1],
        windows["3.0.4"][1] - windows["3.0.3"][0],
    )
    assert _between(
        second.seconds,
        windows["3.0.5"][0] - windows["rollback"][1],
        windows["3.0.5"][1] - windows["rollback"][0],
    )
    assert first.seconds is not None
    assert second.seconds is not None
    assert metrics.median_time_to_restore_s == pytest.approx((first.seconds + second.seconds) / 2)


def test_deliver_metrics_cli_reads_the_same_events(history):
    minutes = math.ceil((datetime.datetime.now(datetime.UTC) - history["started"]).seconds / 60)
    _records_when_stored(history["started"], 6)
    done = subprocess.run(
        [
            str(PROJECT_DIR / ".venv" / "bin" / "deliver"),
            "metrics",
            "--sandbox",
            "--json",
            "--since",
            f"{minutes + 1}m",
            "--service",
            "stock-api",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["releases"] >= 4
    assert shown["failures"] >= 2
    assert set(shown) >= {
        "deployments_per_day",
        "median_lead_time_s",
        "change_failure_rate",
        "median_time_to_restore_s",
    }
    bad = subprocess.run(
        [str(PROJECT_DIR / ".venv" / "bin" / "deliver"), "metrics", "--sandbox", "--since", "3x"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "'3x' is not a window" in bad.stderr


def test_ci_failure_is_notified_once(inbox, sandbox_config, prefect_api, tmp_path):
    before = len(inbox.messages())
    parameters = CiParameters(repo=str(tmp_path / "no-such-repo"), ref="main", notify_block=NOTIFY)
    state, _ = run_ci(parameters)
    assert state.is_failed()
    new = [m["text"] for m in inbox.messages()[before:]]
    assert len(new) == 1, new
    assert new[0].startswith("*no-such-repo main: CI failed*"), new


def test_a_missing_notification_block_fails_before_any_work(images, prefect_api):
    state, error = run_release(
        images["3.0.1"], "staging", "3.0.1", notify_block="custom-webhook/no-such-chat"
    )
    assert state.is_failed()
    assert "no-such-chat" in str(error)
    assert "Unable to find block document" in str(error)


def test_alerts_fire_for_a_long_approval_wait_and_a_missing_nightly(history, inbox, images):
    """The two alert automations, with Prefect's shortest proactive window (10 s)."""
    from deployments.automations import AlertSettings, ensure_alerts

    before = len(inbox.messages())
    ensure_alerts(AlertSettings(notify_block=NOTIFY, nightly_within_s=10, approval_within_s=10))
    waiting = ProductionRelease(images["3.0.5"], "3.0.5")
    try:
        wanted = {
            "*release waiting for approval over 10 s*",
            "*nightly: no successful run in 10 s*",
        }
        deadline = time.monotonic() + 90
        seen: set[str] = set()
        while not wanted <= seen and time.monotonic() < deadline:
            time.sleep(1)
            seen = {m["text"].splitlines()[0] for m in inbox.messages()[before:]}
        assert wanted <= seen, seen
        alert = next(
            m["text"] for m in inbox.messages()[before:] if m["text"].startswith("*release waiting")
        )
        assert "`deliver approvals`" in alert
    finally:
        waiting.decide("reject", reason="alert drill")
        ensure_alerts(AlertSettings(notify_block="custom-webhook/sandbox-chat"))
    state, _ = waiting.result()
    assert state.is_cancelled()
