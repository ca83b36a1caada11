"""The sample service built with chosen build args and pushed to the sandbox's registry."""

from __future__ import annotations

import io
from typing import Any

from deliver.planning.registry import read_push_stream
from tests.conftest import PROJECT_DIR


def push_sample(
    docker_engine: Any,
    registry: dict[str, str],
    base_image: str,
    repository_name: str,
    tag: str,
    build_args: dict[str, str],
) -> str:
    """Build the sample as `<registry>/<repository_name>:<tag>`, push it, and return its
    reference by digest."""
    repository = f"{registry['address']}/{repository_name}"
    docker_engine.images.build(
        path=str(PROJECT_DIR / "examples" / "stock-api"),
        tag=f"{repository}:{tag}",
        buildargs={"BASE_IMAGE": base_image, **build_args},
        rm=True,
    )
    return _push(docker_engine, registry, repository, tag)


def push_dockerfile(
    docker_engine: Any, registry: dict[str, str], repository_name: str, dockerfile: str
) -> str:
    """An image built from `dockerfile` alone (no context), pushed; its reference by digest."""
    repository = f"{registry['address']}/{repository_name}"
    docker_engine.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repository}:latest", rm=True
    )
    return _push(docker_engine, registry, repository, "latest")


def _push(docker_engine: Any, registry: dict[str, str], repository: str, tag: str) -> str:
    auth = {"username": registry["username"], "password": registry["password"]}
    stream = docker_engine.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)
    outcome = read_push_stream(stream)
    assert outcome.digest, outcome.error
    return f"{repository}@{outcome.digest}"
