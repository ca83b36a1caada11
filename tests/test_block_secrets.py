"""Blocks with a missing or malformed secret fail naming the block and field, before any host
or registry is touched, and without showing the value."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from pydantic import SecretStr, ValidationError

from blocks.approval_policy import ApprovalPolicy
from blocks.deploy_target import DeployTarget
from deliver.errors import BlockInvalid, DeployTargetInvalid
from deliver.prefect_api import final_task_runs
from flows.release import ReleaseParameters, release_here

IMAGE = "127.0.0.1:5001/never-pulled@sha256:" + "ab" * 32
BAD_SECRET = "cnry-not-base32-!!-1"  # noqa: S105 (a deliberately malformed canary)


def attempt(environment: str, **blocks: str) -> tuple[Any, Any]:
    parameters = ReleaseParameters(
        image=IMAGE,
        environment=environment,
        version="0.0.1",
        git_sha="0123456789abcdef",
        requested_by="tester",
        **blocks,
    )
    state = release_here(parameters)
    return state, state.result(raise_on_failure=False)


def remote_steps(state: Any) -> list[str]:
    names = [run.name for run in final_task_runs(state.state_details.flow_run_id)]
    return [n for n in names if not n.startswith(("read_target", "read_approval_timeout"))]


@pytest.mark.parametrize("key", ["", "not a key", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n"])
def test_a_deploy_key_that_is_not_a_key_stops_before_ssh(key, prefect_api, ssh_hosts):
    staging = cast(DeployTarget, DeployTarget.load("staging"))
    DeployTarget(**{**staging.model_dump(), "private_key": key}).save("bad-key", overwrite=True)
    state, error = attempt("staging", target_block="bad-key")
    assert state.is_failed()
    assert isinstance(error, DeployTargetInvalid)
    assert (error.block, error.field) == ("bad-key", "private_key")
    assert remote_steps(state) == []


def test_a_malformed_one_time_code_secret_is_refused_when_saved():
    with pytest.raises(ValidationError) as refused:
        ApprovalPolicy(approvers=["alice"], totp_secrets={"alice": BAD_SECRET})  # type: ignore[dict-item]
    assert "totp_secrets" in str(refused.value)
    assert BAD_SECRET not in str(refused.value)


def test_a_policy_corrupted_on_the_server_stops_before_any_host(prefect_api, ssh_hosts):
    """A policy document edited through the API into a bad secret: the production release
    fails naming the block and field, with no SSH step run."""
    from prefect import get_client
    from prefect.client.schemas.actions import BlockDocumentUpdate

    good = "JBSWY3DPEHPK3PXPJBSWY3DP"
    ApprovalPolicy(approvers=["alice"], totp_secrets={"alice": SecretStr(good)}).save(
        "corrupt-approvals", overwrite=True
    )

    async def corrupt() -> None:
        async with get_client() as client:
            document = await client.read_block_document_by_name(
                "corrupt-approvals", block_type_slug="approval-policy"
            )
            data = {**document.data, "totp_secrets": {"alice": BAD_SECRET}}
            await client.update_block_document(document.id, BlockDocumentUpdate(data=data))

    asyncio.run(corrupt())
    state, error = attempt("production", approval_policy="corrupt-approvals")
    assert state.is_failed()
    assert isinstance(error, BlockInvalid)
    assert (error.block, error.field) == ("corrupt-approvals", "totp_secrets")
    assert BAD_SECRET not in str(error)
    assert remote_steps(state) == []
