"""`deliver ci`: run the ci-pipeline flow here, against the configured or the sandbox's server."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from deliver import commands
from deliver.cli.common import EXIT_FAILED, EXIT_OK, Commands, connect, say
from deliver.errors import DeliveryError


def register(subcommands: Commands) -> None:
    parser = subcommands.add_parser(
        "ci", help="run the CI pipeline (checks, build, test, scan, push)"
    )
    parser.add_argument("--repo", default=".", help="git URL or local path (default: .)")
    parser.add_argument("--ref", help="branch, tag or sha (default: the repo's current branch)")
    parser.add_argument("--spec", default="deliver.yaml", help="spec path inside the repo")
    parser.add_argument(
        "--registry-block",
        default="sandbox-registry",
        help="DockerRegistryCredentials block to push with",
    )
    parser.add_argument("--advisory-url", help="OSV query endpoint (default: the public OSV)")
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra non-secret build arg; repeatable",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="use the local sandbox: its Prefect server, advisory mirror and base image",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--sarif",
        type=Path,
        metavar="PATH",
        help="write the scan's and the checks' SARIF 2.1.0 results there, pass or fail",
    )
    parser.set_defaults(handler=run)


def current_ref(repo: str) -> str:
    """The checked-out branch of a local repo, else its commit sha, else 'main'."""
    if not Path(repo).is_dir():
        return "main"
    for argv in (["git", "symbolic-ref", "--short", "-q", "HEAD"], ["git", "rev-parse", "HEAD"]):
        done = commands.run(argv, cwd=repo, timeout_s=30)
        if done.ok and done.stdout.strip():
            return done.stdout.strip()
    return "main"


def run_ci(parameters: Any) -> tuple[Any, Any]:
    """Run ci-pipeline in this process; (final state, result or exception)."""
    from prefect import State

    from flows.ci import CiResult, ci_pipeline

    call = cast(Coroutine[Any, Any, State[CiResult]], ci_pipeline(parameters, return_state=True))
    state = asyncio.run(call)
    return state, state.result(raise_on_failure=False)


def run(args: argparse.Namespace) -> int:
    build_args = {}
    for item in args.build_arg:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise DeliveryError(f"--build-arg {item!r}: expected NAME=VALUE")
        build_args[name] = value
    implied = connect(args) if args.sandbox else {}
    # Prefect reads its settings at import, so it is imported only now.
    from flows.ci import PUBLIC_OSV, CiParameters, CiResult

    repo = str(Path(args.repo).resolve()) if Path(args.repo).exists() else args.repo
    parameters = CiParameters(
        repo=repo,
        ref=args.ref or current_ref(repo),
        spec_path=args.spec,
        registry_block=args.registry_block,
        advisory_url=args.advisory_url or implied.get("advisory_url", PUBLIC_OSV),
        build_args=build_args,
        cache_dir=implied.get("cache_dir"),
    )
    state, value = run_ci(parameters)
    if args.sarif:
        write_sarif(args.sarif, state.state_details.flow_run_id, value)
    if not state.is_completed():
        say(f"error: ci-pipeline {state.name}: {value}")
        return EXIT_FAILED
    result = cast(CiResult, value)
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2, default=str))
    else:
        print(summary(result))
    return EXIT_OK


def write_sarif(path: Path, flow_run_id: UUID, value: object) -> None:
    """Every tool's runs: a failed run published all of them; a run that passed published
    those of the steps it ran, and names the runs whose results it reused."""
    from deliver.planning.sarif import sarif_key, sarif_log
    from deliver.prefect_api import sarif_runs_of
    from flows.ci import CiResult

    reused_from: dict[str, UUID] = {}
    if isinstance(value, CiResult):
        reused_from = {
            sarif_key(value.service, c.name): UUID(c.reused_from)
            for c in value.checks
            if c.reused_from
        }
        if value.scan.made_in and value.scan.made_in != str(flow_run_id):
            reused_from[sarif_key(value.service, "scan")] = UUID(value.scan.made_in)
    runs = sarif_runs_of(flow_run_id, reused_from)
    path.write_text(json.dumps(sarif_log(runs), indent=1) + "\n")
    results = sum(len(run.get("results") or []) for run in runs)
    names = (str(run.get("tool", {}).get("driver", {}).get("name", "?")) for run in runs)
    tools = ", ".join(names) or "no tool ran"
    say(f"SARIF: {results} result(s) from {tools} in {path}")


def summary(result: Any) -> str:
    statuses = ", ".join(f"{c.name} {c.status}" for c in result.checks)
    how = "built and pushed" if result.built else "reused: the registry already held this source"
    return (
        f"{result.service} {result.version}: {result.image}\n"
        f"  checks: {statuses}\n  scan: {result.scan.verdict}\n  {how}"
    )
