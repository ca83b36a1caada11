"""Approval policies the tests save beside the sandbox's own."""

from __future__ import annotations

from blocks.approval_policy import ApprovalPolicy
from deliver.sandbox.approvers import APPROVERS, one_time_code
from tests.conftest import CONFIG

UNAPPROVED_ROLLBACKS = "rollbacks-unapproved"
SANDBOX_APPROVALS = "production-approvals"  # every approver gives a one-time code
TEST_APPROVALS = "tests-approvals"


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


_saved: set[str] = set()


def approvals_for_tests() -> str:
    """The policy most production releases of the tests wait under: the sandbox's approvers,
    alice with her one-time code, demo-approver without one. A code is good once, so an
    approver can give at most a couple a minute: tests approve faster than that. The tests of
    codes, and of the deployments (which wait under the sandbox's policy), give them."""
    if TEST_APPROVALS not in _saved:
        from pydantic import SecretStr

        from deliver.sandbox.approvers import approver_secret
        from deliver.sandbox.state import SandboxState

        alice = approver_secret(SandboxState.load(CONFIG.state_dir), "alice")
        ApprovalPolicy(
            approvers=list(APPROVERS),
            totp_secrets={"alice": SecretStr(alice)},
            emergency_rollback=["alice"],
            require_codes=False,
        ).save(TEST_APPROVALS, overwrite=True)
        _saved.add(TEST_APPROVALS)
    return TEST_APPROVALS
