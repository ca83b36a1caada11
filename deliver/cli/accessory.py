"""`deliver accessory boot | status | logs | remove --env E NAME`: the environment's accessories.

A release boots an accessory it finds absent and never touches one that exists; these commands
are the only other way they change, and each change is written to the host's audit log.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
from typing import TYPE_CHECKING, Any

from deliver.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_server_option,
    connect,
    say,
)
from deliver.cli.operate import log_writer

if TYPE_CHECKING:
    from deliver.tasks.ssh_host import SshHost


def register(subcommands: Commands) -> None:
    parser = subcommands.add_parser("accessory", help="the environment's databases and caches")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text in (
        ("boot", "start it if absent (its data volume is kept or created)"),
        ("status", "whether it runs, since when, its image and volume"),
        ("logs", "its container logs"),
        ("remove", "remove its container (and with --volume its data)"),
    ):
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument("--env", required=True, help="the environment, like staging")
        sub.add_argument("--target", help="DeployTarget block (default: the environment's name)")
        sub.add_argument("name", nargs="?" if verb == "status" else None, help="the accessory")
        sub.add_argument("--json", action="store_true", help="print as JSON")
        add_server_option(sub)
        sub.set_defaults(handler=run)
        if verb == "logs":
            sub.add_argument("--since", help="only newer lines: 10m, 2h, or a timestamp")
            sub.add_argument("--lines", type=int, default=100, help="the last N lines")
            sub.add_argument("--grep", help="only lines containing this text")
            sub.add_argument("--follow", action="store_true", help="keep printing new lines")
        if verb == "remove":
            sub.add_argument("--yes", action="store_true", help="yes, remove it")
            sub.add_argument("--volume", action="store_true", help="and delete its data")
        if verb in ("boot", "remove"):
            sub.add_argument("--by", default=getpass.getuser(), help="who, for the audit log")
            sub.add_argument("--reason", default="", help="why, for the audit log")


def run(args: argparse.Namespace) -> int:
    if args.verb == "remove" and not args.yes:
        what = "its container and its data volume" if args.volume else "its container (the data "
        what += "" if args.volume else "volume is kept)"
        say(f"error: this removes {what}; add --yes to go ahead")
        return EXIT_USAGE
    connect(args)
    from deliver.tasks.ssh_host import open_ssh_hosts  # loads blocks: Prefect is configured

    block = str(args.target or args.env)
    with_env = args.verb == "boot"
    with open_ssh_hosts(block, with_env=with_env, all_accessories=True) as (_, hosts):
        host = hosts[0]
        if args.verb == "status":
            names = [args.name] if args.name else [a.name for a in host.settings.accessories]
            return _status(host, names, as_json=args.json)
        accessory = host.accessory(args.name)
        if args.verb == "logs":
            container = host.accessory_state(accessory.name)["container"]
            return host.follow_logs(
                container,
                log_writer(container, args.grep, as_json=args.json),
                since=args.since,
                lines=args.lines,
                follow=args.follow,
            )
        before = host.accessory_state(accessory.name)["status"]
        if args.verb == "boot":
            if before != "absent":
                say(f"{accessory.name} is already there ({before}): nothing to boot")
                return EXIT_OK if before == "running" else EXIT_FAILED
            host.boot_accessory(accessory)
            what = f"accessory boot {accessory.name}"
        else:
            host.remove_accessory(accessory.name, volume=args.volume)
            what = f"accessory remove {accessory.name}" + (
                " with its volume" if args.volume else ""
            )
        _audit(host, args, what)
        return _status(host, [accessory.name], as_json=args.json)


def _audit(host: SshHost, args: argparse.Namespace, what: str) -> None:
    host.append_audit(
        {
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "who": args.by,
            "what": what,
            "why": args.reason,
            "outcome": "done",
        }
    )


def _status(host: SshHost, names: list[str], *, as_json: bool) -> int:
    states: list[dict[str, Any]] = [host.accessory_state(name) for name in names]
    if as_json:
        print(json.dumps(states, indent=2))
    else:
        for state in states:
            since = f" since {state['started_at']}" if state["started_at"] else ""
            volume = f", data in volume {state['volume']}" if state["volume"] else ", no volume"
            print(f"{state['name']}: {state['status']}{since} ({state['image']}{volume})")
    return EXIT_OK if all(s["status"] == "running" for s in states) else EXIT_FAILED
