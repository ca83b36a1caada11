"""Approval before production: the evidence shown to the approver, and the policy check."""

from __future__ import annotations

import time

from prefect import task

from blocks.approval_policy import ApprovalPolicy
from deliver.planning.approval import Decision, PolicyView, refusal
from deliver.planning.release import HostState
from deliver.tasks.loading import load_block


@task(name="check_decision")
def check_decision(policy_block: str, decision: Decision, requester: str) -> str | None:
    """Why `decision` fails the policy, or None; the secrets stay inside this task."""
    policy = load_block(ApprovalPolicy, policy_block)
    view = PolicyView(
        approvers=tuple(policy.approvers),
        allow_self_approval=policy.allow_self_approval,
        totp_secrets={name: s.get_secret_value() for name, s in policy.totp_secrets.items()},
    )
    return refusal(view, decision, requester=requester, at=time.time())


@task(name="read_approval_timeout")
def read_approval_timeout(policy_block: str) -> float:
    return float(load_block(ApprovalPolicy, policy_block).timeout_s)


@task(name="find_ci_evidence")
def find_ci_evidence(digest: str) -> str:
    """The CI result artifact that produced `digest` (checks and scan), or a note that none did."""
    from deliver.prefect_api import ci_result_naming  # inside the run, Prefect is configured

    return ci_result_naming(digest) or f"No CI result on this server names {digest}."


def evidence_markdown(
    *,
    image: str,
    version: str,
    git_sha: str,
    requested_by: str,
    production: HostState,
    staging: HostState,
    ci: str,
    candidate: str = "",
) -> str:
    """What the approver sees on the resume form."""
    live = production.live
    now = f"{live.version} (`{live.image}`) since {live.since}" if live else "nothing yet"
    on_staging = staging.live
    staged = f"live since {on_staging.since}" if on_staging else "not live"
    last = staging.history[-1] if staging.history else None
    return (
        f"## Release {version} to production\n\n"
        f"- image: `{image}`\n- commit: `{git_sha}`\n- requested by: {requested_by}\n"
        f"- production now: {now}\n"
        f"- staging: {staged}; last staging release: {last.outcome if last else '-'} "
        f"at {last.at if last else '-'} (health and smoke checks passed)\n"
        + (f"- candidate: {candidate}\n" if candidate else "")
        + "\n"
        f"### CI\n\n{ci.removeprefix('# ')}\n\n"
        "Approve or reject below: your name, and a reason (required to reject). "
        "Approvers with a one-time code secret must give their current code."
    )
