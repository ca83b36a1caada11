"""A full delivery run with canary secrets, then a search for them wherever they could leak.

Five canaries (a 40-character token, a multi-line PEM key, a JSON blob, a value with %&'",
another token) serve as the registry password, the SSH deploy key, the webhook secret, the
notification URL and a secret in the service's env. After CI, staging, approval and production,
the Prefect database (block documents excepted: runs, task runs, logs, artifacts, events), the
result storage and the built image are searched for every form of each, and the running
container's command line for the env secret.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import io
import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import bcrypt
import httpx
import paramiko
import pytest
from prefect import get_client
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.blocks.system import Secret
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.types import SecretDict
from prefect_docker.credentials import DockerRegistryCredentials

from blocks.deploy_target import DeployTarget
from deliver.prefect_api import log_messages
from deliver.sandbox.services.chat_inbox import Inbox
from deliver.tasks.loading import load_block
from deliver.webhook_server import WebhookSettings, serve
from deployments import deploy_all
from tests import canaries
from tests.test_ci_pipeline import SAMPLE, git
from tests.test_release import ProductionRelease, run_release

IMAGE = "canary-api"
NOTIFY = "custom-webhook/canary-chat"
USER = "canary"


def leak_forms(value: str) -> set[str]:
    """Every form a secret could take where it leaked, made here independently of the
    redactor's: raw (and each line of a multi-line one), JSON-escaped, JSON inside JSON,
    URL-encoded, shell-quoted, and base64 at each of the three byte alignments. A PEM's armor
    lines (`-----BEGIN ...`) are not secret."""
    lines = [line for line in value.splitlines() if len(line) >= 8]
    forms: set[str] = set()
    for piece in {value, *lines}:
        escaped = json.dumps(piece)[1:-1]
        forms |= {
            piece,
            escaped,
            json.dumps(escaped)[1:-1],
            urllib.parse.quote(piece, safe=""),
            urllib.parse.quote_plus(piece),
            shlex.quote(piece),
        }
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + piece.encode()).decode()
            # The first group holds the bytes before it, the last those after it.
            forms.add(encoded[4 if offset else 0 : -4])
    return {form for form in forms if len(form) >= 8 and not form.startswith("-----")}


class AnyPathInbox(Inbox):
    """Keeps whatever arrives: the canary URL itself is the secret, path and query included."""

    def __init__(self) -> None:
        super().__init__("any")
        self.paths: list[str] = []

    def keep(self, path: str, body: bytes) -> int:
        self.paths.append(path)
        return super().keep(f"/hooks/{self.token}", body)


@pytest.fixture(scope="module")
def chat() -> Iterator[tuple[AnyPathInbox, int]]:
    inbox = AnyPathInbox()
    server = inbox.serve(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield inbox, int(server.server_address[1])
    server.shutdown()


@pytest.fixture(scope="module")
def secrets(chat) -> dict[str, str]:
    return {
        "registry password": canaries.TOKEN,
        "ssh key": canaries.pem_key(),
        "webhook secret": canaries.JSON_BLOB,
        "notification url": f"http://127.0.0.1:{chat[1]}/hook?t={canaries.AWKWARD}",
        "env secret": canaries.ENV_SECRET,
    }


@pytest.fixture(scope="module")
def canary_blocks(secrets, sandbox_config, registry, prefect_api) -> Iterator[None]:
    """The canaries accepted by the real registry and SSH hosts, and saved as blocks."""
    htpasswd = sandbox_config.component_dir("registry") / "htpasswd"
    hashed = bcrypt.hashpw(secrets["registry password"].encode(), bcrypt.gensalt(5)).decode()
    key = paramiko.RSAKey.from_private_key(io.StringIO(secrets["ssh key"]))
    public = f"{key.get_name()} {key.get_base64()} canary"
    saved: dict[Path, str] = {}
    authorized = [
        sandbox_config.component_dir(f"ssh-{env}") / "authorized_keys"
        for env in ("staging", "production")
    ]
    for path, line in [(htpasswd, f"{USER}:{hashed}"), *[(p, public) for p in authorized]]:
        saved[path] = path.read_text()
        path.write_text(saved[path] + line + "\n")
    DockerRegistryCredentials(
        username=USER,
        password=secrets["registry password"],
        registry_url=registry["address"],
    ).save("canary-registry", overwrite=True)
    for environment in ("staging", "production"):
        target = cast(DeployTarget, DeployTarget.load(environment))
        DeployTarget(
            **{
                **target.model_dump(),
                "private_key": secrets["ssh key"],
                "registry_block": "canary-registry",
                "staging_target": "canary-staging" if environment == "production" else None,
                "env": {"APP_MODE": "canary"},
                "secrets": {"APP_TOKEN": "canary-app-token"},
            }
        ).save(f"canary-{environment}", overwrite=True)
    Secret(value=secrets["webhook secret"]).save("canary-webhook-secret", overwrite=True)
    Secret(value=secrets["env secret"]).save("canary-app-token", overwrite=True)
    CustomWebhookNotificationBlock(
        name="canary chat",
        url="{{url}}",
        json_data={"text": "*{{subject}}*\n{{body}}"},
        secrets=SecretDict({"url": secrets["notification url"]}),
        headers=None,
        cookies=None,
    ).save("canary-chat", overwrite=True)
    try:
        yield
    finally:
        for path, text in saved.items():
            path.write_text(text)


def ci_through_the_webhook(repo: Path, sandbox_config: Any, base_image: str) -> str:
    """A push delivery signed with the canary secret starts the `ci` deployment on the worker;
    returns the image it pushed."""
    deploy_all(only=["ci"])
    secret = load_block(Secret, "canary-webhook-secret").value.get_secret_value()
    text = secret if isinstance(secret, str) else json.dumps(secret)
    settings = WebhookSettings(
        secret=text.encode(),
        ci_defaults={
            "spec_path": "deliver.yaml",
            "advisory_url": sandbox_config.advisory_url,
            "cache_dir": str(sandbox_config.state_dir / "ci-cache"),
            "build_args": {"BASE_IMAGE": base_image},
            "registry_block": "canary-registry",
            "notify_block": NOTIFY,
        },
    )
    server = serve(settings, port=0)
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "after": git(repo, "rev-parse", "HEAD"),
            "repository": {"clone_url": str(repo)},
        }
    ).encode()
    signature = "sha256=" + hmac.new(text.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
    }
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        answer = httpx.post(url, content=body, headers=headers, timeout=60)
    finally:
        server.shutdown()
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["flow_run_id"]

    async def finished() -> Any:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(run_id))
            if not (run.state and run.state.is_final()):
                return None
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["ci-stock-api"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]),
                )
            )
            return run, artifacts

    deadline = time.monotonic() + 300
    while (done := asyncio.run(finished())) is None:
        assert time.monotonic() < deadline, "the webhook's CI run did not finish"
        time.sleep(1)
    run, artifacts = done
    assert run.state.is_completed(), run.state
    (report,) = artifacts
    found = re.search(r"- image: `([^`]+)`", str(report.data))
    assert found, report.data
    return found[1]


@pytest.fixture(scope="module")
def delivered(canary_blocks, sandbox_config, base_image, tmp_path_factory) -> dict[str, Any]:
    """A signed webhook delivery starts CI; then staging, approval and production, all through
    the canary blocks, each step notified through the canary notification URL."""
    started = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    repo = tmp_path_factory.mktemp("canary") / "repo"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".*_cache"))
    spec = repo / "deliver.yaml"
    spec.write_text(spec.read_text().replace("  name: stock-api\n", f"  name: {IMAGE}\n"))
    (repo / "session.txt").write_text(f"{uuid.uuid4()}\n")  # always a fresh build and push
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "canary")
    image = ci_through_the_webhook(repo, sandbox_config, base_image)
    blocks = {"target_block": "canary-staging", "notify_block": NOTIFY}
    staged, result = run_release(image, "staging", "9.9.9", **blocks)
    assert staged.is_completed(), result
    production = ProductionRelease(
        image,
        "9.9.9",
        target_block="canary-production",
        notify_block=NOTIFY,
    )
    production.decide(reason="canary run")
    released, result = production.result()
    assert released.is_completed(), result
    return {"since": started, "image": image}


def database_text(sandbox_config: Any, since: datetime.datetime) -> Iterator[tuple[str, str]]:
    """(table, row text) for every row written since `since`, block documents excepted, from
    whichever database the sandbox's server uses."""
    from deliver.sandbox.component import Context
    from deliver.sandbox.postgres import POSTGRES, PostgresDatabase, chosen_database
    from deliver.sandbox.state import SandboxState

    ctx = Context(sandbox_config, SandboxState.load(sandbox_config.state_dir), lambda _m: None)
    if chosen_database(ctx) == POSTGRES:
        url = PostgresDatabase().connection_url(ctx).replace("postgresql+asyncpg", "postgresql")
        yield from asyncio.run(_postgres_rows(url, since))
        return
    db = sandbox_config.state_dir / "prefect" / "home" / "prefect.db"
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


async def _postgres_rows(url: str, since: datetime.datetime) -> list[tuple[str, str]]:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(url)
    try:
        tables = [
            r["tablename"]
            for r in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
        rows = []
        for table in tables:
            if table.startswith("block_"):
                continue
            query = "SELECT column_name FROM information_schema.columns WHERE table_name = $1"
            columns = {r["column_name"] for r in await connection.fetch(query, table)}
            if "created" in columns:
                query = f'SELECT * FROM "{table}" WHERE created >= $1'  # noqa: S608
                found = await connection.fetch(query, since.replace(tzinfo=datetime.UTC))
            else:
                found = await connection.fetch(f'SELECT * FROM "{table}"')  # noqa: S608
            rows += [(table, " ".join(str(cell) for cell in row.values())) for row in found]
        return rows
    finally:
        await connection.close()


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
    for table, text in database_text(sandbox_config, delivered["since"]):
        rows += 1
        search(f"database {table}", text.encode())
    assert rows > 50, "the run's rows should be there to search"
    for path in (home / "storage").rglob("*"):
        if path.is_file():
            search(f"result {path.name}", path.read_bytes())
    for where, data in image_text(delivered["image"], base_image):
        search(f"image {where}", data)
    logs = [p for p in sandbox_config.state_dir.rglob("*.log") if "ci-cache" not in p.parts]
    assert {"prefect-server.log", "prefect-worker.log", "registry.log"} <= {p.name for p in logs}
    for path in logs:  # every component's: server, workers, sshd, nginx, registry, engine...
        search(f"log {path.relative_to(sandbox_config.state_dir)}", path.read_bytes())
    assert hits == []


def test_the_env_secret_is_in_a_private_env_file_not_on_a_command_line(
    delivered, secrets, sandbox_config
):
    """Production's live container got the env secret from its 0600 env file; its command line
    (docker inspect's Path, Args, Cmd) never held it."""
    state = json.loads(
        (sandbox_config.state_dir / "hosts" / "production" / "release-state.json").read_text()
    )
    container = f"stock-api-production-{state['live']['slot']}"
    inspect = [
        "docker",
        "inspect",
        "--format",
        "{{json .Path}} {{json .Args}} {{json .Config.Cmd}}",
    ]
    command_line = subprocess.run([*inspect, container], capture_output=True, check=True).stdout
    assert matcher({"env": secrets["env secret"]})["env"].search(command_line) is None
    env = ["docker", "exec", container, "printenv", "APP_TOKEN"]
    assert (
        subprocess.run(env, capture_output=True, text=True, check=True).stdout.strip()
        == (secrets["env secret"])
    )
    env_file = sandbox_config.state_dir / "hosts" / "production" / "env" / f"{container}.env"
    assert env_file.stat().st_mode & 0o777 == 0o600


def test_the_canaries_were_really_used(delivered, sandbox_config, chat):
    """The run authenticated with them: the production host ran the image the canary pushed,
    CI was started by a delivery signed with the canary, and the canary URL got the notices."""
    state = (sandbox_config.state_dir / "hosts" / "production" / "release-state.json").read_text()
    assert delivered["image"] in state
    assert f"/{IMAGE}@sha256:" in delivered["image"]
    inbox, _ = chat
    subjects = [m["text"].splitlines()[0] for m in inbox.messages()]
    assert subjects == [
        "*stock-api 9.9.9 → staging: deployed*",
        "*stock-api 9.9.9 → production: waiting for approval*",
        "*stock-api 9.9.9 → production: released*",
    ]
    assert all(path.startswith("/hook?t=cnry%") for path in inbox.paths)


def test_a_flow_that_shows_a_secret_logs_only_the_mask(canary_blocks, secrets, tmp_path):
    """A task that logs, prints and echoes a loaded secret: the server's logs hold `***`."""
    from prefect import flow, get_run_logger, task

    from deliver.commands import run_streamed
    from deliver.tasks.loading import load_block

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

    messages = log_messages(run_id)
    pattern = matcher({"webhook secret": secrets["webhook secret"]})["webhook secret"]
    assert [m for m in messages if pattern.search(m.encode())] == []
    assert sum("***" in m for m in messages) >= 3, messages


def test_the_search_finds_a_canary_when_it_is_there(secrets):
    """The leak search itself: every canary is found raw, base64'd at each alignment (as in a
    basic-auth header), URL-encoded, in JSON, in JSON inside JSON and shell-quoted."""
    patterns = matcher(secrets)
    for name, value in secrets.items():
        for text in (
            value,
            base64.b64encode(f"u:{value}".encode()).decode(),
            base64.b64encode(f"us:{value}!".encode()).decode(),
            base64.b64encode(f"use:{value}!!".encode()).decode(),
            urllib.parse.quote(value, safe=""),
            json.dumps({"v": value}),
            json.dumps({"outer": json.dumps({"v": value})}),
            f"sh -c {shlex.quote(value)}",
        ):
            assert patterns[name].search(text.encode()), (name, text[:40])
