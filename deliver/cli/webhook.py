"""`deliver webhook serve`: the endpoint a git forge's push webhooks start CI through."""

from __future__ import annotations

import argparse
import json
import threading

from deliver.cli.common import EXIT_OK, Commands, add_server_option, connect, say
from deliver.errors import WebhookNotConfigured


def register(subcommands: Commands) -> None:
    webhook = subcommands.add_parser("webhook", help="GitHub-style webhooks that start CI")
    actions = webhook.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve the webhook endpoint")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8095, help="port to listen on")
    serve.add_argument(
        "--secret-block", default="webhook-secret", help="Secret block holding the webhook's secret"
    )
    serve.add_argument("--spec-path", default="deliver.yaml", help="the spec in each repo")
    add_server_option(serve)
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    implied = connect(args)
    from prefect.blocks.system import Secret  # Prefect is configured only now

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
    text = secret if isinstance(secret, str) else json.dumps(secret)
    settings = WebhookSettings(secret=text.encode(), ci_defaults=defaults)
    server = serve(settings, host=args.host, port=args.port)
    say(f"webhook endpoint: http://{args.host}:{args.port}/ (POST; Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return EXIT_OK
