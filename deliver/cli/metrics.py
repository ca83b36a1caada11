"""`deliver metrics`: the four delivery metrics, read from the releases' Prefect events."""

from __future__ import annotations

import argparse
import json

from deliver.cli.common import EXIT_OK, Commands, add_server_option, connect
from deliver.planning.metrics import table_rows


def register(subcommands: Commands) -> None:
    parser = subcommands.add_parser(
        "metrics",
        help="deployment frequency, lead time, change "
        "failure rate and time to restore, from Prefect's events",
    )
    parser.add_argument("--since", default="30d", help="window: 30d, 12h, 90m (default 30d)")
    parser.add_argument("--env", default="production", help="environment (default production)")
    parser.add_argument("--service", help="one service (default: all)")
    parser.add_argument("--json", action="store_true", help="print as JSON")
    add_server_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    connect(args)
    from deliver.prefect_api import delivery_metrics  # Prefect is configured only now

    metrics = delivery_metrics(args.since, environment=args.env, service=args.service)
    if args.json:
        print(json.dumps(metrics.to_json(), indent=2))
        return EXIT_OK
    print(
        f"Delivery metrics for {metrics.environment}, {args.since} to now "
        f"({metrics.since:%Y-%m-%d %H:%M} UTC onwards):"
    )
    for row in table_rows(metrics):
        print(f"  {row['metric']:<24} {row['value']:<20} {row['basis']}")
    return EXIT_OK
