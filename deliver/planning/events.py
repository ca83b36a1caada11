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
