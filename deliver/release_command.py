"""`deliver status` and `deliver rollback`: what is live where, and going back to a kept version."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from deliver.host import DeployHost

ENVIRONMENTS = ("staging", "production")


def host_summary(host: DeployHost) -> dict[str, Any]:
    """The recorded state, checked against what the host runs and nginx serves. Read-only: a
    difference (a release killed midway) is shown, and the next release records it."""
    import datetime

    from deliver.planning.release import reconcile

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
    from deliver.tasks.ssh_host import open_ssh_hosts

    found = []
    for block in blocks:
        with open_ssh_hosts(block) as (_, hosts):
            found += [host_summary(host) for host in hosts]
    return found


def status(args: argparse.Namespace) -> int:
    environments = [args.env] if args.env else list(ENVIRONMENTS)
    blocks = [args.target] if args.target else environments
    found = summaries(blocks)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for summary in found:
        live = summary["live"]
        if live is None:
            print(f"{summary['environment']}: nothing live")
        else:
            print(
                f"{summary['environment']}: {live['version']} in the {live['slot']} slot "
                f"since {live['since']}\n  {live['image']}"
            )
        if summary["reconciled"]:
            print(
                f"  (the host's record says {summary['recorded_live']}; what serves is shown,"
                " and the next release records it)"
            )
        for other in summary["idle_slot_running"]:
            print(
                f"  also running: {other['version']} in the {other['slot']} slot "
                "(a candidate waiting for approval, or a release in progress)"
            )
        kept = ", ".join(k["version"] for k in summary["kept"]) or "none"
        print(f"  kept: {kept}")
        if summary["last"]:
            last = summary["last"]
            print(f"  last: {last.get('outcome')} {last.get('version')} at {last.get('at')}")
    return 0


def _finished(what: str, state: Any) -> Any:
    """The flow's ReleaseResult, or None after saying on stderr why there is none."""
    value = state.result(raise_on_failure=False)
    if state.is_completed():
        return value
    print(f"error: {what} {state.name}: {state.message or value}", file=sys.stderr)
    return None


OPTIONS = {"notify_block": "notify", "to_version": "to", "target_block": "target"}


def _usage_errors(exc: ValidationError) -> int:
    """Each invalid parameter as the option that set it; exit 2, as for any usage error."""
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        option = OPTIONS.get(field, field.replace("_", "-"))
        print(f"error: --{option}: {error['msg']}", file=sys.stderr)
    return 2


def rollback(args: argparse.Namespace) -> int:
    from flows.release import RollbackParameters
    from flows.release import rollback as rollback_flow

    try:
        parameters = RollbackParameters(
            environment=args.env,
            to_version=args.to,
            requested_by=args.requested_by,
            notify_block=args.notify,
            target_block=args.target,
        )
    except ValidationError as exc:
        return _usage_errors(exc)
    result = _finished("rollback", rollback_flow(parameters, return_state=True))
    if result is None:
        return 1
    print(f"{result.environment}: rolled back to {result.version} ({result.slot}) at {result.url}")
    return 0


def release(args: argparse.Namespace) -> int:
    """Run the release flow here; a production release waits for `deliver approve` meanwhile."""

    from flows.release import ReleaseParameters
    from flows.release import release as release_flow

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
        return _usage_errors(exc)
    if parameters.environment == "production":
        print(
            "Waiting for approval: see `deliver approvals`, then `deliver approve RUN_ID`.",
            file=sys.stderr,
        )
    result = _finished("release", release_flow(parameters, return_state=True))
    if result is None:
        return 1
    if args.json:
        fields = ("environment", "version", "image", "slot", "url")
        print(json.dumps({name: getattr(result, name) for name in fields}))
    else:
        print(
            f"{result.environment}: {result.version} live in the {result.slot} slot at {result.url}"
        )
    return 0
