"""Prefect's own distributed setup under load: the sandbox's server on PostgreSQL with two
process workers. On SQLite, 50 deployment runs started at once through one worker crashed 13
(database is locked, PrefectHQ/prefect#18934)."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from deployments import deploy_all

RUNS = 50
pytestmark = pytest.mark.scale


def test_fifty_deployment_runs_at_once_none_crash(prefect_api, sandbox_state):
    if sandbox_state.fact("database") not in (None, "postgres"):
        pytest.fail(
            "this test needs the sandbox on PostgreSQL: deliver sandbox up --database postgres"
        )
    (probe,) = deploy_all(only=["worker-probe"])

    async def start() -> list[UUID]:
        async with get_client() as client:
            deployment = UUID(probe.deployment_id)
            # One request first: concurrent requests that each fetch the client's CSRF token
            # invalidate each other's (403 "Invalid CSRF token").
            first = await client.create_flow_run_from_deployment(deployment, tags=["scale"])
            rest = await asyncio.gather(*[
                client.create_flow_run_from_deployment(deployment, tags=["scale"])
                for _ in range(RUNS - 1)
            ])  # fmt: skip
            return [first.id, *(run.id for run in rest)]

    async def read(ids: list[UUID]) -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=RUNS
            )

    ids = asyncio.run(start())
    assert len(set(ids)) == RUNS
    deadline = time.monotonic() + 420
    while True:
        runs = asyncio.run(read(ids))
        if all(r.state and r.state.is_final() for r in runs):
            break
        assert time.monotonic() < deadline, collections.Counter(r.state_name for r in runs)
        time.sleep(2)
    assert collections.Counter(r.state_name for r in runs) == {"Completed": RUNS}
