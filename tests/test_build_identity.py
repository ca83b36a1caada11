"""What identifies a build, against the sandbox's Docker engine, registry and Prefect server:
a base image updated under the same name is rebuilt, an unchanged one is reused."""

from __future__ import annotations

import uuid
from pathlib import Path

from deliver.planning.registry import read_push_stream
from tests.test_ci_pipeline import git
from tests.test_job_containers import ci_on_sandbox

SPEC = """service: base-identity
environment:
  tools: []
checks:
  - name: runs
    run: [python3, -c, "print('ok')"]
image:
  name: base-identity
container:
  port: 8000
  health_path: /
"""
DOCKERFILE = """FROM {base}
COPY app.py /app.py
EXPOSE 8000
CMD ["python3", "-m", "http.server", "8000"]
"""


def app_repo(tmp_path: Path, base: str) -> Path:
    """A one-commit repository of a unique app built FROM `base`."""
    repo = tmp_path / "app"
    repo.mkdir()
    (repo / "deliver.yaml").write_text(SPEC)
    (repo / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (repo / "app.py").write_text(f"# {uuid.uuid4()}\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "app")
    return repo


def test_a_base_image_updated_under_its_name_is_rebuilt(docker_engine, sandbox_config, tmp_path):
    """Same commit, same Dockerfile: reused while the base is the same image, rebuilt once the
    name points at a new one."""
    base = f"local/base-identity:{uuid.uuid4().hex[:8]}"
    python = docker_engine.images.get("python:3.12-slim")
    python.tag(base)
    repo = app_repo(tmp_path, base)
    try:
        first = built(sandbox_config, repo)
        assert first == (True, first[1])
        assert built(sandbox_config, repo) == (False, first[1])
        updated, _ = docker_engine.images.build(
            fileobj=_text(f"FROM python:3.12-slim\nLABEL refreshed={uuid.uuid4().hex}\n"), rm=True
        )
        updated.tag(base)
        again = built(sandbox_config, repo)
        assert again[0] is True
        assert again[1] != first[1]
    finally:
        docker_engine.images.remove(base, force=True)


def built(sandbox_config: object, repo: Path) -> tuple[bool, str]:
    state, result = ci_on_sandbox(sandbox_config, repo)
    assert state.is_completed(), result
    return bool(result.built), str(result.image)


def _text(text: str) -> object:
    import io

    return io.BytesIO(text.encode())


def test_a_worker_without_the_image_pulls_it_by_its_registry_digest(
    docker_engine, sandbox_config, tmp_path
):
    """The registry holds this source tree, this engine does not (another worker built it): the
    rerun pulls it by digest, then tests and scans that image; nothing is rebuilt."""
    repo = app_repo(tmp_path, "python:3.12-slim")
    state, first = ci_on_sandbox(sandbox_config, repo)
    assert state.is_completed(), first
    assert first.built
    docker_engine.images.remove(first.image_id, force=True)  # as on another worker
    state, again = ci_on_sandbox(sandbox_config, repo)
    assert state.is_completed(), again
    assert (again.built, again.image) == (False, first.image)
    assert docker_engine.images.get(first.image).id == first.image_id


def test_an_image_someone_else_pushed_under_a_source_tag_is_not_adopted(
    docker_engine, registry, sandbox_config, tmp_path
):
    """Push rights to the registry are not CI's: an image pushed there under a commit's `src-`
    tag by hand is not taken for CI's build of it. CI builds, and its own image is released."""
    repo = app_repo(tmp_path, "python:3.12-slim")
    state, first = ci_on_sandbox(sandbox_config, repo)
    assert state.is_completed(), first
    source_tag = next(tag for tag in first.tags if tag.startswith("src-"))
    intruder, _ = docker_engine.images.build(
        fileobj=_text(f"FROM python:3.12-slim\nLABEL intruder={uuid.uuid4().hex}\n"), rm=True
    )
    repository = f"{registry['address']}/base-identity"
    intruder.tag(repository, source_tag)
    auth = {"username": registry["username"], "password": registry["password"]}
    stream = docker_engine.api.push(
        repository, tag=source_tag, auth_config=auth, stream=True, decode=True
    )
    seeded = read_push_stream(stream).digest
    assert seeded
    state, again = ci_on_sandbox(sandbox_config, repo)
    assert state.is_completed(), again
    assert again.built  # not adopted: built from the source
    assert again.image_id == first.image_id  # the same build as before, pushed again
    assert again.digest != seeded
