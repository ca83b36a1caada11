"""HTTP probes of a service: health with retries, backoff and an overall deadline."""

from __future__ import annotations

import dataclasses
import time

import httpx


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HealthResult:
    url: str
    healthy: bool
    status_code: int | None
    attempts: int
    elapsed_s: float
    detail: str


def wait_for_health(
    url: str,
    *,
    deadline_s: float,
    first_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
    growth: float = 1.5,
    request_timeout_s: float = 2.0,
) -> HealthResult:
    """Poll `url` until it answers 200 or `deadline_s` passes; delays grow by `growth` to a cap.

    Starting short matters: a service up at 0.35 s is seen at 0.36 s, not at the next doubling.
    """
    started = time.monotonic()
    delay, attempts = first_delay_s, 0
    status: int | None = None
    detail = "no attempt made"
    with httpx.Client(timeout=request_timeout_s) as client:
        while True:
            attempts += 1
            try:
                response = client.get(url)
                status = response.status_code
                detail = f"answered {status}"
                if status == 200:
                    elapsed = time.monotonic() - started
                    return HealthResult(
                        url=url, healthy=True, status_code=status, attempts=attempts,
                        elapsed_s=elapsed, detail=detail,
                    )  # fmt: skip
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            remaining = deadline_s - (time.monotonic() - started)
            if remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * growth, max_delay_s)
    return HealthResult(
        url=url, healthy=False, status_code=status, attempts=attempts,
        elapsed_s=time.monotonic() - started,
        detail=f"{detail} after {attempts} attempt(s) in {deadline_s:.0f} s",
    )  # fmt: skip
