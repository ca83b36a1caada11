"""What a finished release leaves behind in Prefect: an event for automations and metrics, a
report artifact under a stable key (the UI shows each environment's history), and a notice."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from deliver.planning.outcome import FinishedRelease
from deliver.tasks.git import commits_between
from deliver.tasks.notify import notify, run_link


@task(name="publish_outcome", task_run_name="publish-{finished.outcome}")
def publish_outcome(finished: FinishedRelease) -> None:
    commits = None
    if finished.previous is not None and finished.source:
        commits = commits_between(finished.source, finished.previous[1], finished.git_sha)
    emit_event(**finished.event())
    create_markdown_artifact(
        key=finished.report_key(),
        markdown=finished.report(commits),
        description=finished.report_description(),
    )
    if changes := finished.changelog(commits):
        create_markdown_artifact(
            key=finished.changelog_key(),
            markdown=changes,
            description=f"{finished.service} {finished.version}: what changed",
        )


class PrefectReporter:
    """The `Reporter` of the flows: publish the outcome, then tell the team's chat."""

    def __init__(self, notify_block: str | None, run: str) -> None:
        self.notify_block, self.run = notify_block, run

    def finished(self, release: FinishedRelease) -> None:
        try:
            publish_outcome(release)
        except Exception as exc:  # the API is down: the notice may still get through
            get_run_logger().error("Release outcome not published: %s: %s", type(exc).__name__, exc)
        try:
            notify(self.notify_block, release.notice(link=run_link(self.run)))
        except Exception as exc:
            get_run_logger().error("Release notice not sent: %s: %s", type(exc).__name__, exc)
