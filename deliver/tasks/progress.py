"""Progress artifacts for long steps (build, push, health wait, drain), updated as they advance.

Keys are stable per service and step, so the UI's Artifacts page shows each step's history. A
progress artifact that cannot be written is logged and skipped: it never fails the step.
"""

from __future__ import annotations

import re
import time
from typing import cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.exceptions import MissingContextError

MIN_INTERVAL_S = 0.5  # at most two API writes a second per step


def progress_key(*parts: str) -> str:
    """Lowercase letters, digits and dashes, as Prefect requires of artifact keys."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


class Progress:
    def __init__(self, key: str, description: str) -> None:
        self.key, self._last, self._shown = key, 0.0, -1.0
        self._id: UUID | None = None
        try:
            created = create_progress_artifact(0.0, key=key, description=description, _sync=True)  # type: ignore[call-arg]
            self._id = cast(UUID, created)
        except MissingContextError:  # outside a flow or task run: nothing to attach it to
            return
        except Exception as exc:  # the API is down or refused it
            get_run_logger().warning("Progress artifact %s not created: %s", key, exc)

    def update(self, percent: float, *, force: bool = False) -> None:
        percent = max(0.0, min(100.0, percent))
        now = time.monotonic()
        if self._id is None or percent == self._shown:
            return
        if not force and now - self._last < MIN_INTERVAL_S:
            return
        self._last, self._shown = now, percent
        try:
            update_progress_artifact(self._id, round(percent, 1), _sync=True)  # type: ignore[call-arg]
        except Exception as exc:
            get_run_logger().warning("Progress artifact %s not updated: %s", self.key, exc)

    def done(self) -> None:
        self.update(100.0, force=True)
