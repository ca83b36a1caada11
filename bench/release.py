"""Release figures on the sandbox, printed as JSON.

    .venv/bin/python -m bench.release [--seconds 60] [--clients 50] [--rps 120]

- requests_total, requests_failed: load through nginx (loopback only) from concurrent clients
  at a fixed rate, across a production blue-green switch; target 0 failed of at least 6,000;
- resume_to_switch_s: from the approve call returning to the switch_traffic task starting;
- staging_deploy_s: a staging release (pull, start, health, smoke) from call to return.
The sample goes through CI first (mostly cached); the sandbox must be up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from deliver.ci_command import current_ref, run_ci, use_sandbox

PROJECT_DIR = Path(__file__).resolve().parents[1]


async def load(url: str, *, seconds: float, clients: int, rps: float) -> dict[str, Any]:
    """`clients` workers sharing a fixed request rate; every non-200 or error counts as failed."""
    counts = {"total": 0, "failed": 0}
    errors: dict[str, int] = {}
    interval = clients / rps
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            next_at = time.monotonic() + index * (interval / clients)
            while next_at < deadline:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                counts["total"] += 1
                try:
                    response = await http.get(url)
                    if response.status_code != 200:
                        counts["failed"] += 1
                        errors[str(response.status_code)] = (
                            errors.get(str(response.status_code), 0) + 1
                        )
                except httpx.HTTPError as exc:
                    counts["failed"] += 1
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {**counts, "errors": errors}


def switch_started_at(flow_run_id: Any) -> float | None:
    from deliver.run_history import final_task_runs

    for run in final_task_runs(flow_run_id):
        if run.name.startswith("switch-to-") and run.start_time:
            return run.start_time.timestamp()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rps", type=float, default=120.0)
    args = parser.parse_args()
    implied = use_sandbox()
    from deliver import sandbox
    from deliver.approvals import decide, waiting_releases
    from flows.ci import CiParameters
    from flows.release import ReleaseParameters, release

    config = sandbox.config_from_env()
    _, ci = run_ci(CiParameters(
        repo=str(PROJECT_DIR), ref=current_ref(str(PROJECT_DIR)),
        spec_path="examples/stock-api/deliver.yaml", advisory_url=implied["advisory_url"],
        build_args={"BASE_IMAGE": implied["base_image"]}, cache_dir=implied["cache_dir"],
    ))  # fmt: skip
    common = {"image": ci.image, "git_sha": ci.sha, "requested_by": "bench"}

    started = time.perf_counter()
    staged = release(ReleaseParameters(environment="staging", version="bench-1", **common),
                     return_state=True)  # fmt: skip
    staging_deploy_s = time.perf_counter() - started
    if not staged.is_completed():
        raise SystemExit(f"staging release failed: {staged.message}")

    def production(version: str, outcome: dict[str, Any]) -> None:
        outcome["state"] = release(
            ReleaseParameters(environment="production", version=version, **common),
            return_state=True,
        )

    def approve(version: str) -> float:
        while True:
            for waiting in waiting_releases():
                if waiting.version == version:
                    decide(waiting.run_id, decision="approve", approver="demo-approver",
                           reason="bench", code="")  # fmt: skip
                    return time.time()
            time.sleep(0.1)

    first: dict[str, Any] = {}
    thread = threading.Thread(target=production, args=("bench-1", first))
    thread.start()
    approve("bench-1")
    thread.join()

    second: dict[str, Any] = {}
    switch: dict[str, float] = {}

    def release_under_load() -> None:
        time.sleep(args.seconds / 4)
        runner = threading.Thread(target=production, args=("bench-2", second))
        runner.start()
        switch["approved"] = approve("bench-2")
        runner.join()

    background = threading.Thread(target=release_under_load)
    background.start()
    url = f"{config.production_front_url}/health"
    counts = asyncio.run(load(url, seconds=args.seconds, clients=args.clients, rps=args.rps))
    background.join()
    state = second["state"]
    switched = switch_started_at(state.state_details.flow_run_id) if state.is_completed() else None
    print(json.dumps({
        "requests_total": counts["total"],
        "requests_failed": counts["failed"],
        "errors": counts["errors"],
        "clients": args.clients,
        "target_rps": args.rps,
        "seconds": args.seconds,
        "release_under_load": state.name,
        "resume_to_switch_s": round(switched - switch["approved"], 3) if switched else None,
        "staging_deploy_s": round(staging_deploy_s, 2),
        "targets": {"requests_failed": "0 of >= 6000", "resume_to_switch_s": "< 1.5"},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
