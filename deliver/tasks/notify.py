"""Notices sent through a Prefect notification block (Slack webhook, custom webhook, ...)."""

from __future__ import annotations

import time
from typing import Any, cast

from prefect import get_run_logger, task
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL

from deliver.errors import BlockInvalid
from deliver.planning.notices import (
    Notice,
    NoticeKind,
    block_reference_problem,
    body,
    subject,
)
from deliver.tasks.loading import load_block

ATTEMPTS = 2


def notification_block(reference: str) -> NotificationBlock:
    """Load `type-slug/name` and check it can notify; its secrets are then redacted."""
    problem = block_reference_problem(reference)
    if problem:
        raise BlockInvalid(
            block_type="Notification", block=reference, field="(name)", detail=problem
        )
    try:
        block = load_block(Block, reference)
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise BlockInvalid(
            block_type="Notification", block=reference, field="(block)", detail=str(exc)
        ) from None
    if not isinstance(block, NotificationBlock):
        detail = f"a {type(block).__name__} block cannot send notifications"
        raise BlockInvalid(
            block_type="Notification", block=reference, field="(type)", detail=detail
        )
    return block


def run_link(flow_run_id: str) -> str:
    """The run's page in the Prefect UI, when the UI's address is known."""
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else ""


def _once_per_run(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """A suspended release runs its flow again from the top once resumed: the notice it sent
    before the wait must not go out twice."""
    notice: Notice = parameters["notice"]
    run = flow_run.get_id() or context.task_run.id
    return f"notify-{run}-{notice.kind.value}-{notice.environment}-{notice.version}"


@task(
    name="notify",
    task_run_name="notify-{notice.kind.value}",
    cache_key_fn=_once_per_run,
    persist_result=True,
)
def notify(reference: str | None, notice: Notice) -> bool:
    """Send `notice`; a chat outage is logged, never fails the delivery it reports on."""
    if reference is None:
        return False
    logger = get_run_logger()
    block = notification_block(reference)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with block.raise_on_failure():
                cast(Any, block).notify(body(notice), subject(notice))  # sync call: a result
        except Exception as exc:  # any transport or HTTP error of any block type
            if attempt == ATTEMPTS:
                logger.warning(
                    "Notification %r not sent through %s: %s: %s",
                    notice.kind.value,
                    reference,
                    type(exc).__name__,
                    exc,
                )
                return False
            time.sleep(1.0)
        else:
            logger.info("Notified %s: %s", reference, subject(notice))
            return True
    return False


def notify_failure(
    reference: str | None, kind: NoticeKind, *, service: str, ref: str, error: BaseException
) -> None:
    """Tell of a failed flow run: what failed, in one line, and the run's page."""
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    run = str(flow_run.get_id() or "")
    notify(
        reference,
        Notice(kind=kind, service=service, version=ref, detail=detail, link=run_link(run)),
    )
