"""The sample service's base image: the public python image if it can be pulled, else built here."""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
from pathlib import Path

import docker
import docker.errors

from deliver import commands
from deliver.errors import ComponentFailed
from deliver.sandbox.component import Component, ComponentStatus, Context, SystemTool
from deliver.sandbox.config import LOCAL_BASE_IMAGE, PUBLIC_BASE_IMAGE
from deliver.sandbox.docker_engine import engine_address

DEBOOTSTRAP = SystemTool(program="debootstrap", package="debootstrap")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# Trimmed from the rootfs: nothing at run time reads them.
UNNEEDED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt")


def debian_mirror(sources: Path = DEBIAN_SOURCES) -> str:
    """The first `URIs:` of the machine's own apt sources; the mirror is never hard-coded."""
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                return parts[1]
    msg = f"no Debian mirror found in {sources} or {legacy}; set DELIVER_BASE_IMAGE to an image"
    raise ComponentFailed(component="base-image", detail=msg)


class BaseImage(Component):
    name = "base-image"

    def _client(self) -> contextlib.closing[docker.DockerClient]:
        return contextlib.closing(docker.DockerClient(base_url=engine_address(), timeout=300))

    def _present(self, client: docker.DockerClient, reference: str) -> bool:
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        return True

    def _current(self, ctx: Context, client: docker.DockerClient) -> str | None:
        recorded = ctx.state.fact("base_image")
        for candidate in (recorded, PUBLIC_BASE_IMAGE, LOCAL_BASE_IMAGE):
            if candidate and self._present(client, candidate):
                return str(candidate)
        return None

    def tools_needed(self, ctx: Context) -> list[SystemTool]:
        try:
            with self._client() as client:
                if self._current(ctx, client):
                    return []
        except docker.errors.DockerException:
            pass  # no engine yet: the engine comes first and the image may still be needed.
        return [DEBOOTSTRAP]

    def up(self, ctx: Context) -> ComponentStatus:
        with self._client() as client:
            image = self._current(ctx, client) or self._pull_public(ctx, client)
            if image is None:
                self._build_local(ctx, client)
                image = LOCAL_BASE_IMAGE
        ctx.state.set_fact("base_image", image)
        return self.status(ctx)

    def _pull_public(self, ctx: Context, client: docker.DockerClient) -> str | None:
        ctx.say(f"{self.name}: trying to pull {PUBLIC_BASE_IMAGE}")
        try:
            client.images.pull(PUBLIC_BASE_IMAGE)
        except docker.errors.DockerException as exc:
            first_line = str(exc).splitlines()[0][:160]
            ctx.say(f"{self.name}: pull failed ({first_line}); building {LOCAL_BASE_IMAGE} instead")
            return None
        return PUBLIC_BASE_IMAGE

    def _build_local(self, ctx: Context, client: docker.DockerClient) -> None:
        program = DEBOOTSTRAP.path()
        if program is None:
            detail = "debootstrap is needed to build the base image; apt-get install debootstrap"
            raise ComponentFailed(component=self.name, detail=detail)
        workdir = Path(tempfile.mkdtemp(prefix="base-image-", dir=ctx.dir(self.name)))
        rootfs, log_path = workdir / "rootfs", ctx.dir(self.name) / "debootstrap.log"
        ctx.say(f"{self.name}: building {LOCAL_BASE_IMAGE} with debootstrap (about a minute)")
        try:
            with log_path.open("w") as log:
                argv = [
                    program,
                    "--variant=minbase",
                    "--include=python3",
                    "bookworm",
                    str(rootfs),
                    debian_mirror(),
                ]
                done = commands.run_streamed(
                    argv, cwd=workdir, timeout_s=1800, on_line=lambda line: print(line, file=log)
                )
            if not done.ok:
                raise ComponentFailed(
                    component=self.name,
                    detail=f"debootstrap exited {done.exit_code}",
                    log_path=str(log_path),
                )
            for unneeded in UNNEEDED:
                shutil.rmtree(rootfs / unneeded, ignore_errors=True)
            archive = workdir / "rootfs.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(rootfs, arcname=".")
            repository, tag = LOCAL_BASE_IMAGE.rsplit(":", 1)
            client.api.import_image_from_file(
                str(archive),
                repository=repository,
                tag=tag,
                changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def status(self, ctx: Context) -> ComponentStatus:
        try:
            with self._client() as client:
                image = self._current(ctx, client)
        except docker.errors.DockerException as exc:
            return ComponentStatus(name=self.name, address="-", healthy=False, detail=str(exc))
        if image is None:
            return ComponentStatus(name=self.name, address="-", healthy=False, detail="missing")
        return ComponentStatus(name=self.name, address=image, healthy=True, detail="present")
