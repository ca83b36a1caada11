"""The advisory mirror: an OSV-compatible service on the Docker bridge for scans on a closed
network (the worker and the CI job containers both reach it there)."""

from __future__ import annotations

import sys
from pathlib import Path

from deliver.sandbox.component import Context, Daemon, http_probe

ADVISORY_DATA = Path(__file__).parent / "advisories"


class AdvisoryMirror(Daemon):
    name = "advisories"

    def address(self, ctx: Context) -> str:
        return ctx.config.advisory_url

    def argv(self, ctx: Context) -> list[str]:
        return [
            sys.executable,
            "-m",
            "deliver.sandbox.services.advisory_mirror",
            "--host",
            ctx.config.docker_bridge_gateway,
            "--port",
            str(ctx.config.advisory_port),
            "--data",
            str(ADVISORY_DATA),
        ]

    def probe(self, ctx: Context) -> str | None:
        health = ctx.config.advisory_url.removesuffix("/v1/query") + "/health"
        return http_probe(health, timeout_s=2.0)
