"""Docker engine: where a CI run's checks run. A private network per run, the spec's service
containers on it, and one job container with only the checkout and the app environment
mounted, read-only, as a non-root user: no Docker socket, none of the worker's files,
environment or credentials, and no route to anything the worker serves on loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import EndpointConfig
from prefect import get_run_logger, task

from deliver import redaction
from deliver.errors import JobContainerFailed, ServiceUnhealthy
from deliver.planning.services import ServiceAccess, filled_env
from deliver.spec import ServiceSpec
from deliver.tasks.app_environment import (
    CONTAINER_TMP,
    ENV_MOUNT,
    AppEnvironment,
    container_user,
)
from deliver.tasks.docker_image import CI_LABEL, docker_client

WORKSPACE = "/deliver/workspace"
REPORTS = "/deliver/reports"
TOOL_CACHE = "/deliver/cache"
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HEALTH_INTERVAL_S = 0.25


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunNetwork:
    name: str
    run_label: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """The started job container, and where a check's files are on each side of it."""

    container: str
    user: str
    workdir: str  # the app folder inside the container
    app_dir: Path  # the app folder on the worker: what check inputs are hashed from
    reports_dir: Path  # on the worker, mounted at REPORTS
    environment: AppEnvironment
    untrusted: bool


def _remove_labelled(client: docker.DockerClient, run_label: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{CI_LABEL}={run_label}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)


@contextlib.contextmanager
def run_network(run_label: str) -> Iterator[RunNetwork]:
    """A Docker network of this run's own; on the way out every container the run started on
    it (services, job, container test) is removed, then the network, whatever happened."""
    name = f"deliver-ci-{run_label[:12]}"
    with docker_client() as client:
        with contextlib.suppress(docker.errors.NotFound):
            _remove_labelled(client, run_label)
            client.networks.get(name).remove()
        network = client.networks.create(name, driver="bridge", labels={CI_LABEL: run_label})
        try:
            yield RunNetwork(name=name, run_label=run_label)
        finally:
            _remove_labelled(client, run_label)
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                network.remove()


def _endpoint(
    client: docker.DockerClient, network: RunNetwork, alias: str
) -> dict[str, EndpointConfig]:
    return {network.name: client.api.create_endpoint_config(aliases=[alias])}


def _logs(container: Any) -> str:
    try:
        raw = container.logs(tail=20).decode(errors="replace")
    except docker.errors.APIError:
        return ""
    return redaction.redact(raw)


def _await_healthy(name: str, spec: ServiceSpec, container: Any) -> None:
    deadline = time.monotonic() + spec.health_timeout_s
    detail = "no health command: only that it keeps running"
    while True:
        container.reload()
        if container.status != "running":
            detail = f"it exited ({container.attrs['State'].get('ExitCode')})"
            raise ServiceUnhealthy(
                service=name, image=spec.image, detail=detail, logs=_logs(container)
            )
        if not spec.health:
            return
        exit_code, output = container.exec_run(spec.health)
        if exit_code == 0:
            return
        detail = (
            f"{' '.join(spec.health)} exited {exit_code}: {output.decode(errors='replace')[-200:]}"
        )
        if time.monotonic() > deadline:
            detail = f"not healthy within {spec.health_timeout_s:.0f} s; last: {detail}"
            raise ServiceUnhealthy(
                service=name,
                image=spec.image,
                detail=redaction.redact(detail),
                logs=_logs(container),
            )
        time.sleep(HEALTH_INTERVAL_S)


def _loopback_ports(ports: list[int]) -> dict[str, Any]:
    # A host port of None asks the engine for a free one; the stubs don't know that form.
    return {f"{port}/tcp": ("127.0.0.1", None) for port in ports}


@task(name="start_services")
def start_services(
    services: Mapping[str, ServiceSpec], network: RunNetwork
) -> dict[str, ServiceAccess]:
    """Each service on the run's network under its name, with a password generated for this
    run (known to the redaction layer), healthy before this returns."""
    logger = get_run_logger()
    access = {
        name: ServiceAccess(name=name, password=secrets.token_urlsafe(18)) for name in services
    }
    redaction.register(a.password for a in access.values())
    started: dict[str, Any] = {}
    with docker_client() as client:
        for name, spec in services.items():
            logger.info("Starting service %s (%s)", name, spec.image)
            try:
                started[name] = client.containers.run(
                    spec.image,
                    detach=True,
                    name=f"{network.name}-{name}",
                    environment=filled_env(spec.env, access),
                    labels={CI_LABEL: network.run_label},
                    network=network.name,
                    networking_config=_endpoint(client, network, name),
                    ports=_loopback_ports(spec.ports),
                )
            except docker.errors.DockerException as exc:
                detail = f"could not start: {str(exc).splitlines()[0]}"
                raise ServiceUnhealthy(
                    service=name, image=spec.image, detail=detail, logs=""
                ) from exc
        for name, spec in services.items():
            _await_healthy(name, spec, started[name])
            logger.info("Service %s is healthy", name)
    return access


@task(name="start_job_container")
def start_job(
    checkout_root: Path,
    app_dir: Path,
    environment: AppEnvironment,
    network: RunNetwork,
    env: Mapping[str, str],
    cache_dir: Path,
    scratch: Path,
    *,
    untrusted: bool,
) -> Job:
    """The job container, idle until checks are run in it with `docker exec`; `scratch` is a
    folder of this run's, outside the checkout, for the checks' reports."""
    reports = scratch / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    reports.chmod(0o777)
    tool_cache = cache_dir / ("tools-untrusted" if untrusted else "tools")
    tool_cache.mkdir(parents=True, exist_ok=True)
    tool_cache.chmod(0o777)
    if untrusted:  # nothing a pull request's checks leave behind is read by the next run
        shutil.rmtree(tool_cache, ignore_errors=True)
        tool_cache.mkdir(parents=True)
        tool_cache.chmod(0o777)
    workdir = f"{WORKSPACE}/{app_dir.relative_to(checkout_root).as_posix()}".rstrip("/.")
    user = container_user()
    container_env = {
        **env,
        "PATH": f"{ENV_MOUNT}/bin:{SEARCH_PATH}",
        "VIRTUAL_ENV": ENV_MOUNT,
        "HOME": CONTAINER_TMP,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MYPY_CACHE_DIR": f"{TOOL_CACHE}/mypy/{environment.frozen_digest}",
        "RUFF_CACHE_DIR": f"{TOOL_CACHE}/ruff",
    }
    name = f"{network.name}-job"
    with docker_client() as client:
        try:
            client.containers.run(
                environment.image,
                ["sleep", "infinity"],
                detach=True,
                init=True,
                name=name,
                user=user,
                working_dir=workdir,
                environment=container_env,
                labels={CI_LABEL: network.run_label},
                network=network.name,
                read_only=True,
                tmpfs={CONTAINER_TMP: "rw,exec,size=512m"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                volumes={
                    str(checkout_root): {"bind": WORKSPACE, "mode": "ro"},
                    str(environment.path): {"bind": ENV_MOUNT, "mode": "ro"},
                    str(reports): {"bind": REPORTS, "mode": "rw"},
                    str(tool_cache): {"bind": TOOL_CACHE, "mode": "rw"},
                },
            )
        except docker.errors.DockerException as exc:
            raise JobContainerFailed(
                image=environment.image, detail=str(exc).splitlines()[0]
            ) from exc
    return Job(
        container=name,
        user=user,
        workdir=workdir,
        app_dir=app_dir,
        reports_dir=reports,
        environment=environment,
        untrusted=untrusted,
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunServices:
    network: RunNetwork
    access: dict[str, ServiceAccess]


@contextlib.contextmanager
def run_services(services: Mapping[str, ServiceSpec], run_label: str) -> Iterator[RunServices]:
    """The run's network with its services started and healthy; all removed on the way out."""
    with run_network(run_label) as network:
        access = start_services(services, network) if services else {}
        yield RunServices(network=network, access=access)


def stop_job(job: Job) -> None:
    with docker_client() as client, contextlib.suppress(docker.errors.NotFound):
        client.containers.get(job.container).remove(force=True)


def docker_cli_env() -> dict[str, str]:
    """What the docker CLI needs to reach the engine, and nothing else of the worker's."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "DOCKER_HOST", "HOME")}
