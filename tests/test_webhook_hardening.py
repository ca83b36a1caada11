"""The webhook server under hostile clients, on loopback: slow heads and bodies, slowloris,
malformed lengths and headers. CI runs are not started here (a stand-in starter answers with a
run id); the real `ci` deployment behind it is in test_webhook_server.py."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from deliver.planning.webhook import Run
from deliver.webhook_server import RunningServer, WebhookSettings, serve
from tests.test_webhook_planning import SECRET, sign

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
PING = b'{"zen": "Keep it logically awesome."}'


def started(settings: WebhookSettings, run: Run) -> str:
    return f"run-for-{run.delivery}"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    settings = WebhookSettings(
        secret=SECRET,
        ci_defaults={},
        max_body=64 * 1024,
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        max_connections=100,
    )
    running = serve(settings, port=0, starter=started)
    yield running
    running.shutdown()


def url(server: RunningServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def ping_headers(delivery: str = "ping-1") -> dict[str, str]:
    return {
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(PING),
    }


def raw(server: RunningServer, data: bytes, *, wait_s: float = 5.0) -> bytes:
    """What the server answers to `data` sent as is, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=wait_s) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def head(body: bytes, **fields: str) -> bytes:
    lines = ["POST / HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_valid_ping_is_answered(server):
    response = httpx.post(url(server), content=PING, headers=ping_headers(), timeout=5)
    assert response.status_code == 200


def test_a_non_ascii_signature_is_401_not_a_dropped_connection(server):
    fields = {**ping_headers(), "Content-Length": str(len(PING))}
    fields["X-Hub-Signature-256"] = "sha256=\u00e9\u00e9\u00e9"
    assert status_of(raw(server, head(PING, **fields) + b"", wait_s=5)) == 401


@pytest.mark.parametrize("length", ["-1", "+5", "abc", "5 5", "0x10", "99999999999999999999"])
def test_a_content_length_that_is_not_a_plain_decimal_is_400(server, length):
    fields = {**ping_headers(), "Content-Length": length, "Connection": "close"}
    answer = raw(server, head(PING, **fields))
    assert status_of(answer) == 400, answer[:200]


def test_an_oversized_body_is_413_before_it_is_read(server):
    fields = {**ping_headers(), "Content-Length": str(10**7), "Connection": "close"}
    started_at = time.monotonic()
    assert status_of(raw(server, head(b"", **fields))) == 413
    assert time.monotonic() - started_at < BODY_TIMEOUT_S  # it did not wait for a body


def test_a_client_that_stalls_in_its_headers_is_cut_off(server):
    """Half a head, then nothing: the server closes the connection after its header timeout."""
    started_at = time.monotonic()
    answer = raw(server, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Ev", wait_s=10)
    waited = time.monotonic() - started_at
    assert answer == b"" or status_of(answer) >= 400
    assert HEADER_TIMEOUT_S * 0.8 <= waited < HEADER_TIMEOUT_S + 3


def test_a_client_that_stalls_in_its_body_gets_408(server):
    fields = {**ping_headers(), "Content-Length": str(len(PING))}
    started_at = time.monotonic()
    answer = raw(server, head(PING[:5], **fields), wait_s=10)
    assert status_of(answer) == 408
    assert time.monotonic() - started_at < BODY_TIMEOUT_S + 3


def test_fifty_slowloris_connections_do_not_keep_a_valid_delivery_waiting(server):
    """50 connections trickling a header each; meanwhile a real delivery is answered at once,
    and every slow connection is closed within the header timeout (plus a margin)."""
    port = server.server_address[1]
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
    try:
        for s in slow:
            s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.2)

        def deliver(n: int) -> tuple[int, float]:
            started_at = time.monotonic()
            body = json.dumps({"zen": f"ping {n}"}).encode()
            headers = {**ping_headers(f"ping-{n}"), "X-Hub-Signature-256": sign(body)}
            response = httpx.post(url(server), content=body, headers=headers, timeout=5)
            return response.status_code, time.monotonic() - started_at

        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
            answers = list(pool.map(deliver, range(5)))
        assert [status for status, _ in answers] == [200] * 5
        assert max(seconds for _, seconds in answers) < 1.0
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 5
        still_open = 0
        for s in slow:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                s.recv(1024)  # b"" once closed (or an error answer, then the close)
            except TimeoutError:
                still_open += 1
        assert still_open == 0
    finally:
        for s in slow:
            s.close()
