"""Webhook answer times, printed as JSON: signed pushes to `deliver webhook serve`'s endpoint,
each answered with the CI run it created, while the runs execute on the sandbox's workers.

    .venv/bin/python -m bench.webhook [--deliveries 5] [--interval 3]

Each delivery is a new push (its own delivery id), so each creates a run: the figure is the
time to verify, route and create a run through the API. The sandbox must be up.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from deliver.sandbox import use_sandbox

PROJECT_DIR = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT_DIR / "examples" / "stock-api"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=5)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between pushes")
    args = parser.parse_args()
    implied = use_sandbox()  # before Prefect is imported

    import httpx

    from bench.ci import git
    from deliver.webhook_server import WebhookSettings, serve
    from deployments import deploy_all

    deploy_all(only=["ci"])
    secret = uuid.uuid4().hex.encode()
    settings = WebhookSettings(
        secret=secret,
        ci_defaults={
            "spec_path": "deliver.yaml",
            "advisory_url": implied["advisory_url"],
            "cache_dir": implied["cache_dir"],
        },
    )
    server = serve(settings, port=0)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    repo = workdir / "app"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".*_cache"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")
    answers: list[float] = []
    statuses: list[int] = []
    try:
        for _ in range(args.deliveries):
            body = json.dumps(
                {
                    "ref": "refs/heads/main",
                    "after": git(repo, "rev-parse", "HEAD"),
                    "repository": {"clone_url": str(repo)},
                }
            ).encode()
            signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            headers = {
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": signature,
            }
            started = time.perf_counter()
            response = httpx.post(url, content=body, headers=headers, timeout=60)
            answers.append(round(time.perf_counter() - started, 3))
            statuses.append(response.status_code)
            time.sleep(args.interval)
    finally:
        server.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        json.dumps(
            {
                "deliveries": args.deliveries,
                "statuses": statuses,
                "answer_s": answers,
                "median_answer_s": statistics.median(answers),
                "max_answer_s": max(answers),
                "within_1s": sum(1 for a in answers if a < 1.0),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
