"""HTTP probes of a service: health with retries, backoff and an overall deadline."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import httpx

from deliver.planning.release import smoke_problem
from deliver.tasks.loading import http_client
from deliver.tasks.progress import Progress


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
    max_delay_s: float = 0.25,
    growth: float = 1.5,
    request_timeout_s: float = 2.0,
    progress_key: str | None = None,
) -> HealthResult:
    """Poll `url` until it answers 200 or `deadline_s` passes; delays grow by `growth` to a cap.
    With `progress_key`, the wait shows as a progress artifact under that key.

    Starting short matters: a service up at 0.35 s is seen at 0.36 s, not at the next doubling;
    the cap keeps a service up at 0.7 s from being seen only at 1.04 s.
    """
    shown = None
    if progress_key:
        shown = Progress(progress_key, f"Health of {url}, deadline {deadline_s:.0f} s")
    started = time.monotonic()
    delay, attempts = first_delay_s, 0
    status: int | None = None
    detail = "no attempt made"
    with http_client(timeout=request_timeout_s) as client:
        while True:
            attempts += 1
            try:
                response = client.get(url)
                status = response.status_code
                detail = f"answered {status}"
                if status == 200:
                    if shown:
                        shown.done()
                    elapsed = time.monotonic() - started
                    return HealthResult(
                        url=url,
                        healthy=True,
                        status_code=status,
                        attempts=attempts,
                        elapsed_s=elapsed,
                        detail=detail,
                    )
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            remaining = deadline_s - (time.monotonic() - started)
            if remaining <= 0:
                break
            if shown:
                shown.update(100 * (deadline_s - remaining) / deadline_s)
            time.sleep(min(delay, remaining))
            delay = min(delay * growth, max_delay_s)
    return HealthResult(
        url=url,
        healthy=False,
        status_code=status,
        attempts=attempts,
        elapsed_s=time.monotonic() - started,
        detail=f"{detail} after {attempts} attempt(s) in {deadline_s:.0f} s",
    )


def smoke_failures(
    base_url: str,
    checks: Sequence[Any],
    *,
    timeout_s: float = 5.0,
    upstream: str | None = None,
    deadline_s: float = 15.0,
) -> list[str]:
    """Each smoke check (path, status, json_field, equals) that `base_url` does not satisfy.

    With `upstream`, only answers nginx says came from it count: right after a reload an old
    worker may still answer from the old slot, and that answer says nothing about the new one.
    """
    failures = []
    limits = httpx.Limits(max_keepalive_connections=0)
    with http_client(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        for check in checks:
            response, error = _answer_from(client, check.path, upstream, deadline_s)
            if response is None:
                failures.append(f"GET {check.path}: {error}")
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            problem = smoke_problem(
                response.status_code,
                body,
                expected_status=check.status,
                json_field=check.json_field,
                equals=check.equals,
            )
            if problem:
                failures.append(f"GET {check.path}: {problem}")
    return failures


def wait_for_upstream(
    url: str, expected: str, *, deadline_s: float = 15.0, in_a_row: int = 5
) -> tuple[bool, str]:
    """Poll `url` on fresh connections until nginx's X-Deliver-Upstream names `expected`
    `in_a_row` times running.

    A switch takes effect with the next request (the slot marker), but a host's first one
    reloads nginx, and `nginx -s reload` returns before new workers take over: until then old
    workers answer from the old upstream, and a smoke check run too early would test the old
    version. Waiting for the header covers both, and any nginx set up another way.
    """
    started, seen, streak = time.monotonic(), "nothing", 0
    limits = httpx.Limits(max_keepalive_connections=0)
    with http_client(timeout=2.0, limits=limits) as client:
        while time.monotonic() - started < deadline_s:
            try:
                seen = client.get(url).headers.get("X-Deliver-Upstream", "no header")
            except httpx.HTTPError as exc:
                seen = type(exc).__name__
            streak = streak + 1 if seen == expected else 0
            if streak >= in_a_row:
                return True, seen
            time.sleep(0.02)
    return False, seen


def _answer_from(
    client: httpx.Client, path: str, upstream: str | None, deadline_s: float
) -> tuple[httpx.Response | None, str]:
    """An answer to GET `path` from `upstream` (any answer when None), or why there is none."""
    started, error = time.monotonic(), "no answer"
    while time.monotonic() - started < deadline_s:
        try:
            response = client.get(path)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        answered_by = response.headers.get("X-Deliver-Upstream")
        if upstream is None or answered_by == upstream:
            return response, ""
        error = f"still answered by {answered_by}, not {upstream}"
        time.sleep(0.05)
    return None, error
