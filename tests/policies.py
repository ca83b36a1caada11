"""Approval policies the tests save beside the sandbox's own."""

from __future__ import annotations

from blocks.approval_policy import ApprovalPolicy

UNAPPROVED_ROLLBACKS = "rollbacks-unapproved"


def rollbacks_without_approval() -> str:
    """A policy under which a production rollback goes ahead at once (the default waits)."""
    ApprovalPolicy(approvers=["demo-approver"], rollback_needs_approval=False).save(
        UNAPPROVED_ROLLBACKS, overwrite=True
    )
    return UNAPPROVED_ROLLBACKS
