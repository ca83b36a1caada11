"""The nightly flow, run by its deployment on the sandbox's worker, and its failure notice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from typing import Any, cast

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import ArtifactSort
from prefect.deployments import run_deployment
from pydantic import ValidationError

from deliver.sandbox.services.chat_inbox import Inbox
from deployments import deploy_all
from flows.nightly import NightlyParameters, nightly
from tests.chat import chat_block

TOKEN = "nightly-chat-token-0123456789"  # noqa: S105 (a test receiver's)


@pytest.fixture(scope="module")
def deployment(prefect_api, sandbox_state) -> str:
    (deployed,) = deploy_all(only=["nightly"])
    return deployed.deployment_id


@pytest.fixture(scope="module")
def inbox(prefect_api) -> Iterator[Inbox]:
    with chat_block("nightly-chat", TOKEN) as box:
        yield box


def _latest_artifact(key: str) -> Any:
    async def read() -> Any:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC,
                limit=1,
            )
            return found[0] if found else None

    return asyncio.run(read())


def test_nightly_deployment_tests_fresh_dependencies_benchmarks_and_reports(
    deployment, sandbox_config
):
    """Started the way the UI's Run button starts it; the worker runs it to completion."""
    parameters = {
        "repo": ".",
        "ref": "main",
        "spec_path": "examples/stock-api/deliver.yaml",
        "checks": ["tests"],
        "benchmarks": ["sandbox_up --repeat 1"],
        "metrics_window": "30d",
        "advisory_url": sandbox_config.advisory_url,
    }
    run = cast(
        FlowRun, run_deployment(deployment, parameters={"parameters": parameters}, timeout=600)
    )
    assert run.state is not None
    assert run.state.is_completed(), run.state
    report = _latest_artifact("nightly-stock-api")
    assert report.flow_run_id == run.id
    text = str(report.data)
    assert "- tests: passed" in text
    assert "## Dependencies (newest allowed)" in text
    assert "| pytest |" in text
    assert '"warm_up_s"' in text  # the benchmark's own figures
    metrics = _latest_artifact("delivery-metrics")
    assert metrics.flow_run_id == run.id
    rows = json.loads(str(metrics.data))
    assert [row["metric"] for row in rows] == [
        "deployment frequency",
        "lead time for changes",
        "change failure rate",
        "time to restore",
    ]


def test_a_failed_nightly_is_notified_once(inbox, tmp_path):
    parameters = NightlyParameters(
        repo=str(tmp_path / "gone"), benchmarks=[], notify_block="custom-webhook/nightly-chat"
    )
    state = asyncio.run(cast(Coroutine[Any, Any, Any], nightly(parameters, return_state=True)))
    assert state.is_failed()
    texts = [message["text"] for message in inbox.messages()]
    assert len(texts) == 1
    assert texts[0].startswith("*gone main: nightly run failed*\nRepository "), texts


@pytest.mark.parametrize(
    "bad",
    [
        {"benchmarks": ["rm -rf /"]},
        {"metrics_window": "a month"},
        {"notify_block": "chat"},
        {"checks": "tests"},
    ],
)
def test_malformed_nightly_parameters_are_refused(bad):
    with pytest.raises(ValidationError):
        NightlyParameters.model_validate({"repo": ".", **bad})
