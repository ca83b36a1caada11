"""Prefect's result store: which steps of a run earlier runs already did, looked up together
before any of them becomes a task run (a task run that only finds its cached result still
costs a task run). The lookup is not one either: it reads local records, and the run's report
lists what it found. Beside it, how long each check took when it last ran here, to start the
slowest first."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from prefect import get_run_logger
from prefect.results import ResultStore, get_result_store

from deliver.tasks.checks import CheckResult, run_check
from deliver.tasks.docker_image import ContainerTest
from deliver.tasks.scan import ScanReport


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReuseKeys:
    """Every cache key of a run, computed from its checkout before anything runs."""

    checks: Mapping[str, str]  # check name -> key
    container_test: str | None  # None while the image is not known (this run builds it)
    scan: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Reused:
    """What earlier runs left that this run takes as its own; anything absent runs."""

    checks: Mapping[str, CheckResult]
    container_test: ContainerTest | None = None
    scan: ScanReport | None = None

    def listing(self) -> list[tuple[str, str]]:
        """(step, the flow run that did it) for each reused step."""
        steps = [(f"check {name}", result.made_in) for name, result in self.checks.items()]
        if self.container_test is not None:
            steps.append(("container test", self.container_test.made_in))
        if self.scan is not None:
            steps.append(("image scan", self.scan.made_in))
        return steps


def _kept(store: ResultStore, key: str) -> object | None:
    """The result kept under `key`, unless there is none or it has expired."""
    try:
        record = store.read(key)
    except ValueError:  # the local result storage's answer for a key it does not hold
        return None
    except Exception as exc:  # an unreadable record (a result of another shape): run again
        get_run_logger().warning("Kept result %s not read (%s): the step runs", key[:60], exc)
        return None
    expiration = record.metadata.expiration
    if expiration is not None and expiration <= datetime.datetime.now(datetime.UTC):
        return None
    found: object = record.result
    return found


def find_reusable(keys: ReuseKeys) -> Reused:
    """Read every key of the run from the store the steps' own task runs write to."""
    # The sync variant, as the steps' own (sync) task runs use.
    store = cast(ResultStore, cast(Any, get_result_store()).update_for_task(run_check, _sync=True))
    checks = {
        name: found
        for name, key in keys.checks.items()
        if isinstance(found := _kept(store, key), CheckResult)
    }
    container_test = _kept(store, keys.container_test) if keys.container_test else None
    scan = _kept(store, keys.scan) if keys.scan else None
    reused = Reused(
        checks=checks,
        container_test=container_test if isinstance(container_test, ContainerTest) else None,
        scan=scan if isinstance(scan, ScanReport) else None,
    )
    to_run = sorted(set(keys.checks) - set(checks))
    get_run_logger().info(
        "Reused from earlier runs: %s; to run: %s",
        ", ".join(step for step, _ in reused.listing()) or "nothing",
        ", ".join(f"check {name}" for name in to_run) or "no check",
    )
    return reused


def _durations_file(cache_dir: Path, service: str, *, untrusted: bool) -> Path:
    # A pull request's runs keep their own, as they keep their own environments.
    trust = "untrusted" if untrusted else "trusted"
    return (
        cache_dir / "check-durations" / trust / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', service)}.json"
    )


def last_durations(cache_dir: Path, service: str, *, untrusted: bool) -> dict[str, float]:
    """How long each check of `service` took when it last ran on this worker (none when it
    never ran here, or the record is unreadable: the checks then start in the spec's order)."""
    try:
        kept = json.loads(_durations_file(cache_dir, service, untrusted=untrusted).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(kept, dict):
        return {}
    return {str(k): float(v) for k, v in kept.items() if isinstance(v, int | float)}


def keep_durations(
    cache_dir: Path, service: str, durations: Mapping[str, float], *, untrusted: bool
) -> None:
    """Record `durations` (the checks that ran) over the last ones; replaced whole, so a run
    reading it at the same time sees the old record or the new."""
    if not durations:
        return
    path = _durations_file(cache_dir, service, untrusted=untrusted)
    merged = {**last_durations(cache_dir, service, untrusted=untrusted), **durations}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as out:
        json.dump(merged, out)
    Path(out.name).replace(path)
