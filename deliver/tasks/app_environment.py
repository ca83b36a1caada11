"""Docker engine: the app environment its checks run in, installed with uv inside the job
image (so it is the app's Python, not the worker's), as a non-root user, with only the app's
folder mounted read-only. Reused while its digest (the image and every dependency file) is the
same; a pull request's environments and uv cache are kept apart from trusted runs'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import uv
from prefect import get_run_logger, task

from deliver import redaction
from deliver.errors import EnvironmentFailed
from deliver.planning.dockerfile import base_image
from deliver.planning.environment import (
    PYPROJECT,
    UV_LOCK,
    EnvironmentProblem,
    InstallPlan,
    environment_digest,
    install_plan,
    install_script,
    nested_files,
    requirement_file_names,
)
from deliver.spec import EnvironmentSpec, PipelineSpec
from deliver.tasks.engine import docker_client

ENV_MOUNT = "/deliver/env"
APP_MOUNT = "/deliver/app"
UV_MOUNT = "/deliver/bin/uv"
UV_CACHE_MOUNT = "/deliver/uv-cache"
CA_MOUNT = "/deliver/ca-certificates.crt"
MACHINE_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
FROZEN = ".frozen"
RUNTIME = "runtime-requirements.txt"
NOBODY_ID = 65534
NOBODY = f"{NOBODY_ID}:{NOBODY_ID}"
CONTAINER_TMP = "/tmp"  # noqa: S108 - the container's own, never the worker's
BUILD_TIMEOUT_S = 900

# Run with the environment's own python: the pinned closure of the app's runtime dependencies.
_RUNTIME_CLOSURE = """
import json, re, sys
from importlib import metadata
wanted = [re.split(r"[ ;<>=!~\\[]", r, maxsplit=1)[0] for r in json.loads(sys.argv[1])]
seen = {}
while wanted:
    name = wanted.pop()
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        continue
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    seen[key] = dist.version
    for req in dist.requires or []:
        if "extra ==" not in req:
            wanted.append(re.split(r"[ ;<>=!~\\[(]", req, maxsplit=1)[0])
print("\\n".join(f"{k}=={v}" for k, v in sorted(seen.items())))
"""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AppEnvironment:
    image: str  # the job image's id: the environment only runs in it
    path: Path  # on the worker; mounted read-only at ENV_MOUNT
    digest: str  # of what it was built from
    frozen_digest: str  # of what was installed (uv pip freeze): the tools' actual versions

    @property
    def runtime_requirements(self) -> str:
        """The pinned runtime closure, as the job container sees it."""
        return f"{ENV_MOUNT}/{RUNTIME}"


def container_user() -> str:
    """Who runs in the job's containers: the worker's own user, or nobody for a root worker."""
    return NOBODY if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def job_image(app_dir: Path, spec: PipelineSpec, build_args: dict[str, str]) -> str:
    """The spec's environment.image, else the Dockerfile's base image with the same build args."""
    if spec.environment.image:
        return spec.environment.image
    dockerfile = app_dir / spec.image.context / spec.image.dockerfile
    found = base_image(dockerfile.read_text(), build_args) if dockerfile.is_file() else None
    if found is None:
        raise EnvironmentFailed(
            app_dir=str(app_dir),
            detail=f"no base image could be read from {dockerfile.name}; "
            "set environment.image in deliver.yaml",
        )
    return found


def dependency_files(app_dir: Path, spec: EnvironmentSpec) -> dict[str, str]:
    """name -> text of pyproject.toml, uv.lock and every requirement file uv will read."""
    root = app_dir.resolve()
    files = {n: (app_dir / n).read_text() for n in (PYPROJECT, UV_LOCK) if (app_dir / n).is_file()}
    present = {p.name: "" for p in app_dir.iterdir() if p.is_file()}
    pending = requirement_file_names(present, spec)
    while pending:
        name = pending.pop(0)
        path = (app_dir / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            detail = f"{name}: no such requirement file in the app folder"
            raise EnvironmentFailed(app_dir=str(app_dir), detail=detail)
        if name in files:
            continue
        files[name] = path.read_text()
        try:
            pending.extend(nested_files(name, files[name]))
        except EnvironmentProblem as exc:
            raise EnvironmentFailed(app_dir=str(app_dir), detail=str(exc)) from exc
    return files


def _image_id(client: docker.DockerClient, image: str, app_dir: Path) -> str:
    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        pass
    try:
        return str(client.images.pull(image).id)
    except docker.errors.DockerException as exc:
        detail = f"the job image {image} is not here and could not be pulled: {exc}"
        raise EnvironmentFailed(app_dir=str(app_dir), detail=detail) from exc


def _planned(app_dir: Path, spec: EnvironmentSpec) -> InstallPlan:
    try:
        return install_plan(dependency_files(app_dir, spec), spec)
    except EnvironmentProblem as exc:
        raise EnvironmentFailed(app_dir=str(app_dir), detail=str(exc)) from exc


def _trust(untrusted: bool) -> str:
    return "untrusted" if untrusted else "trusted"


def _environment_path(cache_dir: Path, digest: str, *, untrusted: bool) -> Path:
    return cache_dir / "envs" / _trust(untrusted) / digest


def app_environment(
    app_dir: Path, spec: EnvironmentSpec, image: str, cache_dir: Path, *, untrusted: bool
) -> AppEnvironment:
    """The environment for `app_dir` in `image`: one already built is found without a task run
    (it is moved into place once complete, so one that exists is whole); otherwise
    `prepare_app_environment` pulls the image if need be and builds it."""
    with docker_client() as client:
        try:
            image_id: str | None = str(client.images.get(image).id)
        except docker.errors.ImageNotFound:
            image_id = None
    if image_id is not None:
        digest = environment_digest(_planned(app_dir, spec), image_id)
        path = _environment_path(cache_dir, digest, untrusted=untrusted)
        if (path / FROZEN).exists():
            get_run_logger().info("Reusing the app environment %s (inputs unchanged)", digest)
            return environment_at(image_id, path, digest)
    return prepare_app_environment(app_dir, spec, image, cache_dir, untrusted=untrusted)


@task(name="prepare_app_environment")
def prepare_app_environment(
    app_dir: Path, spec: EnvironmentSpec, image: str, cache_dir: Path, *, untrusted: bool
) -> AppEnvironment:
    """The environment for `app_dir` in `image`, built once per distinct digest (another run
    may have built it while this one waited for the lock)."""
    logger = get_run_logger()
    plan = _planned(app_dir, spec)
    with docker_client() as client:
        image_id = _image_id(client, image, app_dir)
    digest = environment_digest(plan, image_id)
    path = _environment_path(cache_dir, digest, untrusted=untrusted)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f"{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / FROZEN).exists():
            logger.info("Reusing the app environment %s (inputs unchanged)", digest)
        else:
            logger.info("Building the app environment %s in %s with uv", digest, image)
            build_environment(
                plan, app_dir, image_id, path, cache_dir / "uv" / _trust(untrusted), logger.info
            )
    return environment_at(image_id, path, digest)


@task(name="fresh_app_environment")
def fresh_app_environment(
    app_dir: Path, spec: EnvironmentSpec, image: str, path: Path
) -> AppEnvironment:
    """A new environment at `path` with the newest versions the app's requirements allow:
    nothing reused, not even uv's cache. What it resolved to is in `installed_versions(...)`."""
    logger = get_run_logger()
    plan = _planned(app_dir, spec)
    with docker_client() as client:
        image_id = _image_id(client, image, app_dir)
    build_environment(
        plan, app_dir, image_id, path, path.parent / f"{path.name}-uv-cache", logger.info
    )
    return environment_at(image_id, path, environment_digest(plan, image_id))


def environment_at(image_id: str, path: Path, digest: str) -> AppEnvironment:
    frozen = (path / FROZEN).read_text()
    return AppEnvironment(
        image=image_id,
        path=path,
        digest=digest,
        frozen_digest=hashlib.sha256(frozen.encode()).hexdigest()[:32],
    )


def writable_by_container(path: Path) -> Path:
    """`path`, made if missing, writable by the containers' user and nobody else (a root
    worker hands it to nobody, rather than opening it to every local user)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(path, NOBODY_ID, NOBODY_ID)
    path.chmod(0o700)
    return path


def build_environment(
    plan: InstallPlan,
    app_dir: Path,
    image_id: str,
    path: Path,
    uv_cache: Path,
    log: Callable[[str], None],
) -> None:
    """Install into a new folder beside `path`, then move it into place: a failed or killed
    build leaves nothing a later run would take for an environment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    building = writable_by_container(
        Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    )
    script = install_script(plan, uv=UV_MOUNT, env=ENV_MOUNT, app=APP_MOUNT)
    python = f"{ENV_MOUNT}/bin/python"
    script += f"\n{UV_MOUNT} pip freeze --python {python} > {ENV_MOUNT}/{FROZEN}"
    script += (
        f"\n{python} -c {shlex.quote(_RUNTIME_CLOSURE)} "
        f"{shlex.quote(json.dumps(list(plan.runtime)))} > {ENV_MOUNT}/{RUNTIME}"
    )
    volumes = {
        str(app_dir.resolve()): {"bind": APP_MOUNT, "mode": "ro"},
        str(building): {"bind": ENV_MOUNT, "mode": "rw"},
        str(writable_by_container(uv_cache)): {"bind": UV_CACHE_MOUNT, "mode": "rw"},
        str(Path(uv.find_uv_bin()).resolve()): {"bind": UV_MOUNT, "mode": "ro"},
    }
    env = {
        "HOME": CONTAINER_TMP,
        "UV_CACHE_DIR": UV_CACHE_MOUNT,
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
        "UV_NO_PROGRESS": "1",
        # Checks import the tools from a read-only mount: compiled now, or on every run.
        "UV_COMPILE_BYTECODE": "1",
    }
    if MACHINE_CA_BUNDLE.is_file():  # this machine's trust store (a proxy's CA, say)
        volumes[str(MACHINE_CA_BUNDLE)] = {"bind": CA_MOUNT, "mode": "ro"}
        env["SSL_CERT_FILE"] = CA_MOUNT
    try:
        with docker_client() as client:
            container = client.containers.run(
                image_id,
                ["sh", "-c", script],
                detach=True,
                user=container_user(),
                working_dir=APP_MOUNT,
                environment=env,
                volumes=volumes,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
            )
            try:
                lines: list[str] = []
                for chunk in container.logs(stream=True, follow=True):
                    for line in redaction.redact(chunk.decode(errors="replace")).splitlines():
                        lines.append(line)
                        log(line)
                exit_code = container.wait(timeout=BUILD_TIMEOUT_S)["StatusCode"]
            finally:
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
        if exit_code != 0:
            tail = "\n".join(lines[-30:])
            raise EnvironmentFailed(
                app_dir=str(app_dir), detail=f"uv exited {exit_code} in the job image:\n{tail}"
            )
        shutil.rmtree(path, ignore_errors=True)
        building.chmod(0o755)
        building.rename(path)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def installed_versions(environment: AppEnvironment) -> dict[str, str]:
    """name -> version of every distribution in the environment."""
    versions: dict[str, str] = {}
    for line in (environment.path / FROZEN).read_text().splitlines():
        name, separator, version = line.partition("==")
        if separator:
            versions[name.strip()] = version.strip()
    return versions
