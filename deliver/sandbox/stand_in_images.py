"""Stand-ins for the public images services are built from and tested with, where the public
registry cannot be reached: python, postgres and redis from Debian's packages, tagged under the
public names so an unmodified Dockerfile or `services:` entry works. Never where the public image
can be pulled.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import tarfile
from pathlib import Path

import docker
import docker.errors

from deliver.errors import ComponentFailed
from deliver.sandbox.component import Component, ComponentStatus, Context
from deliver.sandbox.config import LOCAL_BASE_IMAGE
from deliver.sandbox.docker_engine import engine_address

HERE = Path(__file__).resolve().parent / "stand_ins"
MACHINE_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STAND_IN_LABEL = "deliver.stand-in"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StandIn:
    public_name: str
    runs: str  # what the image really runs, recorded as a label
    dockerfile: str
    files: tuple[str, ...] = ()


STAND_INS = (
    StandIn(
        public_name="python:3.12-slim",
        runs="Debian bookworm's python3 3.11 with pip and venv",
        dockerfile="python.Dockerfile",
    ),
    StandIn(
        public_name="postgres:15",
        runs="Debian bookworm's PostgreSQL 15",
        dockerfile="postgres.Dockerfile",
        files=("postgres-entrypoint.sh",),
    ),
    StandIn(
        public_name="redis:7",
        runs="Debian bookworm's Redis 7.0",
        dockerfile="redis.Dockerfile",
    ),
)


def _context(stand_in: StandIn) -> io.BytesIO:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(HERE / stand_in.dockerfile, arcname="Dockerfile")
        for name in stand_in.files:
            tar.add(HERE / name, arcname=name)
        if MACHINE_CA_BUNDLE.is_file():
            tar.add(MACHINE_CA_BUNDLE, arcname="ca-certificates.crt")
    archive.seek(0)
    return archive


class StandInImages(Component):
    name = "stand-in-images"

    def _client(self) -> contextlib.closing[docker.DockerClient]:
        return contextlib.closing(docker.DockerClient(base_url=engine_address(), timeout=600))

    @staticmethod
    def _present(client: docker.DockerClient, reference: str) -> bool:
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        return True

    def up(self, ctx: Context) -> ComponentStatus:
        base = str(ctx.state.fact("base_image") or LOCAL_BASE_IMAGE)  # a Debian image with apt
        with self._client() as client:
            missing = [s for s in STAND_INS if not self._present(client, s.public_name)]
            to_build = [s for s in missing if not self._pulled(ctx, client, s)]
            if to_build:
                names = ", ".join(s.public_name for s in to_build)
                ctx.say(f"{self.name}: building {names} from Debian's packages (about a minute)")
                with concurrent.futures.ThreadPoolExecutor(max_workers=len(to_build)) as pool:
                    for built in pool.map(lambda s: self._build(ctx, client, s, base), to_build):
                        ctx.say(f"{self.name}: built {built}")
        ctx.state.set_fact("base_image", STAND_INS[0].public_name)
        return self.status(ctx)

    def _pulled(self, ctx: Context, client: docker.DockerClient, stand_in: StandIn) -> bool:
        try:
            client.images.pull(stand_in.public_name)
        except docker.errors.DockerException:
            return False
        ctx.say(f"{self.name}: pulled the public {stand_in.public_name}")
        return True

    def _build(
        self, ctx: Context, client: docker.DockerClient, stand_in: StandIn, base: str
    ) -> str:
        log_path = ctx.dir(self.name) / f"{stand_in.dockerfile}.log"
        repository, tag = stand_in.public_name.split(":", 1)
        with log_path.open("w") as log:
            stream = client.api.build(
                fileobj=_context(stand_in),
                custom_context=True,
                tag=stand_in.public_name,
                buildargs={"BASE": base},
                labels={STAND_IN_LABEL: stand_in.runs},
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "stream" in chunk:
                    log.write(str(chunk["stream"]))
                if "error" in chunk:
                    raise ComponentFailed(
                        component=self.name,
                        detail=f"building {repository}:{tag}: {str(chunk['error']).strip()}",
                        log_path=str(log_path),
                    )
        return stand_in.public_name

    def status(self, ctx: Context) -> ComponentStatus:
        try:
            with self._client() as client:
                missing = [
                    s.public_name for s in STAND_INS if not self._present(client, s.public_name)
                ]
        except docker.errors.DockerException as exc:
            return ComponentStatus(name=self.name, address="-", healthy=False, detail=str(exc))
        names = ", ".join(s.public_name for s in STAND_INS)
        if missing:
            detail = f"missing {', '.join(missing)}"
            return ComponentStatus(name=self.name, address=names, healthy=False, detail=detail)
        return ComponentStatus(name=self.name, address=names, healthy=True, detail="present")
