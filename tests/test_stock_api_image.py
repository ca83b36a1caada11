"""The sample's image builds on the sandbox base image and serves /health; a broken build fails."""

import uuid

import httpx
import pytest

from deliver.sandbox.processes import wait_until
from tests.conftest import PROJECT_DIR

LABEL = {"deliver.test": "stock-api-image"}
CONTEXT = PROJECT_DIR / "examples" / "stock-api"


@pytest.fixture(scope="module")
def built(docker_engine, base_image):
    """A good and a broken release of the sample, removed with their containers afterwards."""
    images = {}
    for name, broken in (("good", "false"), ("broken", "true")):
        tag = f"deliver-test/stock-api:{name}-{uuid.uuid4().hex[:6]}"
        image, _ = docker_engine.images.build(
            path=str(CONTEXT),
            tag=tag,
            buildargs={"BASE_IMAGE": base_image, "VERSION": "7.7.7", "BROKEN_HEALTH": broken},
            labels=LABEL,
            rm=True,
        )
        images[name] = image
    yield images
    for container in docker_engine.containers.list(all=True, filters={"label": "deliver.test"}):
        container.remove(force=True)
    for image in images.values():
        docker_engine.images.remove(image.id, force=True)


def serve(docker_engine, image):
    container = docker_engine.containers.run(
        image.id, detach=True, labels=LABEL, ports={"8000/tcp": ("127.0.0.1", None)}
    )
    container.reload()
    port = container.ports["8000/tcp"][0]["HostPort"]
    return container, f"http://127.0.0.1:{port}"


def health(url):
    try:
        return httpx.get(f"{url}/health", timeout=2)
    except httpx.HTTPError:
        return None


def test_good_build_reports_its_version(docker_engine, built):
    """The image runs as a non-root user and /health reports the version given at build time."""
    container, url = serve(docker_engine, built["good"])
    try:
        assert wait_until(lambda: health(url) is not None, timeout=20)
        response = health(url)
        assert response is not None
        assert response.status_code == 200
        assert response.json()["version"] == "7.7.7"
        assert httpx.get(f"{url}/stats/ACME").json()["count"] == 120
        assert built["good"].attrs["Config"]["User"] == "65534:65534"
    finally:
        container.remove(force=True)


def test_broken_build_fails_health(docker_engine, built):
    """BROKEN_HEALTH=true gives an image whose /health answers 503, for rollback drills."""
    container, url = serve(docker_engine, built["broken"])
    try:
        assert wait_until(lambda: health(url) is not None, timeout=20)
        response = health(url)
        assert response is not None
        assert response.status_code == 503
    finally:
        container.remove(force=True)


def test_base_image_is_a_build_argument():
    """The Dockerfile takes its base as ARG BASE_IMAGE defaulting to the public slim image."""
    dockerfile = (CONTEXT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.12-slim" in dockerfile
    assert "FROM ${BASE_IMAGE}" in dockerfile
