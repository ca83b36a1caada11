"""Waiting for a production approval: resumes that break the policy are refused and waited past.

No Prefect here: the flow passes in how to wait (suspend or pause), how to judge a decision,
and the environment's lock, so the loop is tested in milliseconds with stand-ins for them.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from deliver.planning.approval import Decision

T = TypeVar("T")


def await_decision(
    *,
    wait: Callable[[int, str], Decision | None],
    refusal: Callable[[Decision], str | None],
    locked: Callable[[], AbstractContextManager[object]],
    decided: Callable[[Decision | None], T],
    timeout_s: float,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Wait for a decision the policy accepts, then act on it with the environment's lock held.

    `wait(remaining_s, key)` returns the next answer, or None once the time is up; `decided` gets
    the accepted decision (approve or reject), or None for no decision in time. The decision is
    judged with the lock already held: taken first, it is the first write after the resume.
    """
    deadline = clock() + timeout_s
    for attempt in itertools.count(1):
        remaining = max(1, int(deadline - clock()))
        answer = wait(remaining, f"approval-{attempt}")
        with locked():
            if answer is None:
                log.warning("No decision within %s s: production was not changed.", timeout_s)
                return decided(None)
            refused = refusal(answer)
            if refused:
                log.warning("Resume refused (%s); still waiting for a valid decision.", refused)
                continue
            return decided(answer)
    raise AssertionError("unreachable")  # pragma: no cover
