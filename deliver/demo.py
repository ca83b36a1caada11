"""`make demo`: the main job on the local sandbox.

For now the job is what exists: a healthy sandbox, the sample service's own tests, and a
deployment run picked up by the sandbox's worker, visible in the Prefect UI. The CI and release
flows extend it to CI, staging, approval and production.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from deliver import sandbox

PROJECT_DIR = Path(__file__).resolve().parents[1]


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def main() -> int:
    config = sandbox.config_from_env()
    config.prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.update(config.prefect_env())
    # Prefect reads its settings at import, so it is imported only after they are set.
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    step("Sandbox components")
    statuses = sandbox.status(config)
    for status in statuses:
        health = "healthy" if status.healthy else "UNHEALTHY"
        print(f"  {status.name:<15} {health:<10} {status.address}")
    if not all(status.healthy for status in statuses):
        print("Some components are unhealthy: run `deliver sandbox up`.", file=sys.stderr)
        return 1

    step("The sample service's own tests (examples/stock-api)")
    sample = PROJECT_DIR / "examples" / "stock-api"
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=sample, check=False)
    if tests.returncode != 0:
        return tests.returncode

    step("A deployment run on the sandbox's work pool")
    probe = cast(
        Flow[..., Any],
        Flow.from_source(source=str(PROJECT_DIR), entrypoint="flows/probe.py:worker_probe"),
    )
    deployment_id = cast(
        UUID,
        probe.deploy(
            name="worker-probe",
            work_pool_name=config.work_pool,
            print_next_steps=False,
            ignore_warnings=True,
        ),
    )
    run = cast(FlowRun, run_deployment(deployment_id, timeout=120))
    ui = config.prefect_api_url.removesuffix("/api")
    print(f"  flow run {run.name}: {run.state_name}")
    print(f"  see it in the Prefect UI: {ui}/runs/flow-run/{run.id}")
    return 0 if run.state is not None and run.state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
