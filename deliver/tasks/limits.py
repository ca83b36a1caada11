"""Prefect global concurrency limits of 1: one release at a time per environment, one build
and push at a time per image."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from prefect import get_client, get_run_logger
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

LEASE_S = 60.0  # the server's minimum; renewed while held, so a killed holder frees it this soon


def release_limit_name(environment: str) -> str:
    return f"release-{environment}"


def build_limit_name(image: str) -> str:
    return "build-" + re.sub(r"[^a-z0-9-]+", "-", image.lower()).strip("-")


def ensure_limit(name: str) -> str:
    """The limit of 1 called `name`, created by its first user if nobody made it before."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    return name


def ensure_release_limit(environment: str) -> str:
    return ensure_limit(release_limit_name(environment))


@contextlib.contextmanager
def held(name: str, why: str) -> Iterator[None]:
    """Hold the limit `name` (made if missing) for the block; `why` says so in the run log."""
    get_run_logger().info("Waiting for the %s concurrency slot (%s)", name, why)
    with concurrency(
        ensure_limit(name), occupy=1, strict=True, timeout_seconds=3600, lease_duration=LEASE_S
    ):
        yield
