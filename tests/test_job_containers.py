"""CI of real services: checks in a job container, service containers on the run's network, the
app environment installed with uv, and a pull request that tries to reach what it must not.

Against the sandbox's Docker engine (with its stand-in python, postgres and redis images),
registry and Prefect server; each repository is a git repo made from an example.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import pytest
from prefect import State

from deliver.errors import ChecksFailed
from deliver.prefect_api import log_messages
from deliver.sandbox.state import STATE_FILE
from deliver.tasks.engine import CI_LABEL
from flows.ci import CiParameters, CiResult, ci_pipeline
from tests.conftest import PROJECT_DIR
from tests.test_ci_pipeline import git

ORDERS = PROJECT_DIR / "examples" / "orders-api"
SAMPLE = PROJECT_DIR / "examples" / "stock-api"


def repo_from(example: Path, where: Path, changes: dict[str, str] | None = None) -> Path:
    repo = where / example.name
    shutil.copytree(
        example, repo, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".*_cache")
    )
    (repo / "session.txt").write_text(f"{uuid.uuid4()}\n")  # a build of its own each session
    for relative, text in (changes or {}).items():
        (repo / relative).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "example")
    return repo


def ci_on_sandbox(sandbox_config: Any, repo: Path, **overrides: Any) -> tuple[Any, Any]:
    """CI of `repo`'s main branch on the sandbox: its final state and result."""
    parameters = CiParameters(
        repo=str(repo),
        ref="main",
        advisory_url=sandbox_config.advisory_url,
        cache_dir=str(sandbox_config.state_dir / "ci-cache"),
        **overrides,
    )
    flow_call = cast(
        Coroutine[Any, Any, State[CiResult]], ci_pipeline(parameters, return_state=True)
    )
    state = asyncio.run(flow_call)
    return state, state.result(raise_on_failure=False)


@pytest.fixture(scope="module")
def run_ci(sandbox_config, registry, prefect_api):
    return functools.partial(ci_on_sandbox, sandbox_config)


def leftovers(docker_engine: Any, state: Any) -> list[str]:
    """Containers and networks a finished run left behind."""
    label = f"{CI_LABEL}={state.state_details.flow_run_id}"
    containers = docker_engine.containers.list(all=True, filters={"label": label})
    networks = docker_engine.networks.list(filters={"label": label})
    return [c.name for c in containers] + [n.name for n in networks]


@pytest.fixture(scope="module")
def orders_first(run_ci, tmp_path_factory, docker_engine) -> tuple[Any, CiResult, Path]:
    repo = repo_from(ORDERS, tmp_path_factory.mktemp("orders"))
    state, result = run_ci(repo)
    assert state.is_completed(), result
    assert leftovers(docker_engine, state) == []
    return state, result, repo


def test_orders_api_goes_through_ci_with_postgres_and_redis(orders_first, registry):
    """Its tests run against the service containers; its image, tested with them, is pushed."""
    _, result, _ = orders_first
    assert result.image.startswith(f"{registry['address']}/orders-api@sha256:")
    by_name = {c.name: c for c in result.checks}
    assert set(by_name) == {"lint", "tests", "dependencies"}
    assert all(c.status in {"passed", "cached"} for c in by_name.values())  # a reused sandbox
    tests = by_name["tests"]
    assert tests.tests is not None
    assert (tests.tests.passed, tests.tests.failed) == (9, 0)
    assert tests.coverage is not None
    assert tests.coverage >= 80
    assert result.scan.passed


def test_a_second_run_reuses_the_environment_and_skips_unchanged_checks(
    orders_first, run_ci, docker_engine
):
    _, _, repo = orders_first
    (repo / "orders_api" / "pricing.py").write_text(
        (repo / "orders_api" / "pricing.py").read_text() + f"\n# {uuid.uuid4()}\n"
    )
    git(repo, "commit", "-q", "-am", "touch pricing")
    state, again = run_ci(repo)
    assert state.is_completed(), again
    statuses = {c.name: c.status for c in again.checks}
    assert statuses == {"lint": "passed", "tests": "passed", "dependencies": "cached"}
    logs = log_messages(state.state_details.flow_run_id)
    assert any("Reusing the app environment" in line for line in logs)
    assert leftovers(docker_engine, state) == []


# What a hostile pull request's check tries, from inside the job container. It prints what it
# reached and exits 1 when it reached anything.
HOSTILE = """
import base64, json, os, socket, sys, pathlib
targets = json.loads(base64.b64decode(sys.argv[1]))
reached = []
for path in targets["files"]:
    try:
        pathlib.Path(path).read_bytes()
        reached.append("read " + path)
    except OSError:
        pass
for name in os.environ:
    if name.startswith(("PREFECT", "DOCKER", "AWS", "GIT")) or "PASSWORD" in name:
        reached.append("env " + name)
if os.path.exists("/var/run/docker.sock"):
    reached.append("docker socket")
for host, port in targets["ports"]:
    connection = socket.socket()
    connection.settimeout(2)
    try:
        connection.connect((host, port))
        reached.append("connected %s:%d" % (host, port))
    except OSError:
        pass
    finally:
        connection.close()
for path in targets["writes"]:
    try:
        pathlib.Path(path).write_text("pwned")
        reached.append("wrote " + path)
    except OSError:
        pass
print(json.dumps(reached))
sys.exit(1 if reached else 0)
"""


def env_fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_hostile_pull_request_finds_nothing_reaches_nothing_changes_nothing(
    run_ci, sandbox_config, tmp_path_factory
):
    config = sandbox_config
    spec = (
        (SAMPLE / "deliver.yaml").read_text().replace("  name: stock-api\n", "  name: job-test\n")
    )
    main = repo_from(SAMPLE, tmp_path_factory.mktemp("trusted"), {"deliver.yaml": spec})
    state, trusted = run_ci(main)
    assert state.is_completed(), trusted
    trusted_envs = config.state_dir / "ci-cache" / "envs" / "trusted"
    before = {p.name: env_fingerprint(p) for p in trusted_envs.iterdir() if p.is_dir()}

    deploy_keys = sorted(str(p) for p in config.state_dir.rglob("deploy_key"))
    assert deploy_keys, "the sandbox has deploy keys to steal"
    targets = {
        "files": [
            *deploy_keys,
            str(config.state_dir / STATE_FILE),
            str(config.prefect_auth_file),
            str(Path.home() / ".docker" / "config.json"),
        ],
        "ports": [
            [host, port]
            for host in ("127.0.0.1", config.docker_bridge_gateway)
            for port in (config.prefect_port, config.registry_port, 2222, config.postgres_port)
        ],
        "writes": [
            "/deliver/env/bin/python3-pwned",
            "/deliver/env/lib/python3.11/site-packages/pwned.pth",
            "/deliver/workspace/pwned",
        ],
    }
    hostile_check = (
        "checks:\n  - name: hostile\n    run: [python, -c, "
        + json.dumps(HOSTILE)
        + ", "
        + base64.b64encode(json.dumps(targets).encode()).decode()
        + f", {uuid.uuid4()}]\n"  # a command of its own: never a cached result
    )
    pull_request = repo_from(
        SAMPLE,
        tmp_path_factory.mktemp("pull-request"),
        {"deliver.yaml": spec.replace("checks:\n", hostile_check, 1)},
    )
    state, hostile = run_ci(pull_request, untrusted=True)
    if isinstance(hostile, ChecksFailed):
        pytest.fail(f"the pull request's check reached something:\n{hostile}")
    assert state.is_completed(), hostile
    assert {c.name: c.status for c in hostile.checks}["hostile"] == "passed"

    after = {p.name: env_fingerprint(p) for p in trusted_envs.iterdir() if p.is_dir()}
    assert {name: after[name] for name in before} == before, "a trusted environment changed"
    state, again = run_ci(main)
    assert state.is_completed(), again
    assert {c.status for c in again.checks} == {"cached"}


def test_a_uv_lock_is_installed_frozen_with_the_spec_extras_and_groups(docker_engine, tmp_path):
    """An app with a uv.lock gets exactly the locked versions, its extras and groups too."""
    from deliver.planning.environment import install_plan
    from deliver.spec import EnvironmentSpec
    from deliver.tasks.app_environment import (
        build_environment,
        dependency_files,
        environment_at,
        installed_versions,
    )

    app = tmp_path / "locked"
    app.mkdir()
    (app / "pyproject.toml").write_text(
        '[project]\nname = "locked"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["six==1.16.0"]\n\n[project.optional-dependencies]\ntest = ["iniconfig"]\n'
        '\n[dependency-groups]\nlint = ["ruff"]\n'
    )
    locked = subprocess.run(
        [str(Path(sys.executable).parent / "uv"), "lock", "--quiet"],
        cwd=app,
        capture_output=True,
        text=True,
        check=False,
    )
    assert locked.returncode == 0, locked.stderr
    spec = EnvironmentSpec(extras=["test", "absent"], groups=["lint"], tools=[])
    plan = install_plan(dependency_files(app, spec), spec)
    assert (plan.lock, plan.extras, plan.groups) == (True, ("test",), ("lint",))
    image = docker_engine.images.get("python:3.12-slim").id
    build_environment(plan, app, image, tmp_path / "env", tmp_path / "uv", lambda _line: None)
    versions = installed_versions(environment_at(image, tmp_path / "env", "digest"))
    assert versions["six"] == "1.16.0"
    assert {"iniconfig", "ruff"} <= set(versions)


def test_a_service_that_never_gets_healthy_fails_the_run_naming_it(
    run_ci, tmp_path_factory, docker_engine
):
    """Every check reports the same failure (the service, its image, its logs); nothing of the
    run is left in Docker."""
    spec = (ORDERS / "deliver.yaml").read_text()
    spec = spec.replace("health: [redis-cli, ping]", 'health: ["false"]\n    health_timeout_s: 2')
    spec = spec.replace("  name: orders-api\n", "  name: job-test-unhealthy\n")
    changes = {"deliver.yaml": spec, "orders_api/_run.py": f'RUN = "{uuid.uuid4()}"\n'}
    repo = repo_from(ORDERS, tmp_path_factory.mktemp("unhealthy"), changes)  # checks must run
    state, error = run_ci(repo)
    assert state.is_failed()
    assert isinstance(error, ChecksFailed), error
    assert "Service 'redis' (redis:7) was not healthy" in str(error)
    assert "already in use" not in str(error)
    assert leftovers(docker_engine, state) == []
