"""Status badges: the latest CI result of a service's branch, the live version of an
environment, as flat SVG images a README embeds. Pure: the webhook server reads the events."""

from __future__ import annotations

import dataclasses
import hashlib
import html
from collections.abc import Sequence

from deliver.planning.events import CI_FAILED, CI_STARTED, CI_SUCCEEDED
from deliver.planning.metrics import ReleaseRecord
from deliver.planning.release import Outcome

GREEN, RED, BLUE, GREY = "#4c1", "#e05d44", "#007ec6", "#9f9f9f"

# Verdana 11px, as badges are drawn: narrow letters, wide letters, everything else.
_NARROW, _WIDE = set("fijlrt.,:;!|'()[] "), set("mwMW@%")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Badge:
    label: str
    message: str
    colour: str

    def svg(self) -> str:
        label_w, message_w = _text_width(self.label) + 10, _text_width(self.message) + 10
        width = label_w + message_w
        label, message = html.escape(self.label), html.escape(self.message)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" '
            f'role="img" aria-label="{label}: {message}">'
            f"<title>{label}: {message}</title>"
            f'<rect width="{label_w}" height="20" fill="#555"/>'
            f'<rect x="{label_w}" width="{message_w}" height="20" fill="{self.colour}"/>'
            '<g fill="#fff" text-anchor="middle" '
            'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
            f'<text x="{label_w / 2:g}" y="14">{label}</text>'
            f'<text x="{label_w + message_w / 2:g}" y="14">{message}</text>'
            "</g></svg>"
        )

    def etag(self) -> str:
        return '"' + hashlib.sha256(self.svg().encode()).hexdigest()[:16] + '"'


def _text_width(text: str) -> int:
    return sum(4 if c in _NARROW else 10 if c in _WIDE else 7 for c in text)


CI_STATUS = {
    CI_SUCCEEDED: ("passing", GREEN),
    CI_FAILED: ("failing", RED),
    CI_STARTED: ("running", BLUE),
}


def ci_badge(latest_event: str | None) -> Badge:
    """From the newest CI event of the service and branch (None: CI never ran it)."""
    message, colour = CI_STATUS.get(latest_event or "", ("unknown", GREY))
    return Badge(label="ci", message=message, colour=colour)


def live_version(records: Sequence[ReleaseRecord], environment: str) -> str | None:
    """The version serving in `environment` after the newest release or rollback that changed
    it; failed releases and switch-backs left the one before serving."""
    changed = (
        r for r in records if r.environment == environment and r.outcome is not Outcome.FAILED
    )
    for record in sorted(changed, key=lambda r: r.at, reverse=True):
        if record.outcome is Outcome.SWITCHED_BACK:
            if record.replaced:
                return record.replaced
            continue
        return record.version
    return None


def environment_badge(environment: str, version: str | None) -> Badge:
    if version is None:
        return Badge(label=environment, message="nothing live", colour=GREY)
    return Badge(label=environment, message=version, colour=BLUE)
