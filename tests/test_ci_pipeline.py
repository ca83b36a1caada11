"""The ci-pipeline flow on the sample service, against the sandbox's Docker, registry and Prefect.

Each scenario is a branch of a git repo holding a copy of the sample; "nothing pushed" means the
registry holds no tag for that branch's commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prefect import State, flow
from prefect_docker.credentials import DockerRegistryCredentials
from pydantic import ValidationError

from deliver.cli.ci import write_sarif
from deliver.errors import (
    BuildFailed,
    ChecksFailed,
    ContainerUnhealthy,
    PushFailed,
    RefNotFound,
    RegistryAuthFailed,
    RegistryUnreachable,
    RepoNotFound,
    ScanFailed,
    SpecError,
)
from deliver.planning.events import CI_FAILED, CI_STARTED
from deliver.prefect_api import final_task_runs
from flows.ci import CiParameters, CiResult, ci_pipeline
from tests.conftest import PROJECT_DIR

IMAGE = "ci-test"
SAMPLE = PROJECT_DIR / "examples" / "stock-api"
WRONG_PASSWORD_BLOCK = "ci-test-wrong-password"  # noqa: S105 (a block name)
REGISTRY_DOWN_BLOCK = "ci-test-registry-down"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "ci",
            "GIT_AUTHOR_EMAIL": "ci@example.invalid",
            "GIT_COMMITTER_NAME": "ci",
            "GIT_COMMITTER_EMAIL": "ci@example.invalid",
        },
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repo whose main branch is the sample service, its image renamed to ci-test."""
    repo = tmp_path_factory.mktemp("app") / "repo"
    caches = (
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".coverage",
        "*.egg-info",
    )
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns(".venv", *caches))
    spec = repo / "deliver.yaml"
    spec.write_text(spec.read_text().replace("  name: stock-api\n", f"  name: {IMAGE}\n"))
    # A file in the build context that differs per session, so main always builds for real.
    (repo / "session.txt").write_text(f"{uuid.uuid4()}\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "sample service")
    return repo


def branch(repo: Path, changes: dict[str, str | None], *, append: bool = False) -> str:
    """A new branch off main with `changes` (path -> new text, or None to delete) committed."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    git(repo, "checkout", "-q", "-b", name, "main")
    for relative, text in changes.items():
        path = repo / relative
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((path.read_text() if append and path.exists() else "") + text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"change for {name}")
    git(repo, "checkout", "-q", "main")
    return name


@pytest.fixture(scope="module")
def ci(sandbox_config, base_image, registry, prefect_api):
    """Runs ci-pipeline in this process against the sandbox; returns (state, value)."""
    cache = sandbox_config.state_dir / "ci-cache"

    def run(repo: Path | str, ref: str, **overrides: Any) -> tuple[Any, Any]:
        values: dict[str, Any] = {
            "repo": str(repo),
            "ref": ref,
            "spec_path": "deliver.yaml",
            "advisory_url": sandbox_config.advisory_url,
            "build_args": {"BASE_IMAGE": base_image},
            "cache_dir": str(cache),
        }
        parameters = CiParameters(**{**values, **overrides})
        flow_call = cast(
            Coroutine[Any, Any, State[CiResult]], ci_pipeline(parameters, return_state=True)
        )
        state = asyncio.run(flow_call)
        return state, state.result(raise_on_failure=False)

    return run


def registry_tags(registry: dict[str, str], name: str = IMAGE) -> set[str]:
    response = httpx.get(
        f"http://{registry['address']}/v2/{name}/tags/list",
        auth=(registry["username"], registry["password"]),
    )
    if response.status_code == 404:
        return set()
    return set(response.json().get("tags") or [])


def assert_nothing_pushed(repo: Path, ref: str, registry: dict[str, str]) -> None:
    short = git(repo, "rev-parse", "--short=7", ref)
    assert short not in registry_tags(registry), f"{short} was pushed"


def task_states(state: Any) -> dict[str, str]:
    """Task run name -> final state name, for the flow run behind `state`."""
    runs = final_task_runs(state.state_details.flow_run_id)
    return {run.name: run.state_name or "" for run in runs}


@pytest.fixture(scope="module")
def green(ci, app_repo) -> tuple[Any, CiResult]:
    state, result = ci(app_repo, "main")
    assert state.is_completed(), result
    return state, result


def test_green_path_pushes_an_image_pullable_by_digest(green, registry, app_repo, tmp_path):
    """main passes every check; the image is in the registry at the returned digest and pulls."""
    _, result = green
    sha = git(app_repo, "rev-parse", "main")
    assert result.sha == sha
    assert result.image == f"{registry['address']}/{IMAGE}@{result.digest}"
    assert result.digest.startswith("sha256:")
    assert {c.name for c in result.checks} == {
        "lint",
        "format",
        "types",
        "tests",
        "security",
        "dependencies",
    }
    assert all(c.status in {"passed", "cached"} for c in result.checks)
    tests = next(c for c in result.checks if c.name == "tests")
    assert tests.tests is not None
    assert tests.tests.passed == 23
    assert tests.tests.failed == 0
    assert tests.coverage is not None
    assert tests.coverage >= 70
    assert result.scan.passed
    assert result.scan.os_packages > 50
    assert {sha[:7], "main"} <= registry_tags(registry)

    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker")}
    login = subprocess.run(
        ["docker", "login", registry["address"], "-u", registry["username"], "--password-stdin"],
        input=registry["password"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert login.returncode == 0, login.stderr
    pulled = subprocess.run(
        ["docker", "pull", result.image], env=env, capture_output=True, text=True, check=False
    )
    assert pulled.returncode == 0, pulled.stderr
    labels = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            "--format",
            '{{index .Config.Labels "org.opencontainers.image.revision"}}',
            result.image,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert labels == sha


def test_green_path_publishes_artifacts(green, prefect_api):
    """The run publishes its result, checks table, scan report and SBOM as keyed artifacts."""
    _, result = green
    runs = final_task_runs(green[0].state_details.flow_run_id)
    assert runs
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    # Progress: health per service; build and push per image, when this run built it (a
    # reused sandbox may hold it already).
    progress = ["health-stock-api"]
    progress += [f"build-{IMAGE}", f"push-{IMAGE}"] if result.built else []
    keys = [f"{kind}-stock-api" for kind in ("ci", "ci-checks", "scan", "sbom", "scan-counts")]
    keys += ["sarif-stock-api-scan", "sarif-stock-api-security"]  # bandit's, and the scan's
    keys += progress

    async def latest() -> dict[str, str]:
        async with get_client() as client:
            found = await client.read_latest_artifacts(
                artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=keys))
            )
            return {str(artifact.key): str(artifact.data) for artifact in found}

    found = asyncio.run(latest())
    assert set(found) == set(keys)
    assert result.image in found["ci-stock-api"]
    assert "CycloneDX" in found["sbom-stock-api"]
    assert '"name": "Bandit"' in found["sarif-stock-api-security"]
    assert '"severity": "critical"' in found["scan-counts-stock-api"]
    for key in progress:  # finished
        assert float(found[key]) == 100.0


def test_rerun_of_unchanged_commit_is_cached_and_not_rebuilt(
    green, ci, app_repo, prefect_api, tmp_path
):
    """A second run of the same commit looks every step up at once and runs none of them: the
    checks, container test and scan are the first run's, listed with that run in its report."""
    first_state, first = green
    state, again = ci(app_repo, "main")
    assert state.is_completed(), again
    assert again.digest == first.digest
    assert again.built is False
    assert {c.status for c in again.checks} == {"cached"}
    first_run = str(first_state.state_details.flow_run_id)
    assert {c.reused_from for c in again.checks} <= {first_run, *previous_runs(first)}
    # Its task runs are the checkout, the registry lookup (which found every tag in place) and
    # the report: nothing reused became a task run, nothing was built, pushed or started.
    steps = sorted(name.partition("-")[0] for name in task_states(state))
    assert steps == ["checkout", "find", "publish_result"]
    reused = run_artifact(state, "ci-stock-api").partition("## Reused from earlier runs")[2]
    for step in [*(f"check {c.name}" for c in again.checks), "container test", "image scan"]:
        assert f"| {step} | [" in reused
    assert again.scan == first.scan
    # It published only its report; `deliver ci --sarif` still gets every tool's runs, from
    # the runs that made the results it reused.
    sarif = tmp_path / "warm.sarif"
    write_sarif(sarif, state.state_details.flow_run_id, again)
    tools = {run["tool"]["driver"]["name"] for run in json.loads(sarif.read_text())["runs"]}
    assert {"Bandit", "deliver-image-scan"} <= tools


def previous_runs(result: CiResult) -> set[str]:
    """The runs a reused sandbox's earlier sessions made the first run's results in."""
    return {c.reused_from for c in result.checks if c.reused_from}


def run_artifact(state: Any, key: str) -> str:
    """The data of the artifact `key` that the flow run behind `state` made."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    async def read() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[key]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                )
            )
            assert found, key
            return str(found[0].data)

    return asyncio.run(read())


def test_changed_test_file_reruns_only_what_reads_it(green, ci, app_repo):
    """Editing a test file re-runs the Python checks, not bandit or pip-audit, and no build."""
    # Unique per run, so no earlier session's cache can answer for it.
    name = f"test_extra_{uuid.uuid4().hex[:8]}"
    extra = f"\n\ndef {name}():\n    assert summarize([1.0, 3.0]).mean == 2.0\n"
    ref = branch(app_repo, {"tests/unit/test_statistics.py": extra}, append=True)
    state, result = ci(app_repo, ref)
    assert state.is_completed(), result
    statuses = {c.name: c.status for c in result.checks}
    assert statuses["tests"] == "passed"
    assert statuses["lint"] == "passed"
    assert statuses["security"] == "cached"
    assert statuses["dependencies"] == "cached"
    assert result.built is False  # tests/ is in .dockerignore: the image's inputs did not change
    assert any(name.startswith("tag-") for name in task_states(state))  # new branch, new tags


def test_failing_test_stops_before_the_build(ci, app_repo, registry):
    """A failing test fails the run with every check's outcome reported and nothing built."""
    broken = "\n\ndef test_broken():\n    assert summarize([1.0]).count == 2\n"
    ref = branch(app_repo, {"tests/unit/test_statistics.py": broken}, append=True)
    state, error = ci(app_repo, ref)
    assert state.is_failed()
    assert isinstance(error, ChecksFailed)
    assert error.failed == ["tests"]
    assert "test_broken" in str(error)
    states = task_states(state)
    assert states["check-tests"] == "Failed"
    # Every check's outcome is in the run's table, whether it ran or an earlier run's was reused.
    table = run_artifact(state, "ci-checks-stock-api")
    statuses = {row["check"]: row["status"] for row in json.loads(table)}
    assert set(statuses) == {"lint", "format", "types", "tests", "security", "dependencies"}
    assert statuses["tests"] == "failed"
    # The registry is only read before the checks; nothing is built or written.
    assert not any(name.startswith(("build-", "push-", "tag-")) for name in states)
    assert_nothing_pushed(app_repo, ref, registry)
    assert latest_ci_event_of("stock-api", ref) == CI_FAILED  # the branch's badge: failing


def latest_ci_event_of(service: str, ref: str) -> str | None:
    """The newest CI event the server has persisted for the ref (a moment after the run)."""
    from deliver.prefect_api import latest_ci_event

    deadline = time.monotonic() + 20
    while (found := latest_ci_event(service, ref)) in (None, CI_STARTED):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return found


def test_lint_failure_stops_the_run(ci, app_repo, registry):
    """An unused import fails the lint check, and nothing is pushed."""
    statistics = (
        (app_repo / "stock_api" / "statistics.py")
        .read_text()
        .replace("import math\n", "import math\nimport os\n")
    )
    ref = branch(app_repo, {"stock_api/statistics.py": statistics})
    state, error = ci(app_repo, ref)
    assert state.is_failed()
    assert isinstance(error, ChecksFailed)
    assert "lint" in error.failed
    assert "F401" in str(error)
    assert_nothing_pushed(app_repo, ref, registry)


def test_dockerfile_that_fails_to_build(ci, app_repo, registry):
    """A failing build step fails the run with that step's output, and nothing is pushed."""
    dockerfile = (
        (app_repo / "Dockerfile")
        .read_text()
        .replace("USER 65534:65534", "RUN echo about-to-fail && false\nUSER 65534:65534")
    )
    ref = branch(app_repo, {"Dockerfile": dockerfile})
    state, error = ci(app_repo, ref)
    assert state.is_failed()
    assert isinstance(error, BuildFailed)
    assert "non-zero code" in str(error)
    assert "about-to-fail" in str(error)
    assert_nothing_pushed(app_repo, ref, registry)


def test_unhealthy_container_is_not_pushed(ci, app_repo, registry):
    """A container whose /health never answers 200 fails with its logs, and is never pushed."""
    dockerfile = (
        (app_repo / "Dockerfile")
        .read_text()
        .replace("ARG BROKEN_HEALTH=false", "ARG BROKEN_HEALTH=true")
    )
    spec = (
        (app_repo / "deliver.yaml")
        .read_text()
        .replace("  health_path: /health\n", "  health_path: /health\n  health_timeout_s: 4\n")
    )
    ref = branch(app_repo, {"Dockerfile": dockerfile, "deliver.yaml": spec})
    state, error = ci(app_repo, ref)
    assert state.is_failed()
    assert isinstance(error, ContainerUnhealthy)
    assert "answered 503" in str(error)
    assert "stock-api listening" in error.logs
    assert_nothing_pushed(app_repo, ref, registry)


def test_vulnerable_image_fails_the_scan(ci, app_repo, registry):
    """An image holding requests 2.19.0 fails on GHSA-x84v-xcm2-53pg (high), and is not pushed."""
    dockerfile = (
        (app_repo / "Dockerfile")
        .read_text()
        .replace(
            "COPY stock_api/ /app/stock_api/",
            "COPY stock_api/ /app/stock_api/\nCOPY vendor/ /usr/lib/python3/dist-packages/",
        )
    )
    metadata = "Metadata-Version: 2.1\nName: requests\nVersion: 2.19.0\n"
    ref = branch(
        app_repo,
        {"Dockerfile": dockerfile, "vendor/requests-2.19.0.dist-info/METADATA": metadata},
    )
    state, error = ci(app_repo, ref)
    assert state.is_failed()
    assert isinstance(error, ScanFailed)
    assert "requests 2.19.0" in error.reason
    assert "high" in error.reason
    assert_nothing_pushed(app_repo, ref, registry)


def test_unreachable_advisory_service_is_never_clean(green, ci, app_repo):
    """With no advisory service answering, the scan fails and says so; no clean result."""
    state, error = ci(app_repo, "main", advisory_url="http://127.0.0.1:9/v1/query")
    assert state.is_failed()
    assert isinstance(error, ScanFailed)
    assert "could not be reached" in error.reason


@pytest.fixture(scope="module")
def bad_registry_blocks(prefect_api, registry) -> None:
    wrong = DockerRegistryCredentials(
        username=registry["username"],
        password="not-the-password",  # noqa: S106 (wrong on purpose)
        registry_url=registry["address"],
        reauth=False,
    )
    wrong.save(WRONG_PASSWORD_BLOCK, overwrite=True)
    down = DockerRegistryCredentials(
        username="nobody",
        password="nothing",  # noqa: S106 (nothing listens there)
        registry_url="127.0.0.1:5999",
        reauth=False,
    )
    down.save(REGISTRY_DOWN_BLOCK, overwrite=True)


@pytest.mark.usefixtures("bad_registry_blocks")
@pytest.mark.parametrize(
    ("block", "error_type", "message", "lookups"),
    [
        (WRONG_PASSWORD_BLOCK, RegistryAuthFailed, "refused the credentials", 1),
        (REGISTRY_DOWN_BLOCK, RegistryUnreachable, "could not be reached", 2),
    ],
)
def test_registry_faults_fail_the_run_and_push_nothing(
    ci, app_repo, registry, block, error_type, message, lookups
):
    """Wrong credentials or a registry that is down fail the run, naming the block or address;
    a registry that is down is asked once more (transient), refused credentials never."""
    ref = branch(app_repo, {"NOTES.md": f"{block}\n"})
    state, error = ci(app_repo, ref, registry_block=block)
    assert state.is_failed()
    assert isinstance(error, error_type)
    assert message in str(error)
    assert_nothing_pushed(app_repo, ref, registry)
    runs = final_task_runs(state.state_details.flow_run_id)
    assert [run.run_count for run in runs if run.name.startswith("find-")] == [lookups]


@flow(name="push-only")
def push_only(block: str, name: str, tags: list[str]) -> Any:
    from deliver.tasks.registry import push_image

    return push_image(block, name, tags)


@pytest.mark.usefixtures("bad_registry_blocks")
def test_push_stream_errors_never_look_green(docker_engine, registry, base_image):
    """Pushing with wrong credentials or to a dead registry raises; the in-band error is read."""
    image = docker_engine.images.get(base_image)
    name = f"ci-test-push-{uuid.uuid4().hex[:6]}"
    image.tag(f"{registry['address']}/{name}", "x")
    image.tag(f"127.0.0.1:5999/{name}", "x")
    try:
        refused = cast(State[Any], push_only(WRONG_PASSWORD_BLOCK, name, ["x"], return_state=True))
        assert isinstance(refused.result(raise_on_failure=False), RegistryAuthFailed)
        dead = cast(State[Any], push_only(REGISTRY_DOWN_BLOCK, name, ["x"], return_state=True))
        error = dead.result(raise_on_failure=False)
        assert isinstance(error, PushFailed)
        assert error.transient
        assert registry_tags(registry, name) == set()
        # Transient: the first push and its two retries; refused credentials: the one attempt.
        for state, attempts in ((refused, 1), (dead, 3)):
            assert state.state_details.flow_run_id is not None
            runs = final_task_runs(state.state_details.flow_run_id)
            assert [run.run_count for run in runs if run.name.startswith("push-")] == [attempts]
    finally:
        for host in (registry["address"], "127.0.0.1:5999"):
            docker_engine.images.remove(f"{host}/{name}:x")


def test_nonexistent_repo(ci, tmp_path):
    """A repo path that isn't a repository fails at checkout, naming it."""
    state, error = ci(tmp_path / "nowhere", "main")
    assert state.is_failed()
    assert isinstance(error, RepoNotFound)
    assert "nowhere" in str(error)


def test_nonexistent_ref(ci, app_repo):
    """A ref that isn't in the repo fails at checkout, listing the branches."""
    state, error = ci(app_repo, "no-such-branch")
    assert state.is_failed()
    assert isinstance(error, RefNotFound)
    assert "Branches: " in str(error)


def test_malformed_spec_in_the_repo(ci, app_repo):
    """A malformed deliver.yaml fails the run after the checkout, naming the file and field."""
    spec = (app_repo / "deliver.yaml").read_text().replace("port: 8000", "port: eighty")
    ref = branch(app_repo, {"deliver.yaml": spec})
    state, error = ci(app_repo, ref)
    assert state.is_failed()
    assert isinstance(error, SpecError)
    assert "deliver.yaml: container.port:" in str(error)


def test_missing_dockerfile(ci, app_repo, registry):
    """A build context without the Dockerfile fails before any container starts, naming it."""
    ref = branch(app_repo, {"Dockerfile": None})
    state, error = ci(app_repo, ref)
    assert state.is_failed()
    assert isinstance(error, BuildFailed)
    assert "no Dockerfile in the build context" in str(error)
    assert_nothing_pushed(app_repo, ref, registry)


def test_invalid_ref_is_refused_before_any_run(prefect_api):
    """A ref git would refuse is a parameter error: no flow run is created."""
    with pytest.raises(ValidationError, match="ref"):
        CiParameters(repo="/repo", ref="main..evil")
    with pytest.raises(ValidationError, match="spec_path"):
        CiParameters(repo="/repo", spec_path="../../etc/passwd")
