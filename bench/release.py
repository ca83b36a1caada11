"""Release figures on the sandbox, printed as JSON.

    .venv/bin/python -m bench.release [--seconds 60] [--clients 50] [--rps 120] [--approvals 5]

- requests_total, requests_failed: load through nginx (loopback only) from concurrent clients
  at a fixed rate, across a production blue-green switch; target 0 failed of at least 6,000;
- resume_to_switch_s: from the approve call returning to the switch_traffic task starting,
  the median over `--approvals` paused production releases (the last one under the load);
- staging_deploy_s: a staging release (pull, start, health, smoke) from call to return, min /
  median / max of `--staging-repeat` releases after the first (staging_first_deploy_s).
The sample goes through CI first (mostly cached); the sandbox must be up.

With `--example orders-api` the service is orders-api, with its PostgreSQL and Redis
accessories and its migration: its staging and production data are reset first (accessories,
volumes, state), every release runs `alembic upgrade head`, the quiet production releases with
nothing to migrate, and the one under load with a migration that adds a column. Its first
staging release boots the accessories.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from deliver import commands
from deliver.cli.ci import current_ref, run_ci
from deliver.sandbox import use_sandbox
from deliver.sandbox.approvers import DEMO_APPROVER, one_time_code

PROJECT_DIR = Path(__file__).resolve().parents[1]


async def load(url: str, *, seconds: float, clients: int, rps: float) -> dict[str, Any]:
    """`clients` workers sharing a fixed request rate; every non-200 or error counts as failed.

    Like browsers and Go's HTTP client, a GET whose kept-alive connection was closed before any
    answer (nginx's old workers close idle connections on reload) is sent once more on a new
    connection; such a request counts as failed all the same (`errors["closed connection"]`,
    and `resent_on_closed_connection`). `started_at` and `ended_at` (epoch seconds) bound the
    window the load ran in.
    """
    counts = {"total": 0, "failed": 0, "resent_on_closed_connection": 0}
    errors: dict[str, int] = {}
    interval = clients / rps
    started_at = time.time()
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
                        failed("closed connection")
                        await http.get(url)  # what a browser does; this request failed already
                        continue
                except httpx.HTTPError as exc:
                    failed(type(exc).__name__)
                    continue
                if response.status_code != 200:
                    failed(str(response.status_code))

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {**counts, "errors": errors, "started_at": started_at, "ended_at": time.time()}


def spread(seconds: list[float]) -> dict[str, float]:
    return {
        "min": round(min(seconds), 2),
        "median": round(statistics.median(seconds), 2),
        "max": round(max(seconds), 2),
    }


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
    parser.add_argument(
        "--staging-repeat", type=int, default=5, help="staging releases timed after the first"
    )
    parser.add_argument("--example", choices=["stock-api", "orders-api"], default="stock-api")
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
    from flows.release import ReleaseParameters, release_here

    config = sandbox.config_from_env()
    if args.example == "orders-api":
        reset_orders_api(config)
        images = [ci_of(orders_repo(migration), implied) for migration in (None, COLUMN)]
        front = config.orders_front_url
    else:
        _, ci = run_ci(
            CiParameters(
                repo=str(PROJECT_DIR),
                ref=current_ref(str(PROJECT_DIR)),
                spec_path="examples/stock-api/deliver.yaml",
                advisory_url=implied["advisory_url"],
                cache_dir=implied["cache_dir"],
            )
        )
        images = [(ci.image, ci.sha), (ci.image, ci.sha)]
        front = config.production_front_url
    image, sha = images[0]
    common = {"image": image, "git_sha": sha, "requested_by": "bench"}

    def staged(version: str, **changes: str) -> float:
        started = time.perf_counter()
        done = release_here(
            ReleaseParameters(environment="staging", version=version, **{**common, **changes})
        )
        if not done.is_completed():
            raise SystemExit(f"staging release failed: {done.message}")
        return time.perf_counter() - started

    staging_first_deploy_s = staged("bench-0")
    staging_runs = [staged(f"bench-0-{n}") for n in range(args.staging_repeat)]

    def approved_release(version: str, **changes: str) -> tuple[Any, float]:
        """A paused production release of `version`, approved once waiting; (state, approved)."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            outcome["state"] = release_here(
                ReleaseParameters(environment="production", version=version, **common | changes)
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
                        approver=DEMO_APPROVER,
                        reason="bench",
                        code=one_time_code(config.state_dir, DEMO_APPROVER),
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
    last = {"image": images[1][0], "git_sha": images[1][1]}
    if last["image"] != image:
        staged(f"bench-{args.approvals}", **last)
    loader = load_in_subprocess(f"{front}/health", args)
    time.sleep(args.seconds / 4)
    state, approved = approved_release(f"bench-{args.approvals}", **last)
    under_load = resume_to_switch(state, approved)
    counts = json.loads(loader.communicate()[0])
    switched = switch_started_at(state.state_details.flow_run_id)
    if switched is None or not counts["started_at"] < switched < counts["ended_at"]:
        raise SystemExit(
            "the switch under load did not happen inside the load's window "
            f"({counts['started_at']:.1f} to {counts['ended_at']:.1f}, switch at {switched}): "
            "its zero failed requests show nothing; rerun with a longer --seconds"
        )
    measured = [s for s in [*quiet, under_load] if s is not None]
    print(
        json.dumps(
            {
                "requests_total": counts["total"],
                "requests_failed": counts["failed"],
                "errors": counts["errors"],
                "resent_on_closed_connection": counts["resent_on_closed_connection"],
                "switch_inside_load_window": True,  # checked above: else the run fails
                "clients": args.clients,
                "target_rps": args.rps,
                "seconds": args.seconds,
                "resume_to_switch_s": statistics.median(measured) if measured else None,
                "resume_to_switch_each_s": quiet,
                "resume_to_switch_under_load_s": under_load,
                "after_approval_under_load_s": timeline(state.state_details.flow_run_id, approved),
                "example": args.example,
                "migration_under_load": "adds a column" if args.example == "orders-api" else None,
                "staging_deploy_s": spread(staging_runs),
                "staging_first_deploy_s": round(staging_first_deploy_s, 2),
                "targets": {"requests_failed": "0 of >= 6000", "resume_to_switch_s": "< 1.5"},
            },
            indent=2,
        )
    )


COLUMN = '''"""A nullable column the live version never reads."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("orders", sa.Column("bench_note", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("orders", "bench_note")
'''


def orders_repo(migration: str | None) -> Path:
    """examples/orders-api as a repository of its own, with a second migration if given."""
    repo = Path(tempfile.mkdtemp(prefix="bench-orders-")) / "orders-api"
    shutil.copytree(PROJECT_DIR / "examples" / "orders-api", repo)
    (repo / "bench.txt").write_text(f"{time.time()}\n")  # a build of its own each run
    if migration:
        (repo / "migrations" / "versions" / "0002_bench.py").write_text(migration)
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "b"],
    ):
        done = commands.run(argv, cwd=repo, timeout_s=60)
        if not done.ok:
            raise SystemExit(f"{' '.join(argv)}: {done.tail()}")
    return repo


def ci_of(repo: Path, implied: dict[str, str]) -> tuple[str, str]:
    from flows.ci import CiParameters

    _, ci = run_ci(
        CiParameters(
            repo=str(repo),
            ref="main",
            advisory_url=implied["advisory_url"],
            cache_dir=implied["cache_dir"],
        )
    )
    return ci.image, ci.sha


def reset_orders_api(config: Any) -> None:
    """orders-api's slots, state, accessories and their data volumes gone, in both environments."""
    from deliver.planning.runtime import accessory_container, accessory_volume

    listed = commands.run(
        ["docker", "ps", "-aq", "--filter", "label=dev.deliver.app=orders-api"], timeout_s=60
    )
    names = listed.stdout.split()
    volumes = []
    for environment in ("staging", "production"):
        names += [accessory_container(environment, name) for name in ("postgres", "redis")]
        volumes += [accessory_volume(environment, name) for name in ("postgres", "redis")]
        shutil.rmtree(config.state_dir / "hosts" / environment / "orders-api", ignore_errors=True)
    commands.run(["docker", "rm", "-f", *names], timeout_s=120)
    commands.run(["docker", "volume", "rm", "-f", *volumes], timeout_s=60)


if __name__ == "__main__":
    main()
