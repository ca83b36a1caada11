"""`deliver init [PATH]`: write a first `deliver.yaml` for a repository, saying what it guessed."""

from __future__ import annotations

import argparse
from pathlib import Path

from deliver.cli.common import EXIT_FAILED, EXIT_OK, Commands, say
from deliver.errors import SpecError
from deliver.planning.init import RepoFacts, plan_init
from deliver.spec import SPEC_FILE, parse_spec

READ = ("pyproject.toml", "Dockerfile", "alembic.ini", "uv.lock")
SKIP = {".git", ".venv", "venv", "node_modules", "__pycache__", "tests", "test", "build", "dist"}
MAX_FILE = 512 * 1024


def register(subcommands: Commands) -> None:
    parser = subcommands.add_parser("init", help="write a first deliver.yaml for a repository")
    parser.add_argument("path", nargs="?", default=".", help="the app's folder (default: here)")
    parser.add_argument("--force", action="store_true", help="replace an existing deliver.yaml")
    parser.set_defaults(handler=run)


def repo_facts(folder: Path) -> RepoFacts:
    """The few files the guesses read, and the service's Python sources (not its tests)."""
    files: dict[str, str] = {}
    for name in [*READ, *(p.name for p in folder.glob("requirements*.txt"))]:
        path = folder / name
        if path.is_file() and path.stat().st_size <= MAX_FILE:
            files[name] = path.read_text(errors="replace")
    python: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(folder)
        if SKIP & set(relative.parts) or path.stat().st_size > MAX_FILE:
            continue
        python[relative.as_posix()] = path.read_text(errors="replace")
        if relative.name == "__init__.py" and len(relative.parts) == 2:
            files[relative.as_posix()] = ""
    directories = frozenset(p.name for p in folder.iterdir() if p.is_dir())
    return RepoFacts(
        folder_name=folder.resolve().name, files=files, python_files=python, directories=directories
    )


def run(args: argparse.Namespace) -> int:
    folder = Path(args.path)
    if not folder.is_dir():
        say(f"error: {folder} is not a folder")
        return EXIT_FAILED
    target = folder / SPEC_FILE
    if target.exists() and not args.force:
        say(f"error: {target} exists; --force replaces it")
        return EXIT_FAILED
    plan = plan_init(repo_facts(folder))
    try:
        parse_spec(plan.text, source=str(target))
    except SpecError as exc:  # a bug here, never the user's: say so rather than write it
        say(f"error: the spec deliver init made does not validate ({exc}); please report it")
        return EXIT_FAILED
    target.write_text(plan.text)
    print(f"Wrote {target}.")
    print("Guessed:")
    print("\n".join(f"  - {line}" for line in plan.guesses))
    if plan.to_check:
        print("Check before the first run:")
        print("\n".join(f"  - {line}" for line in plan.to_check))
    root = next(
        (f for f in [folder.resolve(), *folder.resolve().parents] if (f / ".git").exists()), None
    )
    spec = target.resolve().relative_to(root) if root else Path(SPEC_FILE)
    print(f"Then commit it and run: deliver ci --repo {root or folder} --spec {spec} --sandbox")
    return EXIT_OK
