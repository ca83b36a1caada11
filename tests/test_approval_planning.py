"""One-time codes (RFC 6238 test vectors) and the approval policy."""

import base64

import pytest

from deliver.planning.approval import (
    Decision,
    PolicyView,
    decode_secret,
    refusal,
    totp,
    verify_totp,
)

RFC_SECRET = b"12345678901234567890"


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_sha1_vectors(at, expected):
    """The SHA-1 test vectors of RFC 6238, appendix B (8 digits)."""
    assert totp(RFC_SECRET, at=at, digits=8) == expected


def test_verify_accepts_one_step_of_drift_only():
    """A code from the previous 30 s step verifies; one from three steps ago does not."""
    secret = base64.b32encode(RFC_SECRET).decode()
    now = 1_700_000_000.0
    assert verify_totp(secret, totp(RFC_SECRET, at=now - 30), at=now)
    assert not verify_totp(secret, totp(RFC_SECRET, at=now - 90), at=now)


POLICY = PolicyView(
    approvers=("alice", "bob"),
    allow_self_approval=False,
    totp_secrets={"alice": base64.b32encode(RFC_SECRET).decode()},
)


def decide(decision="approve", approver="bob", reason="", code="") -> str | None:
    return refusal(
        POLICY,
        Decision(decision=decision, approver=approver, reason=reason, code=code),
        requester="carol",
        at=1_700_000_000.0,
    )


def test_policy_accepts_an_approver():
    """An approver without a secret approves with no code."""
    assert decide() is None


def test_policy_refuses_strangers_self_approval_bare_rejections_and_bad_codes():
    """Not an approver, the requester approving, a rejection with no reason, a wrong code."""
    assert "not an approver" in (decide(approver="mallory") or "")
    assert "needs a reason" in (decide(decision="reject") or "")
    assert "wrong" in (decide(approver="alice", code="000000") or "")
    self_policy = refusal(
        POLICY,
        Decision(decision="approve", approver="bob", reason="", code=""),
        requester="bob",
        at=0,
    )
    assert "may not approve" in (self_policy or "")


def test_policy_accepts_a_right_code():
    """An approver with a secret approves with the current code."""
    assert decide(approver="alice", code=totp(RFC_SECRET, at=1_700_000_000.0)) is None


def test_a_used_code_is_refused_while_it_is_still_valid():
    """A code accepted once names its time step; offered again for that step it is refused."""
    from deliver.planning.approval import Decision, PolicyView, refusal, totp, totp_step

    secret = "JBSWY3DPEHPK3PXPJBSWY3DP"  # noqa: S105 (RFC 6238's sample secret)
    policy = PolicyView(
        approvers=("alice",), allow_self_approval=False, totp_secrets={"alice": secret}
    )
    code = totp(decode_secret(secret), at=1_000_000.0)
    decision = Decision(decision="approve", approver="alice", reason="", code=code)
    step = totp_step(secret, code, at=1_000_010.0)
    assert step == 1_000_000 // 30
    assert refusal(policy, decision, requester="bob", at=1_000_010.0) is None
    refused = refusal(policy, decision, requester="bob", at=1_000_010.0, used_steps=[step])
    assert refused is not None
    assert "used already" in refused


def test_the_evidence_says_what_passed_on_staging_not_a_fixed_sentence():
    """Staging's record of the release that put this digest live says which checks ran."""
    from deliver.planning.approval import evidence_markdown
    from deliver.planning.release import HistoryRecord, HostState, Outcome, Release, Slot

    image = "reg/app@sha256:" + "1" * 64
    live = Release(version="1.2", image=image, git_sha="abcdef1", slot=Slot.BLUE, since="t1")

    def evidence(*records: HistoryRecord) -> str:
        staging = HostState(live=live, kept=(image,), history=records)
        nothing = HostState(live=None, kept=(), history=())
        return evidence_markdown(
            image=image,
            version="1.2",
            git_sha="abcdef1",
            requested_by="bob",
            production=nothing,
            staging=staging,
            ci="# CI of app 1.2",
        )

    only_health = HistoryRecord(
        at="t1", outcome=Outcome.LIVE, version="1.2", image=image, checks=("health /health",)
    )
    assert "passed there: health /health\n" in evidence(only_health)
    assert "smoke" not in evidence(only_health)
    later_failure = HistoryRecord(at="t2", outcome=Outcome.FAILED, version="1.3", image="x@y")
    assert "passed there: health /health" in evidence(only_health, later_failure)
    legacy = HistoryRecord(at="t1", outcome=Outcome.LIVE, version="1.2", image=image)
    assert "which checks ran there was not recorded" in evidence(legacy)
    assert "health and smoke checks passed" not in evidence(legacy)


def test_an_emergency_rollback_is_approved_by_its_requester_with_a_code_only():
    """Dave may approve his own production rollback with his code: not without a code, not a
    release, and not someone else's rollback (he is no approver)."""
    at = 1_700_000_000.0
    secret = base64.b32encode(RFC_SECRET).decode()
    policy = PolicyView(
        approvers=("alice",),
        allow_self_approval=False,
        totp_secrets={"dave": secret},
        emergency_rollback=("dave",),
    )

    def judged(approver: str, requester: str, *, code: str = "", rollback: bool = True) -> str:
        decision = Decision(decision="approve", approver=approver, reason="", code=code)
        return refusal(policy, decision, requester=requester, at=at, rollback=rollback) or "ok"

    code = totp(RFC_SECRET, at=at)
    assert judged("dave", "dave", code=code) == "ok"
    assert "wrong" in judged("dave", "dave")
    assert "not an approver" in judged("dave", "dave", code=code, rollback=False)
    assert "not an approver" in judged("dave", "erin", code=code)
    assert "may not approve" in judged("alice", "alice")  # not listed for emergencies


def test_the_rollback_evidence_names_what_serves_and_what_comes_back():
    from deliver.planning.approval import rollback_evidence_markdown
    from deliver.planning.release import HistoryRecord, HostState, Outcome, Release, Slot

    old, new = "reg/app@sha256:" + "1" * 64, "reg/app@sha256:" + "2" * 64
    state = HostState(
        live=Release(version="2.0", image=new, git_sha="b" * 7, slot=Slot.GREEN, since="t2"),
        kept=(new, old),
        history=(HistoryRecord(at="t1", outcome=Outcome.LIVE, version="1.0", image=old),),
    )
    text = rollback_evidence_markdown(
        environment="production",
        to_version="1.0",
        image=old,
        requested_by="dave",
        production=state,
        emergency=("dave",),
    )
    assert "## Roll production back to 1.0" in text
    assert "production now: 2.0" in text
    assert "it went live at t1" in text
    assert "dave may approve their own rollback" in text


def test_a_policy_that_requires_codes_refuses_an_approver_without_a_secret():
    """The block's default: every approver proves who they are; one without a secret cannot."""
    import dataclasses

    from pydantic import SecretStr, ValidationError

    from blocks.approval_policy import ApprovalPolicy

    strict = dataclasses.replace(POLICY, require_codes=True)
    bob = Decision(decision="approve", approver="bob", reason="", code="")
    assert "requires a one-time code" in (refusal(strict, bob, requester="carol", at=0.0) or "")
    with pytest.raises(ValidationError, match="bob must have a TOTP secret"):
        ApprovalPolicy(approvers=["alice", "bob"], totp_secrets={"alice": SecretStr("A" * 16)})
    assert ApprovalPolicy(approvers=["bob"], require_codes=False).require_codes is False
