"""Release figures on the sandbox, printed as JSON.

    .venv/bin/python -m bench.release [--seconds 60] [--clients 50] [--rps 120] [--approvals 5]

- requests_total, requests_failed: load through nginx (loopback only) from concurrent clients
  at a fixed rate, across a production blue-green switch; target 0 failed of at least 6,000;
- resume_to_switch_s: from the approve call returning to the switch_traffic task starting,
  the median over `--approvals` paused production releases (the last one under the load);
- staging_deploy_s: a staging release (pull, start, health, smoke) from call to return.
The sample goes through CI first (mostly cached); the sandbox must be up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from deliver.cli.ci import current_ref, run_ci
from deliver.sandbox import use_sandbox

PROJECT_DIR = Path(__file__).resolve().parents[1]


async def load(url: str, *, seconds: float, clients: int, rps: float) -> dict[str, Any]:
    """`clients` workers sharing a fixed request rate; every non-200 or error counts as failed.

    Like browsers and Go's HTTP client, a GET whose kept-alive connection was closed before any
    answer (nginx's old workers close idle connections on reload) is sent once more on a new
    connection; those are counted apart, in `resent_on_closed_connection`.
    """
    counts = {"total": 0, "failed": 0, "resent_on_closed_connection": 0}
    errors: dict[str, int] = {}
    interval = clients / rps
    deadline = time.monotonic() + seconds

    def failed(kind: str) -> None:
        counts["failed"] += 1
        errors[kind] = errors.get(kind, 0) + 1

    async def client(index: int) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            next_at = time.monotonic() + index * (interval / clients)
            while next_at < deadline:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                counts["total"] += 1
                try:
                    try:
                        response = await http.get(url)
                    except (httpx.ReadError, httpx.RemoteProtocolError):
                        counts["resent_on_closed_connection"] += 1
                        response = await http.get(url)
                except httpx.HTTPError as exc:
                    failed(type(exc).__name__)
                    continue
                if response.status_code != 200:
                    failed(str(response.status_code))

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {**counts, "errors": errors}


def switch_started_at(flow_run_id: Any) -> float | None:
    from deliver.prefect_api import final_task_runs

    for run in final_task_runs(flow_run_id):
        if run.name.startswith("switch-to-") and run.start_time:
            return run.start_time.timestamp()
    return None


def timeline(flow_run_id: Any, since: float) -> dict[str, float]:
    """Each task's start, in seconds after `since` (the approve call returning)."""
    from deliver.prefect_api import final_task_runs

    starts = {
        run.name: round(run.start_time.timestamp() - since, 3)
        for run in final_task_runs(flow_run_id)
        if run.start_time and run.start_time.timestamp() >= since - 1
    }
    return dict(sorted(starts.items(), key=lambda item: item[1]))


def load_in_subprocess(url: str, args: argparse.Namespace) -> subprocess.Popen[str]:
    """The load runs in its own process, so it doesn't share an interpreter lock with the flow."""
    argv = [
        sys.executable,
        "-m",
        "bench.release",
        "--load-only",
        url,
        "--seconds",
        str(args.seconds),
        "--clients",
        str(args.clients),
        "--rps",
        str(args.rps),
    ]
    return subprocess.Popen(argv, cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rps", type=float, default=120.0)
    parser.add_argument("--approvals", type=int, default=5, help="paused releases to time")
    parser.add_argument("--load-only", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        counts = asyncio.run(
            load(args.load_only, seconds=args.seconds, clients=args.clients, rps=args.rps)
        )
        print(json.dumps(counts))
        return
    implied = use_sandbox()
    from deliver import sandbox
    from deliver.prefect_api import decide, waiting_releases
    from flows.ci import CiParameters
    from flows.release import ReleaseParameters, release

    config = sandbox.config_from_env()
    _, ci = run_ci(
        CiParameters(
            repo=str(PROJECT_DIR),
            ref=current_ref(str(PROJECT_DIR)),
            spec_path="examples/stock-api/deliver.yaml",
            advisory_url=implied["advisory_url"],
            build_args={"BASE_IMAGE": implied["base_image"]},
            cache_dir=implied["cache_dir"],
        )
    )
    common = {"image": ci.image, "git_sha": ci.sha, "requested_by": "bench"}

    started = time.perf_counter()
    staged = release(
        ReleaseParameters(environment="staging", version="bench-0", **common), return_state=True
    )
    staging_deploy_s = time.perf_counter() - started
    if not staged.is_completed():
        raise SystemExit(f"staging release failed: {staged.message}")

    def approved_release(version: str) -> tuple[Any, float]:
        """A paused production release of `version`, approved once waiting; (state, approved)."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            outcome["state"] = release(
                ReleaseParameters(environment="production", version=version, **common),
                return_state=True,
            )

        runner = threading.Thread(target=run)
        runner.start()
        approved = None
        while approved is None:
            for waiting in waiting_releases():
                if waiting.version == version:
                    decide(
                        waiting.run_id,
                        decision="approve",
                        approver="demo-approver",
                        reason="bench",
                        code="",
                    )
                    approved = time.time()
            time.sleep(0.1)
        runner.join()
        state = outcome["state"]
        if not state.is_completed():
            raise SystemExit(f"production release {version} failed: {state.message}")
        return state, approved

    def resume_to_switch(state: Any, approved: float) -> float | None:
        switched = switch_started_at(state.state_details.flow_run_id)
        return round(switched - approved, 3) if switched else None

    quiet = [resume_to_switch(*approved_release(f"bench-{n}")) for n in range(1, args.approvals)]
    loader = load_in_subprocess(f"{config.production_front_url}/health", args)
    time.sleep(args.seconds / 4)
    state, approved = approved_release(f"bench-{args.approvals}")
    under_load = resume_to_switch(state, approved)
    counts = json.loads(loader.communicate()[0])
    measured = [s for s in [*quiet, under_load] if s is not None]
    print(
        json.dumps(
            {
                "requests_total": counts["total"],
                "requests_failed": counts["failed"],
                "errors": counts["errors"],
                "resent_on_closed_connection": counts["resent_on_closed_connection"],
                "clients": args.clients,
                "target_rps": args.rps,
                "seconds": args.seconds,
                "resume_to_switch_s": statistics.median(measured) if measured else None,
                "resume_to_switch_each_s": quiet,
                "resume_to_switch_under_load_s": under_load,
                "after_approval_under_load_s": timeline(state.state_details.flow_run_id, approved),
                "staging_deploy_s": round(staging_deploy_s, 2),
                "targets": {"requests_failed": "0 of >= 6000", "resume_to_switch_s": "< 1.5"},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
