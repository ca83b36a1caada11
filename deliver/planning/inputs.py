"""What may reach git, pip or a path join from a repository or a request: checked before any
command runs, each refusal saying what is wrong. Pure."""

from __future__ import annotations

import re

REPOSITORY_URL = re.compile(r"^(https?|ssh|git|file)://[^\s]+$")
SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s:][^\s]*$")
LOCAL_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")


def repository_problem(repo: str) -> str | None:
    """None for a repository git may be pointed at; else why not. Allowed: a local path, a URL
    with scheme https, http, ssh, git or file, or scp-like user@host:path. Never an option
    (`--upload-pack=...`), a remote helper (`ext::sh -c ...`), whitespace or a control character."""
    if not repo:
        return "a repository URL or path is required"
    if repo.startswith("-"):
        return f"{repo!r} looks like a git option, not a repository"
    if any(ord(ch) < 32 or ch.isspace() for ch in repo):
        return f"{repo!r} holds whitespace or a control character"
    if "::" in repo:
        return f"{repo!r} names a git remote helper (transport::address); give a URL or path"
    if REPOSITORY_URL.match(repo) or SCP_LIKE.match(repo) or LOCAL_PATH.match(repo):
        return None
    return (
        f"{repo!r} is not a repository: give a local path, an https/ssh/git/file URL, "
        "or user@host:path"
    )


def relative_path_problem(value: str) -> str | None:
    """None for a path that stays inside the folder it is relative to (no absolute path, no
    '..' part, no leading '-'); a glob pattern is checked the same way."""
    if not value:
        return "an empty path"
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ".." in parts:
        return f"{value!r} leaves the repository: give a path inside it, without '..'"
    if value.startswith("-"):
        return f"{value!r} looks like an option, not a path"
    return None


def requirement_problem(requirement: str) -> str | None:
    """None for a requirement string pip or uv reads as a requirement, never as an option."""
    stripped = requirement.strip()
    if not stripped:
        return "an empty requirement"
    if stripped.startswith("-"):
        return f"{requirement!r} is an installer option, not a requirement"
    if any(ord(ch) < 32 for ch in requirement):
        return f"{requirement!r} holds a control character"
    return None


def refused_if(problem: str | None, value: str) -> str:
    """A pydantic validator's body: `value`, or ValueError saying what is wrong with it."""
    if problem:
        raise ValueError(problem)
    return value
