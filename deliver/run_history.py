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
    read right after the run may still show Running, or miss the last tasks; this waits until
    every run is final and two reads agree.
    """
    flow_run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))

    async def read() -> list[TaskRun]:
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=flow_run_filter)

    deadline = time.monotonic() + timeout_s
    previous: list[tuple[str, str | None]] = []
    while True:
        runs = asyncio.run(read())
        seen = sorted((run.name, run.state_name) for run in runs)
        # Late tasks' events may not have arrived yet: final, and unchanged since the last read.
        settled = bool(runs) and all(run.state_name in FINAL_STATES for run in runs)
        if (settled and seen == previous) or time.monotonic() >= deadline:
            return runs
        previous = seen
        time.sleep(0.3)
