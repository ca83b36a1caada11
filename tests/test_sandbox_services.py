"""The sandbox's own small servers (the chat inbox, the advisory mirror) answer a malformed or
stalled request with a 4xx or a closed connection in bounded time, never a read to EOF."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from deliver.sandbox.services.advisory_mirror import make_server
from deliver.sandbox.services.chat_inbox import Inbox


@pytest.fixture(params=["chat", "advisories"])
def server(request: pytest.FixtureRequest) -> Iterator[ThreadingHTTPServer]:
    served = Inbox("t0ken-for-tests").serve(0) if request.param == "chat" else make_server(0, {})
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()


def status_of(server: ThreadingHTTPServer, content_length: str) -> str:
    """The status line answering a POST whose body never comes, read within 3 s."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=3) as client:
        client.sendall(
            b"POST /hooks/t0ken-for-tests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: " + content_length.encode() + b"\r\n\r\n"
        )
        return client.recv(200).split(b"\r\n", 1)[0].decode()


@pytest.mark.parametrize("declared", ["-1", "+5", "abc", "1e3", "٣"])
def test_a_content_length_that_is_not_a_plain_decimal_is_a_400(server, declared):
    assert " 400 " in status_of(server, declared)


def test_a_body_over_the_limit_is_a_413_before_it_is_read(server):
    assert " 413 " in status_of(server, str(10**9))


def test_a_stalled_body_is_dropped_within_the_handler_timeout(server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=15) as client:
        client.sendall(b"POST /q HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n")
        assert client.recv(200) == b""  # closed, no answer to a body that never came
    assert time.monotonic() - started < 8
