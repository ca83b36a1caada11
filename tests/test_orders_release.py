"""orders-api from CI through staging and production: its runtime facts from its image, its env
and secrets in a 0600 env file, its migration once per release, PostgreSQL and Redis as the
environment's accessories. Against the sandbox's SSH hosts, Docker engine, nginx and Prefect."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import docker.errors
import httpx
import pytest

from blocks.deploy_target import DeployTarget
from deliver.errors import AccessoryDown, EnvMissing, MigrationFailed
from deliver.planning.runtime import (
    RUNTIME_LABEL,
    RuntimeFacts,
    accessory_container,
    accessory_volume,
)
from deliver.sandbox.config import Environment
from deliver.sandbox.prefect_blocks import orders_database_secret
from flows.release import RollbackParameters, rollback_here
from tests.load import Load
from tests.test_job_containers import ORDERS, ci_on_sandbox, repo_from
from tests.test_release import ProductionRelease, run_release

SERVICE = "orders-api"
COLUMN_MIGRATION = '''"""A nullable note on each order: the live version never writes it."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("orders", sa.Column("note", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("orders", "note")
'''


def _ci(sandbox_config: Any, repo: Path) -> str:
    state, result = ci_on_sandbox(sandbox_config, repo)
    assert state.is_completed(), result
    return str(result.image)


def reset_orders_api(docker_engine: Any, sandbox_config: Any) -> None:
    """No orders-api slots, state or accessories (their data volumes included) anywhere."""
    filters = {"label": f"dev.deliver.app={SERVICE}"}
    for container in docker_engine.containers.list(all=True, filters=filters):
        container.remove(force=True)
    for environment in ("staging", "production"):
        for accessory in ("postgres", "redis"):
            with contextlib.suppress(docker.errors.NotFound):
                container = docker_engine.containers.get(
                    accessory_container(environment, accessory)
                )
                container.remove(force=True)
            with contextlib.suppress(docker.errors.NotFound):
                docker_engine.volumes.get(accessory_volume(environment, accessory)).remove(
                    force=True
                )
        shutil.rmtree(
            sandbox_config.state_dir / "hosts" / environment / SERVICE, ignore_errors=True
        )


@pytest.fixture(scope="module")
def orders_images(
    sandbox_config, registry, prefect_api, tmp_path_factory, docker_engine
) -> Iterator[dict[str, str]]:
    """v1: orders-api as it is; v2: with a migration adding a column; failing-migration: a
    migration command that exits 1. Each through CI (the checks of the last two are cached)."""
    v1 = repo_from(ORDERS, tmp_path_factory.mktemp("orders-v1"))
    spec = (ORDERS / "deliver.yaml").read_text()
    v2 = repo_from(
        ORDERS,
        tmp_path_factory.mktemp("orders-v2"),
        {"migrations/versions/0002_note.py": COLUMN_MIGRATION},
    )
    failing = spec.replace(
        "migrate: [alembic, upgrade, head]",
        "migrate: [python, -c, \"import sys; print('refusing'); sys.exit(1)\"]",
    )
    broken = repo_from(ORDERS, tmp_path_factory.mktemp("orders-bad"), {"deliver.yaml": failing})
    images = {
        "v1": _ci(sandbox_config, v1),
        "v2": _ci(sandbox_config, v2),
        "failing-migration": _ci(sandbox_config, broken),
    }
    reset_orders_api(docker_engine, sandbox_config)
    yield images
    reset_orders_api(docker_engine, sandbox_config)


def staging_block() -> DeployTarget:
    return cast(DeployTarget, DeployTarget.load("staging"))


def state_of(sandbox_config: Any, environment: str) -> dict[str, Any]:
    path = sandbox_config.state_dir / "hosts" / environment / SERVICE / "release-state.json"
    return cast(dict[str, Any], json.loads(path.read_text())) if path.exists() else {}


def live_url(sandbox_config: Any, environment: str) -> str:
    slot = state_of(sandbox_config, environment)["live"]["slot"]
    ports = sandbox_config.orders_slot_ports[Environment(environment)]
    return f"http://127.0.0.1:{next(p for s, p in ports.items() if s.value == slot)}"


def psql(environment: str, sql: str) -> str:
    container = accessory_container(environment, "postgres")
    command = ["docker", "exec", container, "psql", "-U", "app", "-d", "app", "-tAc", sql]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def orders_containers(docker_engine: Any, environment: str) -> list[str]:
    filters = {"label": [f"dev.deliver.app={SERVICE}", f"dev.deliver.environment={environment}"]}
    return sorted(c.name for c in docker_engine.containers.list(filters=filters))


def test_the_image_carries_the_runtime_facts_of_its_spec(orders_images, docker_engine):
    """CI labels the image with the spec's release section, port, health path and smoke."""
    labels = docker_engine.images.get(orders_images["v1"]).labels
    facts = RuntimeFacts.from_label(labels[RUNTIME_LABEL])
    assert facts.service == SERVICE
    assert facts.required_env == ("DATABASE_URL", "REDIS_URL")
    assert facts.migrate == ("alembic", "upgrade", "head")
    assert [check.path for check in facts.smoke] == ["/health", "/stats"]


def test_staging_release_migrates_boots_accessories_and_smokes_through_the_database(
    orders_images, sandbox_config, docker_engine
):
    """The first release boots PostgreSQL and Redis, migrates, and serves orders through both;
    its env file is the deploy user's alone, and its secret never on a command line."""
    state, result = run_release(orders_images["v1"], "staging", "1.0.0")
    assert state.is_completed(), result
    assert "migrate" in result.timings_s
    assert psql("staging", "SELECT version_num FROM alembic_version") == "0001"
    url = live_url(sandbox_config, "staging")
    created = httpx.post(f"{url}/orders", json={"item": "widget", "quantity": 3}, timeout=10)
    assert created.status_code == 201, created.text
    assert httpx.get(f"{url}/stats", timeout=10).json()["orders_created"] >= 1

    slot = state_of(sandbox_config, "staging")["live"]["slot"]
    env_file = sandbox_config.state_dir / "hosts" / "staging" / SERVICE / "env"
    env_file = env_file / f"{SERVICE}-staging-{slot}.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    password = json.loads(
        subprocess.run(
            [
                "docker",
                "inspect",
                "--format",
                "{{json .Args}} {{json .Config.Cmd}} {{json .Path}}",
                f"{SERVICE}-staging-{slot}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split(" ")[0]
    )
    secret = sandbox_secret(sandbox_config, "staging")
    assert secret not in json.dumps(password)
    assert secret in env_file.read_text()  # it is where it belongs


def sandbox_secret(sandbox_config: Any, environment: str) -> str:
    from prefect.blocks.system import Secret

    block = cast(Any, Secret.load(orders_database_secret(Environment(environment))))
    value = block.get()
    return str(value["password"])


def test_production_switches_under_load_while_a_migration_adds_a_column(
    orders_images, sandbox_config
):
    """Production waits for approval, then migrates (the live version keeps serving through the
    new column) and switches blue-green behind its nginx: no request fails."""
    first = ProductionRelease(orders_images["v1"], "1.0.0")
    first.decide(reason="first orders-api release")
    state, result = first.result()
    assert state.is_completed(), result
    state, result = run_release(orders_images["v2"], "staging", "1.1.0")
    assert state.is_completed(), result
    assert psql("staging", "SELECT version_num FROM alembic_version") == "0002"

    before = state_of(sandbox_config, "production")["live"]["slot"]
    load = Load(f"{sandbox_config.orders_front_url}/health", clients=4)
    try:
        second = ProductionRelease(orders_images["v2"], "1.1.0")
        time.sleep(1)  # load on the live version before anything moves
        assert psql("production", "SELECT version_num FROM alembic_version") == "0001"
        second.decide(reason="adds a note column")
        state, result = second.result()
        time.sleep(0.5)
    finally:
        outcomes = load.finish()
    assert state.is_completed(), result
    assert psql("production", "SELECT version_num FROM alembic_version") == "0002"
    assert state_of(sandbox_config, "production")["live"]["slot"] != before
    assert outcomes["failed"] == 0, outcomes
    assert sum(outcomes.values()) > 100, outcomes


def test_accessory_data_survives_a_release_and_a_rollback(orders_images, sandbox_config):
    """A row written before is read after a release and after a rollback; rolling back the app
    leaves the schema where the last migration put it."""
    url = live_url(sandbox_config, "staging")
    created = httpx.post(f"{url}/orders", json={"item": "gizmo", "quantity": 2}, timeout=10)
    assert created.status_code == 201, created.text
    order = created.json()
    postgres = accessory_container("staging", "postgres")
    started_at = _started_at(postgres)

    parameters = RollbackParameters(environment="staging", service=SERVICE, requested_by="tester")
    state = rollback_here(parameters)
    assert state.is_completed(), state.result(raise_on_failure=False)
    url = live_url(sandbox_config, "staging")
    assert httpx.get(f"{url}/orders/{order['id']}", timeout=10).json() == order
    assert psql("staging", "SELECT version_num FROM alembic_version") == "0002"

    state, result = run_release(orders_images["v2"], "staging", "1.1.0")
    assert state.is_completed(), result
    url = live_url(sandbox_config, "staging")
    assert httpx.get(f"{url}/orders/{order['id']}", timeout=10).json() == order
    assert _started_at(postgres) == started_at  # never restarted by a release


def _started_at(container: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.StartedAt}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _unchanged(sandbox_config: Any, docker_engine: Any) -> tuple[Any, ...]:
    return (
        state_of(sandbox_config, "staging")["live"],
        orders_containers(docker_engine, "staging"),
    )


def test_a_required_env_name_with_no_value_fails_before_any_host_changes(
    orders_images, sandbox_config, docker_engine
):
    """Without DATABASE_URL the release names it and touches nothing."""
    staging = staging_block()
    placement = staging.services[SERVICE].model_copy(update={"secrets": {}})
    DeployTarget(**{**staging.model_dump(), "services": {SERVICE: placement.model_dump()}}).save(
        "staging-no-database", overwrite=True
    )
    before = _unchanged(sandbox_config, docker_engine)
    state, error = run_release(
        orders_images["v1"], "staging", "1.0.9", target_block="staging-no-database"
    )
    assert state.is_failed()
    assert isinstance(error, EnvMissing)
    assert error.names == ["DATABASE_URL"]
    assert "Nothing was changed" in str(error)
    assert _unchanged(sandbox_config, docker_engine) == before


def test_a_failed_migration_fails_the_release_with_nothing_switched(
    orders_images, sandbox_config, docker_engine
):
    """A migration that exits 1: the release fails naming it and its output, the live version
    serves, no candidate is left."""
    before = _unchanged(sandbox_config, docker_engine)
    state, error = run_release(orders_images["failing-migration"], "staging", "1.2.0")
    assert state.is_failed()
    assert isinstance(error, MigrationFailed)
    assert "exited 1" in str(error)
    assert "refusing" in str(error)
    assert _unchanged(sandbox_config, docker_engine) == before
    url = live_url(sandbox_config, "staging")
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"


def test_an_accessory_that_is_down_fails_the_release_naming_it(
    orders_images, sandbox_config, docker_engine
):
    """Redis stopped: the release is refused naming it and what to run; a release never
    restarts it, and the live slot is left as it was."""
    redis = docker_engine.containers.get(accessory_container("staging", "redis"))
    redis.stop(timeout=2)
    try:
        before = _unchanged(sandbox_config, docker_engine)
        state, error = run_release(orders_images["v1"], "staging", "1.0.1")
        assert state.is_failed()
        assert isinstance(error, AccessoryDown)
        assert "'redis'" in str(error)
        assert "deliver accessory boot --env staging redis" in str(error)
        assert _unchanged(sandbox_config, docker_engine) == before
        redis.reload()
        assert redis.status == "exited"
    finally:
        redis.start()


def cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    from deliver.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_logs_exec_and_audit_against_staging(orders_images, sandbox_config, capsys):
    """The operator's verbs on orders-api's staging: the live slot's logs, a one-off command in
    its image with its env (exit code passed through), and the audit of what happened there."""
    code, out, _ = cli(capsys, "logs", "--env", "staging", "--service", SERVICE, "--grep", "GET")
    assert code == 0
    assert "GET /health" in out
    code, out, _ = cli(
        capsys, "logs", "--env", "staging", "--service", SERVICE, "--lines", "5", "--json"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert 0 < len(lines) <= 5
    assert all(line["container"].startswith(f"{SERVICE}-staging-") for line in lines)

    code, out, _ = cli(
        capsys, "exec", "--env", "staging", "--service", SERVICE, "--", "alembic", "current"
    )
    assert code == 0
    assert "0002" in out
    code, out, _ = cli(
        capsys,
        "exec",
        "--env",
        "staging",
        "--service",
        SERVICE,
        "--json",
        "--",
        "python",
        "-c",
        "import os, sys; print(os.environ['DATABASE_URL']); sys.exit(3)",
    )
    assert code == 3
    answer = json.loads(out)
    assert answer["exit_code"] == 3
    assert sandbox_secret(sandbox_config, "staging") not in out  # redacted
    assert answer["stdout"] == "***\n"  # the whole URL is a secret (the block's url field)

    code, out, _ = cli(capsys, "audit", "--env", "staging", "--service", SERVICE, "--json")
    assert code == 0
    entries = json.loads(out)
    whats = [(e["what"], e["outcome"]) for e in entries]
    assert ("release 1.0.0", "live") in whats
    assert ("rollback to 1.0.0", "rolled-back") in whats
    assert ("release 1.2.0", "failed") in whats
    first = next(e for e in entries if e["what"] == "release 1.0.0")
    assert first["migration"] == "alembic upgrade head"
    assert first["accessories_booted"] == ["postgres", "redis"]
    code, out, _ = cli(capsys, "audit", "--env", "staging", "--service", SERVICE)
    assert "migrated with `alembic upgrade head`" in out


def test_accessory_commands(orders_images, sandbox_config, capsys):
    """status, logs, remove (refused without --yes; the volume kept) and boot again: the data
    is still there, and both changes are in the audit log."""
    code, out, _ = cli(capsys, "accessory", "status", "--env", "staging", "--json")
    assert code == 0
    states = {s["name"]: s for s in json.loads(out)}
    assert states["postgres"]["status"] == "running"
    assert states["postgres"]["volume"] == accessory_volume("staging", "postgres")
    code, out, _ = cli(capsys, "accessory", "logs", "--env", "staging", "postgres", "--lines", "50")
    assert code == 0
    assert "database system is ready to accept connections" in out

    rows = psql("staging", "SELECT count(*) FROM orders")
    code, _, err = cli(capsys, "accessory", "remove", "--env", "staging", "postgres")
    assert code == 2
    assert "--yes" in err
    code, out, _ = cli(
        capsys, "accessory", "remove", "--env", "staging", "postgres", "--yes", "--reason", "drill"
    )
    assert "postgres: absent" in out
    code, out, _ = cli(capsys, "accessory", "boot", "--env", "staging", "postgres", "--by", "ops")
    assert code == 0, out
    assert "postgres: running" in out
    assert psql("staging", "SELECT count(*) FROM orders") == rows
    code, out, _ = cli(capsys, "audit", "--env", "staging", "--json")
    whats = [(e["what"], e["who"]) for e in json.loads(out)]
    assert any(what == "accessory remove postgres" for what, _ in whats)
    assert ("accessory boot postgres", "ops") in whats
