"""`deliver`: what an operator does without the UI.

Exit codes: 0 success, 1 a delivery error (the message says what to do), 2 bad usage,
3 `status` found a component unhealthy.

One module a command (or a family of them): each registers its arguments and its handler.
Handlers point Prefect at a server through `common.connect`, and only then import what
imports Prefect, which reads its settings at import.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from deliver.cli import (
    accessory,
    approvals,
    ci,
    deploy,
    init,
    metrics,
    operate,
    release,
    sandbox,
    status,
    webhook,
)
from deliver.cli.common import EXIT_FAILED, say
from deliver.errors import DeliveryError

COMMANDS = (
    init,
    ci,
    approvals,
    status,
    release,
    operate,
    accessory,
    metrics,
    deploy,
    webhook,
    sandbox,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deliver", description=__doc__.splitlines()[0])
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except DeliveryError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    return code
