"""A Prefect server on loopback (PostgreSQL or SQLite, private PREFECT_HOME) and process workers on
its pool."""

from __future__ import annotations

import datetime
import os
import secrets
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx

from deliver.sandbox.component import ComponentStatus, Context, Daemon, http_probe
from deliver.sandbox.config import SandboxConfig
from deliver.sandbox.postgres import POSTGRES, PostgresDatabase, chosen_database

WORKER_NAME = "sandbox-worker-1"


def prefect_executable() -> str:
    """The `prefect` command installed beside the Python running this code."""
    beside = Path(sys.executable).parent / "prefect"
    return str(beside) if beside.exists() else "prefect"


def prefect_process_env(ctx: Context) -> dict[str, str]:
    ctx.config.prefect_home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **ctx.config.prefect_env()}


def ensure_prefect_auth(config: SandboxConfig) -> str:
    """The server's API auth string, generated once and kept owner-only. Made before any client
    imports Prefect (whose settings are read at import), so clients and server agree."""
    path = config.prefect_auth_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(f"deliver:{secrets.token_urlsafe(24)}\n")
    return path.read_text().strip()


def api_auth(ctx: Context) -> httpx.BasicAuth:
    user, _, password = ensure_prefect_auth(ctx.config).partition(":")
    return httpx.BasicAuth(user, password)


def api_post(ctx: Context, path: str, body: object) -> httpx.Response:
    """POST to the sandbox's API as its clients do: authenticated, with a CSRF token."""
    base = ctx.config.prefect_api_url
    client_id = uuid.uuid4().hex
    with httpx.Client(auth=api_auth(ctx), timeout=3.0) as http:
        token = http.get(f"{base}/csrf-token", params={"client": client_id})
        headers = {}
        if token.status_code == 200:
            headers = {
                "Prefect-Csrf-Token": token.json()["token"],
                "Prefect-Csrf-Client": client_id,
            }
        return http.post(f"{base}{path}", json=body, headers=headers)


class PrefectServer(Daemon):
    name = "prefect-server"
    startup_timeout = 120.0

    def address(self, ctx: Context) -> str:
        return ctx.config.prefect_api_url.removesuffix("/api")

    def port(self, ctx: Context) -> int:
        return ctx.config.prefect_port

    def argv(self, ctx: Context) -> list[str]:
        port = str(ctx.config.prefect_port)
        return [prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", port]

    def env(self, ctx: Context) -> Mapping[str, str]:
        # Shared-server hardening: every API call needs the auth string, and changes need a
        # CSRF token, so a page on another origin can't drive the API from a browser.
        auth = ensure_prefect_auth(ctx.config)
        database = {}
        if chosen_database(ctx) == POSTGRES:
            database["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = PostgresDatabase().connection_url(
                ctx
            )
        return {
            **prefect_process_env(ctx),
            **database,
            "PREFECT_SERVER_API_AUTH_STRING": auth,
            "PREFECT_API_AUTH_STRING": auth,
            "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
            # Delivery metrics read release events; Prefect keeps 7 days unless told otherwise.
            "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "90d",
        }

    def probe(self, ctx: Context) -> str | None:
        return http_probe(f"{ctx.config.prefect_api_url}/health", timeout_s=3.0)


class PrefectWorker(Daemon):
    """A process worker on the sandbox's pool; on PostgreSQL a second one runs beside it."""

    name = "prefect-worker"
    startup_timeout = 90.0

    def __init__(self, index: int = 1) -> None:
        self.index = index
        self.worker_name = f"sandbox-worker-{index}"
        if index > 1:
            self.name = f"prefect-worker-{index}"  # type: ignore[misc]

    def used(self, ctx: Context) -> bool:
        return self.index == 1 or chosen_database(ctx) == POSTGRES

    def up(self, ctx: Context) -> ComponentStatus:
        return super().up(ctx) if self.used(ctx) else self.status(ctx)

    def status(self, ctx: Context) -> ComponentStatus:
        if not self.used(ctx) and not ctx.state.component(self.name):
            return ComponentStatus(
                name=self.name, address="-", healthy=True, detail="not used: one worker on SQLite"
            )
        return super().status(ctx)

    def address(self, ctx: Context) -> str:
        return f"work pool {ctx.config.work_pool!r}"

    def argv(self, ctx: Context) -> list[str]:
        pool = ctx.config.work_pool
        return [
            prefect_executable(),
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "process",
            "--name",
            self.worker_name,
        ]

    def env(self, ctx: Context) -> Mapping[str, str]:
        # A sandbox is interactive: poll for scheduled runs every 2 s instead of 10 s.
        return {**prefect_process_env(ctx), "PREFECT_WORKER_QUERY_SECONDS": "2"}

    def cwd(self, ctx: Context) -> Path:
        return ctx.config.state_dir.parent

    def probe(self, ctx: Context) -> str | None:
        path = f"/work_pools/{ctx.config.work_pool}/workers/filter"
        url = f"{ctx.config.prefect_api_url}{path}"
        try:
            response = api_post(ctx, path, {})
        except httpx.HTTPError as exc:
            return f"POST {url} failed: {exc}"
        if response.status_code != 200:
            return f"work pool {ctx.config.work_pool!r} not found ({response.status_code})"
        workers = [w for w in response.json() if w.get("name") == self.worker_name]
        if not workers or workers[0].get("status") != "ONLINE":
            return f"worker {self.worker_name!r} is not online on pool {ctx.config.work_pool!r}"
        # A worker that stopped moments ago still shows ONLINE: only a heartbeat sent since our
        # process started proves that process is the one polling.
        started_at = ctx.state.component(self.name).get("started_at", 0.0)
        heartbeat = datetime.datetime.fromisoformat(workers[0]["last_heartbeat_time"]).timestamp()
        if heartbeat < started_at - 1.0:
            return f"worker {self.worker_name!r} has not sent a heartbeat since it was started"
        return None
