"""`deliver approvals`, `approve` and `reject`: the production releases waiting for a human."""

from __future__ import annotations

import argparse
import json

from deliver.cli.common import EXIT_OK, Commands, add_server_option, connect


def register(subcommands: Commands) -> None:
    waiting = subcommands.add_parser("approvals", help="releases waiting for approval")
    waiting.add_argument("--json", action="store_true", help="print as JSON")
    add_server_option(waiting)
    waiting.set_defaults(handler=list_waiting)
    for verb in ("approve", "reject"):
        decide = subcommands.add_parser(verb, help=f"{verb} a waiting release")
        decide.add_argument("run_id", help="the waiting flow run's id (see `deliver approvals`)")
        decide.add_argument("--approver", required=True, help="your name, as the policy lists it")
        decide.add_argument("--reason", help="why (required to reject)")
        decide.add_argument("--code", help="your one-time code, if the policy gives you one")
        add_server_option(decide)
        decide.set_defaults(handler=run_decide, decision=verb)


def list_waiting(args: argparse.Namespace) -> int:
    connect(args)
    from deliver.prefect_api import waiting_releases  # Prefect is configured only now

    waiting = waiting_releases()
    if args.json:
        print(json.dumps([w.to_json() for w in waiting], indent=2))
        return EXIT_OK
    if not waiting:
        print("No release is waiting for approval.")
    for w in waiting:
        print(
            f"{w.run_id}  {w.environment}  {w.version}  requested by {w.requested_by}  "
            f"waiting since {w.waiting_since}\n    {w.image}"
        )
    return EXIT_OK


def run_decide(args: argparse.Namespace) -> int:
    connect(args)
    from deliver.prefect_api import decide  # Prefect is configured only now

    decide(
        args.run_id,
        decision=args.decision,
        approver=args.approver,
        reason=args.reason or "",
        code=args.code or "",
    )
    print(f"{args.decision} sent to {args.run_id}; the run checks it against its approval policy.")
    return EXIT_OK
