"""`deliver deploy` and `deliver blocks register`: what a Prefect server needs from this project."""

from __future__ import annotations

import argparse
import dataclasses
import json

from deliver.cli.common import EXIT_OK, EXIT_USAGE, Commands, add_server_option, connect, say


def register(subcommands: Commands) -> None:
    deploy = subcommands.add_parser("deploy", help="create or update prefect.yaml's deployments")
    deploy.add_argument("--json", action="store_true", help="print what was deployed as JSON")
    deploy.add_argument("--nightly-timezone", help="zone of the schedules (default: the file's)")
    deploy.add_argument(
        "--notify",
        help="notification block (type/name) for the alerts; "
        "with --sandbox: custom-webhook/sandbox-chat",
    )
    deploy.add_argument(
        "--approval-alert-after",
        type=float,
        default=3600.0,
        help="seconds a release may wait for approval before an alert",
    )
    add_server_option(deploy)
    deploy.set_defaults(handler=run_deploy)

    blocks = subcommands.add_parser("blocks", help="the block types credentials live in")
    actions = blocks.add_subparsers(dest="action", required=True, metavar="ACTION")
    registering = actions.add_parser(
        "register", help="register the block types, so the UI's block catalogue has their forms"
    )
    registering.add_argument("--json", action="store_true", help="print the slugs as JSON")
    add_server_option(registering)
    registering.set_defaults(handler=run_register)


def run_deploy(args: argparse.Namespace) -> int:
    connect(args)
    from deployments import UnknownTimezone, deploy_all  # Prefect is configured only now
    from deployments.automations import AlertSettings, ensure_alerts

    notify_block = args.notify or ("custom-webhook/sandbox-chat" if args.sandbox else None)
    try:
        done = deploy_all(timezone=args.nightly_timezone)
    except UnknownTimezone as exc:
        say(f"error: --nightly-timezone: {exc}")
        return EXIT_USAGE
    alerts = []
    if notify_block:
        settings = AlertSettings(
            notify_block=notify_block, approval_within_s=args.approval_alert_after
        )
        alerts = ensure_alerts(settings)
    if args.json:
        print(json.dumps([dataclasses.asdict(d) for d in done], indent=2))
        return EXIT_OK
    for d in done:
        print(f"{d.flow}/{d.name}  {d.deployment_id}")
    print(
        f"alerts: {len(alerts)} automations through {notify_block}"
        if alerts
        else "alerts: none (no --notify block given)"
    )
    return EXIT_OK


def run_register(args: argparse.Namespace) -> int:
    connect(args)
    from blocks import BLOCK_TYPES  # Prefect is configured only now

    registered = []
    for block_type in BLOCK_TYPES:
        block_type.register_type_and_schema()
        registered.append(block_type.get_block_type_slug())
    if args.json:
        print(json.dumps(registered))
    else:
        print("Registered block types (Blocks > + in the UI): " + ", ".join(registered))
    return EXIT_OK
