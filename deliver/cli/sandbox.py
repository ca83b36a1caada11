"""`deliver sandbox up | down | status | env | packages | code`: the local sandbox on loopback."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from deliver import sandbox
from deliver.cli.common import EXIT_OK, EXIT_UNHEALTHY, Commands, say
from deliver.sandbox.approvers import APPROVERS, one_time_code
from deliver.sandbox.component import ComponentStatus
from deliver.sandbox.manager import component_names


def register(subcommands: Commands) -> None:
    box = subcommands.add_parser("sandbox", help="the local delivery sandbox on loopback")
    actions = box.add_subparsers(dest="action", required=True, metavar="ACTION")
    only_help = f"comma-separated components: {', '.join(component_names())}"

    up = actions.add_parser("up", help="start every component (idempotent)")
    up.add_argument("--only", help=only_help)
    up.add_argument("--json", action="store_true", help="print statuses as JSON")
    up.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        help="the Prefect server's database: postgres (the default, with two "
        "workers) or sqlite (one worker); remembered",
    )
    up.set_defaults(handler=run_up)

    down = actions.add_parser("down", help="stop, by pid, what `up` started")
    down.add_argument("--only", help=only_help)
    down.set_defaults(handler=run_down)

    status = actions.add_parser("status", help="each component's address and health")
    status.add_argument("--only", help=only_help)
    status.add_argument("--json", action="store_true", help="print statuses as JSON")
    status.set_defaults(handler=run_status)

    env = actions.add_parser("env", help="shell exports that point Prefect at the sandbox")
    env.set_defaults(handler=run_env)

    packages = actions.add_parser("packages", help="install missing Debian packages (root)")
    packages.set_defaults(handler=run_packages)

    code = actions.add_parser(
        "code", help="a sandbox approver's current one-time code (their authenticator app)"
    )
    code.add_argument("approver", choices=APPROVERS)
    code.set_defaults(handler=run_code)


def _only(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def print_statuses(statuses: Sequence[ComponentStatus], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    rows = [("COMPONENT", "HEALTH", "ADDRESS", "PID", "DETAIL")]
    for s in statuses:
        pid = str(s.pid) if s.pid else "-"
        rows.append((s.name, "healthy" if s.healthy else "UNHEALTHY", s.address, pid, s.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = zip(row, widths, strict=False)
        print("  ".join(cell.ljust(width) for cell, width in cells), row[4])


def run_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    statuses = sandbox.up(
        sandbox.config_from_env(), only=_only(args.only), say=say, database=args.database
    )
    print_statuses(statuses, as_json=args.json)
    say(f"sandbox up in {time.monotonic() - started:.1f} s")
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_UNHEALTHY


def run_down(args: argparse.Namespace) -> int:
    stopped = sandbox.down(sandbox.config_from_env(), only=_only(args.only), say=say)
    say(f"stopped: {', '.join(stopped) if stopped else 'nothing (nothing was running)'}")
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    statuses = sandbox.status(sandbox.config_from_env(), only=_only(args.only))
    print_statuses(statuses, as_json=args.json)
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_UNHEALTHY


def run_env(args: argparse.Namespace) -> int:
    for name, value in sandbox.config_from_env().prefect_env().items():
        print(f"export {name}={json.dumps(value)}")
    return EXIT_OK


def run_packages(args: argparse.Namespace) -> int:
    installed = sandbox.ensure_packages(sandbox.config_from_env(), say=say)
    say(f"installed: {', '.join(installed)}" if installed else "all system packages present")
    return EXIT_OK


def run_code(args: argparse.Namespace) -> int:
    from deliver.sandbox.connect import use_sandbox

    use_sandbox()  # the codes already used are read from the sandbox's server
    print(one_time_code(sandbox.config_from_env().state_dir, args.approver))
    return EXIT_OK
