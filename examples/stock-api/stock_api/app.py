"""The HTTP JSON API: routing is a pure function; the server around it is the standard library's."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stock_api.dataset import PriceRow, load
from stock_api.statistics import summarize

DEV_VERSION = "0.0.0-dev"
UNKNOWN_SHA = "unknown"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    version: str = DEV_VERSION
    git_sha: str = UNKNOWN_SHA
    broken_health: bool = False  # set at build time: a release whose /health fails
    broken_stats: bool = False  # set at build time: healthy, but /stats fails its smoke checks

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return cls(
            version=environ.get("STOCK_API_VERSION", DEV_VERSION),
            git_sha=environ.get("STOCK_API_GIT_SHA", UNKNOWN_SHA),
            broken_health=environ.get("STOCK_API_BROKEN_HEALTH", "false").lower() == "true",
            broken_stats=environ.get("STOCK_API_BROKEN_STATS", "false").lower() == "true",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: dict[str, Any]


def symbol_stats(symbol: str, rows: list[PriceRow]) -> dict[str, Any]:
    summary = summarize([row.close for row in rows])
    return {
        "symbol": symbol,
        "first_date": rows[0].date.isoformat(),
        "last_date": rows[-1].date.isoformat(),
        **summary.to_json(),
    }


def route(path: str, settings: Settings, data: Mapping[str, list[PriceRow]]) -> Response:
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if path == "/health":
        if settings.broken_health:
            return Response(503, {"status": "failing", "version": settings.version})
        body = {"status": "ok", "version": settings.version, "git_sha": settings.git_sha}
        return Response(200, body)
    if path == "/symbols":
        return Response(200, {"symbols": sorted(data)})
    if path.startswith("/stats") and settings.broken_stats:
        return Response(500, {"error": "statistics are unavailable in this build"})
    if path == "/stats":
        return Response(200, {"stats": [symbol_stats(s, data[s]) for s in sorted(data)]})
    if path.startswith("/stats/"):
        symbol = path.removeprefix("/stats/").upper()
        if symbol not in data:
            return Response(404, {"error": f"unknown symbol {symbol!r}", "known": sorted(data)})
        return Response(200, symbol_stats(symbol, data[symbol]))
    return Response(404, {"error": f"no route for {path!r}"})


def make_server(host: str, port: int, settings: Settings) -> ThreadingHTTPServer:
    data = load()

    class Handler(BaseHTTPRequestHandler):
        server_version = "stock-api"

        def do_GET(self) -> None:
            response = route(self.path, settings, data)
            payload = json.dumps(response.body).encode()
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's signature)
            if os.environ.get("STOCK_API_ACCESS_LOG", "true") == "true":
                super().log_message(format, *args)

    return ThreadingHTTPServer((host, port), Handler)
