"""Container registry: find an image by tag, push by digest, add tags; credentials from a block."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import docker.errors
import httpx
from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import State, TaskRun
from prefect_docker.credentials import DockerRegistryCredentials

from deliver.errors import PushFailed, RegistryAuthFailed, RegistryError, RegistryUnreachable
from deliver.planning.registry import (
    MANIFEST_TYPES,
    read_push_stream,
    registry_api_base,
    registry_host,
)
from deliver.tasks.docker_image import docker_client


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RegistryLookup:
    repository: str  # host:port/name, where this image is pushed
    existing: RegistryImage | None  # what the registry already holds under the tag asked for


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RegistryImage:
    repository: str  # host:port/name
    digest: str  # manifest digest: what is pulled and deployed
    image_id: str  # config digest: the local image id

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


def load_credentials(block_name: str) -> DockerRegistryCredentials:
    # Prefect's sync-or-async loader returns the block when called from sync code.
    return cast(DockerRegistryCredentials, DockerRegistryCredentials.load(block_name))


def _auth(credentials: DockerRegistryCredentials) -> tuple[str, str]:
    return credentials.username, credentials.password.get_secret_value()


def _manifest(
    credentials: DockerRegistryCredentials, block_name: str, name: str, reference: str
) -> httpx.Response | None:
    base = registry_api_base(credentials.registry_url)
    url = f"{base}/v2/{name}/manifests/{reference}"
    try:
        response = httpx.get(
            url, auth=_auth(credentials), headers={"Accept": MANIFEST_TYPES}, timeout=10
        )
    except httpx.HTTPError as exc:
        raise RegistryUnreachable(registry=base, detail=str(exc) or type(exc).__name__) from exc
    if response.status_code == 401:
        raise RegistryAuthFailed(registry=base, block=block_name)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        detail = f"GET {url} answered {response.status_code}"
        raise RegistryUnreachable(registry=base, detail=detail)
    return response


def _as_image(
    credentials: DockerRegistryCredentials, name: str, response: httpx.Response
) -> RegistryImage:
    manifest = response.json()
    return RegistryImage(
        repository=f"{registry_host(credentials.registry_url)}/{name}",
        digest=response.headers["Docker-Content-Digest"],
        image_id=str(manifest.get("config", {}).get("digest", "")),
    )


@task(
    name="find_image",
    task_run_name="find-{name}:{tag}",
    retries=1,
    retry_delay_seconds=1,
    retry_condition_fn=lambda task, run, state: _retry_if_transient(task, run, state),
)
def find_image(block_name: str, name: str, tag: str) -> RegistryLookup:
    """Where `name` is pushed, and the image the registry already holds under `tag`, if any."""
    credentials = load_credentials(block_name)
    repository = f"{registry_host(credentials.registry_url)}/{name}"
    response = _manifest(credentials, block_name, name, tag)
    if response is None:
        return RegistryLookup(repository=repository, existing=None)
    image = _as_image(credentials, name, response)
    get_run_logger().info("Registry holds %s:%s at %s", image.repository, tag, image.digest)
    return RegistryLookup(repository=repository, existing=image)


def _retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result()
    except PushFailed as exc:
        return exc.transient
    except RegistryUnreachable:
        return True
    except Exception:
        return False
    return False


@task(
    name="push_image",
    task_run_name="push-{name}",
    retries=2,
    retry_delay_seconds=[1, 4],
    retry_condition_fn=_retry_if_transient,
)
def push_image(block_name: str, name: str, tags: list[str]) -> RegistryImage:
    """Push every tag; the digest comes from the push stream and is confirmed by the registry."""
    logger = get_run_logger()
    credentials = load_credentials(block_name)
    repository = f"{registry_host(credentials.registry_url)}/{name}"
    username, password = _auth(credentials)
    digest = None
    with docker_client() as client:
        for tag in tags:
            reference = f"{repository}:{tag}"
            try:
                stream = client.api.push(
                    repository,
                    tag=tag,
                    stream=True,
                    decode=True,
                    auth_config={"username": username, "password": password},
                )
                outcome = read_push_stream(stream)
            except docker.errors.APIError as exc:
                raise PushFailed(reference=reference, detail=str(exc), transient=True) from exc
            if outcome.error is not None:
                if (
                    "unauthorized" in outcome.error.lower()
                    or "authentication" in outcome.error.lower()
                ):
                    raise RegistryAuthFailed(registry=repository, block=block_name)
                raise PushFailed(
                    reference=reference, detail=outcome.error, transient=outcome.transient
                )
            if digest is not None and outcome.digest != digest:
                raise PushFailed(
                    reference=reference,
                    detail=f"tag digest {outcome.digest} differs from {digest}",
                    transient=False,
                )
            digest = outcome.digest
            logger.info("Pushed %s (%s)", reference, digest)
    confirmed = _manifest(credentials, block_name, name, tags[0])
    if confirmed is None or confirmed.headers.get("Docker-Content-Digest") != digest:
        raise PushFailed(
            reference=f"{repository}:{tags[0]}",
            detail="the registry does not hold the pushed digest under its tag",
            transient=True,
        )
    return _as_image(credentials, name, confirmed)


@task(name="tag_image", task_run_name="tag-{name}")
def tag_image(block_name: str, name: str, digest: str, tags: list[str]) -> list[str]:
    """Point `tags` at an image the registry already holds, without pulling or pushing layers."""
    credentials = load_credentials(block_name)
    base = registry_api_base(credentials.registry_url)
    manifest = _manifest(credentials, block_name, name, digest)
    if manifest is None:
        raise RegistryError(f"Registry {base} no longer holds {name}@{digest}")
    added = []
    for tag in tags:
        current = _manifest(credentials, block_name, name, tag)
        if current is not None and current.headers.get("Docker-Content-Digest") == digest:
            continue
        put = httpx.put(
            f"{base}/v2/{name}/manifests/{tag}",
            content=manifest.content,
            headers={"Content-Type": manifest.headers["Content-Type"]},
            auth=_auth(credentials),
            timeout=10,
        )
        if put.status_code not in (200, 201):
            raise RegistryError(f"Registry {base} refused tag {name}:{tag} ({put.status_code})")
        added.append(tag)
    return added
