"""Prefect's orchestration under load, printed as JSON: the sandbox's server on PostgreSQL with
two process workers, against a second server on SQLite with one worker, side by side in one run.

    .venv/bin/python -m bench.scale [--ramp 10,25,50] [--tasks 40]

For each side and each step of the ramp, that many `worker-probe` deployment runs are created
at once; the figures are how many completed, crashed or failed, and the rate (runs per hour).
The per-task orchestration overhead is a flow of `--tasks` no-op tasks against a flow of none,
run in this process against each server. The sandbox must be up (on PostgreSQL); the SQLite
server is started for the run on port 14200 and stopped after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from deliver import sandbox
from deliver.ci_command import use_sandbox

SQLITE_PORT = 14200


@contextlib.contextmanager
def server(config: sandbox.SandboxConfig) -> Iterator[None]:
    """Prefect's settings pointed at `config`'s server for the block."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from deliver.sandbox.prefect_server import ensure_prefect_auth

    auth = ensure_prefect_auth(config)
    with temporary_settings(updates={PREFECT_API_URL: config.prefect_api_url,
                                     PREFECT_API_AUTH_STRING: auth}):  # fmt: skip
        yield


def burst(deployment_id: str, count: int, timeout_s: float = 900) -> dict[str, Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def start() -> tuple[list[UUID], int]:
        async with get_client() as client:
            first = await client.create_flow_run_from_deployment(UUID(deployment_id))
            made = await asyncio.gather(*[
                client.create_flow_run_from_deployment(UUID(deployment_id))
                for _ in range(count - 1)
            ], return_exceptions=True)  # fmt: skip
            ids = [first.id, *(r.id for r in made if not isinstance(r, BaseException))]
            return ids, sum(1 for r in made if isinstance(r, BaseException))

    async def read(ids: list[UUID]) -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
            )

    started = time.perf_counter()
    ids, refused = asyncio.run(start())
    deadline = time.monotonic() + timeout_s
    while True:
        runs = asyncio.run(read(ids))
        if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    wall = time.perf_counter() - started
    states = collections.Counter(r.state_name for r in runs)
    return {
        "runs": count, "creation_refused": refused, "states": dict(states),
        "wall_s": round(wall, 2), "runs_per_hour": round(states.get("Completed", 0) / wall * 3600),
    }  # fmt: skip


def task_overhead_s(tasks: int) -> float:
    from prefect import flow, task

    @task
    def noop(i: int) -> int:
        return i

    @flow
    def many(n: int) -> None:
        for i in range(n):
            noop(i)

    def timed(n: int) -> float:
        started = time.perf_counter()
        many(n)
        return time.perf_counter() - started

    timed(1)  # warm: the first flow of a process pays for imports and the client
    # Medians of three: one slow write (SQLite's lock backoff) would swamp a single sample.
    full = statistics.median(timed(tasks) for _ in range(3))
    empty = statistics.median(timed(0) for _ in range(3))
    return (full - empty) / tasks


def side(config: sandbox.SandboxConfig, ramp: list[int], tasks: int) -> dict[str, Any]:
    from deployments import deploy_all

    with server(config):
        (probe,) = deploy_all(only=["worker-probe"], work_pool=config.work_pool)
        steps = [burst(probe.deployment_id, count) for count in ramp]
        overhead = task_overhead_s(tasks)
    broken = [s["runs"] for s in steps
              if s["creation_refused"] or set(s["states"]) != {"Completed"}]  # fmt: skip
    failing = broken[0] if broken else None
    return {"steps": steps, "per_task_overhead_s": round(overhead, 4), "fails_from_runs": failing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ramp", default="10,25,50", help="runs created at once, per step")
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()
    ramp = [int(n) for n in args.ramp.split(",")]
    use_sandbox()
    main_config = sandbox.config_from_env()
    sqlite_config = dataclasses.replace(
        main_config, state_dir=main_config.state_dir.parent / ".sandbox-bench-sqlite",
        prefect_port=SQLITE_PORT, work_pool="bench-sqlite",
    )  # fmt: skip
    sandbox.up(sqlite_config, only=["prefect-server", "prefect-worker"], database="sqlite",
               say=lambda _m: None)  # fmt: skip
    try:
        sqlite = side(sqlite_config, ramp, args.tasks)
    finally:
        sandbox.down(sqlite_config, say=lambda _m: None)
    postgres = side(main_config, ramp, args.tasks)

    def best_rate(result: dict[str, Any]) -> int:
        return max(int(step["runs_per_hour"]) for step in result["steps"])

    rates = best_rate(postgres) / max(best_rate(sqlite), 1)

    print(json.dumps({
        "sqlite_one_worker": sqlite,
        "postgres_two_workers": postgres,
        "runs_per_hour_postgres_over_sqlite": round(rates, 2),
        "task_overhead_postgres_over_sqlite": round(
            postgres["per_task_overhead_s"] / sqlite["per_task_overhead_s"], 2),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
