"""Reading finished runs back from the Prefect API."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun

FINAL_STATES = {"Completed", "Cached", "Failed", "Crashed", "Cancelled"}


def final_task_runs(flow_run_id: UUID, *, timeout_s: float = 15.0) -> list[TaskRun]:
    """The flow run's task runs once all are in a final state.

    Task states reach the server as events that are persisted moments after the run ends, so a
    read right after the run may still show Running; this waits until they settle.
    """
    flow_run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))

    async def read() -> list[TaskRun]:
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=flow_run_filter)

    deadline = time.monotonic() + timeout_s
    while True:
        runs = asyncio.run(read())
        settled = bool(runs) and all(run.state_name in FINAL_STATES for run in runs)
        if settled or time.monotonic() >= deadline:
            return runs
        time.sleep(0.2)
