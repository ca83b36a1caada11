"""`deliver status`: what is live in each environment, checked against what its hosts run."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import TYPE_CHECKING, Any

from deliver.cli.common import EXIT_OK, Commands, add_server_option, connect
from deliver.planning.release import reconcile

if TYPE_CHECKING:
    from deliver.host import DeployHost

ENVIRONMENTS = ("staging", "production")


def register(subcommands: Commands) -> None:
    parser = subcommands.add_parser("status", help="what is live in each environment, what is kept")
    parser.add_argument("--env", help="one environment (default: staging and production)")
    parser.add_argument("--target", help="one DeployTarget block; a fleet shows each host")
    parser.add_argument("--json", action="store_true", help="print as JSON")
    add_server_option(parser)
    parser.set_defaults(handler=run)


def host_summary(host: DeployHost) -> dict[str, Any]:
    """The recorded state, checked against what the host runs and nginx serves. Read-only: a
    difference (a release killed midway) is shown, and the next release records it."""
    recorded = host.read_state()
    running, serving = host.inspect()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    actual = reconcile(recorded, running, serving, now=now)
    state = actual or recorded
    versions = {record.image: record.version for record in state.history}
    live = state.live
    others = [r for r in running if live is None or r.slot is not live.slot]
    last = recorded.history[-1] if recorded.history else None
    return {
        "environment": host.view.ref,
        "live": None
        if live is None
        else {
            "version": live.version,
            "image": live.image,
            "slot": live.slot.value,
            "since": live.since,
            "git_sha": live.git_sha,
        },
        "kept": [{"version": versions.get(image, "?"), "image": image} for image in state.kept],
        "last": last.to_json() if last else None,
        "reconciled": actual is not None,
        "recorded_live": None if recorded.live is None else recorded.live.version,
        "idle_slot_running": [{"slot": r.slot.value, "version": r.version} for r in others],
    }


def summaries(blocks: list[str]) -> list[dict[str, Any]]:
    """Each host of each block (a fleet's as `<block>@<host>`), one connection each."""
    from deliver.tasks.ssh_host import open_ssh_hosts  # loads blocks: Prefect is configured

    found = []
    for block in blocks:
        with open_ssh_hosts(block, with_env=False) as (_, hosts):
            found += [host_summary(host) for host in hosts]
    return found


def run(args: argparse.Namespace) -> int:
    connect(args)
    environments = [args.env] if args.env else list(ENVIRONMENTS)
    found = summaries([args.target] if args.target else environments)
    if args.json:
        print(json.dumps(found, indent=2))
        return EXIT_OK
    for summary in found:
        print("\n".join(_lines(summary)))
    return EXIT_OK


def _lines(summary: dict[str, Any]) -> list[str]:
    live = summary["live"]
    if live is None:
        lines = [f"{summary['environment']}: nothing live"]
    else:
        lines = [
            f"{summary['environment']}: {live['version']} in the {live['slot']} slot "
            f"since {live['since']}\n  {live['image']}"
        ]
    if summary["reconciled"]:
        lines.append(
            f"  (the host's record says {summary['recorded_live']}; what serves is shown,"
            " and the next release records it)"
        )
    for other in summary["idle_slot_running"]:
        lines.append(
            f"  also running: {other['version']} in the {other['slot']} slot "
            "(a candidate waiting for approval, or a release in progress)"
        )
    lines.append(f"  kept: {', '.join(k['version'] for k in summary['kept']) or 'none'}")
    if last := summary["last"]:
        lines.append(f"  last: {last.get('outcome')} {last.get('version')} at {last.get('at')}")
    return lines
