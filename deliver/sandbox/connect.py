"""Pointing Prefect at the sandbox's server, from a command or a script."""

from __future__ import annotations

import os

from deliver.sandbox.config import config_from_env
from deliver.sandbox.prefect_server import ensure_prefect_auth


def use_sandbox() -> dict[str, str]:
    """Point Prefect at the sandbox (before Prefect is imported: it reads its settings then);
    return the CI parameters the sandbox implies."""
    config = config_from_env()
    config.prefect_home.mkdir(parents=True, exist_ok=True)
    ensure_prefect_auth(config)
    os.environ.update(config.prefect_env())
    return {"advisory_url": config.advisory_url, "cache_dir": str(config.state_dir / "ci-cache")}
