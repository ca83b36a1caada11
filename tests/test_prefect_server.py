"""The sandbox's Prefect server records flow runs, and its worker runs deployments."""

import asyncio
from typing import Any, cast
from uuid import UUID

import httpx
from prefect import Flow, flow, get_client, task
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from deliver.sandbox.prefect_server import WORKER_NAME
from tests.conftest import PROJECT_DIR


@task
def add(left: int, right: int) -> int:
    return left + right


@flow(name="sandbox-harness-check")
def harness_check() -> int:
    return add(2, 3)


def test_server_health(prefect_api):
    """The server answers its health endpoint."""
    assert httpx.get(f"{prefect_api}/health").json() is True


def test_flow_run_is_recorded_on_the_sandbox_server(prefect_api):
    """A flow run in the test process completes and is recorded with its task run on the server."""
    state = harness_check(return_state=True)
    assert state.is_completed()
    assert state.result() == 5
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    async def read() -> tuple[str, int]:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            tasks = await client.read_task_runs()
            return run.state_name or "", len([t for t in tasks if t.flow_run_id == run.id])

    assert asyncio.run(read()) == ("Completed", 1)


def test_work_pool_has_an_online_process_worker(prefect_api, sandbox_config, sandbox_state):
    """The sandbox's work pool is a process pool with its workers online: two on PostgreSQL."""

    async def read() -> tuple[str, list[tuple[str, str]]]:
        async with get_client() as client:
            pool = await client.read_work_pool(sandbox_config.work_pool)
            workers = await client.read_workers_for_work_pool(sandbox_config.work_pool)
            return pool.type, [(w.name, str(w.status.value)) for w in workers]

    kind, workers = asyncio.run(read())
    assert kind == "process"
    online = {name for name, status in workers if status == "ONLINE"}
    two = sandbox_state.fact("database") in (None, "postgres")
    assert online >= ({WORKER_NAME, "sandbox-worker-2"} if two else {WORKER_NAME}), workers


def test_the_api_needs_the_auth_string_and_a_csrf_token(prefect_api, sandbox_config):
    """Hardened like a shared server: no auth string, 401; authenticated but without a CSRF
    token, a change is refused; health stays open for probes."""
    auth = sandbox_config.prefect_auth_file.read_text().strip().partition(":")
    assert httpx.get(f"{prefect_api}/health").status_code == 200
    assert httpx.get(f"{prefect_api}/flows/count").status_code == 401
    with httpx.Client(auth=(auth[0], auth[2])) as client:
        assert client.post(f"{prefect_api}/flows/count").status_code == 403
        client_id = "test-client"
        token = client.get(f"{prefect_api}/csrf-token", params={"client": client_id}).json()
        headers = {"Prefect-Csrf-Token": token["token"], "Prefect-Csrf-Client": client_id}
        assert client.post(f"{prefect_api}/flows/count", headers=headers).status_code == 200
    assert sandbox_config.prefect_auth_file.stat().st_mode & 0o077 == 0


def test_worker_runs_a_deployment_of_project_code(prefect_api, sandbox_config):
    """A deployment of project code on the sandbox pool is picked up and run by the worker."""
    # Prefect's sync-or-async methods are typed as unions; from sync code they return values.
    probe = cast(
        Flow[..., Any],
        Flow.from_source(source=str(PROJECT_DIR), entrypoint="flows/probe.py:worker_probe"),
    )
    deployment_id = cast(
        UUID,
        probe.deploy(
            name="test-worker-probe",
            work_pool_name=sandbox_config.work_pool,
            print_next_steps=False,
            ignore_warnings=True,
        ),
    )
    run = cast(FlowRun, run_deployment(deployment_id, timeout=120))
    assert run.state is not None
    assert run.state.is_completed(), run.state
