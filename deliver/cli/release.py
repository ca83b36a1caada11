"""`deliver release` and `deliver rollback`: run the release flows here."""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from deliver.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Commands,
    add_server_option,
    connect,
    finished,
    say,
    usage_errors,
)

OPTIONS = {"notify_block": "notify", "to_version": "to", "target_block": "target"}


def register(subcommands: Commands) -> None:
    rel = subcommands.add_parser("release", help="release an image by digest to an environment")
    rel.add_argument("--env", required=True, help="staging, production, or another environment")
    rel.add_argument("--image", required=True, help="repository@sha256:<digest>, as CI printed")
    rel.add_argument("--version", required=True, help="the version label")
    rel.add_argument("--git-sha", required=True, help="the commit the image was built from")
    rel.add_argument("--requested-by", default="operator", help="who asks for it")
    rel.add_argument(
        "--notify", help="notification block as type/name, e.g. custom-webhook/sandbox-chat"
    )
    rel.add_argument("--target", help="DeployTarget block (default: the environment's name)")
    rel.add_argument("--json", action="store_true", help="print the result as JSON")
    add_server_option(rel)
    rel.set_defaults(handler=release)

    back = subcommands.add_parser("rollback", help="switch back to a kept version")
    back.add_argument("--env", required=True, help="the environment to roll back")
    back.add_argument("--to", help="a kept version (default: the newest kept one not live)")
    back.add_argument("--requested-by", default="operator", help="who asks for it")
    back.add_argument("--notify", help="notification block as type/name")
    back.add_argument("--target", help="DeployTarget block (default: the environment's name)")
    back.add_argument("--service", help="the service, where the target serves several")
    add_server_option(back)
    back.set_defaults(handler=rollback)


def release(args: argparse.Namespace) -> int:
    """Run the release flow here; a production release waits for `deliver approve` meanwhile."""
    connect(args)
    from flows.release import (
        ReleaseParameters,  # Prefect is configured only now
        release_here,
    )

    try:
        parameters = ReleaseParameters(
            image=args.image,
            environment=args.env,
            version=args.version,
            git_sha=args.git_sha,
            requested_by=args.requested_by,
            notify_block=args.notify,
            target_block=args.target,
        )
    except ValidationError as exc:
        return usage_errors(exc, OPTIONS)
    if parameters.environment == "production":
        say("Waiting for approval: see `deliver approvals`, then `deliver approve RUN_ID`.")
    result = finished("release", release_here(parameters))
    if result is None:
        return EXIT_FAILED
    if args.json:
        fields = ("environment", "version", "image", "slot", "url")
        print(json.dumps({name: getattr(result, name) for name in fields}))
    else:
        print(
            f"{result.environment}: {result.version} live in the {result.slot} slot at {result.url}"
        )
    return EXIT_OK


def rollback(args: argparse.Namespace) -> int:
    connect(args)
    from flows.release import (
        RollbackParameters,  # Prefect is configured only now
        rollback_here,
    )

    try:
        parameters = RollbackParameters(
            environment=args.env,
            to_version=args.to,
            requested_by=args.requested_by,
            notify_block=args.notify,
            target_block=args.target,
            service=args.service,
        )
    except ValidationError as exc:
        return usage_errors(exc, OPTIONS)
    if parameters.environment == "production":
        say(
            "A production rollback waits for approval (unless the policy says otherwise): see "
            "`deliver approvals`, then `deliver approve RUN_ID`."
        )
    result = finished("rollback", rollback_here(parameters))
    if result is None:
        return EXIT_FAILED
    print(f"{result.environment}: rolled back to {result.version} ({result.slot}) at {result.url}")
    return EXIT_OK
