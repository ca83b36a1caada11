"""Prefect global concurrency limits that keep an environment's releases one at a time."""

from __future__ import annotations

import contextlib

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def release_limit_name(environment: str) -> str:
    return f"release-{environment}"


def ensure_release_limit(environment: str) -> str:
    """The environment's limit of 1, created by its first release if nobody made it before."""
    name = release_limit_name(environment)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    return name
