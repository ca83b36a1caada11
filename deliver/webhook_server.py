"""`deliver webhook serve`: GitHub-style webhooks in, CI deployment runs out; status badges.

Every accepted delivery starts the `ci` deployment, keyed by its delivery id, so a replayed
delivery finds the run it already started. What follows a green CI run (a staging or production
release) is left to the deployment triggers in prefect.yaml.

The server is uvicorn with a starlette app, hardened for the open internet: a connection has
`header_timeout_s` to send its request line and headers and `body_timeout_s` for its body, at
most `max_connections` are served at once (more get 503), a Content-Length that is not a plain
decimal is 400, one over `max_body` is 413 before any byte of the body is read, and every
malformed input gets a 4xx, never a dropped connection or a 500. The judging is pure
(`deliver.planning.webhook`).

Beside it, GET serves badges a README embeds (`deliver.planning.badges`), read from the
server's events: `/badges/<service>/ci.svg?branch=main` (the branch's latest CI run: passing,
failing, running) and `/badges/<service>/<environment>.svg` (the version live there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from deliver.planning.badges import Badge, ci_badge, environment_badge, live_version
from deliver.planning.metrics import ReleaseRecord
from deliver.planning.webhook import MAX_BODY_BYTES, Run, Verdict, judge

CI_DEPLOYMENT = "ci-pipeline/ci"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    secret: bytes
    ci_defaults: Mapping[str, Any]  # CiParameters fields every run gets (spec path, cache...)
    deployment: str = CI_DEPLOYMENT
    max_body: int = MAX_BODY_BYTES
    header_timeout_s: float = 5.0  # request line and headers, from the connection's start
    body_timeout_s: float = 10.0  # the body, once the headers are in
    max_connections: int = 200  # served at once; more are answered 503


def start_ci(settings: WebhookSettings, run: Run) -> str:
    """The `ci` deployment's run for this delivery: created once, found again on a replay."""
    # Prefect only now: `deliver webhook serve` has pointed it at its server by then.
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    parameters = {
        **settings.ci_defaults,
        "repo": run.repo,
        "ref": run.ref,
        "untrusted": run.untrusted,
    }
    created = run_deployment(
        settings.deployment,
        parameters={"parameters": parameters},
        timeout=0,
        idempotency_key=f"github-delivery-{run.delivery}",
        tags=["webhook", run.kind],
        as_subflow=False,
    )
    assert isinstance(created, FlowRun)  # noqa: S101 (timeout=0 returns the run)
    return str(created.id)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BadgeSource:
    """Where badges read their state: the newest CI event of a service's branch, and the
    newest release events of a service in an environment."""

    latest_ci_event: Callable[[str, str], str | None]
    recent_releases: Callable[[str, str], list[ReleaseRecord]]


def prefect_badge_source() -> BadgeSource:
    # Prefect only now: `deliver webhook serve` has pointed it at its server by then.
    from deliver import prefect_api

    return BadgeSource(
        latest_ci_event=prefect_api.latest_ci_event,
        recent_releases=prefect_api.recent_releases,
    )


BADGE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")


class OncePerDelivery:
    """Concurrent copies of one delivery wait for the first one's run instead of each asking
    the server (the idempotency key still covers copies that arrive later or elsewhere)."""

    def __init__(self, starter: Callable[[WebhookSettings, Run], str]) -> None:
        self._starter = starter
        self._lock = threading.Lock()
        self._pending: dict[str, concurrent.futures.Future[str]] = {}

    def __call__(self, settings: WebhookSettings, run: Run) -> str:
        with self._lock:
            future = self._pending.get(run.delivery)
            first = future is None
            if future is None:
                future = self._pending[run.delivery] = concurrent.futures.Future()
        if not first:
            return future.result()
        try:
            future.set_result(self._starter(settings, run))
        except Exception as exc:
            future.set_exception(exc)
        finally:
            with self._lock:
                del self._pending[run.delivery]
        return future.result()


DECIMAL = re.compile(r"^[0-9]{1,12}$")
LOG = logging.getLogger("deliver.webhook")


def app_for(
    settings: WebhookSettings,
    starter: Callable[[WebhookSettings, Run], str] = start_ci,
    badges: BadgeSource | None = None,
) -> Starlette:
    """The ASGI app: every POST, whatever its path, is a delivery; GET /badges/... a badge."""
    once = OncePerDelivery(starter)

    async def badge(request: Request) -> Response:
        service, name = request.path_params["service"], request.path_params["name"]
        branch = request.query_params.get("branch", "main")
        if not (BADGE_NAME.match(service) and BADGE_NAME.match(name) and BRANCH.match(branch)):
            return answer(Verdict(status=404, reason="no such badge"))
        source = badges or prefect_badge_source()
        try:
            if name == "ci":
                shown = ci_badge(await asyncio.to_thread(source.latest_ci_event, service, branch))
            else:
                records = await asyncio.to_thread(source.recent_releases, service, name)
                shown = environment_badge(name, live_version(records, name))
        except Exception as exc:  # the API is down: say so rather than drop the image
            LOG.error("could not read the badge's state: %s", type(exc).__name__)
            return answer(Verdict(status=503, reason="could not read the state; retry"))
        return badge_response(shown, request.headers.get("if-none-match"))

    async def delivery(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is None:
            return answer(Verdict(status=411, reason="Content-Length required"))
        if not DECIMAL.match(declared):
            return answer(Verdict(status=400, reason="Content-Length is not a decimal number"))
        if int(declared) > settings.max_body:  # before reading, let alone hashing, it
            return answer(Verdict(status=413, reason=f"body over {settings.max_body} bytes"))
        try:
            body = await asyncio.wait_for(request.body(), timeout=settings.body_timeout_s)
        except TimeoutError:
            return answer(Verdict(status=408, reason="the body did not arrive in time"))
        except ClientDisconnect:
            return answer(Verdict(status=400, reason="the client went away mid-body"))
        headers = {name.lower(): value for name, value in request.headers.items()}
        verdict = judge(headers, body, secret=settings.secret, max_body=settings.max_body)
        if verdict.run is None:
            return answer(verdict)
        try:
            run_id = await asyncio.to_thread(once, settings, verdict.run)
        except Exception as exc:  # answered, and logged without the body
            LOG.error("could not start CI: %s", type(exc).__name__)
            return answer(Verdict(status=503, reason="could not start the CI run; retry"))
        return answer(verdict, flow_run_id=run_id)

    return Starlette(
        routes=[
            Route("/badges/{service}/{name}.svg", badge, methods=["GET"]),
            Route("/{path:path}", delivery, methods=["POST"]),
        ]
    )


def badge_response(badge: Badge, if_none_match: str | None) -> Response:
    """The SVG, which clients and image proxies revalidate on each view (its ETag makes that
    a 304 while the state is unchanged)."""
    headers = {"Cache-Control": "no-cache, max-age=0", "ETag": badge.etag()}
    if if_none_match == badge.etag():
        return Response(status_code=304, headers=headers)
    return Response(badge.svg(), media_type="image/svg+xml", headers=headers)


def answer(verdict: Verdict, **extra: str) -> JSONResponse:
    body = {"status": verdict.status, "reason": verdict.reason, **extra}
    return JSONResponse(body, status_code=verdict.status)


def protocol_with_header_timeout(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head
    `timeout_s` after it opened (or after its last response): no slow client holds one open."""

    class HeaderTimeoutProtocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_deadline = self.loop.call_later(timeout_s, self._head_too_slow)

        def _disarm(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_too_slow(self) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request is in: the app's own timeout covers its body

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


class RunningServer:
    """uvicorn serving the app in a daemon thread; `.shutdown()` stops it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread

    @property
    def server_address(self) -> tuple[str, int]:
        socket = self._server.servers[0].sockets[0]
        host, port = socket.getsockname()[:2]
        return str(host), int(port)

    def shutdown(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def serve(
    settings: WebhookSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8095,
    starter: Callable[[WebhookSettings, Run], str] = start_ci,
    badges: BadgeSource | None = None,
) -> RunningServer:
    """A started server, listening once this returns."""
    config = uvicorn.Config(
        app_for(settings, starter, badges),
        host=host,
        port=port,
        http=protocol_with_header_timeout(settings.header_timeout_s),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=int(settings.header_timeout_s),
        h11_max_incomplete_event_size=16 * 1024,
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="webhook-server")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the webhook server could not listen on {host}:{port}")
        time.sleep(0.02)
    return RunningServer(server, thread)
