"""The events a delivery emits for Prefect automations to act on (deployment triggers)."""

from __future__ import annotations

import re
from typing import Any

CI_SUCCEEDED = "deliver.ci.succeeded"
RELEASE_TAG = re.compile(r"^v\d[\w.+-]*$")


def ref_kind(ref: str, kind: str) -> str:
    """`release-tag` for a v* tag (it goes to production), else git's kind of ref."""
    return "release-tag" if kind == "tag" and RELEASE_TAG.match(ref) else kind


def ci_succeeded(
    *, service: str, ref: str, kind: str, image: str, version: str, sha: str
) -> dict[str, Any]:
    """`emit_event` arguments for a green CI run: the resource names what triggers match on
    (the service, the ref and its kind); the payload is what a release needs."""
    return {
        "event": CI_SUCCEEDED,
        "resource": {
            "prefect.resource.id": f"deliver.service.{service}",
            "prefect.resource.name": service,
            "deliver.ref": ref,
            "deliver.ref-kind": ref_kind(ref, kind),
        },
        "payload": {"image": image, "version": version, "sha": sha, "ref": ref},
    }


RELEASE_FINISHED = "deliver.release.finished"


class Outcome:
    """How a release (or a rollback) ended, as `deliver.release.finished` says it."""

    LIVE = "live"  # the new version serves
    FAILED = "failed"  # it never served traffic; the old version kept serving
    ROLLED_BACK = "rolled-back"  # it served, failed its checks, traffic moved back
    ROLLBACK = "rollback"  # an operator put a kept version back


def release_finished(
    *,
    service: str,
    environment: str,
    outcome: str,
    version: str,
    git_sha: str,
    at: str,
    commit_time: str | None,
    replaced: str | None,
    detail: str = "",
) -> dict[str, Any]:
    """`emit_event` arguments for the end of a release: what delivery metrics are made of."""
    return {
        "event": RELEASE_FINISHED,
        "resource": {
            "prefect.resource.id": f"deliver.service.{service}",
            "prefect.resource.name": service,
            "deliver.environment": environment,
            "deliver.outcome": outcome,
        },
        "payload": {
            "environment": environment,
            "outcome": outcome,
            "version": version,
            "git_sha": git_sha,
            "at": at,
            "commit_time": commit_time,
            "replaced": replaced,
            "detail": detail[:300],
        },
    }
