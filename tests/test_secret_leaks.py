"""A full delivery run with canary secrets, then a search for them wherever they could leak.

Four canaries (a 40-character token, a multi-line PEM key, a JSON blob, a value with %&'")
serve as the registry password, the SSH deploy key, the webhook secret and the notification
URL. After CI, staging, approval and production, the Prefect database (block documents
excepted), the result storage and the built image are searched for every form of each.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import re
import shutil
import sqlite3
import subprocess
import tarfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, cast

import bcrypt
import paramiko
import pytest
from prefect import State
from prefect.blocks.system import Secret
from prefect_docker.credentials import DockerRegistryCredentials

from blocks.deploy_target import DeployTarget
from deliver.redaction import secret_forms
from flows.ci import CiParameters, CiResult, ci_pipeline
from tests import canaries
from tests.test_ci_pipeline import SAMPLE, git
from tests.test_release import ProductionRelease, run_release

IMAGE = "canary-api"
USER = "canary"


def leak_forms(value: str) -> set[str]:
    """The forms to search for; a PEM's armor lines (`-----BEGIN ...`) are not secret."""
    return {form for form in secret_forms(value) if not form.strip().startswith("-----")}


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    return {
        "registry password": canaries.TOKEN,
        "ssh key": canaries.pem_key(),
        "webhook secret": canaries.JSON_BLOB,
        "notification url": f"http://127.0.0.1:9/hook?t={canaries.AWKWARD}",
    }


@pytest.fixture(scope="module")
def canary_blocks(secrets, sandbox_config, registry, prefect_api) -> Iterator[None]:
    """The canaries accepted by the real registry and SSH hosts, and saved as blocks."""
    htpasswd = sandbox_config.component_dir("registry") / "htpasswd"
    hashed = bcrypt.hashpw(secrets["registry password"].encode(), bcrypt.gensalt(5)).decode()
    key = paramiko.RSAKey.from_private_key(io.StringIO(secrets["ssh key"]))
    public = f"{key.get_name()} {key.get_base64()} canary"
    saved: dict[Path, str] = {}
    authorized = [sandbox_config.component_dir(f"ssh-{env}") / "authorized_keys"
                  for env in ("staging", "production")]  # fmt: skip
    for path, line in [(htpasswd, f"{USER}:{hashed}"), *[(p, public) for p in authorized]]:
        saved[path] = path.read_text()
        path.write_text(saved[path] + line + "\n")
    DockerRegistryCredentials(
        username=USER, password=secrets["registry password"],
        registry_url=registry["address"],
    ).save("canary-registry", overwrite=True)  # fmt: skip
    for environment in ("staging", "production"):
        target = cast(DeployTarget, DeployTarget.load(environment))
        DeployTarget(**{
            **target.model_dump(), "private_key": secrets["ssh key"],
            "registry_block": "canary-registry",
        }).save(f"canary-{environment}", overwrite=True)  # fmt: skip
    Secret(value=secrets["webhook secret"]).save("canary-webhook-secret", overwrite=True)
    Secret(value=secrets["notification url"]).save("canary-notification-url", overwrite=True)
    try:
        yield
    finally:
        for path, text in saved.items():
            path.write_text(text)


@pytest.fixture(scope="module")
def delivered(canary_blocks, sandbox_config, base_image, tmp_path_factory) -> dict[str, Any]:
    """CI, staging, approval and production, all through the canary blocks."""
    started = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    repo = tmp_path_factory.mktemp("canary") / "repo"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".*_cache"))
    spec = repo / "deliver.yaml"
    spec.write_text(spec.read_text().replace("  name: stock-api\n", f"  name: {IMAGE}\n"))
    (repo / "session.txt").write_text(f"{uuid.uuid4()}\n")  # always a fresh build and push
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "canary")
    parameters = CiParameters(
        repo=str(repo), ref="main", spec_path="deliver.yaml",
        advisory_url=sandbox_config.advisory_url, build_args={"BASE_IMAGE": base_image},
        cache_dir=str(sandbox_config.state_dir / "ci-cache"), registry_block="canary-registry",
    )  # fmt: skip
    call = cast(Coroutine[Any, Any, State[CiResult]], ci_pipeline(parameters, return_state=True))
    state = asyncio.run(call)
    assert state.is_completed(), state.message
    ci = state.result()
    blocks = {"target_block": "canary-staging"}
    staged, result = run_release(ci.image, "staging", "9.9.9", **blocks)
    assert staged.is_completed(), result
    production = ProductionRelease(ci.image, "9.9.9", target_block="canary-production",
                                   staging_block="canary-staging")  # fmt: skip
    production.decide(reason="canary run")
    released, result = production.result()
    assert released.is_completed(), result
    return {"since": started, "image": ci.image}


def database_text(db: Path, since: datetime.datetime) -> Iterator[tuple[str, str]]:
    """(table, row text) for every row written since `since`, block documents excepted."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            if table.startswith("block_") or table.startswith("sqlite_"):
                continue
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            where = " WHERE created >= ?" if "created" in columns else ""
            args = (since.isoformat(sep=" "),) if where else ()
            for row in conn.execute(f'SELECT * FROM "{table}"{where}', args):  # noqa: S608
                yield table, " ".join(str(cell) for cell in row)


def image_text(image: str, base_image: str) -> Iterator[tuple[str, bytes]]:
    """The image's history, config (env included) and every file of the layers it adds to the
    base image (the base's own layers were built before any canary existed)."""
    for argv in (["docker", "history", "--no-trunc", image], ["docker", "image", "inspect", image]):
        yield " ".join(argv[:3]), subprocess.run(argv, capture_output=True, check=True).stdout
    inspect = ["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", base_image]
    base_layers = json.loads(subprocess.run(inspect, capture_output=True, check=True).stdout)
    skip = {layer.split(":", 1)[1] for layer in base_layers}
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    added = 0
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        for member in outer.getmembers():
            content = outer.extractfile(member) if member.isfile() else None
            if content is None or any(digest in member.name for digest in skip):
                continue
            data = content.read()
            yield member.name, data
            if data[257:262] == b"ustar":
                added += 1
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for item in layer.getmembers():
                        inner = layer.extractfile(item) if item.isfile() else None
                        if inner is not None:
                            yield f"{member.name}:{item.name}", inner.read()
    assert added > 0, "the image's own layers should be searched"


def matcher(values: dict[str, str]) -> dict[str, re.Pattern[bytes]]:
    """One pattern per secret, matching any of its forms."""
    return {
        name: re.compile(b"|".join(re.escape(form.encode()) for form in leak_forms(value)))
        for name, value in values.items()
    }


def test_no_canary_reaches_the_database_results_or_image(
    delivered, secrets, sandbox_config, base_image
):
    patterns = matcher(secrets)
    hits: list[str] = []

    def search(where: str, data: bytes) -> None:
        hits.extend(f"{where}: {name}" for name, p in patterns.items() if p.search(data))

    home = sandbox_config.state_dir / "prefect" / "home"
    rows = 0
    for table, text in database_text(home / "prefect.db", delivered["since"]):
        rows += 1
        search(f"database {table}", text.encode())
    assert rows > 50, "the run's rows should be there to search"
    for path in (home / "storage").rglob("*"):
        if path.is_file():
            search(f"result {path.name}", path.read_bytes())
    for where, data in image_text(delivered["image"], base_image):
        search(f"image {where}", data)
    assert hits == []


def test_the_canaries_were_really_used(delivered, sandbox_config):
    """The run authenticated with them: the production host ran the image the canary pushed."""
    state = (sandbox_config.state_dir / "hosts" / "production" / "release-state.json").read_text()
    assert delivered["image"] in state
    assert f"/{IMAGE}@sha256:" in delivered["image"]


def test_a_flow_that_shows_a_secret_logs_only_the_mask(canary_blocks, secrets, tmp_path):
    """A task that logs, prints and echoes a loaded secret: the server's logs hold `***`."""
    from prefect import flow, get_client, get_run_logger, task

    from deliver.tasks.loading import load_block
    from deliver.tasks.shell import run_streamed

    @task
    def careless() -> None:
        secret = load_block(Secret, "canary-webhook-secret").get()
        value = secret if isinstance(secret, str) else json.dumps(secret)
        get_run_logger().info("the secret is %s", value)
        print(f"printed: {value}")
        logger = get_run_logger()
        run_streamed(["echo", value], cwd=tmp_path, on_line=lambda line: logger.info(line))

    @flow(log_prints=True)
    def show_secret() -> None:
        careless()

    state = show_secret(return_state=True)
    assert state.is_completed()

    run_id = state.state_details.flow_run_id
    assert run_id is not None

    async def logs() -> list[str]:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        async with get_client() as client:
            found = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            return [log.message for log in found]

    deadline = time.monotonic() + 30
    messages = asyncio.run(logs())
    while sum("***" in m for m in messages) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)  # the API log handler sends in batches
        messages = asyncio.run(logs())
    pattern = matcher({"webhook secret": secrets["webhook secret"]})["webhook secret"]
    assert [m for m in messages if pattern.search(m.encode())] == []
    assert sum("***" in m for m in messages) >= 3, messages


def test_the_search_finds_a_canary_when_it_is_there(secrets):
    """The leak search itself: every canary is found raw, base64'd inside auth, URL-encoded."""
    import base64
    import urllib.parse

    patterns = matcher(secrets)
    for name, value in secrets.items():
        for text in (value, base64.b64encode(f"u:{value}".encode()).decode(),
                     urllib.parse.quote(value, safe=""), json.dumps({"v": value})):  # fmt: skip
            assert patterns[name].search(text.encode()), (name, text[:40])
