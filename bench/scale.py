"""Prefect's orchestration under load, printed as JSON: the sandbox's server on PostgreSQL with
two process workers, against a second server on SQLite with one worker, side by side in one run.

    .venv/bin/python -m bench.scale [--ramp 10,25,50] [--tasks 100] [--pipelines 10]

For each side and each step of the ramp, that many `worker-probe` deployment runs are created
at once; the figures are how many completed, crashed or failed, and the rate (runs per hour).
Then `--pipelines` runs of the `ci` deployment are created at once, each on its own commit of
the sample (every check, build and push cold), as the deployment allows them (two at a time):
CI pipelines per hour.
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
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from deliver import sandbox
from deliver.sandbox import use_sandbox

SQLITE_PORT = 14200
REGISTRY_BLOCK = "sandbox-registry"


def sandbox_registry_block(config: sandbox.SandboxConfig) -> Any:
    from prefect_docker.credentials import DockerRegistryCredentials

    with server(config):
        return DockerRegistryCredentials.load(REGISTRY_BLOCK, _sync=True)


@contextlib.contextmanager
def server(config: sandbox.SandboxConfig) -> Iterator[None]:
    """Prefect's settings pointed at `config`'s server for the block."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from deliver.sandbox.prefect_server import ensure_prefect_auth

    auth = ensure_prefect_auth(config)
    with temporary_settings(
        updates={PREFECT_API_URL: config.prefect_api_url, PREFECT_API_AUTH_STRING: auth}
    ):
        yield


def burst(
    deployment_id: str,
    count: int,
    timeout_s: float = 900,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`count` runs created at once (the i-th with `parameters[i]`, if given), until all end."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    each = parameters or [{} for _ in range(count)]

    async def start() -> tuple[list[UUID], int]:
        async with get_client() as client:
            deployment = UUID(deployment_id)
            # One request first: concurrent first requests would invalidate each other's CSRF
            # token (403).
            first = await client.create_flow_run_from_deployment(deployment, parameters=each[0])
            made = await asyncio.gather(
                *[
                    client.create_flow_run_from_deployment(deployment, parameters=p)
                    for p in each[1:count]
                ],
                return_exceptions=True,
            )
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
        "runs": count,
        "creation_refused": refused,
        "states": dict(states),
        "wall_s": round(wall, 2),
        "runs_per_hour": round(states.get("Completed", 0) / wall * 3600),
    }


def task_overhead_s(tasks: int) -> float:
    """(flow of `tasks` no-op tasks - flow of none) / `tasks`, medians of five.

    The flows are shaped like ci-pipeline: async, with one shared sync API client. A sync
    flow's end waits for its heartbeat thread, which sleeps in 1 s steps (PrefectHQ/prefect#19641),
    and that 0-1 s would swamp a few ms per task; without the shared client each sync task
    builds a client and its TLS context (~20 ms here).
    """
    from prefect import flow, task
    from prefect.context import SyncClientContext
    from prefect.logging.handlers import APILogHandler

    @task
    def noop(i: int) -> int:
        return i

    @flow
    async def many(n: int) -> None:
        with SyncClientContext.get_or_create():
            for i in range(n):
                noop(i)

    def timed(n: int) -> float:
        started = time.perf_counter()
        asyncio.run(many(n))
        return time.perf_counter() - started

    timed(1)  # warm: the first flow of a process pays for imports and the client
    full = statistics.median(timed(tasks) for _ in range(5))
    empty = statistics.median(timed(0) for _ in range(5))
    APILogHandler().flush()  # before the server it logs to is stopped
    return (full - empty) / tasks


def pipeline_parameters(root: Path, count: int) -> list[dict[str, Any]]:
    """`count` commits of the sample, each changing every check's inputs: one cold CI apiece."""
    from bench.ci import fresh_commit, make_repo

    repo = make_repo(root, "stock-api")
    shas = [fresh_commit(repo) for _ in range(count)]
    config = sandbox.config_from_env()
    return [
        {
            "parameters": {
                "repo": str(repo),
                "ref": sha,
                "spec_path": "deliver.yaml",
                "advisory_url": config.advisory_url,
                "cache_dir": str(root / "ci-cache"),
            }
        }
        for sha in shas
    ]


def copy_registry_block(registry: Any) -> None:
    """The sandbox's registry credentials, saved on the server in use (CI pushes with them)."""
    type(registry)(**registry.model_dump()).save(REGISTRY_BLOCK, overwrite=True)


def side(
    config: sandbox.SandboxConfig, ramp: list[int], tasks: int, pipelines: int, registry: Any
) -> dict[str, Any]:
    from deployments import deploy_all

    with server(config):
        copy_registry_block(registry)
        probe, ci = deploy_all(only=["worker-probe", "ci"], work_pool=config.work_pool)
        steps = [burst(probe.deployment_id, count) for count in ramp]
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as root:
            runs = pipeline_parameters(Path(root), pipelines)
            ci_step = burst(ci.deployment_id, pipelines, parameters=runs) if pipelines else None
        overhead = task_overhead_s(tasks)
    broken = [
        s["runs"] for s in steps if s["creation_refused"] or set(s["states"]) != {"Completed"}
    ]
    failing = broken[0] if broken else None
    return {
        "steps": steps,
        "per_task_overhead_s": round(overhead, 4),
        "fails_from_runs": failing,
        "ci_pipelines": ci_step,
        "ci_pipelines_per_hour": ci_step["runs_per_hour"] if ci_step else None,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator to two places; None when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ramp", default="10,25,50", help="runs created at once, per step")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--pipelines", type=int, default=10, help="CI runs created at once")
    args = parser.parse_args()
    ramp = [int(n) for n in args.ramp.split(",")]
    use_sandbox()
    main_config = sandbox.config_from_env()
    registry = sandbox_registry_block(main_config)
    sqlite_config = dataclasses.replace(
        main_config,
        state_dir=main_config.state_dir.parent / ".sandbox-bench-sqlite",
        prefect_port=SQLITE_PORT,
        work_pool="bench-sqlite",
    )
    sandbox.up(
        sqlite_config,
        only=["prefect-server", "prefect-worker"],
        database="sqlite",
        say=lambda _m: None,
    )
    try:
        sqlite = side(sqlite_config, ramp, args.tasks, args.pipelines, registry)
    finally:
        sandbox.down(sqlite_config, say=lambda _m: None)
    postgres = side(main_config, ramp, args.tasks, args.pipelines, registry)

    def best_rate(result: dict[str, Any]) -> int:
        return max(int(step["runs_per_hour"]) for step in result["steps"])

    rates = ratio(best_rate(postgres), best_rate(sqlite))
    pipelines = ratio(postgres["ci_pipelines_per_hour"], sqlite["ci_pipelines_per_hour"])
    print(
        json.dumps(
            {
                "sqlite_one_worker": sqlite,
                "postgres_two_workers": postgres,
                "runs_per_hour_postgres_over_sqlite": rates,
                "ci_pipelines_per_hour_postgres_over_sqlite": pipelines,
                "task_overhead_postgres_over_sqlite": ratio(
                    postgres["per_task_overhead_s"], sqlite["per_task_overhead_s"]
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
