"""Approval policies the tests save beside the sandbox's own."""

from __future__ import annotations

from blocks.approval_policy import ApprovalPolicy
from deliver.sandbox.approvers import APPROVERS, one_time_code
from tests.conftest import CONFIG

UNAPPROVED_ROLLBACKS = "rollbacks-unapproved"


def rollbacks_without_approval() -> str:
    """A policy under which a production rollback goes ahead at once (the default waits)."""
    ApprovalPolicy(
        approvers=["demo-approver"], rollback_needs_approval=False, require_codes=False
    ).save(UNAPPROVED_ROLLBACKS, overwrite=True)
    return UNAPPROVED_ROLLBACKS


def code_of(approver: str) -> str:
    """The sandbox approver's one-time code, as their authenticator app shows it ("" for a
    name the sandbox has no approver of)."""
    return one_time_code(CONFIG.state_dir, approver) if approver in APPROVERS else ""
