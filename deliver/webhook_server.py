"""`deliver webhook serve`: GitHub-style webhooks in, CI deployment runs out.

Every accepted delivery starts the `ci` deployment, keyed by its delivery id, so a replayed
delivery finds the run it already started. What follows a green CI run (a staging or production
release) is left to the deployment triggers in prefect.yaml.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from deliver.planning.webhook import MAX_BODY_BYTES, Run, Verdict, judge

CI_DEPLOYMENT = "ci-pipeline/ci"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    secret: bytes
    ci_defaults: Mapping[str, Any]  # CiParameters fields every run gets (spec path, cache...)
    deployment: str = CI_DEPLOYMENT
    max_body: int = MAX_BODY_BYTES


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


def handler_for(
    settings: WebhookSettings, starter: Callable[[WebhookSettings, Run], str] = start_ci
) -> type[BaseHTTPRequestHandler]:
    starter = OncePerDelivery(starter)

    class Handler(BaseHTTPRequestHandler):
        server_version = "deliver-webhook"

        def do_POST(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            declared = headers.get("content-length", "")
            if not declared.isdigit():
                self._answer(Verdict(status=411, reason="Content-Length required"))
                return
            if int(declared) > settings.max_body:  # before reading, let alone hashing, it
                self._answer(Verdict(status=413, reason=f"body over {settings.max_body} bytes"))
                self.close_connection = True
                return
            body = self.rfile.read(int(declared))
            verdict = judge(headers, body, secret=settings.secret, max_body=settings.max_body)
            if verdict.run is None:
                self._answer(verdict)
                return
            try:
                run_id = starter(settings, verdict.run)
            except Exception as exc:  # answered, and logged without the body
                self.log_error("could not start CI: %s", type(exc).__name__)
                self._answer(Verdict(status=503, reason="could not start the CI run; retry"))
                return
            self._answer(verdict, flow_run_id=run_id)

        def _answer(self, verdict: Verdict, **extra: str) -> None:
            data = json.dumps({"status": verdict.status, "reason": verdict.reason, **extra})
            encoded = data.encode()
            self.send_response(verdict.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the access log would carry request lines only; kept quiet

    return Handler


def serve(
    settings: WebhookSettings, *, host: str = "127.0.0.1", port: int = 8095
) -> ThreadingHTTPServer:
    """A started server (in a daemon thread); `.shutdown()` stops it."""
    server = ThreadingHTTPServer((host, port), handler_for(settings))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
