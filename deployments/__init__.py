"""`deliver deploy`: apply prefect.yaml's deployments from Python, the same list `prefect deploy
--all` applies, so the two never drift."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import zoneinfo
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT_YAML = PROJECT_DIR / "prefect.yaml"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Deployed:
    name: str
    flow: str
    deployment_id: str


def declared(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The deployments prefect.yaml declares."""
    document = yaml.safe_load(path.read_text())
    return list(document.get("deployments") or [])


def deploy_all(
    path: Path = PREFECT_YAML,
    *,
    work_pool: str | None = None,
    only: Sequence[str] = (),
    timezone: str | None = None,
) -> list[Deployed]:
    """Create or update each declared deployment (or those named in `only`); `work_pool`
    overrides the file's pool, `timezone` every schedule's zone."""
    if timezone is not None:
        check_timezone(timezone)
    done = []
    for spec in declared(path):
        if only and spec["name"] not in only:
            continue
        with contextlib.redirect_stdout(sys.stderr):  # Prefect prints a table per deployment
            done.append(_deploy_one(spec, path, work_pool, timezone))
    return done


class UnknownTimezone(ValueError):
    pass


def check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UnknownTimezone(
            f"{name!r} is not an IANA time zone; use a name like UTC or Europe/Berlin"
        ) from None


def _deploy_one(
    spec: dict[str, Any], path: Path, work_pool: str | None, timezone: str | None
) -> Deployed:
    # Prefect only now: `deliver deploy` has pointed it at its server by then.
    from prefect import Flow
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.schedules import Cron

    flow = cast(
        Flow[..., Any], Flow.from_source(source=str(path.parent), entrypoint=spec["entrypoint"])
    )
    schedules = [
        Cron(s["cron"], timezone=timezone or s.get("timezone", "UTC"))
        for s in spec.get("schedules", [])
    ]
    triggers = [
        DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"})
        for t in spec.get("triggers", [])
    ]
    deployment_id = flow.deploy(
        name=spec["name"],
        work_pool_name=work_pool or spec["work_pool"]["name"],
        description=spec.get("description"),
        parameters=spec.get("parameters"),
        concurrency_limit=spec.get("concurrency_limit"),
        schedules=schedules or None,
        triggers=triggers or None,  # type: ignore[arg-type]
        tags=spec.get("tags"),
        enforce_parameter_schema=True,
        print_next_steps=False,
        ignore_warnings=True,
    )
    return Deployed(name=spec["name"], flow=flow.name, deployment_id=str(cast(UUID, deployment_id)))
