"""What a GitHub-style webhook delivery asks for, decided before anything runs.

Order matters: the size limit before the signature (no hashing of a huge body), the signature
before parsing (no parsing of unauthenticated input), then the event's shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from deliver.planning.inputs import repository_problem

MAX_BODY_BYTES = 1024 * 1024
SIGNATURE_PREFIX = "sha256="
RELEASE_TAG = re.compile(r"^v\d[\w.+-]*$")
PULL_REQUEST_ACTIONS = frozenset({"opened", "synchronize"})

Kind = Literal["ci", "ci-then-production", "ci-only"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """The CI run a delivery starts, and whether a release follows it."""

    kind: Kind
    repo: str
    ref: str
    sha: str
    delivery: str
    untrusted: bool = False  # a pull request's code: CI keeps its caches apart


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    status: int
    reason: str
    run: Run | None = None


def signature_matches(secret: bytes, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256` is `sha256=` and the HMAC-SHA256 of the raw body, compared in
    constant time."""
    if not header or not header.isascii() or not header.startswith(SIGNATURE_PREFIX):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix(SIGNATURE_PREFIX))


def judge(
    headers: Mapping[str, str], body: bytes, *, secret: bytes, max_body: int = MAX_BODY_BYTES
) -> Verdict:
    """The answer to one delivery; `headers` with lower-case names."""
    declared = headers.get("content-length")
    if (declared is not None and declared.isdigit() and int(declared) > max_body) or (
        len(body) > max_body
    ):
        return Verdict(status=413, reason=f"body over {max_body} bytes")
    event = headers.get("x-github-event")
    if not event:
        return Verdict(status=400, reason="no X-GitHub-Event header")
    if not signature_matches(secret, body, headers.get("x-hub-signature-256")):
        return Verdict(status=401, reason="missing or wrong X-Hub-Signature-256")
    delivery = headers.get("x-github-delivery", "")
    if not re.fullmatch(r"[\w-]{1,100}", delivery):
        return Verdict(status=400, reason="missing or malformed X-GitHub-Delivery")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return Verdict(status=400, reason="body is not JSON")
    if not isinstance(payload, dict):
        return Verdict(status=400, reason="body is not a JSON object")
    if event == "ping":
        return Verdict(status=200, reason="pong")
    if event == "push":
        return _push(payload, delivery)
    if event == "pull_request":
        return _pull_request(payload, delivery)
    return Verdict(status=202, reason=f"event {event!r} ignored")


def _text(payload: Mapping[str, Any], *path: str) -> str | None:
    value: Any = payload
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None


def _is_sha(value: str | None) -> bool:
    return value is not None and re.fullmatch(r"[0-9a-f]{40}", value) is not None


def _push(payload: Mapping[str, Any], delivery: str) -> Verdict:
    ref, sha = _text(payload, "ref"), _text(payload, "after")
    repo = _text(payload, "repository", "clone_url")
    if ref is None or repo is None or not _is_sha(sha):
        return Verdict(status=400, reason="not a push payload (ref, after, repository.clone_url)")
    if problem := repository_problem(repo):
        return Verdict(status=400, reason=f"repository.clone_url: {problem}")
    assert sha is not None  # noqa: S101 (checked by _is_sha)
    if payload.get("deleted") is True or set(sha) == {"0"}:
        return Verdict(status=202, reason=f"{ref} deleted: nothing to build")
    if ref.startswith("refs/heads/"):
        branch = ref.removeprefix("refs/heads/")
        run = Run(kind="ci", repo=repo, ref=branch, sha=sha, delivery=delivery)
        return Verdict(status=201, reason=f"CI of {branch}", run=run)
    tag = ref.removeprefix("refs/tags/")
    if ref.startswith("refs/tags/") and RELEASE_TAG.match(tag):
        run = Run(kind="ci-then-production", repo=repo, ref=tag, sha=sha, delivery=delivery)
        return Verdict(status=201, reason=f"CI of {tag}, then its production release", run=run)
    return Verdict(status=202, reason=f"{ref} is neither a branch nor a v* tag")


def _pull_request(payload: Mapping[str, Any], delivery: str) -> Verdict:
    action = _text(payload, "action")
    sha = _text(payload, "pull_request", "head", "sha")
    repo = _text(payload, "pull_request", "head", "repo", "clone_url")
    if action is None or repo is None or not _is_sha(sha):
        return Verdict(status=400, reason="not a pull_request payload (action, head sha, repo)")
    if problem := repository_problem(repo):
        return Verdict(status=400, reason=f"pull_request.head.repo.clone_url: {problem}")
    assert sha is not None  # noqa: S101 (checked by _is_sha)
    if action not in PULL_REQUEST_ACTIONS:
        return Verdict(status=202, reason=f"pull_request {action!r} ignored")
    run = Run(kind="ci-only", repo=repo, ref=sha, sha=sha, delivery=delivery, untrusted=True)
    return Verdict(status=201, reason=f"CI of pull request head {sha[:7]}, no deploy", run=run)
