"""What a repository or a request can put in front of git, pip or a path join is refused, with
the field named, before any process starts (an audit hook watches every process start)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from deliver.errors import EnvironmentFailed, RepoNotFound, SpecError
from deliver.planning.environment import InstallPlan, environment_digest, install_plan
from deliver.planning.inputs import relative_path_problem, repository_problem, requirement_problem
from deliver.planning.webhook import judge
from deliver.spec import EnvironmentSpec, parse_spec
from deliver.tasks.app_environment import dependency_files
from deliver.tasks.git import check_out
from flows.ci import CiParameters
from tests.test_webhook_planning import SECRET, headers

PWNED = Path("/tmp/deliver-pwned")  # noqa: S108 (what the attack would create; never written)
UPLOAD_PACK = f"--upload-pack=touch {PWNED}"
PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn"}
_watching = threading.Event()
_started: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching.is_set() and event in PROCESS_EVENTS:
        _started.append(f"{event}: {args[:2]!r}")


sys.addaudithook(_audit)


@contextlib.contextmanager
def no_process_started() -> Iterator[None]:
    _started.clear()
    _watching.set()
    try:
        yield
    finally:
        _watching.clear()
    assert _started == [], _started


@pytest.mark.parametrize(
    "repo",
    [
        UPLOAD_PACK,
        "-c",
        f"ext::sh -c touch% {PWNED}",
        "fd::17",
        "https://git.example/app.git --upload-pack=x",
        "repo\n--upload-pack=x",
        "",
    ],
)
def test_a_repository_that_git_would_read_as_an_option_or_a_command_is_refused(repo):
    assert repository_problem(repo)


@pytest.mark.parametrize(
    "repo",
    [
        "/srv/git/app",
        ".",
        "examples/stock-api",
        "https://git.example/team/app.git",
        "ssh://git@git.example/team/app.git",
        "git@github.com:team/app.git",
        "file:///srv/git/app",
    ],
)
def test_ordinary_repositories_pass(repo):
    assert repository_problem(repo) is None


def test_the_upload_pack_clone_url_is_refused_by_the_ci_parameters():
    with no_process_started(), pytest.raises(ValidationError, match="repo"):
        CiParameters(repo=UPLOAD_PACK)


def test_the_upload_pack_clone_url_in_a_push_webhook_is_a_400(tmp_path: Path):
    body = json.dumps(
        {"ref": "refs/heads/main", "after": "a" * 40, "repository": {"clone_url": UPLOAD_PACK}}
    ).encode()
    with no_process_started():
        verdict = judge(headers(body), body, secret=SECRET)
    assert verdict.status == 400
    assert verdict.run is None
    assert "repository.clone_url" in verdict.reason


def test_check_out_refuses_it_before_git_runs(tmp_path: Path):
    """The task itself refuses too, whoever calls it."""
    with no_process_started(), pytest.raises(RepoNotFound, match="looks like a git option"):
        asyncio.run(check_out.fn(UPLOAD_PACK, "main", tmp_path / "src"))
    assert not PWNED.exists()


SPEC = """
service: app
checks:
  - name: tests
    run: [pytest]
    inputs: {inputs}
image:
  name: app
  context: {context}
"""


@pytest.mark.parametrize(
    ("inputs", "context", "field"),
    [
        ('["**/*.py"]', "../..", "image.context"),
        ('["**/*.py"]', "/etc", "image.context"),
        ('["../*"]', ".", "checks[0].inputs"),
        ('["src/../../*"]', ".", "checks[0].inputs"),
    ],
)
def test_spec_paths_cannot_leave_the_repository(inputs, context, field):
    with no_process_started(), pytest.raises(SpecError) as refused:
        parse_spec(SPEC.format(inputs=inputs, context=context), source="deliver.yaml")
    assert field in str(refused.value)
    assert "leaves the repository" in str(refused.value)


@pytest.mark.parametrize("value", ["../x", "/abs", "a/../../b", "-rf", ""])
def test_relative_paths_stay_inside(value):
    assert relative_path_problem(value)


def test_an_option_like_tool_is_refused_in_the_spec():
    with pytest.raises(ValidationError, match="installer option"):
        EnvironmentSpec(tools=["pytest", "--index-url=http://evil.example/simple"])


@pytest.mark.parametrize(
    "requirement", ["--extra-index-url=http://evil.example", "-r /etc/passwd", " -e .", "a\x00"]
)
def test_option_like_requirements_are_refused(requirement):
    assert requirement_problem(requirement)


def install_plan_of(app_dir: Path, spec: EnvironmentSpec) -> InstallPlan:
    try:
        return install_plan(dependency_files(app_dir, spec), spec)
    except ValueError as exc:
        raise EnvironmentFailed(app_dir=str(app_dir), detail=str(exc)) from exc


def test_an_option_like_dependency_in_pyproject_fails_before_pip_runs(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\n'
        'dependencies = ["requests", "--extra-index-url=http://evil.example/simple"]\n'
    )
    with no_process_started(), pytest.raises(EnvironmentFailed, match="installer option"):
        install_plan_of(tmp_path, EnvironmentSpec())


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        ("--extra-index-url http://evil.example/simple", "installer option"),
        ("--index-url=http://evil.example/simple", "installer option"),
        ("-e ../other", "installer option"),
        ("-f /opt/wheels", "installer option"),
        ("-r ../../etc/requirements.txt", "leaves the repository"),
        ("-c /etc/constraints.txt", "leaves the repository"),
    ],
)
def test_an_option_in_a_requirements_file_fails_before_uv_runs(tmp_path: Path, line, refused):
    (tmp_path / "requirements.txt").write_text(f"fastapi==0.115.0\n{line}\n")
    with no_process_started(), pytest.raises(EnvironmentFailed, match=refused):
        install_plan_of(tmp_path, EnvironmentSpec())


def test_requirement_files_may_include_others_of_the_app_and_pin_hashes(tmp_path: Path):
    (tmp_path / "requirements.txt").write_text(
        "# runtime\nfastapi==0.115.0 \\\n    --hash=sha256:abc\nredis>=5  # cache\n"
    )
    (tmp_path / "requirements-dev.txt").write_text("-r requirements.txt\npytest\n")
    plan = install_plan_of(tmp_path, EnvironmentSpec(tools=["ruff"]))
    assert plan.requirement_files == ("requirements-dev.txt", "requirements.txt")
    assert plan.runtime == ("fastapi==0.115.0", "redis>=5")
    assert "ruff" in plan.requirements


def test_the_environment_digest_follows_dependencies_not_tool_settings():
    spec = EnvironmentSpec(tools=["ruff"])
    base = '[project]\nname = "app"\nversion = "1"\ndependencies = ["httpx"]\n'
    digest = environment_digest(install_plan({"pyproject.toml": base}, spec), "image-1")
    tooled = base + "\n[tool.ruff]\nline-length = 99\n# a comment\n"
    assert environment_digest(install_plan({"pyproject.toml": tooled}, spec), "image-1") == digest
    changed = base.replace('["httpx"]', '["httpx", "redis"]')
    assert environment_digest(install_plan({"pyproject.toml": changed}, spec), "image-1") != digest
    assert environment_digest(install_plan({"pyproject.toml": base}, spec), "image-2") != digest
