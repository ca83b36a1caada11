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
import threading
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
    writable_by_container,
)
from deliver.tasks.engine import CI_LABEL, docker_client

WORKSPACE = "/deliver/workspace"
REPORTS = "/deliver/reports"
TOOL_CACHE = "/deliver/cache"
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HEALTH_INTERVAL_S = 0.25
DEFAULT_BRIDGE = "bridge"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunNetwork:
    name: str
    run_label: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """The run's job container as the checks see it: named before it exists, started by the
    first check that is not a cache hit (a run whose checks are all cached starts nothing)."""

    run_label: str
    container: str
    user: str
    workdir: str  # the app folder inside the container
    app_dir: Path  # the app folder on the worker: what check inputs are hashed from
    reports_dir: Path  # on the worker, mounted at REPORTS
    environment: AppEnvironment
    untrusted: bool

    @property
    def folder_in_repo(self) -> str:
        """The app's folder relative to the repository's root ('' at the root)."""
        return self.workdir.removeprefix(WORKSPACE).strip("/")


def _remove_labelled(client: docker.DockerClient, run_label: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{CI_LABEL}={run_label}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
    for network in client.networks.list(filters={"label": f"{CI_LABEL}={run_label}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            network.remove()


def _remove_container(name: str) -> None:
    with docker_client() as client, contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)


class RunContainers:
    """What a CI run starts in Docker, each part on first need and once: its network, its
    services on it (healthy), its job container. `close` removes them all."""

    def __init__(self, run_label: str, services: Mapping[str, ServiceSpec]) -> None:
        self.run_label = run_label
        # Without services, nothing needs a network of the run's own: the job container joins
        # Docker's default bridge (still no route to the worker's loopback), 0.4 s sooner.
        name = f"deliver-ci-{run_label[:12]}" if services else DEFAULT_BRIDGE
        self.network = RunNetwork(name=name, run_label=run_label)
        self.services = dict(services)
        # Generated before anything starts, so every env that names them can be filled in now.
        self.access = {
            name: ServiceAccess(name=name, password=secrets.token_urlsafe(18)) for name in services
        }
        redaction.register(a.password for a in self.access.values())
        self._lock = threading.Lock()
        self._network_made = self._services_started = False
        self._job_spec: dict[str, Any] | None = None
        self._job_started = False
        self._removing: threading.Thread | None = None
        self._failure: Exception | None = None

    def ensure_services(self) -> RunNetwork:
        """The network with the services healthy; a failure to start them is raised again to
        every later caller (each check), never retried into name conflicts."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            try:
                self._ensure_network()
                if self.services and not self._services_started:
                    start_services(self.services, self.network, self.access)
                    self._services_started = True
            except Exception as exc:
                self._failure = exc
                raise
        return self.network

    def _ensure_network(self) -> None:
        if self._network_made or self.network.name == DEFAULT_BRIDGE:
            return
        with docker_client() as client:
            _remove_labelled(client, self.run_label)  # a retried run's leftovers
            client.networks.create(
                self.network.name, driver="bridge", labels={CI_LABEL: self.run_label}
            )
        self._network_made = True

    def plan_job(
        self,
        checkout_root: Path,
        app_dir: Path,
        environment: AppEnvironment,
        env: Mapping[str, str],
        cache_dir: Path,
        scratch: Path,
        *,
        untrusted: bool,
    ) -> Job:
        """The job container checks will run in; nothing starts yet."""
        job = Job(
            run_label=self.run_label,
            container=f"deliver-ci-{self.run_label[:12]}-job",  # unique: runs share an engine
            user=container_user(),
            workdir=f"{WORKSPACE}/{app_dir.relative_to(checkout_root).as_posix()}".rstrip("/."),
            app_dir=app_dir,
            reports_dir=scratch / "reports",
            environment=environment,
            untrusted=untrusted,
        )
        self._job_spec = {"job": job, "checkout_root": checkout_root, "env": dict(env)}
        self._job_spec["tool_cache"] = cache_dir / ("tools-untrusted" if untrusted else "tools")
        return job

    def ensure_job(self) -> None:
        self.ensure_services()
        with self._lock:
            if self._job_started or self._job_spec is None:
                return
            start_job(self.network, **self._job_spec)
            self._job_started = True

    def stop_job(self) -> None:
        """Remove the job container, in the background: the build need not wait for it."""
        with self._lock:
            if self._job_started and self._job_spec is not None:
                name = self._job_spec["job"].container
                self._removing = threading.Thread(target=_remove_container, args=(name,))
                self._removing.start()
            self._job_spec = None

    def close(self) -> None:
        with self._lock:
            if self._removing is not None:
                self._removing.join()
            if self._network_made or self._job_started or self._failure is not None:
                with docker_client() as client:
                    _remove_labelled(client, self.run_label)


_RUNS: dict[str, RunContainers] = {}


def containers_of(run_label: str) -> RunContainers:
    """The containers of the run `run_label`, for a task of that run (tasks run in its process)."""
    return _RUNS[run_label]


@contextlib.contextmanager
def run_containers(run_label: str, services: Mapping[str, ServiceSpec]) -> Iterator[RunContainers]:
    """A run's containers, started on first need; all removed on the way out, whatever happened."""
    run = RunContainers(run_label, services)
    _RUNS[run_label] = run
    try:
        yield run
    finally:
        try:
            run.close()
        finally:
            _RUNS.pop(run_label, None)


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
    services: Mapping[str, ServiceSpec],
    network: RunNetwork,
    access: Mapping[str, ServiceAccess],
) -> None:
    """Each service on the run's network under its name, with the password generated for this
    run, healthy before this returns."""
    logger = get_run_logger()
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


@task(name="start_job_container")
def start_job(
    network: RunNetwork,
    *,
    job: Job,
    checkout_root: Path,
    env: Mapping[str, str],
    tool_cache: Path,
) -> None:
    """The job container, idle until checks are run in it with `docker exec`."""
    writable_by_container(job.reports_dir)
    if job.untrusted:  # nothing a pull request's checks leave behind is read by the next run
        shutil.rmtree(tool_cache, ignore_errors=True)
    writable_by_container(tool_cache)
    environment = job.environment
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
    with docker_client() as client:
        try:
            client.containers.run(
                environment.image,
                ["sleep", "infinity"],
                detach=True,
                init=True,
                name=job.container,
                user=job.user,
                working_dir=job.workdir,
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
                    str(job.reports_dir): {"bind": REPORTS, "mode": "rw"},
                    str(tool_cache): {"bind": TOOL_CACHE, "mode": "rw"},
                },
            )
        except docker.errors.DockerException as exc:
            raise JobContainerFailed(
                image=environment.image, detail=str(exc).splitlines()[0]
            ) from exc


def docker_cli_env() -> dict[str, str]:
    """What the docker CLI needs to reach the engine, and nothing else of the worker's."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "DOCKER_HOST", "HOME")}
