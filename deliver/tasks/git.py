"""Git: check out one ref of a repository into an isolated work dir, and name its trees."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from prefect import task

from deliver import commands
from deliver.errors import RefNotFound, RepoNotFound
from deliver.planning.ci import RefKind, ResolvedRef, looks_like_sha
from deliver.planning.inputs import repository_problem


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Checkout:
    repo: str
    workdir: Path
    resolved: ResolvedRef


@dataclasses.dataclass(frozen=True, slots=True)
class _GitResult:
    ok: bool
    lines: list[str]
    error: str


def _git(*args: str, cwd: Path | None = None) -> _GitResult:
    done = commands.run(["git", *args], cwd=cwd, timeout_s=300)
    return _GitResult(done.ok, done.lines, "\n".join(done.stderr.strip().splitlines()[-3:]))


def _remote_refs(repo: str) -> dict[str, str]:
    listed = _git("ls-remote", "--heads", "--tags", "--", repo)
    if not listed.ok:
        raise RepoNotFound(repo=repo, detail=listed.error)
    refs = {}
    for line in listed.lines:
        sha, _, name = line.partition("\t")
        refs[name] = sha
    return refs


def classify_ref(repo: str, ref: str) -> tuple[RefKind, str]:
    """(kind, refspec to fetch) for `ref` in `repo`; a branch wins over a tag of the same name."""
    refs = _remote_refs(repo)
    if f"refs/heads/{ref}" in refs:
        return RefKind.BRANCH, f"refs/heads/{ref}"
    if f"refs/tags/{ref}" in refs:
        return RefKind.TAG, f"refs/tags/{ref}"
    if looks_like_sha(ref):
        return RefKind.COMMIT, ref
    branches = sorted(n.removeprefix("refs/heads/") for n in refs if n.startswith("refs/heads/"))
    raise RefNotFound(repo=repo, ref=ref, branches=branches)


@task(name="check_out", task_run_name="checkout-{ref}")
async def check_out(repo: str, ref: str, workdir: Path) -> Checkout:
    """Fetch only `ref` into a fresh repository at `workdir` and check it out. Async, on the
    flow's own API client: a flow can make what it needs next while git works."""
    return await asyncio.to_thread(_check_out, repo, ref, workdir)


def _check_out(repo: str, ref: str, workdir: Path) -> Checkout:
    if problem := repository_problem(repo):  # before git sees it
        raise RepoNotFound(repo=repo, detail=problem)
    if Path(repo).is_dir():  # a local path is read from the fresh repository's folder
        repo = str(Path(repo).resolve())
    kind, refspec = classify_ref(repo, ref)
    workdir.mkdir(parents=True, exist_ok=False)
    _git("init", "-q", "--", str(workdir))
    if kind is RefKind.COMMIT:
        fetched = _git(
            "fetch", "-q", "--", repo, "+refs/heads/*:refs/remotes/origin/*", cwd=workdir
        )
        target = ref
    else:
        fetched = _git("fetch", "-q", "--depth", "1", "--", repo, refspec, cwd=workdir)
        target = "FETCH_HEAD"
    if not fetched.ok:
        raise RepoNotFound(repo=repo, detail=fetched.error)
    switched = _git("-c", "advice.detachedHead=false", "checkout", "-q", target, cwd=workdir)
    if not switched.ok:
        raise RefNotFound(repo=repo, ref=ref, branches=[])
    sha, commit_time = _git("show", "-s", "--format=%H%n%cI", "HEAD", cwd=workdir).lines[:2]
    resolved = ResolvedRef(ref=ref, kind=kind, sha=sha, commit_time=commit_time)
    return Checkout(repo=repo, workdir=workdir, resolved=resolved)


MAX_COMMITS = 20


def repo_name(repo: str) -> str:
    """What a repository is called: its folder or the last part of its URL, without .git."""
    path = Path(repo).resolve() if Path(repo).is_dir() else Path(repo.rstrip("/"))
    return path.name.removesuffix(".git") or repo


def commits_between(source: str, old_sha: str, new_sha: str) -> list[str] | None:
    """`git log --oneline old..new` in `source` when it is a local repository holding both;
    None when that cannot be told from here."""
    folder = Path(source)
    if not looks_like_sha(old_sha) or not looks_like_sha(new_sha) or not folder.is_dir():
        return None
    listed = _git("log", "--oneline", f"-{MAX_COMMITS}", f"{old_sha}..{new_sha}", cwd=folder)
    return listed.lines if listed.ok else None
