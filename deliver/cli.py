"""`deliver`: what an operator does without the UI.

Exit codes: 0 success, 1 a delivery error (the message says what to do), 2 bad usage,
3 `status` found a component unhealthy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from collections.abc import Sequence

from deliver import sandbox
from deliver.errors import DeliveryError, PrefectNotConfigured, WebhookNotConfigured
from deliver.sandbox.component import ComponentStatus
from deliver.sandbox.manager import component_names

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNHEALTHY = 0, 1, 2, 3


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_statuses(statuses: Sequence[ComponentStatus], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    rows = [("COMPONENT", "HEALTH", "ADDRESS", "PID", "DETAIL")]
    for s in statuses:
        pid = str(s.pid) if s.pid else "-"
        rows.append((s.name, "healthy" if s.healthy else "UNHEALTHY", s.address, pid, s.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = zip(row, widths, strict=False)
        print("  ".join(cell.ljust(width) for cell, width in cells), row[4])


def _only(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _sandbox_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    statuses = sandbox.up(
        sandbox.config_from_env(), only=_only(args.only), say=_say, database=args.database
    )
    _print_statuses(statuses, as_json=args.json)
    _say(f"sandbox up in {time.monotonic() - started:.1f} s")
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_UNHEALTHY


def _sandbox_down(args: argparse.Namespace) -> int:
    stopped = sandbox.down(sandbox.config_from_env(), only=_only(args.only), say=_say)
    _say(f"stopped: {', '.join(stopped) if stopped else 'nothing (nothing was running)'}")
    return EXIT_OK


def _sandbox_status(args: argparse.Namespace) -> int:
    statuses = sandbox.status(sandbox.config_from_env(), only=_only(args.only))
    _print_statuses(statuses, as_json=args.json)
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_UNHEALTHY


def _sandbox_env(args: argparse.Namespace) -> int:
    for name, value in sandbox.config_from_env().prefect_env().items():
        print(f"export {name}={json.dumps(value)}")
    return EXIT_OK


def _sandbox_packages(args: argparse.Namespace) -> int:
    installed = sandbox.ensure_packages(sandbox.config_from_env(), say=_say)
    _say(f"installed: {', '.join(installed)}" if installed else "all system packages present")
    return EXIT_OK


def _ci(args: argparse.Namespace) -> int:
    from deliver import ci_command

    return ci_command.run(args)


def _use_prefect(args: argparse.Namespace) -> None:
    """The sandbox's server with --sandbox, else the configured one; never a throwaway server."""
    if getattr(args, "sandbox", False):
        from deliver.ci_command import use_sandbox

        use_sandbox()
        return
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise PrefectNotConfigured()


def _approvals(args: argparse.Namespace) -> int:
    _use_prefect(args)
    from deliver.approvals import waiting_releases

    waiting = waiting_releases()
    if args.json:
        print(json.dumps([w.to_json() for w in waiting], indent=2))
    elif not waiting:
        print("No release is waiting for approval.")
    for w in [] if args.json else waiting:
        print(
            f"{w.run_id}  {w.environment}  {w.version}  requested by {w.requested_by}  "
            f"waiting since {w.waiting_since}\n    {w.image}"
        )
    return EXIT_OK


def _decide(args: argparse.Namespace, decision: str) -> int:
    _use_prefect(args)
    from deliver.approvals import decide

    decide(
        args.run_id,
        decision=decision,
        approver=args.approver,
        reason=args.reason or "",
        code=args.code or "",
    )
    print(f"{decision} sent to {args.run_id}; the run checks it against its approval policy.")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    _use_prefect(args)
    from deliver import release_command

    return release_command.status(args)


def _metrics(args: argparse.Namespace) -> int:
    _use_prefect(args)
    from deliver import metrics_command

    return metrics_command.run(args)


def _release(args: argparse.Namespace) -> int:
    _use_prefect(args)
    from deliver import release_command

    return release_command.release(args)


def _rollback(args: argparse.Namespace) -> int:
    _use_prefect(args)
    from deliver import release_command

    return release_command.rollback(args)


def _blocks_register(args: argparse.Namespace) -> int:
    _use_prefect(args)
    from blocks import BLOCK_TYPES

    registered = []
    for block_type in BLOCK_TYPES:
        block_type.register_type_and_schema()
        registered.append(block_type.get_block_type_slug())
    if args.json:
        print(json.dumps(registered))
    else:
        print("Registered block types (Blocks > + in the UI): " + ", ".join(registered))
    return EXIT_OK


def _deploy(args: argparse.Namespace) -> int:
    _use_prefect(args)
    from deployments import UnknownTimezone, deploy_all
    from deployments.automations import AlertSettings, ensure_alerts

    notify_block = args.notify or ("custom-webhook/sandbox-chat" if args.sandbox else None)
    try:
        done = deploy_all(timezone=args.nightly_timezone)
    except UnknownTimezone as exc:
        _say(f"error: --nightly-timezone: {exc}")
        return EXIT_USAGE
    alerts = []
    if notify_block:
        settings = AlertSettings(
            notify_block=notify_block, approval_within_s=args.approval_alert_after
        )
        alerts = ensure_alerts(settings)
    if args.json:
        print(json.dumps([dataclasses.asdict(d) for d in done], indent=2))
    for d in [] if args.json else done:
        print(f"{d.flow}/{d.name}  {d.deployment_id}")
    if not args.json:
        print(
            f"alerts: {len(alerts)} automations through {notify_block}"
            if alerts
            else "alerts: none (no --notify block given)"
        )
    return EXIT_OK


def _webhook_serve(args: argparse.Namespace) -> int:
    implied = {}
    if args.sandbox:
        from deliver.ci_command import use_sandbox

        implied = use_sandbox()
    else:
        _use_prefect(args)
    from prefect.blocks.system import Secret

    from deliver.tasks.loading import load_block
    from deliver.webhook_server import WebhookSettings, serve

    try:
        # The raw text GitHub signs with; Secret.get() would parse a JSON-looking one.
        secret = load_block(Secret, args.secret_block).value.get_secret_value()
    except ValueError as exc:
        raise WebhookNotConfigured(block=args.secret_block) from exc
    defaults: dict[str, object] = {"spec_path": args.spec_path}
    if implied:
        defaults |= {"advisory_url": implied["advisory_url"], "cache_dir": implied["cache_dir"]}
        if "base_image" in implied:
            defaults["build_args"] = {"BASE_IMAGE": implied["base_image"]}
    text = secret if isinstance(secret, str) else json.dumps(secret)
    settings = WebhookSettings(secret=text.encode(), ci_defaults=defaults)
    server = serve(settings, host=args.host, port=args.port)
    _say(f"webhook endpoint: http://{args.host}:{args.port}/ (POST; Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deliver", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from deliver.ci_command import add_arguments

    ci = commands.add_parser("ci", help="run the CI pipeline (checks, build, test, scan, push)")
    add_arguments(ci)
    ci.set_defaults(handler=_ci)

    waiting = commands.add_parser("approvals", help="releases waiting for approval")
    waiting.add_argument("--json", action="store_true", help="print as JSON")
    waiting.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
    waiting.set_defaults(handler=_approvals)
    for verb in ("approve", "reject"):
        decide = commands.add_parser(verb, help=f"{verb} a waiting release")
        decide.add_argument("run_id", help="the waiting flow run's id (see `deliver approvals`)")
        decide.add_argument("--approver", required=True, help="your name, as the policy lists it")
        decide.add_argument("--reason", help="why (required to reject)")
        decide.add_argument("--code", help="your one-time code, if the policy gives you one")
        decide.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
        decide.set_defaults(handler=lambda a, v=verb: _decide(a, v))

    status = commands.add_parser("status", help="what is live in each environment, what is kept")
    status.add_argument("--env", help="one environment (default: staging and production)")
    status.add_argument("--target", help="one DeployTarget block; a fleet shows each host")
    status.add_argument("--json", action="store_true", help="print as JSON")
    status.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
    status.set_defaults(handler=_status)

    rel = commands.add_parser("release", help="release an image by digest to an environment")
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
    rel.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
    rel.set_defaults(handler=_release)

    back = commands.add_parser("rollback", help="switch back to a kept version")
    back.add_argument("--env", required=True, help="the environment to roll back")
    back.add_argument("--to", help="a kept version (default: the newest kept one not live)")
    back.add_argument("--requested-by", default="operator", help="who asks for it")
    back.add_argument("--notify", help="notification block as type/name")
    back.add_argument("--target", help="DeployTarget block (default: the environment's name)")
    back.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
    back.set_defaults(handler=_rollback)

    metrics = commands.add_parser(
        "metrics",
        help="deployment frequency, lead time, change "
        "failure rate and time to restore, from Prefect's events",
    )
    metrics.add_argument("--since", default="30d", help="window: 30d, 12h, 90m (default 30d)")
    metrics.add_argument("--env", default="production", help="environment (default production)")
    metrics.add_argument("--service", help="one service (default: all)")
    metrics.add_argument("--json", action="store_true", help="print as JSON")
    metrics.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
    metrics.set_defaults(handler=_metrics)

    deploy = commands.add_parser("deploy", help="create or update prefect.yaml's deployments")
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
    deploy.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
    deploy.set_defaults(handler=_deploy)

    webhook = commands.add_parser("webhook", help="GitHub-style webhooks that start CI")
    webhook_actions = webhook.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve_cmd = webhook_actions.add_parser("serve", help="serve the webhook endpoint")
    serve_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve_cmd.add_argument("--port", type=int, default=8095, help="port to listen on")
    serve_cmd.add_argument(
        "--secret-block", default="webhook-secret", help="Secret block holding the webhook's secret"
    )
    serve_cmd.add_argument("--spec-path", default="deliver.yaml", help="the spec in each repo")
    serve_cmd.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
    serve_cmd.set_defaults(handler=_webhook_serve)

    blocks = commands.add_parser("blocks", help="the block types credentials live in")
    block_actions = blocks.add_subparsers(dest="action", required=True, metavar="ACTION")
    register = block_actions.add_parser(
        "register", help="register the block types, so the UI's block catalogue has their forms"
    )
    register.add_argument("--json", action="store_true", help="print the slugs as JSON")
    register.add_argument("--sandbox", action="store_true", help="use the sandbox's server")
    register.set_defaults(handler=_blocks_register)

    box = commands.add_parser("sandbox", help="the local delivery sandbox on loopback")
    actions = box.add_subparsers(dest="action", required=True, metavar="ACTION")
    only_help = f"comma-separated components: {', '.join(component_names())}"

    up_cmd = actions.add_parser("up", help="start every component (idempotent)")
    up_cmd.add_argument("--only", help=only_help)
    up_cmd.add_argument("--json", action="store_true", help="print statuses as JSON")
    up_cmd.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        help="the Prefect server's database: postgres (the default, with two "
        "workers) or sqlite (one worker); remembered",
    )
    up_cmd.set_defaults(handler=_sandbox_up)

    down_cmd = actions.add_parser("down", help="stop, by pid, what `up` started")
    down_cmd.add_argument("--only", help=only_help)
    down_cmd.set_defaults(handler=_sandbox_down)

    status_cmd = actions.add_parser("status", help="each component's address and health")
    status_cmd.add_argument("--only", help=only_help)
    status_cmd.add_argument("--json", action="store_true", help="print statuses as JSON")
    status_cmd.set_defaults(handler=_sandbox_status)

    env_cmd = actions.add_parser("env", help="shell exports that point Prefect at the sandbox")
    env_cmd.set_defaults(handler=_sandbox_env)

    packages_cmd = actions.add_parser("packages", help="install missing Debian packages (root)")
    packages_cmd.set_defaults(handler=_sandbox_packages)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except DeliveryError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
