"""The alerts `deliver deploy` sets up as Prefect automations, sending through a notification
block: no nightly run succeeded in 26 hours; a release has waited too long for its approval.

Both are proactive triggers: they fire when an expected event does *not* arrive in time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast
from uuid import UUID

from deliver.planning.metrics import duration_text

NIGHTLY_ALERT = "deliver: no successful nightly run"
APPROVAL_ALERT = "deliver: release waiting for approval too long"
# Whatever a flow run does next once resumed, or how it ends.
RESUMED_OR_ENDED = "Running Scheduled Pending Completed Failed Cancelled Cancelling Crashed"
AFTER_A_PAUSE = {f"prefect.flow-run.{state}" for state in RESUMED_OR_ENDED.split()}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AlertSettings:
    notify_block: str  # type-slug/name
    nightly_within_s: float = 26 * 3600
    approval_within_s: float = 3600
    nightly_flow: str = "nightly"
    release_flow: str = "release"


def _flow(name: str) -> dict[str, str]:
    return {"prefect.resource.role": "flow", "prefect.resource.name": name}


def alert_specs(settings: AlertSettings, block_document_id: UUID) -> list[dict[str, Any]]:
    """The automations' fields, as `Automation(**spec)` takes them. Pure."""
    silence = duration_text(settings.nightly_within_s)
    waited = duration_text(settings.approval_within_s)
    return [
        {
            "name": NIGHTLY_ALERT,
            "description": f"No nightly run completed in {silence}.",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "threshold": 1,
                "within": settings.nightly_within_s,
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": _flow(settings.nightly_flow),
                "expect": ["prefect.flow-run.Completed"],
            },
            "actions": [
                {
                    "type": "send-notification",
                    "block_document_id": block_document_id,
                    "subject": f"nightly: no successful run in {silence}",
                    "body": "Look at the nightly deployment's runs in the Prefect UI.",
                }
            ],
        },
        {
            "name": APPROVAL_ALERT,
            "description": f"A release has waited over {waited} for its approval.",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "threshold": 1,
                "within": settings.approval_within_s,
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": _flow(settings.release_flow),
                "after": ["prefect.flow-run.Paused", "prefect.flow-run.Suspended"],
                "expect": sorted(AFTER_A_PAUSE),
                "for_each": ["prefect.resource.id"],
            },
            "actions": [
                {
                    "type": "send-notification",
                    "block_document_id": block_document_id,
                    "subject": f"release waiting for approval over {waited}",
                    "body": "Release {{ flow_run.name }} is still waiting: `deliver approvals`, "
                    "then `deliver approve <run id> --approver <you> --code <your code> "
                    '--reason "<why>"`.',
                }
            ],
        },
    ]


def ensure_alerts(settings: AlertSettings) -> list[str]:
    """Create or replace both automations; returns their ids."""
    from prefect.automations import Automation
    from prefect.blocks.core import Block

    from deliver.tasks.notify import notification_block

    block = notification_block(settings.notify_block)
    assert isinstance(block, Block)  # noqa: S101 (notification blocks are blocks)
    block_id = block._block_document_id
    if block_id is None:  # pragma: no cover (loaded blocks have ids)
        raise ValueError(f"{settings.notify_block} has no id on the server")
    ids = []
    for spec in alert_specs(settings, block_id):
        remove_alert(spec["name"])
        created = cast(Automation, Automation.model_validate(spec).create(_sync=True))  # type: ignore[call-arg]
        ids.append(str(created.id))
    return ids


def remove_alert(name: str) -> None:
    from prefect.automations import Automation

    while True:
        try:
            found = cast(Automation, Automation.read(name=name, _sync=True))  # type: ignore[call-overload]
        except ValueError:
            return
        found.delete(_sync=True)  # type: ignore[call-arg]
