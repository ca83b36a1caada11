"""The approval wait's loop, with stand-ins for the pause, the lock and the policy's secrets."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from deliver.approval_gate import await_decision
from deliver.planning.approval import Decision, PolicyView, refusal

POLICY = PolicyView(approvers=("alice", "bob"), allow_self_approval=False, totp_secrets={})
LOG = logging.getLogger("test-approval-gate")


class Gate:
    """Answers in turn; the lock's entries and what was decided are kept."""

    def __init__(self, *answers: Decision | None) -> None:
        self.answers = list(answers)
        self.waited: list[tuple[int, str]] = []
        self.locked = 0
        self.held = False

    def wait(self, remaining_s: int, key: str) -> Decision | None:
        assert not self.held, "waited with the environment's lock held"
        self.waited.append((remaining_s, key))
        return self.answers.pop(0)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.locked += 1
        self.held = True
        try:
            yield
        finally:
            self.held = False

    def run(self, requester: str = "carol") -> tuple[str, Decision | None]:
        def decided(decision: Decision | None) -> tuple[str, Decision | None]:
            assert self.held, "acted on the decision without the lock"
            return ("approved" if decision and decision.decision == "approve" else "not"), decision

        return await_decision(
            wait=self.wait,
            refusal=lambda d: refusal(POLICY, d, requester=requester, at=0.0),
            locked=self.lock,
            decided=decided,
            timeout_s=600,
            log=LOG,
            clock=lambda: 0.0,
        )


def approve(approver: str, reason: str = "ok") -> Decision:
    return Decision(decision="approve", approver=approver, reason=reason, code="")


def test_resumes_that_break_the_policy_are_waited_past():
    """A stranger, then the requester approving themself, then a real approver."""
    gate = Gate(approve("mallory"), approve("carol"), approve("alice"))
    verdict, decision = gate.run(requester="carol")
    assert verdict == "approved"
    assert decision is not None
    assert decision.approver == "alice"
    assert [key for _, key in gate.waited] == ["approval-1", "approval-2", "approval-3"]
    assert gate.locked == 3  # each answer judged under the lock


def test_a_rejection_with_a_reason_ends_the_wait():
    gate = Gate(Decision(decision="reject", approver="bob", reason="freeze week", code=""))
    verdict, decision = gate.run()
    assert verdict == "not"
    assert decision is not None
    assert decision.reason == "freeze week"


def test_a_rejection_without_a_reason_is_refused():
    gate = Gate(Decision(decision="reject", approver="bob", reason="", code=""), None)
    verdict, decision = gate.run()
    assert (verdict, decision) == ("not", None)
    assert len(gate.waited) == 2


def test_no_decision_in_time_is_acted_on_under_the_lock():
    gate = Gate(None)
    assert gate.run() == ("not", None)
    assert gate.locked == 1
