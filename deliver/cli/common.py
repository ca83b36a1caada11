"""What every command shares: exit codes, messages, the Prefect connection, usage errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from deliver.errors import PrefectNotConfigured

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNHEALTHY = 0, 1, 2, 3

Commands = Any  # argparse's subparsers action; its class is private


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_server_option(
    parser: argparse.ArgumentParser, help: str = "use the sandbox's server"
) -> None:
    parser.add_argument("--sandbox", action="store_true", help=help)


def connect(args: argparse.Namespace) -> dict[str, str]:
    """The one place a command is pointed at Prefect: the sandbox's server with --sandbox
    (returning what it implies for CI), else the configured one; never a throwaway server.
    Call it before importing anything that imports Prefect."""
    if getattr(args, "sandbox", False):
        from deliver.sandbox import use_sandbox

        implied = use_sandbox()
    else:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise PrefectNotConfigured()
        implied = {}
    from deliver.tasks.loading import register_prefect_credentials

    register_prefect_credentials()
    return implied


def usage_errors(exc: ValidationError, options: Mapping[str, str]) -> int:
    """Each invalid parameter as the option that set it; exit 2, as for any usage error."""
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        option = options.get(field, field.replace("_", "-"))
        say(f"error: --{option}: {error['msg']}")
    return EXIT_USAGE


def finished(what: str, state: Any) -> Any:
    """A flow's result, or None after saying on stderr why there is none."""
    value = state.result(raise_on_failure=False)
    if state.is_completed():
        return value
    say(f"error: {what} {state.name}: {state.message or value}")
    return None
