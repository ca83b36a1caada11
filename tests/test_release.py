"""The release flow against the sandbox's SSH hosts, Docker engine, nginx and Prefect server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import docker.errors
import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blocks.approval_policy import ApprovalPolicy
from blocks.deploy_target import DeployTarget
from deliver.errors import (
    DeployTargetInvalid,
    HealthCheckFailed,
    HostKeyRejected,
    NotOnStaging,
    SmokeCheckFailed,
)
from deliver.planning.approval import decode_secret, totp
from deliver.prefect_api import decide, waiting_releases
from deliver.tasks.ssh import Remote, SshAddress, load_private_key, pinned_host_keys
from flows.release import ReleaseParameters, RollbackParameters, release_here, rollback_here
from tests.conftest import PROJECT_DIR
from tests.images import push_sample
from tests.nginx import serve_blue
from tests.policies import SANDBOX_APPROVALS, TEST_APPROVALS, approvals_for_tests, code_of

REPOSITORY = "release-test"
SHA = "0123456789abcdef0123456789abcdef01234567"
VARIANTS: dict[str, dict[str, str]] = {
    "v1": {"VERSION": "1.0.1"},
    "v2": {"VERSION": "1.0.2"},
    "broken-health": {"VERSION": "6.6.6", "BROKEN_HEALTH": "true"},
    "broken-stats": {"VERSION": "7.7.7", "BROKEN_STATS": "true"},
    **{f"k{i}": {"VERSION": f"2.0.{i}"} for i in range(1, 6)},
}


def reset_hosts(docker_engine: Any, sandbox_config: Any) -> None:
    """No stock-api containers, no host state, nginx pointing at the blue slot (orders-api's
    tests, which may run meanwhile on another worker, keep theirs)."""
    found = docker_engine.containers.list(all=True, filters={"label": "dev.deliver.app=stock-api"})
    for container in found:
        container.remove(force=True)
    for state in (sandbox_config.state_dir / "hosts").glob("*/release-state.json"):
        state.unlink()
    nginx_dir = sandbox_config.component_dir("nginx")
    production_ports = sandbox_config.slot_ports[_env("production")]
    serve_blue(nginx_dir / "production-upstream.conf", production_ports)


@pytest.fixture(scope="module")
def images(docker_engine, registry, base_image, sandbox_config, prefect_api):
    """Every variant of the sample built and pushed; name -> repository@sha256:..."""
    reset_hosts(docker_engine, sandbox_config)
    found = {
        name: push_sample(docker_engine, registry, base_image, REPOSITORY, name, args)
        for name, args in VARIANTS.items()
    }
    yield found
    reset_hosts(docker_engine, sandbox_config)


def run_release(image: str, environment: str, version: str, **extra: Any) -> tuple[Any, Any]:
    """Production waits under the tests' approval policy unless `approval_policy` is given."""
    if environment == "production":
        extra.setdefault("approval_policy", approvals_for_tests())
    parameters = ReleaseParameters(
        image=image,
        environment=environment,
        version=version,
        git_sha=SHA,
        requested_by="tester",
        **extra,
    )
    state = release_here(parameters)
    return state, state.result(raise_on_failure=False)


def waiting_run(version: str, timeout_s: float = 120.0) -> str:
    """The id of the production release of `version` once it waits for approval (after a killed
    release, only once that release's lease on the environment has expired)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for waiting in waiting_releases():
            if waiting.version == version and waiting.environment == "production":
                return waiting.run_id
        time.sleep(0.2)
    raise AssertionError(f"no production release of {version} is waiting for approval")


class ProductionRelease:
    """A production release running in a thread, so the test can act as the approver."""

    def __init__(self, image: str, version: str, **extra: Any) -> None:
        self.version, self.outcome = version, cast(tuple[Any, Any], (None, None))
        self.policy = extra.get("approval_policy", TEST_APPROVALS)
        self.thread = threading.Thread(target=self._run, args=(image, version, extra), daemon=True)
        self.thread.start()

    def _run(self, image: str, version: str, extra: dict[str, Any]) -> None:
        self.outcome = run_release(image, "production", version, **extra)

    def decide(self, decision: str = "approve", approver: str = "demo-approver", **kw: str) -> None:
        decide(
            waiting_run(self.version),
            decision=decision,
            approver=approver,
            reason=kw.get("reason", ""),
            code=kw["code"] if "code" in kw else self._code(approver),
        )

    def _code(self, approver: str) -> str:
        return code_of(approver) if self.policy == SANDBOX_APPROVALS else ""

    def result(self) -> tuple[Any, Any]:
        self.thread.join(timeout=180)
        assert not self.thread.is_alive(), "the release did not finish"
        return self.outcome


def ship(image: str, version: str, **extra: Any) -> tuple[Any, Any]:
    """Staging, then production approved by the sandbox's demo approver."""
    state, result = run_release(image, "staging", version)
    assert state.is_completed(), result
    production = ProductionRelease(image, version, **extra)
    production.decide(reason="tests pass")
    return production.result()


def host_state(sandbox_config: Any, environment: str) -> dict[str, Any]:
    path = sandbox_config.state_dir / "hosts" / environment / "release-state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def version_at(url: str) -> str | None:
    try:
        return str(httpx.get(f"{url}/health", timeout=2).json().get("version"))
    except (httpx.HTTPError, ValueError):
        return None


DRILL = "drill"  # an environment of one host with its own nginx: fleet-3, idle in this module
DRILL_HOST = "fleet-3"


def drill_front(sandbox_config: Any) -> str:
    return f"http://127.0.0.1:{sandbox_config.fleet[DRILL_HOST].front}"


def _release_process(
    image: str, version: str, requested_by: str, log: Path
) -> subprocess.Popen[bytes]:
    parameters = ReleaseParameters(
        image=image, environment=DRILL, version=version, git_sha=SHA, requested_by=requested_by
    )
    script = (
        "import sys; from flows.release import ReleaseParameters, release_here; "
        "release_here(ReleaseParameters.model_validate_json(sys.argv[1]))"
    )
    argv = [sys.executable, "-c", script, parameters.model_dump_json()]
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT)


def _switched(requested_by: str) -> bool:
    """Whether the drill release requested by `requested_by` has completed its switch."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    async def read() -> bool:
        async with get_client() as client:
            runs = await client.read_flow_runs(limit=20, sort=FlowRunSort.EXPECTED_START_TIME_DESC)
            mine = [
                r.id
                for r in runs
                if r.parameters.get("parameters", {}).get("requested_by") == requested_by
            ]
            if not mine:
                return False
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=mine)),
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="switch-to-%")),
            )
            return any(t.state_name == "Completed" for t in tasks)

    return asyncio.run(read())


@pytest.fixture(scope="module", autouse=True)
def kill_drill(images, sandbox_config, docker_engine, tmp_path_factory):
    """Before this module's first test: a release to `drill` killed (-9) right after its
    switch, and the next release started at once. It waits out the killed release's lease
    (Prefect's minimum, 60 s) while the other tests run; the kill test at the end checks it."""
    from tests.test_fleet import reset_fleet

    reset_fleet(docker_engine, sandbox_config)
    fleet = cast(DeployTarget, DeployTarget.load("production-fleet"))
    fields = fleet.model_dump()
    (host,) = [h for h in fields["hosts"] if h["name"] == DRILL_HOST]
    host["state_dir"] = str(sandbox_config.state_dir / "hosts" / DRILL)
    DeployTarget(**{**fields, "environment": DRILL, "hosts": [host], "staging_target": None}).save(
        DRILL, overwrite=True
    )
    log = tmp_path_factory.mktemp("drill") / "releases.log"
    killed_by = f"drill-{uuid.uuid4().hex[:8]}"
    killed = _release_process(images["v2"], "1.0.2", killed_by, log)
    deadline = time.monotonic() + 120
    while not _switched(killed_by):
        assert time.monotonic() < deadline, f"the drill never switched:\n{log.read_text()}"
        assert killed.poll() is None, f"the drill ended before its switch:\n{log.read_text()}"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    follower = _release_process(images["v1"], "1.0.1", "drill-follower", log)
    yield follower, log
    if follower.poll() is None:
        follower.kill()
    reset_fleet(docker_engine, sandbox_config)
    for container in docker_engine.containers.list(
        all=True, filters={"label": f"dev.deliver.environment={DRILL}"}
    ):
        container.remove(force=True)


def test_staging_release_then_next_release_moves_slots(images, sandbox_config, docker_engine):
    """Two staging releases: the first goes live in blue, the second in green, blue retired."""
    state, first = run_release(images["v1"], "staging", "1.0.1")
    assert state.is_completed(), first
    assert (first.slot, version_at(first.url)) == ("blue", "1.0.1")
    state, second = run_release(images["v2"], "staging", "1.0.2")
    assert state.is_completed(), second
    assert (second.slot, second.previous, version_at(second.url)) == ("green", "1.0.1", "1.0.2")
    assert version_at(first.url) is None  # the old slot was stopped
    live = host_state(sandbox_config, "staging")["live"]
    assert (live["version"], live["slot"], live["image"]) == ("1.0.2", "green", images["v2"])


def test_staging_health_failure_leaves_previous_serving(images, sandbox_config):
    """A release whose health fails is stopped; the previous version keeps serving."""
    before = host_state(sandbox_config, "staging")["live"]
    staging = cast(DeployTarget, DeployTarget.load("staging"))
    DeployTarget(**{**staging.model_dump(), "health_timeout_s": 3.0}).save(
        "staging-quick-health", overwrite=True
    )
    state, error = run_release(
        images["broken-health"], "staging", "6.6.6", target_block="staging-quick-health"
    )
    assert state.is_failed()
    assert isinstance(error, HealthCheckFailed)
    after = host_state(sandbox_config, "staging")
    assert after["live"] == before
    assert after["history"][-1]["outcome"] == "failed"
    ports = sandbox_config.slot_ports
    live_port = next(p for s, p in ports[_env("staging")].items() if s.value == before["slot"])
    idle_port = next(p for s, p in ports[_env("staging")].items() if s.value != before["slot"])
    assert version_at(f"http://127.0.0.1:{live_port}") == before["version"]
    assert version_at(f"http://127.0.0.1:{idle_port}") is None


def _env(name: str) -> Any:
    from deliver.sandbox.config import Environment

    return Environment(name)


def test_production_blue_green_switch(images, sandbox_config):
    """Production releases switch nginx to the new slot; the front serves the new version."""
    front = sandbox_config.production_front_url
    state, first = ship(images["v1"], "1.0.1")
    assert state.is_completed(), first
    assert version_at(front) == "1.0.1"
    state, second = ship(images["v2"], "1.0.2")
    assert state.is_completed(), second
    assert second.approval.approver == "demo-approver"
    record = host_state(sandbox_config, "production")["history"][-1]
    assert record["approval"]["approver"] == "demo-approver"
    assert record["approval"]["reason"] == "tests pass"
    assert second.slot != first.slot
    assert version_at(front) == "1.0.2"
    upstream = (sandbox_config.component_dir("nginx") / "production-upstream.conf").read_text()
    assert str(sandbox_config.slot_ports[_env("production")][_slot(second.slot)]) in upstream


def _slot(name: str) -> Any:
    from deliver.sandbox.config import Slot

    return Slot(name)


def test_production_smoke_failure_switches_back(images, sandbox_config):
    """Healthy but failing its smoke checks through nginx: traffic goes back, the bad slot stops."""
    front = sandbox_config.production_front_url
    live_before = host_state(sandbox_config, "production")["live"]
    staging = cast(DeployTarget, DeployTarget.load("staging"))
    DeployTarget(**{**staging.model_dump(), "smoke_checks": []}).save(
        "staging-no-smoke", overwrite=True
    )  # the broken build must reach staging to be offered to production
    state, _ = run_release(
        images["broken-stats"], "staging", "7.7.7", target_block="staging-no-smoke"
    )
    assert state.is_completed()
    production_target = cast(DeployTarget, DeployTarget.load("production"))
    fields = {**production_target.model_dump(), "staging_target": "staging-no-smoke"}
    DeployTarget(**fields).save("production-after-no-smoke", overwrite=True)
    production = ProductionRelease(
        images["broken-stats"], "7.7.7", target_block="production-after-no-smoke"
    )
    production.decide(reason="smoke drill")
    state, error = production.result()
    assert state.is_failed()
    assert isinstance(error, SmokeCheckFailed)
    assert "/stats/ACME" in str(error)
    answered = {version_at(front) for _ in range(50)}
    assert answered == {live_before["version"]}
    assert host_state(sandbox_config, "production")["live"] == live_before


def test_unknown_host_key_runs_nothing(images, sandbox_config, docker_engine):
    """A target whose pinned key is another host's is refused before any command runs."""
    staging = cast(DeployTarget, DeployTarget.load("staging"))
    production_key = (sandbox_config.component_dir("ssh-production") / "host_key.pub").read_text()
    # A fresh block (model_copy would keep staging's document id and overwrite it).
    wrong = DeployTarget(**{**staging.model_dump(), "host_keys": [production_key.strip()]})
    wrong.save("staging-wrong-key", overwrite=True)
    before = host_state(sandbox_config, "staging")

    def release_containers() -> set[str]:  # other apps' releases come and go meanwhile
        labels = [f"dev.deliver.app={staging.app_name}", "dev.deliver.environment=staging"]
        return {c.name for c in docker_engine.containers.list(filters={"label": labels})}

    running = release_containers()
    state, error = run_release(images["v1"], "staging", "1.0.1", target_block="staging-wrong-key")
    assert state.is_failed()
    assert isinstance(error, HostKeyRejected)
    assert "no command was run" in str(error)
    assert host_state(sandbox_config, "staging") == before
    assert release_containers() == running


HOSTILE = [
    "1.0; rm -rf /",
    "$(id)",
    "`id`",
    "1.0\nid",
    "'quoted'",
    '"dq"',
    "-rf",
    "--help",
    "a b",
    "1.0|cat",
    "1.0&&id",
    "${HOME}",
    "1.0>out",
    "<in",
    "*",
    "~root",
    "1.0\\",
    "a\tb",
    "",
    "\x00nul",
    "ünï",
    "../../etc",
    "1.0;",
    "-",
    "$'x'",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_labels_are_refused(value):
    """Shell syntax, whitespace, quotes or a leading '-' in version or requester: refused."""
    digest = "127.0.0.1:5001/app@sha256:" + "a" * 64
    with pytest.raises(ValidationError):
        ReleaseParameters(
            image=digest, environment="staging", version=value, git_sha=SHA, requested_by="tester"
        )
    with pytest.raises(ValidationError):
        ReleaseParameters(
            image=digest, environment="staging", version="1.0", git_sha=SHA, requested_by=value
        )


def test_hostile_values_arrive_remotely_as_one_argument(sandbox_config):
    """Each hostile value, passed over SSH, reaches the remote command as one unchanged argument."""
    folder = sandbox_config.component_dir("ssh-staging")
    address = SshAddress(
        host="127.0.0.1", port=sandbox_config.ssh_ports[_env("staging")], user="root"
    )
    key = load_private_key((folder / "deploy_key").read_text(), block="test")
    keys = pinned_host_keys(address, [(folder / "host_key.pub").read_text()], block="test")
    values = [v for v in HOSTILE if "\x00" not in v]  # argv cannot carry NUL anywhere
    with Remote(address, private_key=key, host_keys=keys) as remote:
        for value in values:
            result = remote.run(["sh", "-c", 'printf "%s|%s" "$#" "$1"', "probe", value])
            assert result.stdout == f"1|{value}", value


@pytest.mark.parametrize(
    "image",
    [
        "127.0.0.1:5001/app:latest",
        "app",
        "127.0.0.1:5001/app@sha256:abc",
        "127.0.0.1:5001/app@sha256:" + "A" * 64,
        "x@sha256:" + "a" * 64 + ";id",
    ],
)
def test_images_must_be_by_digest(image):
    """A tag, a short or uppercase digest, or trailing syntax: refused before a host is touched."""
    with pytest.raises(ValidationError, match="image"):
        ReleaseParameters(
            image=image, environment="staging", version="1.0", git_sha=SHA, requested_by="tester"
        )


@pytest.mark.parametrize("environment", ["Prod", "qa;id", "", "-x", "a" * 32])
def test_environment_names_are_plain_tokens(environment):
    with pytest.raises(ValidationError, match="environment name"):
        ReleaseParameters(
            image=f"app@sha256:{'a' * 64}",
            environment=environment,
            version="1.0",
            git_sha=SHA,
            requested_by="tester",
        )


def test_a_third_environment_gets_its_own_limit_on_its_first_release(
    images, sandbox_config, docker_engine
):
    """Any environment with a DeployTarget: `qa` (staging's host, its own slots) releases like
    staging, and its first release creates its one-at-a-time limit. The host lacks the image,
    so the release logs in and pulls it (a host that has it skips the pull)."""
    import asyncio

    from prefect import get_client

    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_engine.images.remove(images["v1"], force=True, noprune=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_engine.images.get(images["v1"])

    async def drop_limit() -> None:
        async with get_client() as client:
            with contextlib.suppress(Exception):
                await client.delete_global_concurrency_limit_by_name("release-qa")

    asyncio.run(drop_limit())
    state, result = run_release(images["v1"], "qa", "1.0.1")
    assert state.is_completed(), result
    assert result.environment == "qa"
    assert (
        version_at(f"http://127.0.0.1:{sandbox_config.qa_slot_ports[_slot(result.slot)]}")
        == "1.0.1"
    )
    assert host_state(sandbox_config, "qa")["live"]["version"] == "1.0.1"
    docker_engine.images.get(images["v1"])  # pulled

    async def limit() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name("release-qa")).limit

    assert asyncio.run(limit()) == 1


def test_production_releases_started_at_once_run_one_at_a_time(images, sandbox_config):
    """Three production releases started and approved together change production in turn."""
    state, _ = run_release(images["v1"], "staging", "1.0.1")
    assert state.is_completed()
    versions = [f"1.0.1-rc{n}" for n in range(1, 4)]
    releases = [ProductionRelease(images["v1"], version) for version in versions]
    for production in releases:
        waiting_run(production.version)
    deciders = [threading.Thread(target=p.decide, kwargs={"reason": "at once"}) for p in releases]
    for decider in deciders:
        decider.start()
    for decider in deciders:
        decider.join()
    outcomes = [production.result() for production in releases]
    assert all(state.is_completed() for state, _ in outcomes), outcomes
    history = [
        r for r in host_state(sandbox_config, "production")["history"] if r["version"] in versions
    ]
    assert len(history) == 3
    spans = sorted((record["began"], record["at"]) for record in history)
    for (_, ended), (began, _) in itertools.pairwise(spans):
        assert ended <= began, spans
    running = only_running_slots(sandbox_config)
    assert running == [host_state(sandbox_config, "production")["live"]["slot"]]


def only_running_slots(sandbox_config: Any, environment: str = "production") -> list[str]:
    import docker

    engine = docker.from_env()
    labels = ["dev.deliver.app=stock-api", f"dev.deliver.environment={environment}"]
    return [c.labels["dev.deliver.slot"] for c in engine.containers.list(filters={"label": labels})]


def test_five_releases_keep_three_versions(images, sandbox_config, docker_engine):
    """After five releases, exactly the three newest are kept, the live one among them."""
    for name in ("k1", "k2", "k3", "k4", "k5"):
        state, result = run_release(images[name], "staging", VARIANTS[name]["VERSION"])
        assert state.is_completed(), result
    kept = host_state(sandbox_config, "staging")["kept"]
    assert kept == [images["k5"], images["k4"], images["k3"]]
    assert host_state(sandbox_config, "staging")["live"]["image"] in kept
    for name in ("k1", "k2"):
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_engine.images.get(images[name])
            pytest.fail(f"{name} should have been pruned from the host")
    for name in ("k3", "k4", "k5"):
        docker_engine.images.get(images[name])


def test_host_state_file_is_private(images, sandbox_config):
    """The host's release state is written atomically with owner-only permissions."""
    path = Path(sandbox_config.state_dir / "hosts" / "staging" / "release-state.json")
    assert path.exists()
    assert path.stat().st_mode & 0o077 == 0


def test_rejection_leaves_production_unchanged(images, sandbox_config):
    """A rejected release ends Cancelled with the reason, and production is not touched."""
    before = host_state(sandbox_config, "production")["live"]
    state, _ = run_release(images["v1"], "staging", "1.0.1")
    assert state.is_completed()
    production = ProductionRelease(images["v1"], "1.0.1")
    production.decide("reject", reason="freeze week")
    state, _ = production.result()
    assert state.is_cancelled()
    assert "freeze week" in (state.message or "")
    assert host_state(sandbox_config, "production")["live"] == before
    assert only_running_slots(sandbox_config) == [before["slot"]]  # the candidate was stopped


def test_approval_timeout_changes_nothing(images, sandbox_config):
    """No decision within the policy's timeout: the run ends and production is not changed."""
    ApprovalPolicy(approvers=["demo-approver"], timeout_s=3, require_codes=False).save(
        "quick-approvals", overwrite=True
    )
    before = host_state(sandbox_config, "production")["live"]
    state, _ = run_release(images["v2"], "staging", "1.0.2")
    assert state.is_completed()
    state, _ = run_release(images["v2"], "production", "1.0.2", approval_policy="quick-approvals")
    assert state.is_final()
    assert not state.is_completed()
    # Whichever notices first: the flow's own words, or Prefect's for an expired pause.
    message = state.message or ""
    assert "No decision within 3 s" in message or "never resumed" in message, message
    assert host_state(sandbox_config, "production")["live"] == before


def test_resume_violating_the_policy_keeps_waiting(images, sandbox_config):
    """A stranger, or the requester approving themself, is refused; alice's valid code is not."""
    state, _ = run_release(images["v1"], "staging", "1.0.1")
    assert state.is_completed()
    production = ProductionRelease(images["v1"], "1.0.1")
    production.decide(approver="mallory")
    production.decide(approver="alice", code="000000")
    assert production.thread.is_alive()
    saved = json.loads((sandbox_config.state_dir / "state.json").read_text())
    secret = saved["credentials"]["approver-alice"]["totp_secret"]
    code = totp(decode_secret(secret), at=time.time())
    production.decide(approver="alice", code=code)
    state, result = production.result()
    assert state.is_completed(), result
    assert result.approval.approver == "alice"
    # The same code, still inside its window, for the next release: refused, it keeps waiting.
    again = ProductionRelease(images["v1"], "1.0.1")  # the same label: later tests expect it
    again.decide(approver="alice", code=code)
    assert again.thread.is_alive()
    again.decide(approver="demo-approver", reason="after the replayed code")
    state, result = again.result()
    assert state.is_completed(), result
    assert result.approval.approver == "demo-approver"


def waiting_rollback(timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for waiting in waiting_releases():
            if waiting.kind == "rollback" and waiting.environment == "production":
                return waiting.run_id
        time.sleep(0.2)
    raise AssertionError("no production rollback is waiting for approval")


def test_rollback_to_previous_and_named_versions(images, sandbox_config):
    """`deliver rollback` of production waits for an approval (its requester's own is refused),
    then switches to the previous kept version; an emergency rollback to a named one is approved
    by its requester's own code (and refused without it); a version not kept is refused before
    any wait."""
    import subprocess
    import sys

    front = sandbox_config.production_front_url
    live = host_state(sandbox_config, "production")["live"]["version"]
    other = "1.0.2" if live == "1.0.1" else "1.0.1"
    cli = [sys.executable, "-m", "deliver.cli"]
    asked = subprocess.Popen(
        [*cli, "rollback", "--env", "production", "--requested-by", "demo-approver", "--sandbox"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    own = code_of("demo-approver")  # a valid code, but demo-approver asked for this rollback
    decide(waiting_rollback(), decision="approve", approver="demo-approver", reason="me", code=own)
    decide(
        waiting_rollback(),
        decision="approve",
        approver="alice",
        reason="bad",
        code=code_of("alice"),
    )
    _, err = asked.communicate(timeout=120)
    assert asked.returncode == 0, err[-2000:]
    assert version_at(front) == other
    last = host_state(sandbox_config, "production")["history"][-1]
    assert (last["outcome"], last["approval"]["approver"]) == ("rolled-back", "alice")

    secret = base64.b32encode(b"emergency-rollback-key").decode()
    ApprovalPolicy(
        approvers=["demo-approver"],
        totp_secrets={"dave": SecretStr(secret)},
        emergency_rollback=["dave"],
        require_codes=False,
    ).save("emergency-rollbacks", overwrite=True)
    parameters = RollbackParameters(
        environment="production",
        to_version=live,
        requested_by="dave",
        approval_policy="emergency-rollbacks",
    )
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(state=rollback_here(parameters)))
    runner.start()
    run_id = waiting_rollback()
    decide(run_id, decision="approve", approver="dave", reason="outage", code="")  # no code
    time.sleep(1)
    assert waiting_rollback(timeout_s=30) == run_id  # refused: still waiting
    code = totp(decode_secret(secret), at=time.time())
    decide(run_id, decision="approve", approver="dave", reason="outage", code=code)
    runner.join(timeout=120)
    assert outcome["state"].is_completed(), outcome["state"]
    assert version_at(front) == live
    last = host_state(sandbox_config, "production")["history"][-1]
    assert (last["outcome"], last["approval"]["approver"]) == ("rolled-back", "dave")

    absent = [*cli, "rollback", "--env", "production", "--to", "9.9.9", "--sandbox"]
    missing = subprocess.run(absent, capture_output=True, text=True, check=False, timeout=120)
    assert missing.returncode == 1
    assert "no kept version 9.9.9" in missing.stderr
    status = subprocess.run(
        [*cli, "status", "--json", "--sandbox"], capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, status.stderr[-2000:]
    production = next(s for s in json.loads(status.stdout) if s["environment"] == "production")
    assert production["live"]["version"] == live
    assert {k["version"] for k in production["kept"]} >= {"1.0.1", "1.0.2"}


def test_kill_9_after_the_switch_converges(kill_drill, sandbox_config, docker_engine):
    """A release killed (-9) right after its switch: the next release, started at once, waits
    out the killed one's lease on the environment, then converges to one live slot."""
    follower, log = kill_drill
    try:
        code = follower.wait(timeout=240)
    except subprocess.TimeoutExpired:
        follower.kill()
        raise AssertionError(
            f"the next release never finished:\n{log.read_text()[-2000:]}"
        ) from None
    assert code == 0, log.read_text()[-2000:]
    running = docker_engine.containers.list(
        filters={"label": ["dev.deliver.app=stock-api", f"dev.deliver.environment={DRILL}"]}
    )
    live = host_state(sandbox_config, DRILL)["live"]
    assert [c.labels["dev.deliver.slot"] for c in running] == [live["slot"]]
    assert live["version"] == "1.0.1"
    assert version_at(drill_front(sandbox_config)) == "1.0.1"


def test_production_needs_the_digest_live_on_staging(images, sandbox_config):
    """An image that staging does not serve is refused before waiting for anyone."""
    state, error = run_release(images["k1"], "production", "2.0.1")
    assert state.is_failed()
    assert isinstance(error, NotOnStaging)


def processes_of(flow_run_id: str) -> list[int]:
    """Pids whose environment names this flow run (a worker's flow run process does)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
    return found


def test_deployment_release_suspends_without_holding_a_process(images, sandbox_config):
    """Run from a deployment, a production release suspends: no process waits for the approver;
    approving reschedules it on the worker, which finishes the release."""
    from deliver.demo import deploy_release, start_release
    from deliver.prefect_api import wait_for_flow_run as wait_for

    state, _ = run_release(images["v1"], "staging", "1.0.1")
    assert state.is_completed()
    deployment_id = deploy_release(sandbox_config.work_pool)
    parameters = {
        "image": images["v1"],
        "environment": "production",
        "version": "1.0.1",
        "git_sha": SHA,
        "requested_by": "tester",
        "notify_block": "custom-webhook/sandbox-chat",
    }
    run_id = start_release(deployment_id, parameters)
    run = wait_for(run_id, until={"PAUSED"}, timeout_s=120)
    assert run.state.name == "Suspended", run.state
    deadline = time.monotonic() + 30
    while processes_of(str(run_id)):
        assert time.monotonic() < deadline, "a process still holds the suspended run"
        time.sleep(0.5)
    code = code_of("demo-approver")
    decide(str(run_id), decision="approve", approver="demo-approver", reason="suspend", code=code)
    run = wait_for(run_id, until={"COMPLETED"}, timeout_s=180)
    assert run.state.is_completed(), run.state
    assert version_at(sandbox_config.production_front_url) == "1.0.1"
    record = host_state(sandbox_config, "production")["history"][-1]
    assert record["approval"]["reason"] == "suspend"
    assert record["flow_run"] == str(run_id)
    # Resumed, the run starts again from the top; its notices still go out once each.
    chat = sandbox_config.component_dir("chat") / "messages.jsonl"
    about_run = [
        json.loads(line)["text"] for line in chat.read_text().splitlines() if str(run_id) in line
    ]
    assert [text.splitlines()[0] for text in about_run] == [
        "*stock-api 1.0.1 → production: waiting for approval*",
        "*stock-api 1.0.1 → production: released*",
    ]


def test_deliver_release_runs_the_flow_and_refuses_bad_input(images, sandbox_config):
    """`deliver release` releases to staging and prints JSON; a tag instead of a digest is a
    usage error (exit 2) naming the option, before anything runs."""
    import subprocess
    import sys

    cli = [sys.executable, "-m", "deliver.cli", "release", "--env", "staging", "--sandbox"]
    args = ["--version", "1.0.2", "--git-sha", SHA, "--json"]
    done = subprocess.run(
        [*cli, "--image", images["v2"], *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == "1.0.2"
    assert version_at(result["url"]) == "1.0.2"
    refused = subprocess.run(
        [*cli, "--image", "release-test:v2", *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "--image" in refused.stderr
    assert "by digest" in refused.stderr


def test_a_release_cannot_choose_what_counts_as_staging():
    """staging_block is no parameter: the production target names its staging itself."""
    with pytest.raises(ValidationError, match="staging_block"):
        ReleaseParameters(
            image=f"app@sha256:{'a' * 64}",
            environment="production",
            version="1.0",
            git_sha=SHA,
            requested_by="tester",
            staging_block="anything-live",  # type: ignore[call-arg]
        )


def test_a_production_target_that_names_no_staging_is_refused_before_any_host(
    images, sandbox_config
):
    production = cast(DeployTarget, DeployTarget.load("production"))
    fields = {**production.model_dump(), "staging_target": None}
    DeployTarget(**fields).save("production-without-staging", overwrite=True)
    before = host_state(sandbox_config, "production")
    state, error = run_release(
        images["v1"], "production", "1.0.1", target_block="production-without-staging"
    )
    assert state.is_failed()
    assert isinstance(error, DeployTargetInvalid)
    assert error.field == "staging_target"
    assert host_state(sandbox_config, "production") == before


def test_an_approval_is_void_once_staging_serves_something_else(images, sandbox_config):
    """Staging is checked again after the wait: approved after staging moved on, the release
    fails, production is not changed, and its candidate is stopped."""
    state, _ = run_release(images["v1"], "staging", "1.0.1")
    assert state.is_completed()
    before = host_state(sandbox_config, "production")["live"]
    production = ProductionRelease(images["v1"], "1.0.1-stale")
    waiting_run("1.0.1-stale")
    state, _ = run_release(images["v2"], "staging", "1.0.2")  # staging moves on meanwhile
    assert state.is_completed()
    production.decide(reason="approved too late")
    state, error = production.result()
    assert state.is_failed()
    assert isinstance(error, NotOnStaging)
    assert host_state(sandbox_config, "production")["live"] == before
    assert only_running_slots(sandbox_config) == [before["slot"]]


def test_a_chat_outage_never_fails_a_delivery(images, sandbox_config):
    """The notification block points at a port nothing listens on: the release still goes
    live, and the failed notice is only logged."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    CustomWebhookNotificationBlock(
        name="chat that is down",
        url="http://127.0.0.1:9/hooks/down",  # the discard port, closed here
        json_data={"text": "*{{subject}}*\n{{body}}"},
        headers=None,
        cookies=None,
    ).save("chat-down", overwrite=True)
    state, result = run_release(
        images["v2"], "staging", "1.0.2", notify_block="custom-webhook/chat-down"
    )
    assert state.is_completed(), result
    assert host_state(sandbox_config, "staging")["live"]["version"] == "1.0.2"
