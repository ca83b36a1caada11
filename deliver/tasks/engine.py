"""The Docker engine connection every Docker task module shares, and the label on what CI starts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import docker

CI_LABEL = "dev.deliver.ci"

# The API version each engine answered with, by DOCKER_HOST: a client that is not told asks
# the engine first, a round trip (~10 ms) for every client a run makes.
_api_versions: dict[str, str] = {}


@contextlib.contextmanager
def docker_client() -> Iterator[docker.DockerClient]:
    host = os.environ.get("DOCKER_HOST", "")
    client = docker.from_env(timeout=300, version=_api_versions.get(host))
    _api_versions[host] = client.api.api_version
    try:
        yield client
    finally:
        client.close()
