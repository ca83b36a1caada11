"""The Docker engine connection every Docker task module shares, and the label on what CI starts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker

CI_LABEL = "dev.deliver.ci"


@contextlib.contextmanager
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=300)
    try:
        yield client
    finally:
        client.close()
