"""Prefect's own distributed setup under load: the sandbox's server on PostgreSQL with two
process workers. On SQLite, 50 deployment runs started at once through one worker crashed 13
(database is locked, PrefectHQ/prefect#18934)."""

from __future__ import annotations

import asyncio
import collections
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from blocks.approval_policy import ApprovalPolicy
from deployments import deploy_all
from tests.triggers import delete_triggered

RUNS = 50
PIPELINES = 20
RELEASES = {"staging": 3, "qa": 3, "production": 3}
SCALE_APPROVALS = "scale-approvals"
pytestmark = pytest.mark.scale


def needs_postgres(sandbox_state: Any) -> None:
    if sandbox_state.fact("database") not in (None, "postgres"):
        pytest.fail(
            "this test needs the sandbox on PostgreSQL: deliver sandbox up --database postgres"
        )


def test_fifty_deployment_runs_at_once_none_crash(prefect_api, sandbox_state):
    needs_postgres(sandbox_state)
    (probe,) = deploy_all(only=["worker-probe"])

    async def start() -> list[UUID]:
        async with get_client() as client:
            deployment = UUID(probe.deployment_id)
            # One request first: concurrent requests that each fetch the client's CSRF token
            # invalidate each other's (403 "Invalid CSRF token").
            first = await client.create_flow_run_from_deployment(deployment, tags=["scale"])
            rest = await asyncio.gather(
                *[
                    client.create_flow_run_from_deployment(deployment, tags=["scale"])
                    for _ in range(RUNS - 1)
                ]
            )
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


@pytest.fixture
def ci_and_release_deployments(prefect_api) -> Iterator[dict[str, UUID]]:
    """`ci` and both release deployments, their CI-to-release triggers deleted afterwards."""
    names = ["ci", "release-staging", "release-production"]
    deployed = {d.name: UUID(d.deployment_id) for d in deploy_all(only=names)}
    yield deployed
    delete_triggered(deployed)


def test_twenty_pipelines_and_releases_to_three_environments_at_once(
    ci_and_release_deployments,
    sandbox_state,
    sandbox_config,
    registry,
    base_image,
    docker_engine,
    tmp_path,
):
    """20 `ci` runs and 3 releases to each of staging, qa and production, all created at once
    on the workers: every one completes, none is lost or made twice, each environment's
    releases run one at a time, and the server never answers "database is locked"."""
    import itertools
    import shutil
    import subprocess

    from deliver.prefect_api import decide, waiting_releases
    from tests.conftest import PROJECT_DIR
    from tests.images import push_sample
    from tests.test_release import host_state

    needs_postgres(sandbox_state)
    server_log = sandbox_config.component_dir("prefect-server") / "prefect-server.log"
    log_offset = server_log.stat().st_size
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns(".venv", "__pycache__", ".*_cache")
    shutil.copytree(PROJECT_DIR / "examples" / "stock-api", repo, ignore=ignore)
    spec = repo / "deliver.yaml"
    spec.write_text(spec.read_text().replace("  name: stock-api\n", "  name: scale-ci\n"))
    who = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    for argv in (["init", "-q", "-b", "scale"], ["add", "-A"], ["commit", "-q", "-m", "scale"]):
        subprocess.run(["git", *argv], cwd=repo, check=True, env={**os.environ, **who})
    image = push_sample(
        docker_engine, registry, base_image, "scale-release", "5.0.0", {"VERSION": "5.0.0"}
    )
    staged = release_now(image, "staging", "5.0.0")  # production takes only what staging serves
    assert staged, "the first staging release failed"
    deployed = ci_and_release_deployments
    ci_parameters = {
        "repo": str(repo),
        "ref": "scale",
        "spec_path": "deliver.yaml",
        "advisory_url": sandbox_config.advisory_url,
        "build_args": {"BASE_IMAGE": base_image},
        "cache_dir": str(sandbox_config.state_dir / "ci-cache"),
    }
    wanted: list[tuple[UUID, dict[str, Any]]] = [(deployed["ci"], ci_parameters)] * PIPELINES
    versions: dict[str, list[str]] = {}
    session = uuid.uuid4().hex[:6]  # hosts keep every release's history: this run's are its own
    for environment, count in RELEASES.items():
        versions[environment] = [f"5.0.{n}-{session}" for n in range(1, count + 1)]
        kind = "release-production" if environment == "production" else "release-staging"
        deployment = deployed[kind]
        wanted += [
            (
                deployment,
                {
                    "image": image,
                    "environment": environment,
                    "version": version,
                    "git_sha": "5" * 40,
                    "requested_by": "scale-test",
                    "approval_policy": SCALE_APPROVALS,
                },
            )
            for version in versions[environment]
        ]

    async def start() -> list[UUID]:
        async with get_client() as client:
            (first_id, first_params), *rest = wanted
            first = await client.create_flow_run_from_deployment(
                first_id, parameters={"parameters": first_params}, tags=["scale"]
            )  # one request first: see the CSRF note above
            others = await asyncio.gather(
                *[
                    client.create_flow_run_from_deployment(
                        deployment, parameters={"parameters": parameters}, tags=["scale"]
                    )
                    for deployment, parameters in rest
                ]
            )
            return [first.id, *(run.id for run in others)]

    async def read(ids: list[UUID]) -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
            )

    # Dozens of approvals within a minute: a policy without one-time codes (each is good once).
    ApprovalPolicy(approvers=["demo-approver"], require_codes=False).save(
        SCALE_APPROVALS, overwrite=True
    )
    started = time.monotonic()
    ids = asyncio.run(start())
    assert len(set(ids)) == len(wanted)
    approved: set[str] = set()
    deadline = time.monotonic() + 900
    while True:
        for waiting in waiting_releases():
            if waiting.version in versions["production"] and waiting.run_id not in approved:
                decide(
                    waiting.run_id,
                    decision="approve",
                    approver="demo-approver",
                    reason="scale test",
                    code="",
                )
                approved.add(waiting.run_id)
        runs = asyncio.run(read(ids))
        if all(r.state and r.state.is_final() for r in runs):
            break
        assert time.monotonic() < deadline, collections.Counter(r.state_name for r in runs)
        time.sleep(2)
    elapsed = time.monotonic() - started
    states = collections.Counter(r.state_name for r in runs)
    print(f"{len(runs)} runs ({PIPELINES} pipelines) finished in {elapsed:.0f} s: {dict(states)}")
    assert states == {"Completed": len(wanted)}, [
        (r.name, r.state_name, r.state.message) for r in runs if r.state_name != "Completed"
    ]
    assert len(approved) == RELEASES["production"]
    for environment, expected in versions.items():
        history = [
            r
            for r in host_state(sandbox_config, environment)["history"]
            if r["version"] in expected
        ]
        assert sorted(r["version"] for r in history) == expected  # each once: none lost, none twice
        spans = sorted((record["began"], record["at"]) for record in history)
        for (_, ended), (began, _) in itertools.pairwise(spans):
            assert ended <= began, (environment, spans)
    with server_log.open() as log:
        log.seek(log_offset)
        assert "database is locked" not in log.read()


def release_now(image: str, environment: str, version: str) -> bool:
    from flows.release import ReleaseParameters, release_here

    parameters = ReleaseParameters(
        image=image,
        environment=environment,
        version=version,
        git_sha="5" * 40,
        requested_by="scale-test",
    )
    return bool(release_here(parameters).is_completed())
