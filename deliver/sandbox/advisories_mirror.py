"""The advisory mirror: an OSV-compatible service on loopback for scans on a closed network."""

from __future__ import annotations

import sys
from pathlib import Path

from deliver.sandbox.component import Context, Daemon, http_probe

ADVISORY_DATA = Path(__file__).parent / "advisories"


class AdvisoryMirror(Daemon):
    name = "advisories"

    def address(self, ctx: Context) -> str:
        return ctx.config.advisory_url

    def port(self, ctx: Context) -> int:
        return ctx.config.advisory_port

    def argv(self, ctx: Context) -> list[str]:
        return [
            sys.executable,
            "-m",
            "deliver.sandbox.services.advisory_mirror",
            "--port",
            str(ctx.config.advisory_port),
            "--data",
            str(ADVISORY_DATA),
        ]

    def probe(self, ctx: Context) -> str | None:
        return http_probe(f"http://127.0.0.1:{ctx.config.advisory_port}/health", timeout_s=2.0)
