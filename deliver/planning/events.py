"""The events a delivery emits for Prefect automations to act on (deployment triggers)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from deliver.planning.release import Outcome

CI_STARTED = "deliver.ci.started"
CI_SUCCEEDED = "deliver.ci.succeeded"
CI_FAILED = "deliver.ci.failed"
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


def ci_progress(*, event: str, service: str, ref: str, kind: str) -> dict[str, Any]:
    """`emit_event` arguments for a CI run of the service's ref that started or failed (what
    status badges show); a green run emits `ci_succeeded`."""
    return {
        "event": event,
        "resource": {
            "prefect.resource.id": f"deliver.service.{service}",
            "prefect.resource.name": service,
            "deliver.ref": ref,
            "deliver.ref-kind": ref_kind(ref, kind),
        },
    }


RELEASE_FINISHED = "deliver.release.finished"


# Payloads carry their vocabulary's version: before it, "rolled-back" meant a release that
# switched back and "rollback" an operator's rollback (see `outcome_of`).
OUTCOME_SCHEMA = 2
_FIRST_SCHEMA = {"rolled-back": Outcome.SWITCHED_BACK, "rollback": Outcome.ROLLED_BACK}


def outcome_of(payload: Mapping[str, Any]) -> Outcome:
    """The outcome a `deliver.release.finished` payload names, in today's vocabulary."""
    named = str(payload["outcome"])
    if payload.get("schema", 1) == 1 and named in _FIRST_SCHEMA:
        return _FIRST_SCHEMA[named]
    return Outcome(named)


def release_finished(
    *,
    service: str,
    environment: str,
    outcome: Outcome,
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
            "deliver.outcome": outcome.value,
        },
        "payload": {
            "schema": OUTCOME_SCHEMA,
            "environment": environment,
            "outcome": outcome.value,
            "version": version,
            "git_sha": git_sha,
            "at": at,
            "commit_time": commit_time,
            "replaced": replaced,
            "detail": detail[:300],
        },
    }
