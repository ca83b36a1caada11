"""prefect.yaml's deployments, applied from Python and by `prefect deploy --all`, and the
chain from a green CI run on main to the staging release, through Prefect's own events."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.deployments import run_deployment

from deployments import declared
from tests.conftest import PROJECT_DIR
from tests.triggers import delete_triggered


def deliver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deliver.cli", *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture(scope="module")
def deployed(prefect_api, sandbox_state) -> Iterator[dict[str, Any]]:
    """Every declared deployment; afterwards the ones with triggers are deleted, so no later
    test's CI run on main starts a release behind its back."""
    import json

    done = deliver("deploy", "--json", "--sandbox")
    assert done.returncode == 0, done.stderr[-3000:]
    found = {d["name"]: d for d in json.loads(done.stdout)}
    yield found
    delete_triggered({name: d["deployment_id"] for name, d in found.items()})


async def _deployment(deployment_id: str) -> Any:
    async with get_client() as client:
        return await client.read_deployment(deployment_id)


def test_deliver_deploy_applies_every_declared_deployment(deployed):
    names = [spec["name"] for spec in declared()]
    assert sorted(deployed) == sorted(names)
    production = asyncio.run(_deployment(deployed["release-production"]["deployment_id"]))
    assert production.enforce_parameter_schema
    assert production.global_concurrency_limit is not None
    assert production.global_concurrency_limit.limit == 1
    schema = production.parameter_openapi_schema
    assert "parameters" in schema["properties"]


def test_a_run_with_a_malformed_parameter_is_refused_before_it_starts(deployed):
    """An environment name that is not one (shell syntax): refused by the schema, and no run
    is created."""
    deployment_id = deployed["release-production"]["deployment_id"]

    async def runs() -> int:
        async with get_client() as client:
            return len(
                await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
            )

    before = asyncio.run(runs())
    bad = {
        "parameters": {
            "image": "x@sha256:" + "a" * 64,
            "environment": "qa;id",
            "version": "1",
            "git_sha": "abcdef1",
            "requested_by": "tester",
        }
    }
    with pytest.raises(Exception, match=r"(?i)validation|schema|environment"):
        run_deployment(deployment_id, parameters=bad, timeout=0)
    assert asyncio.run(runs()) == before


def test_prefect_deploy_all_applies_the_same_list(deployed, sandbox_config):
    env = {**os.environ, **sandbox_config.prefect_env()}
    prefect = str(PROJECT_DIR / ".venv" / "bin" / "prefect")
    done = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for name in deployed:
        assert name in done.stdout


def test_green_ci_on_main_releases_to_staging_and_a_v_tag_to_production(
    deployed, sandbox_config, base_image
):
    """The CI flow emits deliver.ci.succeeded; the release-staging trigger starts a run with its
    digest, which the worker completes. Then a v* tag of that commit: its CI run's event starts
    the production release through the release-production trigger, which waits for approval
    (rejected here, so production is not changed)."""
    import shutil
    import uuid

    from deliver.cli.ci import run_ci
    from deliver.prefect_api import decide
    from flows.ci import CiParameters
    from tests.policies import code_of
    from tests.test_ci_pipeline import SAMPLE, git

    repo = sandbox_config.state_dir / "ci-cache" / f"chain-{uuid.uuid4().hex[:8]}"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".*_cache"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "chain")

    def ci_of(ref: str) -> Any:
        state, result = run_ci(
            CiParameters(
                repo=str(repo),
                ref=ref,
                spec_path="deliver.yaml",
                advisory_url=sandbox_config.advisory_url,
                build_args={"BASE_IMAGE": base_image},
                cache_dir=str(sandbox_config.state_dir / "ci-cache"),
            )
        )
        assert state.is_completed(), result
        return result

    def triggered(name: str, image: str, since: float, until: set[str]) -> Any:
        deployment_id = deployed[name]["deployment_id"]

        async def read() -> list[Any]:
            async with get_client() as client:
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(),
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                )
                return [
                    r
                    for r in runs
                    if r.created
                    and r.created.timestamp() >= since - 1
                    and r.parameters.get("parameters", {}).get("image") == image
                ]

        deadline = time.monotonic() + 180
        while not ((runs := asyncio.run(read())) and runs[0].state_type.value in until):
            assert time.monotonic() < deadline, f"no {name} run of {image} reached {until}"
            time.sleep(1)
        assert len(runs) == 1
        return runs[0]

    started = time.time()
    result = ci_of("main")
    staged = triggered("release-staging", result.image, started, {"COMPLETED", "FAILED", "CRASHED"})
    assert staged.state.is_completed(), staged.state
    assert staged.parameters["parameters"]["requested_by"] == "ci-main"

    git(repo, "tag", "v7.7.7")
    started = time.time()
    tagged = ci_of("v7.7.7")
    assert tagged.image == result.image  # the same source tree: the same image, re-tagged
    waiting = triggered("release-production", tagged.image, started, {"PAUSED", "FAILED"})
    assert waiting.state.name == "Suspended", waiting.state
    parameters = waiting.parameters["parameters"]
    assert (parameters["environment"], parameters["version"]) == ("production", "7.7.7")
    assert parameters["requested_by"] == "ci-tag"
    decide(
        str(waiting.id),
        decision="reject",
        approver="demo-approver",
        reason="the chain test only shows the release waits",
        code=code_of("demo-approver"),
    )
    ended = triggered("release-production", tagged.image, started, {"CANCELLED", "FAILED"})
    assert ended.state_type.value == "CANCELLED", ended.state
    shutil.rmtree(repo, ignore_errors=True)


def test_nightly_runs_at_two_in_an_explicit_configurable_zone(deployed):
    from deployments import deploy_all

    def schedule() -> Any:
        nightly = asyncio.run(_deployment(deployed["nightly"]["deployment_id"]))
        (only,) = nightly.schedules
        assert only.active
        return only.schedule

    def next_starts(zone: str) -> set[str]:
        """Local wall-clock times of the nightly's scheduled runs, as the scheduler made them."""
        import zoneinfo

        from prefect.client.schemas.filters import FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        async def read() -> list[Any]:
            async with get_client() as client:
                return await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                        )
                    ),
                    deployment_filter=DeploymentFilter(
                        id=DeploymentFilterId(any_=[deployed["nightly"]["deployment_id"]])
                    ),
                )

        deadline = time.monotonic() + 90
        while not (runs := asyncio.run(read())):
            assert time.monotonic() < deadline, "the scheduler made no nightly run"
            time.sleep(2)
        local = zoneinfo.ZoneInfo(zone)
        return {r.expected_start_time.astimezone(local).strftime("%H:%M") for r in runs}

    assert (schedule().cron, schedule().timezone) == ("0 2 * * *", "UTC")
    assert next_starts("UTC") == {"02:00"}
    try:
        deploy_all(only=["nightly"], timezone="Europe/Berlin")
        assert (schedule().cron, schedule().timezone) == ("0 2 * * *", "Europe/Berlin")
        assert next_starts("Europe/Berlin") == {"02:00"}
    finally:
        deploy_all(only=["nightly"])
    refused = deliver("deploy", "--sandbox", "--nightly-timezone", "Mars/Olympus")
    assert refused.returncode == 2
    assert "'Mars/Olympus' is not an IANA time zone" in refused.stderr


def test_alerts_are_prefect_automations_sending_to_the_chat(deployed):
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from deployments.automations import APPROVAL_ALERT, NIGHTLY_ALERT

    chat = cast(Any, CustomWebhookNotificationBlock.load("sandbox-chat"))
    nightly = cast(Any, Automation.read(name=NIGHTLY_ALERT))
    assert nightly.trigger.posture == "Proactive"
    assert nightly.trigger.within.total_seconds() == 26 * 3600
    assert nightly.trigger.expect == {"prefect.flow-run.Completed"}
    waiting = cast(Any, Automation.read(name=APPROVAL_ALERT))
    assert waiting.trigger.after == {"prefect.flow-run.Paused", "prefect.flow-run.Suspended"}
    assert waiting.trigger.within.total_seconds() == 3600
    for automation in (nightly, waiting):
        (action,) = automation.actions
        assert action.block_document_id == chat._block_document_id
