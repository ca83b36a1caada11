"""nginx in front of production proxies to the slot its upstream file names; reload switches it."""

import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from deliver.planning.release import nginx_upstream
from deliver.sandbox.config import Slot
from deliver.sandbox.processes import wait_until


def slot_server(port: int, name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


@pytest.fixture
def slots():
    """Two stand-in slot servers on free ports (the real slot ports belong to releases)."""
    servers = {slot: slot_server(0, slot.value) for slot in (Slot.BLUE, Slot.GREEN)}
    yield {slot: server.server_address[1] for slot, server in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def reload_nginx(nginx_front) -> None:
    config = nginx_front["config_file"]
    done = subprocess.run(
        [
            shutil.which("nginx") or "/usr/sbin/nginx",
            "-p",
            str(config.parent),
            "-c",
            str(config),
            "-e",
            str(config.parent / "error.log"),
            "-s",
            "reload",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_front_health_answers(nginx_front):
    """nginx's own health location answers 200."""
    assert httpx.get(f"{nginx_front['url']}/__front/health").status_code == 200


def test_switching_the_upstream_moves_traffic(nginx_front, slots):
    """Rewriting the upstream file and reloading nginx moves traffic from blue to green and back."""
    upstream = nginx_front["upstream_file"]
    original = upstream.read_text()
    try:
        upstream.write_text(nginx_upstream(slot_port=slots[Slot.BLUE]))
        reload_nginx(nginx_front)
        assert wait_until(lambda: httpx.get(nginx_front["url"]).text == "blue", timeout=5)
        upstream.write_text(nginx_upstream(slot_port=slots[Slot.GREEN]))
        reload_nginx(nginx_front)
        assert wait_until(lambda: httpx.get(nginx_front["url"]).text == "green", timeout=5)
    finally:
        upstream.write_text(original)
        reload_nginx(nginx_front)
