"""Webhook deliveries judged before anything runs: signature, size, shape, routing."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from deliver.planning.webhook import judge, signature_matches

SECRET = b"webhook-test-secret"
SHA = "a" * 40
REPO = "https://git.example.invalid/team/app.git"


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def push(ref: str = "refs/heads/main", after: str = SHA, **extra: object) -> bytes:
    return json.dumps(
        {"ref": ref, "after": after, "repository": {"clone_url": REPO}, **extra}
    ).encode()


def pull_request(action: str = "opened") -> bytes:
    head = {"sha": SHA, "repo": {"clone_url": REPO}}
    return json.dumps({"action": action, "pull_request": {"head": head}}).encode()


def headers(body: bytes, event: str = "push", **overrides: str) -> dict[str, str]:
    found = {
        "x-github-event": event,
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-hub-signature-256": sign(body),
        "content-length": str(len(body)),
    }
    found.update(overrides)
    return {k: v for k, v in found.items() if v != "-"}


def test_githubs_published_test_vector():
    """docs.github.com, "Validating webhook deliveries": secret, payload and signature."""
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature_matches(b"It's a Secret to Everybody", b"Hello, World!", signature)
    assert not signature_matches(b"It's a Secret to Everybody", b"Hello, World?", signature)


def test_push_to_a_branch_starts_ci():
    body = push()
    verdict = judge(headers(body), body, secret=SECRET)
    assert verdict.status == 201
    assert verdict.run is not None
    assert (verdict.run.kind, verdict.run.ref, verdict.run.sha) == ("ci", "main", SHA)


def test_push_of_a_v_tag_starts_ci_then_production():
    body = push("refs/tags/v1.4.2")
    verdict = judge(headers(body), body, secret=SECRET)
    assert verdict.run is not None
    assert verdict.run.kind == "ci-then-production"
    assert not verdict.run.untrusted
    assert verdict.run.ref == "v1.4.2"


@pytest.mark.parametrize("action", ["opened", "synchronize"])
def test_pull_request_runs_ci_on_its_head_without_deploying(action):
    body = pull_request(action)
    verdict = judge(headers(body, "pull_request"), body, secret=SECRET)
    assert verdict.run is not None
    assert (verdict.run.kind, verdict.run.ref) == ("ci-only", SHA)
    assert verdict.run.untrusted  # its CI never writes a cache a trusted run reads


@pytest.mark.parametrize(
    ("event", "body", "status"),
    [
        ("ping", b'{"zen": "Keep it logically awesome."}', 200),
        ("issues", b'{"action": "opened"}', 202),
        ("pull_request", pull_request("closed"), 202),
        ("push", push("refs/tags/nightly"), 202),
        ("push", push(after="0" * 40, deleted=True), 202),
    ],
)
def test_other_deliveries_are_answered_and_start_nothing(event, body, status):
    verdict = judge(headers(body, event), body, secret=SECRET)
    assert (verdict.status, verdict.run) == (status, None)


BODY = push()
MALFORMED: dict[str, tuple[dict[str, str], bytes]] = {
    "no signature": (headers(BODY, **{"x-hub-signature-256": "-"}), BODY),
    "wrong secret": (headers(BODY, **{"x-hub-signature-256": sign(BODY, b"other")}), BODY),
    "truncated signature": (headers(BODY, **{"x-hub-signature-256": sign(BODY)[:-8]}), BODY),
    "sha1 signature": (
        headers(
            BODY,
            **{"x-hub-signature-256": "sha1=" + hmac.new(SECRET, BODY, hashlib.sha1).hexdigest()},
        ),
        BODY,
    ),
    "bare hex signature": (
        headers(BODY, **{"x-hub-signature-256": sign(BODY).removeprefix("sha256=")}),
        BODY,
    ),
    "upper-case hex": (headers(BODY, **{"x-hub-signature-256": sign(BODY).upper()}), BODY),
    "non-ASCII signature": (headers(BODY, **{"x-hub-signature-256": "sha256=\u00e9" * 8}), BODY),
    "re-serialized body": (headers(BODY), json.dumps(json.loads(BODY), indent=1).encode()),
    "body changed after signing": (headers(BODY), BODY.replace(b"main", b"evil")),
    "bad JSON": (headers(b"{not json"), b"{not json"),
    "JSON that is not an object": (headers(b"[1, 2]"), b"[1, 2]"),
    "oversized body": (headers(b"x" * 2048), b"x" * 2048),
    "oversized declared length": (headers(BODY, **{"content-length": "99999999"}), BODY),
    "no event header": (headers(BODY, **{"x-github-event": "-"}), BODY),
    "wrong event header": (headers(BODY, "pull_request"), BODY),
    "no delivery id": (headers(BODY, **{"x-github-delivery": "-"}), BODY),
    "delivery id with a newline": (headers(BODY, **{"x-github-delivery": "a\nb"}), BODY),
    "push without a sha": (headers(push(after="main")), push(after="main")),
    "empty body": (headers(b""), b""),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_deliveries_are_refused_with_4xx_and_start_nothing(case):
    request_headers, body = MALFORMED[case]
    verdict = judge(request_headers, body, secret=SECRET, max_body=1024)
    assert 400 <= verdict.status < 500, (case, verdict)
    assert verdict.run is None


def test_the_size_limit_is_checked_before_the_signature():
    body = b"x" * 2048
    verdict = judge(
        headers(body, **{"x-hub-signature-256": "-"}), body, secret=SECRET, max_body=1024
    )
    assert verdict.status == 413
