"""Docker engine: build an image from a context, and test a container of it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import re
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
from docker.utils.build import exclude_paths
from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

from deliver import redaction
from deliver.errors import BuildFailed, ContainerUnhealthy
from deliver.planning.ci import container_test_cache_key
from deliver.planning.dockerfile import LABELS_DOCKERFILE, ignore_with, with_labels
from deliver.spec import ContainerSpec
from deliver.tasks.engine import CI_LABEL, docker_client
from deliver.tasks.http import wait_for_health
from deliver.tasks.job import containers_of
from deliver.tasks.progress import Progress, progress_key

BUILD_STEP = re.compile(r"^Step (\d+)/(\d+) :")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BuiltImage:
    image_id: str
    repository: str
    tags: tuple[str, ...]
    duration_s: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ContainerTest:
    image_id: str
    healthy: bool
    status_code: int | None
    attempts: int
    elapsed_s: float
    made_in: str = ""  # the flow run that tested it, named when a later run reuses the outcome


def _context_files(context_dir: Path, dockerfile: str) -> list[str]:
    """What a build sends, relative to the context: everything its .dockerignore leaves in."""
    ignore = context_dir / ".dockerignore"
    patterns = []
    if ignore.is_file():
        lines = (line.strip() for line in ignore.read_text().splitlines())
        patterns = [line for line in lines if line and not line.startswith("#")]
    return sorted(exclude_paths(str(context_dir), patterns, dockerfile=dockerfile))


def local_image_id(reference: str | None) -> str:
    """The engine's id of `reference` (the image a build's FROM names), or "" when the engine
    has none yet (the build will pull it): part of what identifies a build, so a new base
    image under the same name rebuilds."""
    if not reference:
        return ""
    with docker_client() as client:
        try:
            return str(client.images.get(reference).id)
        except docker.errors.ImageNotFound:
            return ""


def context_digest(context_dir: Path, dockerfile: str) -> str:
    """sha256 over what a build sends (files outside .dockerignore, with modes), less .git."""
    digest = hashlib.sha256()
    for relative in _context_files(context_dir, dockerfile):
        path = context_dir / relative
        if path.is_file() and relative.split("/", 1)[0] != ".git":
            executable = b"x" if path.stat().st_mode & 0o111 else b"-"
            digest.update(relative.encode() + b"\0" + executable + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def labelled_context(context_dir: Path, dockerfile: str, labelled: str) -> IO[bytes]:
    """The build context as a tar, plus `labelled` as the Dockerfile to build with; the daemon
    drops that file and the made-up .dockerignore from the context, so no COPY takes them."""
    ignore = context_dir / ".dockerignore"
    original = ignore.read_text() if ignore.is_file() else None
    context: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - the build reads it, then closes
    with tarfile.open(fileobj=context, mode="w") as tar:
        for relative in _context_files(context_dir, dockerfile):
            if relative not in (".dockerignore", LABELS_DOCKERFILE):
                tar.add(context_dir / relative, arcname=relative, recursive=False)
        _add_text(tar, ".dockerignore", ignore_with(original, LABELS_DOCKERFILE))
        _add_text(tar, LABELS_DOCKERFILE, labelled)
    context.seek(0)
    return context


class WholeLines:
    """The build stream, redacted, as whole non-blank lines: the redactor holds back the end of
    each chunk, so what it gives back may stop mid-line."""

    def __init__(self) -> None:
        self._redacted, self._partial = redaction.SECRETS.stream(), ""

    def feed(self, chunk: str) -> list[str]:
        *whole, self._partial = (self._partial + self._redacted.feed(chunk)).split("\n")
        return [line for line in whole if line.strip()]

    def finish(self) -> list[str]:
        rest, self._partial = self._partial + self._redacted.finish(), ""
        return [line for line in rest.splitlines() if line.strip()]


@task(name="build_image", task_run_name="build-{repository}")
def build_image(
    context_dir: Path,
    dockerfile: str,
    repository: str,
    tags: list[str],
    build_args: Mapping[str, str],
    labels: Mapping[str, str],
) -> BuiltImage:
    """Build with the docker SDK, streaming the build log; an in-band error fails with its step."""
    logger = get_run_logger()
    if not (context_dir / dockerfile).is_file():
        raise BuildFailed(context=str(context_dir), detail=f"no {dockerfile} in the build context")
    started = time.monotonic()
    lines: list[str] = []
    image_id = None
    labelled = with_labels((context_dir / dockerfile).read_text(), labels)
    with docker_client() as client, contextlib.ExitStack() as cleanup:
        # Where one LABEL line cannot be written, the builder's own labels: a step each.
        source: dict[str, Any] = {
            "path": str(context_dir),
            "dockerfile": dockerfile,
            "labels": dict(labels),
        }
        if labelled is not None:
            context = cleanup.enter_context(labelled_context(context_dir, dockerfile, labelled))
            source = {"fileobj": context, "custom_context": True, "dockerfile": LABELS_DOCKERFILE}
        stream = client.api.build(
            **source,
            tag=f"{repository}:{tags[0]}",
            buildargs=dict(build_args),
            rm=True,
            forcerm=True,
            decode=True,
        )
        output = WholeLines()
        progress = Progress(
            progress_key("build", repository.rsplit("/", 1)[-1]), f"Build of {repository}:{tags[0]}"
        )

        def show(line: str) -> None:
            lines.append(line)
            logger.info("build | %s", line)
            step = BUILD_STEP.match(line)
            if step:
                progress.update(100 * (int(step[1]) - 1) / int(step[2]))

        for chunk in stream:
            if "stream" in chunk:
                for line in output.feed(str(chunk["stream"])):
                    show(line)
            if "error" in chunk:
                lines.extend(output.finish())
                step_output = "\n".join(lines[-15:])
                error = redaction.redact(str(chunk["error"]).strip())
                detail = f"{error}\nOutput of the failing step:\n{step_output}"
                raise BuildFailed(context=str(context_dir), detail=detail)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = str(aux["ID"])
        for line in output.finish():
            show(line)
        if image_id is None:
            image_id = str(client.images.get(f"{repository}:{tags[0]}").id)
        for tag in tags[1:]:
            client.api.tag(image_id, repository, tag)
        progress.done()
    return BuiltImage(
        image_id=image_id,
        repository=repository,
        tags=tuple(tags),
        duration_s=round(time.monotonic() - started, 3),
    )


def _container_test_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return container_test_cache_key(parameters["image_id"], parameters["container"])


@task(
    name="test_container",
    cache_key_fn=_container_test_key,
    persist_result=True,
)
def test_container(
    image_id: str,
    container: ContainerSpec,
    run_label: str,
    service: str,
    with_services: bool,
    env: Mapping[str, str],
) -> ContainerTest:
    """Start the image (on the run's network with its services `with_services`), probe its
    health endpoint, keep its logs on failure, always remove it."""
    logger = get_run_logger()
    network = containers_of(run_label).ensure_services().name if with_services else None
    # A host port of None asks the engine for a free one; the stubs don't know that form.
    ports: dict[str, Any] = {f"{container.port}/tcp": ("127.0.0.1", None)}
    with docker_client() as client:
        running = client.containers.run(
            image_id,
            detach=True,
            labels={CI_LABEL: run_label},
            ports=ports,
            network=network,
            environment=dict(env),
        )
        try:
            running.reload()
            bindings = running.ports.get(f"{container.port}/tcp") or []
            if not bindings:
                detail = f"port {container.port} was not published"
                raise ContainerUnhealthy(image=image_id, url="-", detail=detail, logs="")
            host_port = bindings[0]["HostPort"]
            url = f"http://127.0.0.1:{host_port}{container.health_path}"
            logger.info("Probing %s (deadline %.0f s)", url, container.health_timeout_s)
            health = wait_for_health(
                url,
                deadline_s=container.health_timeout_s,
                progress_key=progress_key("health", service),
            )
            if not health.healthy:
                logs = redaction.redact(running.logs(tail=30).decode(errors="replace"))
                raise ContainerUnhealthy(image=image_id, url=url, detail=health.detail, logs=logs)
            logger.info("Healthy after %d attempt(s), %.2f s", health.attempts, health.elapsed_s)
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                running.remove(force=True)
    return ContainerTest(
        image_id=image_id,
        healthy=True,
        status_code=health.status_code,
        attempts=health.attempts,
        elapsed_s=round(health.elapsed_s, 3),
        made_in=str(flow_run.get_id() or ""),
    )
