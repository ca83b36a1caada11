"""The sandbox registry: generated credentials push and pull; anything else is refused."""

import io
import subprocess
import uuid

import httpx
import pytest

TEST_LABEL = "deliver.test=registry"


def docker_cli(*args, env, stdin=None):
    return subprocess.run(
        ["docker", *args], env=env, input=stdin, capture_output=True, text=True, check=False
    )


@pytest.fixture
def docker_config_env(tmp_path, monkeypatch):
    """A private DOCKER_CONFIG so logins never touch the user's ~/.docker."""
    import os

    return {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}


@pytest.fixture
def tiny_image(docker_engine):
    """A one-file image built from scratch, labelled for cleanup."""
    tag = f"deliver-test/tiny:{uuid.uuid4().hex[:8]}"
    context = io.BytesIO(b"FROM scratch\nLABEL deliver.test=registry\nCOPY marker /marker\n")
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("Dockerfile", context.getvalue()), ("marker", tag.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.seek(0)
    image, _ = docker_engine.images.build(fileobj=archive, custom_context=True, tag=tag, rm=True)
    yield image, tag
    for leftover in docker_engine.images.list(filters={"label": TEST_LABEL}):
        docker_engine.images.remove(leftover.id, force=True)


def test_pushed_tag_pulls_back_with_generated_credentials(registry, tiny_image, docker_config_env):
    """A tag pushed with the generated credentials is pulled back by the docker CLI, same image."""
    image, tag = tiny_image
    remote = f"{registry['address']}/{tag}"
    login = docker_cli(
        "login",
        registry["address"],
        "-u",
        registry["username"],
        "--password-stdin",
        env=docker_config_env,
        stdin=registry["password"],
    )
    assert login.returncode == 0, login.stderr
    assert docker_cli("tag", tag, remote, env=docker_config_env).returncode == 0
    push = docker_cli("push", remote, env=docker_config_env)
    assert push.returncode == 0, push.stderr
    assert "digest: sha256:" in push.stdout
    assert docker_cli("rmi", remote, tag, env=docker_config_env).returncode == 0
    pull = docker_cli("pull", remote, env=docker_config_env)
    assert pull.returncode == 0, pull.stderr
    inspect = docker_cli("image", "inspect", "--format", "{{.Id}}", remote, env=docker_config_env)
    assert inspect.stdout.strip() == image.id


def test_wrong_password_is_refused(registry, docker_config_env):
    """docker login with a wrong password fails."""
    login = docker_cli(
        "login",
        registry["address"],
        "-u",
        registry["username"],
        "--password-stdin",
        env=docker_config_env,
        stdin="not-the-password",
    )
    assert login.returncode != 0
    assert "unauthorized" in login.stderr.lower()


def test_catalog_needs_credentials(registry):
    """The registry's catalog answers 401 without credentials and 200 with them."""
    url = f"http://{registry['address']}/v2/_catalog"
    assert httpx.get(url).status_code == 401
    authed = httpx.get(url, auth=(registry["username"], registry["password"]))
    assert authed.status_code == 200
    assert "repositories" in authed.json()
