"""Registry credentials on a deploy host: present only while its pull runs, even when the
release is killed mid-pull. Against the sandbox's staging sshd, registry and Docker engine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker.errors

from tests.conftest import PROJECT_DIR
from tests.images import push_dockerfile

PULL = (
    "import sys\n"
    "from deliver.tasks.ssh_host import open_ssh_hosts\n"
    "with open_ssh_hosts('staging', with_env=False) as (_, hosts):\n"
    "    hosts[0].pull(sys.argv[1])\n"
)


def pull_configs() -> set[Path]:
    found: set[Path] = set()
    for base in (Path("/dev/shm"), Path(os.environ.get("TMPDIR", "/tmp"))):  # noqa: S108 (where mktemp puts them on the host)
        with contextlib.suppress(OSError):
            found |= set(base.glob("deliver-pull.*"))
    return found


def test_a_release_killed_mid_pull_leaves_no_docker_config_on_the_host(
    docker_engine, registry, base_image, prefect_api
):
    """The pull's docker config (the registry password) exists while it runs; the release
    process is killed -9 then, and the config is gone within seconds."""
    dockerfile = f"FROM {base_image}\nRUN head -c 60000000 /dev/urandom > /blob\n"
    pushed = push_dockerfile(docker_engine, registry, "pull-kill-test", dockerfile)
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_engine.images.remove(pushed, force=True)
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_engine.images.remove(f"{registry['address']}/pull-kill-test:latest", force=True)
    before = pull_configs()
    puller = subprocess.Popen(
        [sys.executable, "-c", PULL, pushed], cwd=PROJECT_DIR, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not (pull_configs() - before):
        assert puller.poll() is None, puller.stderr.read() if puller.stderr else ""
        assert time.monotonic() < deadline, "the pull never logged in"
        time.sleep(0.005)
    os.kill(puller.pid, signal.SIGKILL)
    puller.wait()
    deadline = time.monotonic() + 30
    while pull_configs() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pull_configs() - before == set()
