"""Approval before production: the evidence shown to the approver, and the policy check."""

from __future__ import annotations

import re
import time
from typing import Any

from prefect import task
from prefect.variables import Variable

from blocks.approval_policy import ApprovalPolicy
from deliver.planning.approval import TOTP_STEP_S, Decision, PolicyView, refusal, totp_step
from deliver.tasks.loading import load_block


@task(name="check_decision")
def check_decision(
    policy_block: str, decision: Decision, requester: str, *, rollback: bool = False
) -> str | None:
    """Why `decision` fails the policy, or None; the secrets stay inside this task. An accepted
    one-time code is remembered (a Prefect variable per approver) until its window has passed,
    so it is refused a second time; the caller holds the environment's lock."""
    policy = load_block(ApprovalPolicy, policy_block)
    view = PolicyView(
        approvers=tuple(policy.approvers),
        allow_self_approval=policy.allow_self_approval,
        totp_secrets={name: s.get_secret_value() for name, s in policy.totp_secrets.items()},
        emergency_rollback=tuple(policy.emergency_rollback),
        require_codes=policy.require_codes,
    )
    now = time.time()
    secret = view.totp_secrets.get(decision.approver)
    used_name = used_codes_variable(decision.approver)
    stored: Any = Variable.get(used_name, default=[]) if secret else []
    used = [int(step) for step in stored] if isinstance(stored, list) else []
    refused = refusal(
        view, decision, requester=requester, at=now, used_steps=used, rollback=rollback
    )
    if refused is None and secret is not None:
        step = totp_step(secret, decision.code, at=now)
        current = int(now // TOTP_STEP_S)
        kept = [s for s in used if s >= current - 2]  # past the window: forgotten
        Variable.set(used_name, [*kept, step], overwrite=True)
    return refused


def used_codes_variable(approver: str) -> str:
    """The variable holding an approver's used one-time code steps (names: [a-z0-9_-])."""
    return "deliver-totp-used-" + re.sub(r"[^a-z0-9_-]", "-", approver.lower())


@task(name="read_approval_timeout")
def read_approval_timeout(policy_block: str) -> float:
    return float(load_block(ApprovalPolicy, policy_block).timeout_s)


@task(name="read_emergency_rollback")
def read_emergency_rollback(policy_block: str) -> tuple[str, ...]:
    return tuple(load_block(ApprovalPolicy, policy_block).emergency_rollback)


@task(name="read_rollback_policy")
def read_rollback_policy(policy_block: str) -> tuple[bool, float]:
    """Whether a production rollback waits for an approval, and for how long at most."""
    policy = load_block(ApprovalPolicy, policy_block)
    return policy.rollback_needs_approval, float(policy.timeout_s)


@task(name="find_ci_evidence")
def find_ci_evidence(digest: str) -> str:
    """The CI result artifact that produced `digest` (checks and scan), or a note that none did."""
    from deliver.prefect_api import ci_result_naming  # inside the run, Prefect is configured

    return ci_result_naming(digest) or f"No CI result on this server names {digest}."
