"""Container registry: find an image by tag, push by digest, add tags; credentials from a block."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import docker.errors
import httpx
from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import State, TaskRun
from prefect.variables import Variable
from prefect_docker.credentials import DockerRegistryCredentials

from deliver.errors import PushFailed, RegistryAuthFailed, RegistryError, RegistryUnreachable
from deliver.planning.ci import SOURCE_TAG_PREFIX
from deliver.planning.registry import (
    MANIFEST_TYPES,
    read_push_stream,
    registry_api_base,
    registry_host,
)
from deliver.redaction import redact
from deliver.tasks.engine import docker_client
from deliver.tasks.loading import http_client, load_block
from deliver.tasks.progress import Progress, progress_key


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RegistryLookup:
    repository: str  # host:port/name, where this image is pushed
    existing: RegistryImage | None  # what the registry already holds under the tag asked for
    tagged: tuple[str, ...] = ()  # of the tags asked about, those already pointing at it


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RegistryImage:
    repository: str  # host:port/name
    digest: str  # manifest digest: what is pulled and deployed
    image_id: str  # config digest: the local image id

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


def load_credentials(block_name: str) -> DockerRegistryCredentials:
    return load_block(DockerRegistryCredentials, block_name)


def _auth(credentials: DockerRegistryCredentials) -> tuple[str, str]:
    return credentials.username, credentials.password.get_secret_value()


class _Registry:
    """One HTTP client per task for the registry API (a client per request costs ~20 ms)."""

    def __init__(self, credentials: DockerRegistryCredentials, block_name: str) -> None:
        self.credentials, self.block_name = credentials, block_name
        self.base = registry_api_base(credentials.registry_url)
        self.http = http_client(base_url=self.base, auth=_auth(credentials), timeout=10)

    def __enter__(self) -> _Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def manifest(self, name: str, reference: str) -> httpx.Response | None:
        """The manifest of `name` at a tag or digest; None when the registry has none."""
        try:
            response = self.http.get(
                f"/v2/{name}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}
            )
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            raise RegistryUnreachable(registry=self.base, detail=detail) from exc
        if response.status_code == 401:
            raise RegistryAuthFailed(registry=self.base, block=self.block_name)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            detail = (
                f"GET {self.base}/v2/{name}/manifests/{reference} answered {response.status_code}"
            )
            raise RegistryUnreachable(registry=self.base, detail=detail)
        return response

    def put_manifest(self, name: str, tag: str, manifest: httpx.Response) -> None:
        try:
            put = self.http.put(
                f"/v2/{name}/manifests/{tag}",
                content=manifest.content,
                headers={"Content-Type": manifest.headers["Content-Type"]},
            )
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            raise RegistryUnreachable(registry=self.base, detail=detail) from exc
        if put.status_code not in (200, 201):
            raise RegistryError(
                f"Registry {self.base} refused tag {name}:{tag} ({put.status_code})"
            )

    def digest(self, name: str, tag: str) -> str | None:
        """What `tag` points at; None when the registry has no such tag."""
        current = self.manifest(name, tag)
        return None if current is None else current.headers.get("Docker-Content-Digest")

    def point(self, name: str, tags: Iterable[str], manifest: httpx.Response) -> list[str]:
        """Point each of `tags` at `manifest` where it does not already; the tags it moved."""
        digest = manifest.headers.get("Docker-Content-Digest")
        moved = []
        for tag in tags:
            if self.digest(name, tag) != digest:
                self.put_manifest(name, tag, manifest)
                moved.append(tag)
        return moved

    def image(self, name: str, response: httpx.Response) -> RegistryImage:
        manifest = response.json()
        return RegistryImage(
            repository=f"{registry_host(self.credentials.registry_url)}/{name}",
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
def find_image(block_name: str, name: str, tag: str, run_tags: Iterable[str]) -> RegistryLookup:
    """Where `name` is pushed, and the image the registry already holds under `tag`, if any:
    found by its registry digest, and pulled by it when this worker's engine lacks it (another
    worker built it), so what is tested and scanned is what the registry holds. Which of
    `run_tags` already point at it is read in the same visit."""
    credentials = load_credentials(block_name)
    repository = f"{registry_host(credentials.registry_url)}/{name}"
    with _Registry(credentials, block_name) as registry:
        response = registry.manifest(name, tag)
        if response is None:
            return RegistryLookup(repository=repository, existing=None)
        image = registry.image(name, response)
        logger = get_run_logger()
        if built_by_ci(name, tag) != image.digest:
            logger.warning(
                "%s:%s is %s, which no CI run recorded pushing (pushed to the registry by "
                "someone else?): not adopted, CI builds it",
                image.repository,
                tag,
                image.digest,
            )
            return RegistryLookup(repository=repository, existing=None)
        tagged = tuple(t for t in run_tags if t == tag or registry.digest(name, t) == image.digest)
    logger.info("Registry holds %s:%s at %s", image.repository, tag, image.digest)
    existing = _here(image, credentials, block_name)
    return RegistryLookup(repository=repository, existing=existing, tagged=tagged)


def built_variable(name: str, source_tag: str) -> str:
    """The Prefect variable recording which digest CI pushed under an image's source tag."""
    return re.sub(r"[^a-z0-9_-]+", "-", f"deliver-built-{name}-{source_tag}".lower())[:255]


def built_by_ci(name: str, source_tag: str) -> str | None:
    """The digest a CI run pushed under `source_tag` (the registry alone cannot say: anyone
    with push rights there could have put an image under that tag)."""
    recorded: Any = Variable.get(built_variable(name, source_tag), default=None)
    return recorded if isinstance(recorded, str) else None


def _here(
    image: RegistryImage, credentials: DockerRegistryCredentials, block: str
) -> RegistryImage:
    """`image` in this worker's engine: pulled by digest unless its config is there already."""
    with docker_client() as client:
        try:
            client.images.get(image.image_id)
            return image
        except docker.errors.ImageNotFound:
            pass
        username, password = _auth(credentials)
        try:
            client.api.pull(
                image.reference, auth_config={"username": username, "password": password}
            )
        except docker.errors.APIError as exc:
            if "unauthorized" in str(exc).lower():
                raise RegistryAuthFailed(registry=image.repository, block=block) from None
            raise RegistryUnreachable(registry=image.repository, detail=redact(str(exc))) from None
        pulled = str(client.images.get(image.reference).id)
    get_run_logger().info("Pulled %s: this worker's engine did not hold it", image.reference)
    return dataclasses.replace(image, image_id=pulled)


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


def _layers_progress(
    stream: Iterable[Mapping[str, Any]], progress: Progress
) -> Iterator[Mapping[str, Any]]:
    """The push stream, unchanged, telling `progress` the share of layers in the registry."""
    layers: dict[str, bool] = {}
    for chunk in stream:
        layer, status = chunk.get("id"), str(chunk.get("status", ""))
        if isinstance(layer, str) and status:
            layers[layer] = status in ("Pushed", "Layer already exists") or status.startswith(
                "Mounted from"
            )
            progress.update(100 * sum(layers.values()) / len(layers))
        yield chunk
    progress.update(100 * sum(layers.values()) / max(len(layers), 1), force=True)


@task(
    name="push_image",
    task_run_name="push-{name}",
    retries=2,
    retry_delay_seconds=[1, 4],
    retry_condition_fn=_retry_if_transient,
)
def push_image(block_name: str, name: str, tags: list[str]) -> RegistryImage:
    """Push the first tag, whose digest comes from the push stream and is confirmed by the
    registry, then point the other tags at that manifest (a push per tag costs ~60 ms more)."""
    logger = get_run_logger()
    credentials = load_credentials(block_name)
    repository = f"{registry_host(credentials.registry_url)}/{name}"
    username, password = _auth(credentials)
    reference = f"{repository}:{tags[0]}"
    progress = Progress(progress_key("push", name), f"Push of {repository}")
    with docker_client() as client:
        try:
            stream = client.api.push(
                repository,
                tag=tags[0],
                stream=True,
                decode=True,
                auth_config={"username": username, "password": password},
            )
            outcome = read_push_stream(_layers_progress(stream, progress))
        except docker.errors.APIError as exc:
            raise PushFailed(reference=reference, detail=redact(str(exc)), transient=True) from None
    if outcome.error is not None:
        lowered = outcome.error.lower()
        if "unauthorized" in lowered or "authentication" in lowered:
            raise RegistryAuthFailed(registry=repository, block=block_name)
        raise PushFailed(
            reference=reference, detail=redact(outcome.error), transient=outcome.transient
        )
    logger.info("Pushed %s (%s)", reference, outcome.digest)
    with _Registry(credentials, block_name) as registry:
        confirmed = registry.manifest(name, tags[0])
        if confirmed is None or confirmed.headers.get("Docker-Content-Digest") != outcome.digest:
            raise PushFailed(
                reference=reference,
                detail="the registry does not hold the pushed digest under its tag",
                transient=True,
            )
        if moved := registry.point(name, tags[1:], confirmed):
            logger.info("Tagged %s as %s", outcome.digest, ", ".join(moved))
        for tag in tags:
            if tag.startswith(SOURCE_TAG_PREFIX):  # what a later run may adopt instead of building
                Variable.set(built_variable(name, tag), outcome.digest, overwrite=True)
        return registry.image(name, confirmed)


@task(name="tag_image", task_run_name="tag-{name}")
def tag_image(block_name: str, name: str, digest: str, tags: list[str]) -> list[str]:
    """Point `tags` at an image the registry already holds, without pulling or pushing layers."""
    with _Registry(load_credentials(block_name), block_name) as registry:
        manifest = registry.manifest(name, digest)
        if manifest is None:
            raise RegistryError(f"Registry {registry.base} no longer holds {name}@{digest}")
        return registry.point(name, tags, manifest)


def image_labels_in_registry(block_name: str, image: str) -> dict[str, str]:
    """The labels of `image` (repository@digest) as the registry holds its config; empty when
    the registry holds no such image. Read before any host is touched."""
    credentials = load_credentials(block_name)
    repository, digest = image.rsplit("@", 1)
    host = registry_host(credentials.registry_url)
    if not repository.startswith(f"{host}/"):
        return {}  # another registry's image: its labels are read on the host after the pull
    name = repository.removeprefix(f"{host}/")
    with _Registry(credentials, block_name) as registry:
        manifest = registry.manifest(name, digest)
        if manifest is None:
            return {}
        config_digest = str(manifest.json().get("config", {}).get("digest", ""))
        try:
            blob = registry.http.get(f"/v2/{name}/blobs/{config_digest}", follow_redirects=True)
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(registry=registry.base, detail=str(exc)) from exc
        if blob.status_code != 200:
            return {}
        labels = blob.json().get("config", {}).get("Labels") or {}
    return {str(key): str(value) for key, value in labels.items()}
