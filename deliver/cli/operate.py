"""`deliver logs | exec | audit | redeploy`: what an operator does to a running service.

Each reads the environment's DeployTarget and reaches its (first) host over SSH as a release
does; output is redacted as everything the delivery writes. `--service` picks a service where
the target serves several (default: its app_name).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING, Any

from deliver.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_server_option,
    connect,
    finished,
    say,
)
from deliver.errors import NothingToRollBackTo

if TYPE_CHECKING:
    from deliver.tasks.ssh_host import SshHost


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help="the environment, like staging")
    parser.add_argument("--service", help="the service (default: the target's app_name)")
    parser.add_argument("--target", help="DeployTarget block (default: the environment's name)")
    add_server_option(parser)


def register(subcommands: Commands) -> None:
    logs = subcommands.add_parser("logs", help="the live slot's container logs")
    _target_options(logs)
    logs.add_argument("--slot", action="store_true", help="the idle slot's (a candidate's)")
    logs.add_argument("--since", help="only newer lines: 10m, 2h, or a timestamp")
    logs.add_argument("--lines", type=int, default=100, help="the last N lines (default 100)")
    logs.add_argument("--grep", help="only lines containing this text")
    logs.add_argument("--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--json", action="store_true", help="one JSON object a line")
    logs.set_defaults(handler=show_logs)

    once = subcommands.add_parser(
        "exec", help="a one-off container of the live image, with its env and network"
    )
    _target_options(once)
    once.add_argument("--json", action="store_true", help="print exit code and output as JSON")
    once.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    once.set_defaults(handler=run_once)

    audit = subcommands.add_parser(
        "audit", help="every release, rollback, migration and accessory change on the host"
    )
    _target_options(audit)
    audit.add_argument("--json", action="store_true", help="print as JSON")
    audit.set_defaults(handler=show_audit)

    again = subcommands.add_parser(
        "redeploy", help="restart the live version with the current env and secrets, blue-green"
    )
    _target_options(again)
    again.add_argument("--requested-by", default=getpass.getuser(), help="who asks for it")
    again.add_argument("--notify", help="notification block as type/name")
    again.set_defaults(handler=redeploy)


def _block(args: argparse.Namespace) -> str:
    return str(args.target or args.env)


def _live_image(host: SshHost, environment: str) -> tuple[str, str, str]:
    live = host.read_state().live
    if live is None:
        raise NothingToRollBackTo(environment=environment, detail="nothing is live here")
    return live.image, live.version, live.git_sha


def show_logs(args: argparse.Namespace) -> int:
    connect(args)
    from deliver.tasks.ssh_host import open_ssh_hosts  # loads blocks: Prefect is configured

    with open_ssh_hosts(_block(args), service=args.service, with_env=False) as (_, hosts):
        host = hosts[0]
        live = host.read_state().live
        if live is None:
            say(f"error: nothing is live in {args.env}")
            return EXIT_FAILED
        slot = live.slot.idle if args.slot else live.slot
        container = host.container(slot)
        return host.follow_logs(
            container,
            log_writer(container, args.grep, as_json=args.json),
            since=args.since,
            lines=args.lines,
            follow=args.follow,
        )


def log_writer(container: str, grep: str | None, *, as_json: bool) -> Any:
    """Whole lines only (a chunk may end mid-line), filtered, as text or JSON."""
    held = [""]

    def write(chunk: str) -> None:
        text = held[0] + chunk
        *lines, held[0] = text.split("\n")
        if not chunk and held[0]:  # the end: the last line has no newline
            lines, held[0] = [*lines, held[0]], ""
        for line in lines:
            if grep and grep not in line:
                continue
            if as_json:
                stamp, _, message = line.partition(" ")
                print(json.dumps({"container": container, "at": stamp, "line": message}))
            else:
                print(line)
        sys.stdout.flush()

    return write


def run_once(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        say("error: give the command after --, like: deliver exec --env staging -- alembic current")
        return EXIT_USAGE
    connect(args)
    from deliver.tasks.ssh_host import open_ssh_hosts  # loads blocks: Prefect is configured

    block = _block(args)
    with open_ssh_hosts(block, service=args.service, with_env=False) as (_, hosts):
        image, _, _ = _live_image(hosts[0], args.env)
    with open_ssh_hosts(block, image) as (_, hosts):
        result = hosts[0].run_once(image, command)
    if args.json:
        print(
            json.dumps(
                {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
            )
        )
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    return result.exit_code


def audit_entries(host: SshHost) -> list[dict[str, Any]]:
    """The service's history (releases, rollbacks, failures, with their migrations and the
    accessories they booted) and the environment's audit log (accessory commands), by time."""
    entries: list[dict[str, Any]] = []
    for record in host.read_state().history:
        data = record.to_json()
        entries.append(
            {
                "at": record.at,
                "who": record.requested_by,
                "what": f"release {record.version}"
                if record.outcome.value != "rolled-back"
                else f"rollback to {record.version}",
                "outcome": record.outcome.value,
                "why": record.approval.reason if record.approval else "",
                "approved_by": record.approval.approver if record.approval else "",
                "migration": data.get("migration", ""),
                "accessories_booted": data.get("accessories_booted", []),
                "detail": record.detail,
                "flow_run": record.flow_run,
            }
        )
    entries += host.read_audit()
    return sorted(entries, key=lambda entry: str(entry.get("at", "")))


def show_audit(args: argparse.Namespace) -> int:
    connect(args)
    from deliver.tasks.ssh_host import open_ssh_hosts  # loads blocks: Prefect is configured

    with open_ssh_hosts(_block(args), service=args.service, with_env=False) as (_, hosts):
        entries = audit_entries(hosts[0])
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    for entry in entries:
        line = f"{entry['at']}  {entry.get('who') or '?'}  {entry['what']}: {entry['outcome']}"
        if entry.get("approved_by"):
            line += f" (approved by {entry['approved_by']}: {entry.get('why') or 'no reason'})"
        if entry.get("migration"):
            line += f"; migrated with `{entry['migration']}`"
        if entry.get("accessories_booted"):
            line += f"; booted {', '.join(entry['accessories_booted'])}"
        if entry.get("detail"):
            line += f"\n    {str(entry['detail']).splitlines()[0]}"
        print(line)
    return EXIT_OK


def redeploy(args: argparse.Namespace) -> int:
    """The release flow for what is live, so its env and secrets are read anew and it starts in
    the idle slot before traffic moves; production waits for an approval as any release."""
    connect(args)
    from deliver.tasks.ssh_host import open_ssh_hosts  # loads blocks: Prefect is configured
    from flows.release import ReleaseParameters, release_here

    with open_ssh_hosts(_block(args), service=args.service, with_env=False) as (_, hosts):
        image, version, git_sha = _live_image(hosts[0], args.env)
    parameters = ReleaseParameters(
        image=image,
        environment=args.env,
        version=version,
        git_sha=git_sha,
        requested_by=args.requested_by,
        notify_block=args.notify,
        target_block=args.target,
    )
    if parameters.environment == "production":
        say("Waiting for approval: see `deliver approvals`, then `deliver approve RUN_ID`.")
    result = finished("redeploy", release_here(parameters))
    if result is None:
        return EXIT_FAILED
    print(f"{result.environment}: {result.version} redeployed in the {result.slot} slot")
    return EXIT_OK
