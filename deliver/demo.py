"""`make demo`: the sample service through CI, staging, approval and production on the sandbox.

    make demo              # stops at the approval and prints how to give it
    make demo APPROVE=1    # approves as the sandbox's demo approver and finishes in production

Releases run as deployments on the sandbox's worker, so a production release waiting for
approval is suspended on the server and holds no process: it survives the demo's exit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from deliver import sandbox
from deliver.cli.ci import current_ref, run_ci, summary
from deliver.sandbox import use_sandbox
from deliver.sandbox.approvers import DEMO_APPROVER, one_time_code
from deliver.sandbox.chat import ChatInbox
from deliver.sandbox.component import Context
from deliver.sandbox.prefect_blocks import NOTIFY_BLOCK
from deliver.sandbox.state import SandboxState

PROJECT_DIR = Path(__file__).resolve().parents[1]
SAMPLE_SPEC = "examples/stock-api/deliver.yaml"


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def deploy_release(work_pool: str) -> UUID:
    # Prefect only now, in the demo's functions: main() points it at the sandbox first.
    from prefect import Flow

    source = Flow.from_source(source=str(PROJECT_DIR), entrypoint="flows/release.py:release")
    flow = cast(Flow[..., Any], source)
    return cast(
        UUID,
        flow.deploy(
            name="sandbox", work_pool_name=work_pool, print_next_steps=False, ignore_warnings=True
        ),
    )


def start_release(deployment_id: UUID, parameters: dict[str, Any]) -> UUID:
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run = cast(
        FlowRun, run_deployment(deployment_id, parameters={"parameters": parameters}, timeout=0)
    )
    return run.id


def main() -> int:
    config = sandbox.config_from_env()
    # Before anything imports Prefect: its settings (API URL, auth string) are read at import.
    implied = use_sandbox()
    step("Sandbox components")
    statuses = sandbox.status(config)
    for status in statuses:
        health = "healthy" if status.healthy else "UNHEALTHY"
        print(f"  {status.name:<15} {health:<10} {status.address}")
    if not all(status.healthy for status in statuses):
        print("Some components are unhealthy: run `deliver sandbox up`.", file=sys.stderr)
        return 1

    from deliver.prefect_api import wait_for_flow_run  # Prefect is configured only now
    from flows.ci import CiParameters

    ui = config.prefect_api_url.removesuffix("/api")
    step("CI of the sample service (examples/stock-api)")
    parameters = CiParameters(
        repo=str(PROJECT_DIR),
        ref=current_ref(str(PROJECT_DIR)),
        spec_path=SAMPLE_SPEC,
        advisory_url=implied["advisory_url"],
        cache_dir=implied["cache_dir"],
        notify_block=NOTIFY_BLOCK,
    )
    chat_from = len(chat_messages(config))
    state, ci = run_ci(parameters)
    if not state.is_completed():
        print(f"ci-pipeline {state.name}: {ci}", file=sys.stderr)
        return 1
    print(summary(ci))
    print(f"  flow run: {ui}/runs/flow-run/{state.state_details.flow_run_id}")

    deployment_id = deploy_release(config.work_pool)
    release = {
        "image": ci.image,
        "version": ci.version,
        "git_sha": ci.sha,
        "requested_by": "demo",
        "notify_block": NOTIFY_BLOCK,
    }
    step(f"Staging release of {ci.version} (deployment release/sandbox on the worker)")
    run = wait_for_flow_run(
        start_release(deployment_id, {**release, "environment": "staging"}), until={"COMPLETED"}
    )
    print(f"  {run.state.name}: {ui}/runs/flow-run/{run.id}")
    if run.state.type.value != "COMPLETED":
        return 1

    step(f"Production release of {ci.version}: waiting for approval")
    run_id = start_release(deployment_id, {**release, "environment": "production"})
    run = wait_for_flow_run(run_id, until={"PAUSED"})
    if run.state.type.value != "PAUSED":
        print(f"  {run.state.name}: {run.state.message}", file=sys.stderr)
        return 1
    print(f"  waiting: {ui}/runs/flow-run/{run_id} (the Resume button shows the evidence)")
    command = (
        f"deliver approve {run_id} --approver {DEMO_APPROVER} --reason 'staging checks passed' "
        f'--code "$(.venv/bin/deliver sandbox code {DEMO_APPROVER})" --sandbox'
    )
    print(f"  approve from the command line: .venv/bin/{command}")
    if os.environ.get("APPROVE") != "1":
        show_chat(config, chat_from)
        print("\nRun `make demo APPROVE=1` to approve as the demo approver instead.")
        return 0

    from deliver.prefect_api import decide

    decide(
        str(run_id),
        decision="approve",
        approver=DEMO_APPROVER,
        reason="staging checks passed",
        code=one_time_code(config.state_dir, DEMO_APPROVER),  # from the approver's authenticator
    )
    run = wait_for_flow_run(run_id, until={"COMPLETED"})
    print(f"  {run.state.name}: {ui}/runs/flow-run/{run_id}")
    if run.state.type.value != "COMPLETED":
        return 1
    step("What is live where")
    print(f"  production: {config.production_front_url} (nginx)")
    for environment in ("staging", "production"):
        state_file = config.state_dir / "hosts" / environment / "release-state.json"
        live = json.loads(state_file.read_text()).get("live") or {}
        print(
            f"  {environment:<10} {live.get('version')} in the {live.get('slot')} slot "
            f"since {live.get('since')}\n             {live.get('image')}"
        )
    show_chat(config, chat_from)
    step("Delivery metrics (`deliver metrics --sandbox`), from the releases' Prefect events")
    from deliver.planning.metrics import table_rows
    from deliver.prefect_api import delivery_metrics

    metrics = delivery_metrics("30d")
    deadline = time.monotonic() + 15
    while metrics.releases == 0 and time.monotonic() < deadline:
        time.sleep(0.5)  # the server stores the release's event a moment after the run ends
        metrics = delivery_metrics("30d")
    for row in table_rows(metrics):
        print(f"  {row['metric']:<24} {row['value']:<20} {row['basis']}")
    return 0


def chat_messages(config: Any) -> list[dict[str, Any]]:
    path = ChatInbox().messages_file(Context(config, SandboxState.load(config.state_dir), print))
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def show_chat(config: Any, start: int) -> None:
    step(f"What the team's chat got (the sandbox's inbox, {config.state_dir}/chat)")
    for message in chat_messages(config)[start:]:
        print("  " + message.get("text", "").replace("\n", "\n    "))


if __name__ == "__main__":
    sys.exit(main())
