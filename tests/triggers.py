"""Deployments whose triggers turn a green CI run on main (or a v* tag) into a release: a test
that applies them deletes them afterwards, so no later CI run releases behind its back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from uuid import UUID

from prefect import get_client

from deployments import declared


def delete_triggered(deployment_ids: Mapping[str, UUID | str]) -> None:
    """Delete each of `deployment_ids` (name to id) that prefect.yaml gives triggers, with
    the automations its triggers made."""
    triggered = {spec["name"] for spec in declared() if spec.get("triggers")}

    async def delete() -> None:
        async with get_client() as client:
            for name, deployment_id in deployment_ids.items():
                if name in triggered:
                    await client.delete_resource_owned_automations(
                        f"prefect.deployment.{deployment_id}"
                    )
                    await client.delete_deployment(UUID(str(deployment_id)))

    asyncio.run(delete())
