"""What a finished release leaves behind in Prefect: an event for automations and metrics,
and a report artifact under a stable key, so the UI shows each environment's history."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from deliver.planning.events import release_finished
from deliver.planning.report import release_report
from deliver.tasks.deploy import image_labels
from deliver.tasks.git import commits_between

SOURCE = "org.opencontainers.image.source"
COMMIT_TIME = "org.opencontainers.image.created"  # CI sets it to the commit's time


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FinishedRelease:
    block: str
    service: str
    environment: str
    outcome: str
    version: str
    image: str
    git_sha: str
    requested_by: str
    at: str
    previous: tuple[str, str] | None  # (version, git sha)
    approval: Mapping[str, str] | None = None
    timings_s: Mapping[str, float] = dataclasses.field(default_factory=dict)
    detail: str = ""


def report_key(service: str, environment: str) -> str:
    return f"release-{service}-{environment}".lower()


@task(name="publish_outcome", task_run_name="publish-{finished.outcome}")
def publish_outcome(finished: FinishedRelease) -> None:
    labels = image_labels(finished.block, finished.image)
    commits = None
    if finished.previous is not None and labels.get(SOURCE):
        commits = commits_between(labels[SOURCE], finished.previous[1], finished.git_sha)
    emit_event(
        **release_finished(
            service=finished.service,
            environment=finished.environment,
            outcome=finished.outcome,
            version=finished.version,
            git_sha=finished.git_sha,
            at=finished.at,
            commit_time=labels.get(COMMIT_TIME) or None,
            replaced=finished.previous[0] if finished.previous else None,
            detail=finished.detail,
        )
    )
    report = release_report(
        service=finished.service,
        environment=finished.environment,
        outcome=finished.outcome,
        version=finished.version,
        image=finished.image,
        git_sha=finished.git_sha,
        requested_by=finished.requested_by,
        previous=finished.previous,
        approval=finished.approval,
        timings_s=finished.timings_s,
        commits=commits,
        detail=finished.detail,
    )
    create_markdown_artifact(
        key=report_key(finished.service, finished.environment),
        markdown=report,
        description=f"{finished.service} {finished.version} → {finished.environment}: "
        f"{finished.outcome}",
    )
