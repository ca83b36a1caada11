"""Prefect global concurrency limits of 1: one release at a time per environment, one build
and push at a time per image."""

from __future__ import annotations

import contextlib
import contextvars
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


def ensure_limit(name: str, client: SyncPrefectClient | None = None) -> str:
    """The limit of 1 called `name`, created by its first user if nobody made it before."""
    with contextlib.ExitStack() as stack:
        api = client or stack.enter_context(get_client(sync_client=True))
        try:
            api.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                api.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    return name


def ensure_release_limit(environment: str) -> str:
    return ensure_limit(release_limit_name(environment))


@contextlib.contextmanager
def held(name: str, why: str) -> Iterator[None]:
    """Hold the limit `name` (made if missing) for the block; `why` says so in the run log."""
    with taking(name, why) as slot:
        slot.wait()
        yield


@contextlib.contextmanager
def taking(name: str, why: str) -> Iterator[Lease]:
    """The slot of the limit `name` (made if missing), taken from now on in the background
    and held until the block ends; `Lease.wait()` returns once it is held. A CI run takes its
    build slot as its checks start, as a GitHub Actions job holds its concurrency group from
    its first step: the slot is then held when the build may begin."""
    logger = get_run_logger()
    logger.info("Taking the %s concurrency slot (%s)", name, why)
    with get_client(sync_client=True) as client:
        lease = Lease(client, name, _holder(), logger)
        try:
            yield lease
        finally:
            lease.end()


class Lease:
    """One slot of a limit, taken and then renewed on a thread of its own until `end`.

    Prefect's lease protocol (a lease renewed while held, so a holder killed with -9 frees the
    slot within LEASE_S) on the run's own API client: `prefect.concurrency.sync.concurrency`
    makes a new client for the acquisition, each renewal and the release, each loading the CA
    bundle and fetching a CSRF token (~60 ms at either end of every build and release)."""

    def __init__(
        self,
        client: SyncPrefectClient,
        name: str,
        holder: ConcurrencyLeaseHolder | None,
        logger: RunLogger,
    ) -> None:
        self._client, self._name, self._holder, self._logger = client, name, holder, logger
        self._held = threading.Event()
        self._stop = threading.Event()
        self._lease_id: UUID | None = None
        self._failure: Exception | None = None
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name=f"lease-{name}"
        )
        self._thread.daemon = True
        self._thread.start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Whether the slot is held, once it is or `timeout_s` has passed (False then, or
        after `end`); raises what kept it from being taken."""
        if not self._held.wait(timeout_s):
            return False
        if self._failure is not None:
            raise self._failure
        return self._lease_id is not None

    def end(self) -> None:
        """Stop taking or renewing the slot, and give it back if it was taken."""
        self._stop.set()
        self._thread.join()
        if self._lease_id is None:
            return
        try:
            self._client.release_concurrency_slots_with_lease(self._lease_id)
        except Exception as exc:  # not to hide what ended the block; the lease ends anyway
            self._logger.warning(
                "Releasing the %s slot failed (%s): it frees when its lease ends, within %d s",
                self._name,
                exc,
                LEASE_S,
            )

    def _run(self) -> None:
        try:
            self._lease_id = self._acquire()
        except Exception as exc:
            self._failure = exc
        finally:
            self._held.set()
        if self._lease_id is not None:
            self._renew(self._lease_id)

    def _acquire(self) -> UUID | None:
        """A lease on one slot, waiting (as the server's Retry-After says) while another run
        holds it, until `end`; the limit is made if nobody made it before."""
        deadline = time.monotonic() + WAIT_S
        made = told = False
        while not self._stop.is_set():
            try:
                response = self._client.increment_concurrency_slots_with_lease(
                    names=[self._name],
                    slots=1,
                    mode="concurrency",
                    lease_duration=LEASE_S,
                    holder=self._holder,
                )
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != LOCKED or time.monotonic() > deadline:
                    raise
                if not told:
                    self._logger.info("Waiting for the %s slot: another run holds it", self._name)
                    told = True
                self._stop.wait(float(exc.response.headers.get("Retry-After", 1)))
                continue
            granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
            if granted.limits:
                return granted.lease_id
            if made:
                raise DeliveryError(
                    f"The concurrency limit {self._name} was deleted as this run made it: make "
                    "it again (a limit of 1, Prefect UI > Concurrency) and rerun"
                )
            ensure_limit(self._name, self._client)  # its first user
            made = True
        return None

    def _renew(self, lease_id: UUID) -> None:
        """Renew the lease until `end`, a third of its duration apart (two tries to spare)."""
        while not self._stop.wait(LEASE_S / 3):
            try:
                self._client.renew_concurrency_lease(lease_id, LEASE_S)
            except Exception as exc:  # the next try may get through; the lease outlives two
                self._logger.warning("Renewing the concurrency lease %s failed: %s", lease_id, exc)


def _holder() -> ConcurrencyLeaseHolder | None:
    """The flow run holding the slot, as the UI shows it."""
    run = flow_run.get_id()
    return ConcurrencyLeaseHolder(type="flow_run", id=UUID(run)) if run else None
