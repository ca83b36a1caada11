"""Block documents holding the sandbox's generated credentials, saved on its Prefect server."""

from __future__ import annotations

from typing import Any

from deliver.sandbox.component import Component, ComponentStatus, Context
from deliver.sandbox.registry import Registry

REGISTRY_BLOCK = "sandbox-registry"


class PrefectBlocks(Component):
    name = "prefect-blocks"

    def _settings(self, ctx: Context) -> Any:
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        ctx.config.prefect_home.mkdir(parents=True, exist_ok=True)
        return temporary_settings(
            updates={
                PREFECT_API_URL: ctx.config.prefect_api_url,
                PREFECT_HOME: ctx.config.prefect_home,
            }
        )

    def up(self, ctx: Context) -> ComponentStatus:
        from prefect_docker.credentials import DockerRegistryCredentials

        username, password = Registry().credentials(ctx)
        with self._settings(ctx):
            DockerRegistryCredentials(
                username=username,
                password=password,
                registry_url=ctx.config.registry_address,
                reauth=False,
            ).save(REGISTRY_BLOCK, overwrite=True)
        ctx.say(f"{self.name}: saved DockerRegistryCredentials {REGISTRY_BLOCK!r}")
        return self.status(ctx)

    def status(self, ctx: Context) -> ComponentStatus:
        from prefect_docker.credentials import DockerRegistryCredentials

        address = f"DockerRegistryCredentials/{REGISTRY_BLOCK}"
        try:
            with self._settings(ctx):
                block = DockerRegistryCredentials.load(REGISTRY_BLOCK)
        except Exception as exc:
            detail = f"cannot load: {type(exc).__name__}: {exc}".splitlines()[0][:200]
            return ComponentStatus(name=self.name, address=address, healthy=False, detail=detail)
        current = block.registry_url == ctx.config.registry_address
        detail = "saved" if current else f"points at {block.registry_url}, not this sandbox"
        return ComponentStatus(name=self.name, address=address, healthy=current, detail=detail)
