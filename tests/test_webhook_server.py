"""`deliver webhook serve` against the sandbox: deliveries start the `ci` deployment once each,
malformed ones start nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from deliver.webhook_server import WebhookSettings, serve
from deployments import deploy_all
from tests.test_ci_pipeline import SAMPLE, git
from tests.test_webhook_planning import MALFORMED, SECRET, sign


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ci_deployment(prefect_api, sandbox_state) -> str:
    """Only the `ci` deployment (no triggers: nothing is released behind the tests' back)."""
    (deployed,) = deploy_all(only=["ci"])
    return deployed.deployment_id


@pytest.fixture(scope="module")
def endpoint(ci_deployment, sandbox_config, base_image) -> Iterator[str]:
    settings = WebhookSettings(
        secret=SECRET,
        max_body=1024 * 64,
        ci_defaults={
            "spec_path": "deliver.yaml",
            "advisory_url": sandbox_config.advisory_url,
            "cache_dir": str(sandbox_config.state_dir / "ci-cache"),
            "build_args": {"BASE_IMAGE": base_image},
        },
    )
    port = free_port()
    server = serve(settings, port=port)
    yield f"http://127.0.0.1:{port}/"
    server.shutdown()


def ci_runs(deployment_id: str) -> list[Any]:
    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[UUID(deployment_id)])
                )
            )

    return asyncio.run(read())


def test_a_delivery_replayed_ten_times_at_once_starts_one_run(
    endpoint, ci_deployment, sandbox_config
):
    repo = sandbox_config.state_dir / "ci-cache" / f"hook-{uuid.uuid4().hex[:8]}"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".*_cache"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hook")
    sha = git(repo, "rev-parse", "HEAD")
    body = json.dumps(
        {"ref": "refs/heads/main", "after": sha, "repository": {"clone_url": str(repo)}}
    ).encode()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body),
        "Content-Type": "application/json",
    }
    before = len(ci_runs(ci_deployment))

    def deliver_once(_: int) -> tuple[int, str | None, float]:
        started = time.monotonic()
        response = httpx.post(endpoint, content=body, headers=headers, timeout=60)
        return response.status_code, response.json().get("flow_run_id"), time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(deliver_once, range(10)))
    assert {status for status, _, _ in answers} == {201}
    assert len({run_id for _, run_id, _ in answers}) == 1
    assert len(ci_runs(ci_deployment)) == before + 1
    run_id = answers[0][1]
    deadline = time.monotonic() + 180
    while True:
        run = next(r for r in ci_runs(ci_deployment) if str(r.id) == run_id)
        if run.state and run.state.is_final():
            break
        assert time.monotonic() < deadline, "the webhook's CI run did not finish"
        time.sleep(1)
    assert run.state.is_completed(), run.state
    assert run.parameters["parameters"]["ref"] == "main"
    shutil.rmtree(repo, ignore_errors=True)


def test_malformed_deliveries_get_4xx_and_start_nothing(endpoint, ci_deployment):
    before = len(ci_runs(ci_deployment))
    statuses = {}
    # Over the wire the client sets Content-Length, and a header can't hold a newline: those
    # two cases stay with the pure tests; a real oversized body is sent instead.
    wire = {
        case: sent
        for case, sent in MALFORMED.items()
        if case not in {"oversized declared length", "delivery id with a newline"}
    }
    big = b"x" * 70_000
    wire["oversized body, for real"] = ({"x-github-event": "push"}, big)
    for case, (headers, body) in wire.items():
        sent = {  # as a client puts them on the wire: bytes, a non-ASCII one as latin-1
            k.encode(): v.encode("latin-1") for k, v in headers.items() if k != "content-length"
        }
        statuses[case] = httpx.post(endpoint, content=body, headers=sent, timeout=10).status_code
    assert all(400 <= status < 500 for status in statuses.values()), statuses
    assert len(statuses) >= 12
    assert len(ci_runs(ci_deployment)) == before


def test_ping_is_answered(endpoint):
    body = b'{"zen": "Design for failure."}'
    headers = {
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": secrets.token_hex(8),
        "X-Hub-Signature-256": sign(body),
    }
    assert httpx.post(endpoint, content=body, headers=headers, timeout=10).status_code == 200


def test_the_cli_serves_with_the_sandboxs_webhook_secret(sandbox_state, prefect_api):
    """`deliver webhook serve --sandbox` checks signatures with the `webhook-secret` block."""
    import subprocess
    import sys

    from tests.conftest import PROJECT_DIR

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "deliver.cli",
        "webhook",
        "serve",
        "--sandbox",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        argv, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        secret = sandbox_state.credentials("webhook")["secret"].encode()
        body = b'{"zen": "Half measures are as bad as nothing at all."}'
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                headers = {
                    "X-GitHub-Event": "ping",
                    "X-GitHub-Delivery": "cli-ping",
                    "X-Hub-Signature-256": sign(body, secret),
                }
                answer = httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=headers)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the webhook server never listened"
                time.sleep(0.3)
        assert answer.status_code == 200
        forged = {**headers, "X-Hub-Signature-256": sign(body, b"not the secret")}
        assert (
            httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=forged).status_code == 401
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
