"""`deliver init`: a spec guessed from a repository, checked against the examples' own and run
through CI on a repository that has never seen this project."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deliver.spec import load_spec
from tests.conftest import PROJECT_DIR

EXAMPLES = PROJECT_DIR / "examples"


def init(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deliver.cli", "init", str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("example", ["stock-api", "orders-api"])
def test_the_examples_get_the_facts_their_own_specs_state(example, tmp_path):
    """Port, health path, image, checks, services, release env and migration as written."""
    repo = tmp_path / example
    shutil.copytree(EXAMPLES / example, repo, ignore=shutil.ignore_patterns("deliver.yaml"))
    done = init(repo)
    assert done.returncode == 0, done.stderr
    made, written = load_spec(repo / "deliver.yaml"), load_spec(EXAMPLES / example / "deliver.yaml")
    assert made.container.port == written.container.port
    assert made.container.health_path == written.container.health_path
    assert {c.name for c in made.checks} >= {"lint", "tests", "dependencies"}
    assert set(made.services) == set(written.services)
    assert made.release.env == written.release.env
    assert made.release.migrate == written.release.migrate
    assert "Check before the first run:" in done.stdout


def test_it_never_overwrites_without_force(tmp_path):
    (tmp_path / "deliver.yaml").write_text("service: mine\n")
    refused = init(tmp_path)
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    assert (tmp_path / "deliver.yaml").read_text() == "service: mine\n"
    assert init(tmp_path, "--force").returncode == 0


APP = '''"""A tiny service: the standard library only."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def greeting(name: str) -> str:
    return f"hello {name}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "greeting": greeting("you")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    ThreadingHTTPServer(("", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
'''
APP_TESTS = """import json
import threading
import urllib.request
from http.server import ThreadingHTTPServer

from greeter.app import Handler, greeting


def test_greeting():
    assert greeting("x") == "hello x"


def test_the_server_answers():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert json.load(answer)["status"] == "ok"
    server.shutdown()
"""
DOCKERFILE = """FROM python:3.12-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY greeter/ greeter/
USER 65534:65534
EXPOSE 8080
CMD ["python3", "-m", "greeter.app"]
"""


def test_a_repository_that_never_saw_this_project_goes_through_ci(tmp_path, sandbox_config):
    """Only a requirements.txt, a Dockerfile, a package and its tests: the spec `init` writes
    takes it through `deliver ci --sandbox` as it is (its guesses held: /health is answered by
    every path), and the run's SARIF (bandit's and the image scan's) is valid SARIF 2.1.0."""
    from tests.test_ci_pipeline import git
    from tests.test_sarif import assert_valid_sarif

    repo = tmp_path / "greeter"
    (repo / "greeter").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "greeter" / "__init__.py").write_text("")
    (repo / "greeter" / "app.py").write_text(APP)
    (repo / "tests" / "test_app.py").write_text(APP_TESTS)
    (repo / "requirements.txt").write_text("# nothing beyond the standard library\n")
    (repo / "Dockerfile").write_text(DOCKERFILE)
    done = init(repo)
    assert done.returncode == 0, done.stderr
    assert "container.health_path: /health is a guess" in done.stdout
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "greeter")
    sarif = tmp_path / "out.sarif"
    argv = ["ci", "--sandbox", "--repo", str(repo), "--json", "--sarif", str(sarif)]
    ci = subprocess.run(
        [sys.executable, "-m", "deliver.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert ci.returncode == 0, ci.stderr[-3000:]
    assert "Still processing items" not in ci.stderr  # Prefect's event worker had finished
    result = json.loads(ci.stdout)
    assert {c["name"]: c["status"] for c in result["checks"]}["tests"] in {"passed", "cached"}
    log = json.loads(sarif.read_text())
    assert_valid_sarif(log)
    tools = sorted(run["tool"]["driver"]["name"] for run in log["runs"])
    assert tools == ["Bandit", "deliver-image-scan"]
    assert f"SARIF: {sum(len(run['results']) for run in log['runs'])} result(s)" in ci.stderr
