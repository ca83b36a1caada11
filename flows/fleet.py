"""A release across a fleet: batch by batch, each host switched blue-green behind its own
nginx; any failure halts the rollout and switches every already-switched host back."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture, wait

from deliver.errors import ReleaseError
from deliver.planning.fleet import batches, switch_back_order
from deliver.planning.release import HostState, Slot
from deliver.tasks.deploy import TargetView, pull_image, read_host_state, start_slot, stop_slot
from flows.release_steps import (
    check_health,
    drain,
    health_key,
    move_traffic,
    smoke_test,
    surveyed_state,
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostPlan:
    """One host of the fleet: what it serves now, and the slot the new version goes to."""

    host: TargetView
    state: HostState
    slot: Slot


def survey(target: TargetView, now: str) -> list[HostPlan]:
    plans = []
    for host in target.hosts:
        state, _, slot = surveyed_state(host.block, read_host_state(host.block), now)
        plans.append(HostPlan(host=host, state=state, slot=slot))
    return plans


def _all_done(futures: Iterable[PrefectFuture[Any]]) -> list[Any]:
    """Wait for every host's step, then raise the first failure, if any."""
    pending = list(futures)
    wait(pending)
    return [future.result() for future in pending]


def pull_everywhere(target: TargetView, image: str) -> None:
    _all_done(pull_image.submit(host.block, image) for host in target.hosts)


def roll_out(target: TargetView, plans: list[HostPlan], image: str, version: str, run: str) -> None:
    """Start, check and switch each batch in turn, then smoke the fleet's front. On a failure,
    switch the switched hosts back, stop every candidate started, and re-raise."""
    logger = get_run_logger()
    started: list[HostPlan] = []
    switched: list[HostPlan] = []
    try:
        for number, batch in enumerate(batches(plans, target.max_unavailable), start=1):
            names = ", ".join(plan.host.block for plan in batch)
            logger.info("Batch %d: %s", number, names)
            started += batch
            _all_done(pull_image.submit(p.host.block, image) for p in batch)
            _all_done(start_slot.submit(p.host.block, image, p.slot, version, run) for p in batch)
            _all_done(
                check_health.submit(
                    f"{p.host.slot_url(p.slot)}{p.host.health_path}",
                    p.host.health_timeout_s,
                    health_key(p.host),
                    p.host.block,
                )
                for p in batch
            )
            for plan in batch:
                upstream = move_traffic(plan.host, plan.slot)
                switched.append(plan)
                assert plan.host.front_url is not None  # noqa: S101 (fleet hosts have a front)
                smoke_test(plan.host.front_url, target.smoke, upstream)
        if target.front_url:
            smoke_test(target.front_url, target.smoke)
    except ReleaseError as exc:
        logger.error("Fleet rollout halted: %s", str(exc).splitlines()[0])
        for plan in switch_back_order(switched):
            if plan.state.live is not None:
                move_traffic(plan.host, plan.state.live.slot)
                exc.rolled_back = True
        for plan in started:
            stop_slot(plan.host.block, plan.slot)
        raise


def retire_old(target: TargetView, plans: list[HostPlan]) -> None:
    """After the whole fleet switched: one drain window, then stop each host's old slot."""
    old = [
        (p.host, p.state.live.slot)
        for p in plans
        if p.state.live and p.state.live.slot is not p.slot
    ]
    if old:
        drain(target, old[0][1])
    for host, slot in old:
        stop_slot(host.block, slot)
