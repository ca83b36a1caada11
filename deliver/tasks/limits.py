"""Prefect global concurrency limits of 1: one release at a time per environment, one build
and push at a time per image."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError
from prefect.runtime import flow_run

from deliver.errors import DeliveryError

LEASE_S = 60.0  # the server's minimum; renewed while held, so a killed holder frees it this soon
RunLogger = logging.Logger | logging.LoggerAdapter[logging.Logger]
WAIT_S = 3600.0  # for a slot another run holds
LOCKED = 423  # the server's answer while every slot is held


def release_limit_name(environment: str) -> str:
    return f"release-{environment}"


def build_limit_name(image: str) -> str:
    return "build-" + re.sub(r"[^a-z0-9-]+", "-", image.lower()).strip("-")


def ensure_limit(name: str) -> str:
    """The limit of 1 called `name`, created by its first user if nobody made it before."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    return name


def ensure_release_limit(environment: str) -> str:
    return ensure_limit(release_limit_name(environment))


@contextlib.contextmanager
def held(name: str, why: str) -> Iterator[None]:
    """Hold the limit `name` (made if missing) for the block; `why` says so in the run log.

    Prefect's lease protocol (a lease renewed while held, so a holder killed with -9 frees the
    slot within LEASE_S) on the run's own API client: `prefect.concurrency.sync.concurrency`
    makes a new client for the acquisition, each renewal and the release, each loading the CA
    bundle and fetching a CSRF token (~60 ms at either end of every build and release)."""
    logger = get_run_logger()
    logger.info("Waiting for the %s concurrency slot (%s)", name, why)
    holder = _holder()
    with get_client(sync_client=True) as client:
        lease_id = _acquire(client, name, holder)
        stop = threading.Event()
        renewing = threading.Thread(
            target=_renew, args=(client, lease_id, stop, logger), name=f"lease-{name}", daemon=True
        )
        renewing.start()
        try:
            yield
        finally:
            stop.set()
            renewing.join()
            try:
                client.release_concurrency_slots_with_lease(lease_id)
            except Exception as exc:  # not to hide what ended the block; the lease ends anyway
                logger.warning(
                    "Releasing the %s slot failed (%s): it frees when its lease ends, within %d s",
                    name,
                    exc,
                    LEASE_S,
                )


def _holder() -> ConcurrencyLeaseHolder | None:
    """The flow run holding the slot, as the UI shows it."""
    run = flow_run.get_id()
    return ConcurrencyLeaseHolder(type="flow_run", id=UUID(run)) if run else None


def _acquire(client: SyncPrefectClient, name: str, holder: ConcurrencyLeaseHolder | None) -> UUID:
    """A lease on one slot of `name`, waiting (as the server's Retry-After says) while another
    holds it; the limit is made if nobody made it before."""
    deadline = time.monotonic() + WAIT_S
    made = False
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_S, holder=holder
            )
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != LOCKED or time.monotonic() > deadline:
                raise
            time.sleep(float(exc.response.headers.get("Retry-After", 1)))
            continue
        granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
        if granted.limits:
            return granted.lease_id
        if made:
            raise DeliveryError(
                f"The concurrency limit {name} was deleted as this run made it: make it again "
                "(a limit of 1, Prefect UI > Concurrency) and rerun"
            )
        ensure_limit(name)  # its first user
        made = True


def _renew(
    client: SyncPrefectClient, lease_id: UUID, stop: threading.Event, logger: RunLogger
) -> None:
    """Renew the lease until `stop`, a third of its duration apart (two tries to spare)."""
    while not stop.wait(LEASE_S / 3):
        try:
            client.renew_concurrency_lease(lease_id, LEASE_S)
        except Exception as exc:  # the next try may get through; the lease outlives two
            logger.warning("Renewing the concurrency lease %s failed: %s", lease_id, exc)
