"""The `deliver` command: help, JSON status and exit codes scripts can rely on."""

import json
import os
import subprocess
import sys

from tests.conftest import PROJECT_DIR


def deliver(*args: str, env=None):
    return subprocess.run(
        [sys.executable, "-m", "deliver.cli", *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_help_lists_the_sandbox_command():
    """`deliver --help` exits 0 and names the sandbox command."""
    done = deliver("--help")
    assert done.returncode == 0
    assert "sandbox" in done.stdout


def test_unknown_command_is_a_usage_error():
    """An unknown command exits 2, argparse's usage error."""
    assert deliver("nonsense").returncode == 2


def test_unknown_component_is_a_clear_error():
    """`--only` with an unknown name exits 1 and lists the known components."""
    done = deliver("sandbox", "status", "--only", "mainframe")
    assert done.returncode == 1
    assert "mainframe" in done.stderr
    assert "registry" in done.stderr


def test_status_json_shows_every_component_healthy(sandbox_state):
    """With the sandbox up, `status --json` lists every component healthy and exits 0."""
    done = deliver("sandbox", "status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = json.loads(done.stdout)
    assert [s["name"] for s in statuses] == [
        "docker-engine",
        "base-image",
        "stand-in-images",
        "registry",
        "ssh-staging",
        "ssh-production",
        "nginx",
        "nginx-orders-api",
        "ssh-fleet-1",
        "ssh-fleet-2",
        "ssh-fleet-3",
        "nginx-fleet-1",
        "nginx-fleet-2",
        "nginx-fleet-3",
        "nginx-fleet-front",
        "advisories",
        "chat",
        "postgres",
        "prefect-server",
        "prefect-worker",
        "prefect-worker-2",
        "prefect-blocks",
    ]
    assert all(s["healthy"] for s in statuses), statuses


def test_env_prints_prefect_settings():
    """`sandbox env` prints exports that point Prefect at the sandbox server."""
    done = deliver("sandbox", "env")
    assert done.returncode == 0
    assert 'export PREFECT_API_URL="http://127.0.0.1:4200/api"' in done.stdout
    assert 'export PREFECT_SERVER_ANALYTICS_ENABLED="false"' in done.stdout


def test_ci_help_lists_its_options():
    """`deliver ci --help` names the repo, ref, spec and sandbox options."""
    done = deliver("ci", "--help")
    assert done.returncode == 0
    for option in ("--repo", "--ref", "--spec", "--sandbox", "--build-arg"):
        assert option in done.stdout


def test_ci_refuses_a_malformed_build_arg():
    """A --build-arg without '=' is refused with exit 1 before anything runs."""
    done = deliver("ci", "--build-arg", "NOVALUE")
    assert done.returncode == 1
    assert "expected NAME=VALUE" in done.stderr


def test_no_configured_server_is_a_clear_error_not_a_throwaway_server(tmp_path):
    """Without --sandbox or PREFECT_API_URL, operator commands say what to set, exit 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path)
    done = deliver("status", env=env)
    assert done.returncode == 1
    assert "PREFECT_API_URL is unset" in done.stderr
    assert "temporary server" not in done.stderr + done.stdout


def test_blocks_register_puts_the_types_in_the_catalogue(prefect_api):
    """`deliver blocks register` registers our block types and the collections' ones we use."""
    done = deliver("blocks", "register", "--json", "--sandbox")
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(json.loads(done.stdout)) >= {
        "deploy-target",
        "approval-policy",
        "docker-registry-credentials",
        "secret",
    }


def test_release_and_rollback_name_the_option_that_is_wrong(sandbox_state):
    """Bad values are usage errors (exit 2) naming the option, before any flow runs."""
    digest = "127.0.0.1:5001/stock-api@sha256:" + "a" * 64
    release = deliver(
        "release",
        "--sandbox",
        "--env",
        "staging",
        "--image",
        digest,
        "--version",
        "1.0.0",
        "--git-sha",
        "abcdef1",
        "--notify",
        "chat",
    )
    assert release.returncode == 2
    assert "error: --notify: " in release.stderr
    back = deliver("rollback", "--sandbox", "--env", "staging", "--to", "bad version!")
    assert back.returncode == 2
    assert "error: --to: " in back.stderr
