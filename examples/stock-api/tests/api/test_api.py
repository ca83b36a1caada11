import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from stock_api.app import Settings, make_server

pytestmark = pytest.mark.api


def serve(settings: Settings) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, settings)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def base_url() -> Iterator[str]:
    yield from serve(Settings(version="1.2.3", git_sha="abc1234"))


@pytest.fixture
def broken_url() -> Iterator[str]:
    yield from serve(Settings(version="9.9.9", broken_health=True))


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http on loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_reports_version(base_url):
    """/health answers 200 with status ok, the version and the git sha."""
    assert get(f"{base_url}/health") == (
        200,
        {"status": "ok", "version": "1.2.3", "git_sha": "abc1234"},
    )


def test_broken_build_fails_health(broken_url):
    """A build made with BROKEN_HEALTH answers 503 on /health but still serves data."""
    status, body = get(f"{broken_url}/health")
    assert (status, body["status"]) == (503, "failing")
    assert get(f"{broken_url}/symbols")[0] == 200


def test_symbols_lists_the_dataset(base_url):
    """/symbols lists every symbol in the bundled data set, sorted."""
    assert get(f"{base_url}/symbols") == (
        200,
        {"symbols": ["ACME", "GLBX", "INIT", "UMBR", "WAYNE"]},
    )


def test_stats_for_one_symbol(base_url):
    """/stats/<symbol> carries every statistic; the symbol is case-insensitive."""
    status, body = get(f"{base_url}/stats/acme")
    assert status == 200
    assert body["symbol"] == "ACME"
    assert body["count"] == 120
    assert body["min"] <= body["median"] <= body["max"]
    assert body["volatility"] > 0


def test_stats_for_all_symbols(base_url):
    """/stats returns one entry per symbol."""
    status, body = get(f"{base_url}/stats")
    assert status == 200
    assert [entry["symbol"] for entry in body["stats"]] == ["ACME", "GLBX", "INIT", "UMBR", "WAYNE"]


def test_unknown_symbol_is_404_with_the_known_ones(base_url):
    """An unknown symbol is a JSON 404 that lists what exists."""
    status, body = get(f"{base_url}/stats/NOPE")
    assert status == 404
    assert "NOPE" in body["error"]
    assert "ACME" in body["known"]


def test_unknown_path_is_json_404(base_url):
    """Unknown routes answer a JSON 404, never an HTML page."""
    assert get(f"{base_url}/nowhere")[0] == 404


def test_broken_stats_build_is_healthy_but_fails_stats():
    """A build made with BROKEN_STATS passes /health but answers 500 on /stats, for smoke drills."""
    for url in serve(Settings(version="8.8.8", broken_stats=True)):
        assert get(f"{url}/health")[0] == 200
        assert get(f"{url}/stats/ACME")[0] == 500
