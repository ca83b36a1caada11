"""Releases waiting for approval, and resuming them with a decision (Prefect has no resume CLI)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import aresume_flow_run

from deliver.errors import DeliveryError


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

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def _waiting() -> list[WaitingRelease]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["release"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
        )
    waiting = []
    for run in runs:
        parameters = run.parameters.get("parameters", {})
        waiting.append(
            WaitingRelease(
                run_id=str(run.id),
                run_name=run.name,
                environment=str(parameters.get("environment", "?")),
                version=str(parameters.get("version", "?")),
                image=str(parameters.get("image", "?")),
                requested_by=str(parameters.get("requested_by", "?")),
                waiting_since=run.state.timestamp.isoformat() if run.state else "?",
            )
        )
    return sorted(waiting, key=lambda w: w.waiting_since)


def waiting_releases() -> list[WaitingRelease]:
    return asyncio.run(_waiting())


def decide(run_id: str, *, decision: str, approver: str, reason: str, code: str) -> None:
    """Resume a waiting release with a decision; the flow checks it against its policy."""
    if decision == "reject" and not reason.strip():
        raise ApprovalCommandError("A rejection needs a reason: --reason '...'.")
    try:
        flow_run_id = UUID(run_id)
    except ValueError as exc:
        raise ApprovalCommandError(f"{run_id!r} is not a flow run id.") from exc
    run_input = {"decision": decision, "approver": approver, "reason": reason, "code": code}
    try:
        asyncio.run(aresume_flow_run(flow_run_id, run_input=run_input))
    except ObjectNotFound as exc:
        raise ApprovalCommandError(f"No flow run {run_id}.") from exc
    except FlowPauseTimeout as exc:
        raise ApprovalCommandError(f"Run {run_id} timed out waiting and can't be resumed.") from exc
    except (RuntimeError, ValueError) as exc:
        detail = str(exc).splitlines()[0]
        raise ApprovalCommandError(f"Run {run_id} is not waiting for approval: {detail}") from exc
