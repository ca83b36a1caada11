"""Every read of the Prefect API outside a flow run, and the one write an operator makes
(resuming a waiting release): waiting releases, finished task runs, release events, CI results.

Prefect reads its settings (API URL, auth string) at import, so callers import this module
only once they have pointed Prefect at a server (`deliver.sandbox.use_sandbox` or the
environment).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType, TaskRun
from prefect.client.schemas.sorting import ArtifactSort
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import aresume_flow_run
from prefect.logging.handlers import APILogWorker

from deliver.errors import DeliveryError
from deliver.planning.events import CI_FAILED, CI_STARTED, CI_SUCCEEDED, RELEASE_FINISHED
from deliver.planning.metrics import DeliveryMetrics, ReleaseRecord, compute, parse_window
from deliver.planning.sarif import sarif_from

EVENTS_PAGE = 50  # the server's maximum
FINAL_STATES = {"Completed", "Cached", "Failed", "Crashed", "Cancelled"}
EMPTY_SETTLES_S = 2.0


class ApprovalCommandError(DeliveryError):
    """An approve or reject that could not be delivered."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WaitingRelease:
    run_id: str
    run_name: str
    environment: str
    version: str
    image: str
    requested_by: str
    waiting_since: str
    kind: str = "release"  # or "rollback"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def _waiting() -> list[WaitingRelease]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["release", "rollback"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
        )
    waiting = []
    for run in runs:
        parameters = run.parameters.get("parameters", {})
        rollback = "version" not in parameters
        version = parameters.get("to_version") or "the previous kept version"
        waiting.append(
            WaitingRelease(
                run_id=str(run.id),
                run_name=run.name,
                kind="rollback" if rollback else "release",
                environment=str(parameters.get("environment", "?")),
                version=str(version if rollback else parameters.get("version", "?")),
                image=str(parameters.get("image", "?")),
                requested_by=str(parameters.get("requested_by", "?")),
                waiting_since=run.state.timestamp.isoformat() if run.state else "?",
            )
        )
    return sorted(waiting, key=lambda w: w.waiting_since)


def waiting_releases() -> list[WaitingRelease]:
    return asyncio.run(_waiting())


FORM_NOT_STORED_YET = "Run input schema not found"
FORM_STORED_WITHIN_S = 10.0


def decide(run_id: str, *, decision: str, approver: str, reason: str, code: str) -> None:
    """Resume a waiting release with a decision; the flow checks it against its policy."""
    if decision == "reject" and not reason.strip():
        raise ApprovalCommandError("A rejection needs a reason: --reason '...'.")
    try:
        flow_run_id = UUID(run_id)
    except ValueError as exc:
        raise ApprovalCommandError(f"{run_id!r} is not a flow run id.") from exc
    run_input = {"decision": decision, "approver": approver, "reason": reason, "code": code}
    deadline = time.monotonic() + FORM_STORED_WITHIN_S
    while True:
        try:
            asyncio.run(aresume_flow_run(flow_run_id, run_input=run_input))
            return
        except ObjectNotFound as exc:
            raise ApprovalCommandError(f"No flow run {run_id}.") from exc
        except FlowPauseTimeout as exc:
            detail = "timed out waiting and can't be resumed"
            raise ApprovalCommandError(f"Run {run_id} {detail}.") from exc
        except (RuntimeError, ValueError) as exc:
            detail = str(exc).splitlines()[0]
            # Prefect shows a run as paused a moment before it stores the form it waits for.
            if FORM_NOT_STORED_YET in detail and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise ApprovalCommandError(
                f"Run {run_id} is not waiting for approval: {detail}"
            ) from exc


def final_task_runs(flow_run_id: UUID, *, timeout_s: float = 15.0) -> list[TaskRun]:
    """The flow run's task runs once all are in a final state.

    Task states reach the server as events that are persisted moments after the run ends, so a
    read right after the run may still show Running, or miss the last tasks; this waits until
    every run is final and two reads agree.
    """
    flow_run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))

    async def read() -> list[TaskRun]:
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=flow_run_filter)

    started = time.monotonic()
    previous: list[tuple[str, str | None]] | None = None
    while True:
        runs = asyncio.run(read())
        seen = sorted((run.name, run.state_name) for run in runs)
        # Late tasks' events may not have arrived yet: final, and unchanged since the last read;
        # none at all is believed only after EMPTY_SETTLES_S of reads that agree.
        settled = all(run.state_name in FINAL_STATES for run in runs) and seen == previous
        waited = time.monotonic() - started
        if (settled and (runs or waited >= EMPTY_SETTLES_S)) or waited >= timeout_s:
            return runs
        previous = seen
        time.sleep(0.3)


def log_messages(flow_run_id: UUID) -> list[str]:
    """What a flow run logged, oldest first. A run in this process may still hold its last
    lines (the API log handler sends in batches, every 2 s): they are sent first."""
    APILogWorker.drain_all(timeout=5)

    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
            )
        return [log.message for log in logs]

    return asyncio.run(read())


def read_release_records(
    since: datetime.datetime, until: datetime.datetime, service: str | None = None
) -> list[ReleaseRecord]:
    """Every `deliver.release.finished` event in the window, as the server's history keeps it
    (for as long as its PREFECT_SERVER_EVENTS_RETENTION_PERIOD)."""
    resource = EventResourceFilter(id=[f"deliver.service.{service}"]) if service else None
    query = EventFilter(
        occurred=EventOccurredFilter.model_validate({"since": since, "until": until}),
        event=EventNameFilter(name=[RELEASE_FINISHED]),
        resource=resource,
    )
    records = []
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=query, limit=EVENTS_PAGE)
        while True:
            records += [ReleaseRecord.from_payload(event.payload) for event in page.events]
            if page.next_page is None:
                break
            page = client.read_events_page(str(page.next_page))
    return records


class BadWindow(DeliveryError):
    pass


def latest_ci_event(service: str, ref: str) -> str | None:
    """The name of the newest CI event (started, succeeded, failed) of the service's ref."""
    query = EventFilter(
        event=EventNameFilter(name=[CI_STARTED, CI_SUCCEEDED, CI_FAILED]),
        resource=EventResourceFilter(
            id=[f"deliver.service.{service}"],
            labels=ResourceSpecification({"deliver.ref": ref}),
        ),
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=query, limit=1)
    return page.events[0].event if page.events else None


def recent_releases(service: str, environment: str) -> list[ReleaseRecord]:
    """The newest release events of the service in one environment (the server's default
    window, 180 days): enough to tell what serves there now."""
    query = EventFilter(
        event=EventNameFilter(name=[RELEASE_FINISHED]),
        resource=EventResourceFilter(
            id=[f"deliver.service.{service}"],
            labels=ResourceSpecification({"deliver.environment": environment}),
        ),
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=query, limit=EVENTS_PAGE)
    return [ReleaseRecord.from_payload(event.payload) for event in page.events]


def delivery_metrics(
    window: str, *, environment: str = "production", service: str | None = None
) -> DeliveryMetrics:
    """The four delivery metrics over the last `window` (30d, 12h), from the release events."""
    try:
        span = parse_window(window)
    except ValueError as exc:
        raise BadWindow(str(exc)) from None
    until = datetime.datetime.now(datetime.UTC)
    since = until - span
    records = read_release_records(since, until, service)
    return compute(records, since=since, until=until, environment=environment)


def ci_result_naming(digest: str) -> str | None:
    """The newest CI result artifact (`ci-<service>`) that names `digest`, if the server has one."""

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="ci-%")),
                sort=ArtifactSort.CREATED_DESC,
                limit=200,
            )

    for artifact in asyncio.run(read()):
        data = str(artifact.data or "")
        if digest in data and data.startswith("# CI of"):
            return data
    return None


def sarif_runs_of(
    flow_run_id: UUID, reused_from: Mapping[str, UUID] | None = None
) -> list[dict[str, Any]]:
    """The SARIF runs of a CI run (one artifact a tool: `sarif-<service>-<tool>`): those it
    published, and for each step it reused, `reused_from` (artifact key -> flow run), those
    of the run that did the step."""
    reused_from = reused_from or {}

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(like_="sarif-%"),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id, *reused_from.values()]),
                ),
                sort=ArtifactSort.KEY_ASC,
            )

    wanted = [
        artifact
        for artifact in asyncio.run(read())
        if artifact.flow_run_id == flow_run_id
        or reused_from.get(str(artifact.key)) == artifact.flow_run_id
    ]
    return [run for artifact in wanted for run in sarif_from(str(artifact.data))]


def wait_for_flow_run(run_id: UUID, *, until: set[str], timeout_s: float = 300) -> Any:
    """The flow run once its state type is in `until` (or final); SystemExit past the timeout."""

    async def read() -> FlowRun:
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = asyncio.run(read())
        if run.state and (run.state.type.value in until or run.state.is_final()):
            return run
        time.sleep(1)
    raise SystemExit(f"flow run {run_id} did not reach {until} within {timeout_s:.0f} s")
