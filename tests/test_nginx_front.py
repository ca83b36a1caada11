"""nginx in front of production proxies to the slot the marker names, per request, unreloaded."""

import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from deliver.planning.release import green_marker
from deliver.sandbox.config import Slot
from deliver.sandbox.processes import wait_until
from tests.nginx import serve_blue


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


def nginx_workers(nginx_front) -> set[str]:
    master = (nginx_front["config_file"].parent / "nginx.pid").read_text().strip()
    return set(Path(f"/proc/{master}/task/{master}/children").read_text().split())


def test_the_slot_marker_moves_traffic_without_a_reload(nginx_front, slots):
    """Once the slots' groups are loaded, creating and removing the green marker moves the very
    next request, on the same kept-alive connection, with the same nginx workers: a switch
    closes no client's connection."""
    url, upstream = nginx_front["url"], nginx_front["upstream_file"]
    marker = Path(green_marker(str(upstream)))
    original, was_green = upstream.read_text(), marker.exists()
    try:
        serve_blue(upstream, slots)
        reload_nginx(nginx_front)
        assert wait_until(lambda: httpx.get(url).text == "blue", timeout=5)
        workers = nginx_workers(nginx_front)
        with httpx.Client() as kept_alive:

            def answer() -> tuple[str, object]:
                response = kept_alive.get(url)
                stream = response.extensions["network_stream"]
                return response.text, stream.get_extra_info("client_addr")

            before, connection = answer()
            marker.touch()
            assert answer() == ("green", connection)
            marker.unlink()
            assert answer() == ("blue", connection)
        assert before == "blue"
        assert nginx_workers(nginx_front) == workers
    finally:
        upstream.write_text(original)
        if was_green:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)
        reload_nginx(nginx_front)
