"""The release engine: one path for an environment of one host or a fleet of them.

Read top to bottom, a release is:

1. `survey` each host: what it records, what really runs and serves (a release killed midway is
   reconciled here), and the idle slot the new version goes to.
2. For each batch of `max_unavailable` hosts: pull the image, start the candidate in the idle
   slot, check its health (all hosts of the batch at once); then, host by host, switch its nginx
   to the candidate and smoke-test through it (a host without nginx is smoke-tested directly).
3. Smoke the environment's own front (a fleet's balancer), if no host's check went through it.
4. Past that point the new version serves: drain once (where nginx moved requests off an old
   slot), retire every old slot, record the release on every host, prune images beyond
   `keep_versions`, and report.

Any exception before step 4 (a failed check, a lost SSH connection, a lost API connection)
switches every switched host back, last switched first, stops every candidate started, records
the failure on every host surveyed and reports it; each of those undo steps runs even when an
earlier one fails. A production release prepares its first batch (`prepare`) before it waits
for approval, so the approval leads straight to the switch.

Written against `deliver.host.DeployHost` and `Probes` only: over SSH and HTTP in the flows,
in memory in the fast tests. The caller holds the environment's lock.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from deliver.errors import MigrationFailed, ReleaseError
from deliver.host import DeployHost, Probes
from deliver.planning.fleet import batches, switch_back_order
from deliver.planning.outcome import FinishedRelease
from deliver.planning.release import (
    Approval,
    HistoryRecord,
    HostState,
    Outcome,
    Release,
    ReleaseResult,
    RunningSlot,
    Slot,
    after_failure,
    after_success,
    reconcile,
    target_slot,
)
from deliver.planning.target import TargetView

T = TypeVar("T")
R = TypeVar("R")


class Reporter(Protocol):
    def finished(self, release: FinishedRelease) -> None:
        """Publish a finished release (event, report, notice); never raises."""
        ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What a release or a rollback puts live, and on whose behalf."""

    image: str
    version: str
    git_sha: str
    requested_by: str
    run: str  # the flow run; candidates are labelled with it, so it finds its own again
    outcome: Outcome = Outcome.LIVE  # what success is recorded as: LIVE, or ROLLED_BACK
    approval: Approval | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostPlan:
    """One host: what it serves now, the slot the new version goes to, and whether this run's
    candidate already runs there (started before the approval wait)."""

    host: DeployHost
    state: HostState
    slot: Slot
    ours: bool

    @property
    def ref(self) -> str:
        return self.host.view.ref


def now() -> str:
    """To the millisecond: one release's span must be told apart from the next's even when
    they follow each other within a second (the history is how that is checked)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class Rollout:
    """Releases to one environment; `hosts` are the target's hosts, in its order."""

    def __init__(
        self,
        target: TargetView,
        hosts: Sequence[DeployHost],
        probes: Probes,
        reporter: Reporter,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.target, self.hosts, self.probes = target, tuple(hosts), probes
        self.reporter, self.log = reporter, log

    @property
    def record_host(self) -> DeployHost:
        """The host whose state stands for the environment's."""
        return self.hosts[0]

    def survey(self, request: Request | None = None) -> list[HostPlan]:
        """Each host as it really is; a record that differs from what serves is corrected."""
        return [self._survey_one(host, request) for host in self.hosts]

    def _survey_one(self, host: DeployHost, request: Request | None) -> HostPlan:
        state = host.read_state()
        running, serving = host.inspect()
        actual = reconcile(state, running, serving, now=now())
        if actual is not None:
            self.log.warning("Host state of %s reconciled: %s serves", host.view.ref, actual.live)
            host.write_state(actual)
            state = actual
        slot = target_slot(state, serving)
        ours = request is not None and _runs_candidate(running, slot, request)
        return HostPlan(host=host, state=state, slot=slot, ours=ours)

    def pull_everywhere(self, image: str) -> None:
        on_each(self.hosts, lambda host: host.pull(image))

    def prepare(self, request: Request) -> HostState:
        """Start and check the first batch's candidates before the approval wait; they serve no
        traffic until the switch. Returns the environment's state as it was."""
        began = now()
        plans: list[HostPlan] = []
        started: list[HostPlan] = []
        try:
            plans = self.survey(request)
            self._accessories_ready()
            if self.target.migrate:  # the candidate may need the migrated schema: after approval
                return plans[0].state
            first = batches(plans, self.target.max_unavailable)[0]
            started += first
            on_each(first, lambda plan: self._start(plan, request))
            on_each(first, self._check_health)
        except Exception as exc:
            self._fail(exc, request, began, plans, started, switched=[])
            raise
        return plans[0].state

    def withdraw(self, request: Request) -> None:
        """Stop this run's candidates that still wait in an idle slot (rejected, expired)."""
        for plan in self.survey(request):
            if plan.ours:
                plan.host.stop_slot(plan.slot)

    def deploy(self, request: Request) -> ReleaseResult:
        """Put `request` live on every host, or leave every host on what it served."""
        began, clock = now(), time.monotonic()
        timings: dict[str, float] = {}
        plans: list[HostPlan] = []
        started: list[HostPlan] = []
        switched: list[HostPlan] = []
        try:
            plans = self.survey(request)
            timings["survey"] = _since(clock)
            booted = self._accessories_ready()
            migration = self._migrate(request)
            if migration:
                timings["migrate"] = _since(clock)
            before = plans[0].state.live
            self.log.info(
                "Releasing %s to %s: %d host(s), %d at a time; live now: %s",
                request.version,
                self.target.environment,
                len(plans),
                self.target.max_unavailable,
                before.version if before else "nothing",
            )
            for number, batch in enumerate(batches(plans, self.target.max_unavailable), 1):
                self.log.info("Batch %d: %s", number, ", ".join(plan.ref for plan in batch))
                started += batch
                on_each(batch, lambda plan: self._start(plan, request))
                on_each(batch, self._check_health)
                for plan in batch:
                    self._switch_and_smoke(plan, switched)
            if front := self.target.front_to_smoke:
                self.probes.smoke(front, self.target.smoke, None)
            timings["rollout"] = _since(clock)
        except Exception as exc:
            self._fail(exc, request, began, plans, started, switched)
            raise
        done = dataclasses.replace(
            self._history(request, request.outcome, began),
            checks=self.checks_that_ran(),
            migration=" ".join(self.target.migrate) if migration else "",
            accessories_booted=booted,
        )
        pruned = self._retire_and_record(plans, request, done)
        timings["total"] = _since(clock)
        self._report(request, plans, request.outcome, timings=timings, migration=migration)
        url = self.target.serving_url or plans[0].host.view.slot_url(plans[0].slot)
        self.log.info("%s %s is live at %s", self.target.environment, request.version, url)
        return ReleaseResult(
            environment=self.target.environment,
            version=request.version,
            image=request.image,
            slot=",".join(plan.slot.value for plan in plans),
            url=url,
            previous=before.version if before else None,
            pruned=pruned,
            timings_s=timings,
            approval=request.approval,
        )

    def _start(self, plan: HostPlan, request: Request) -> None:
        if plan.ours:
            return
        plan.host.pull(request.image)
        plan.host.start_slot(plan.slot, request.image, request.version, request.run)

    def _accessories_ready(self) -> tuple[str, ...]:
        """Those booted now (absent before); one that is down raises."""
        if not self.target.accessories:
            return ()
        return tuple(self.record_host.boot_accessories())

    def _migrate(self, request: Request) -> str:
        """The service's migration, once per release, on the first host, before any switch;
        what it printed. A failure raises: nothing is switched, the live version serves."""
        if not self.target.migrate:
            return ""
        if request.outcome is Outcome.ROLLED_BACK:
            self.log.info("A rollback runs no migration: the schema stays as the last one left it")
            return ""
        host = self.record_host
        host.pull(request.image)
        result = host.run_once(request.image, self.target.migrate)
        if not result.ok:
            raise MigrationFailed(
                where=host.view.ref,
                command=" ".join(self.target.migrate),
                exit_code=result.exit_code,
                tail=result.tail(20),
            )
        self.log.info("Migration %r done on %s", " ".join(self.target.migrate), host.view.ref)
        return result.tail(40)

    def _check_health(self, plan: HostPlan) -> None:
        url = f"{plan.host.view.slot_url(plan.slot)}{self.target.health_path}"
        self.probes.health(url, self.target.health_timeout_s, plan.ref)

    def _switch_and_smoke(self, plan: HostPlan, switched: list[HostPlan]) -> None:
        """Move the host's traffic to the candidate and smoke it there; without nginx, the
        candidate serves as it is and is smoke-tested directly."""
        view = plan.host.view
        if view.front_url is None:
            self.probes.smoke(view.slot_url(plan.slot), self.target.smoke, None)
            return
        switched.append(plan)
        upstream = self._move_traffic(plan.host, plan.slot)
        self.probes.smoke(view.front_url, self.target.smoke, upstream)

    def _move_traffic(self, host: DeployHost, slot: Slot) -> str:
        """Switch and wait until the host's nginx answers from `slot`; its host:port."""
        assert host.view.front_url is not None  # noqa: S101 (only hosts with nginx switch)
        host.switch(slot)
        upstream = host.view.slot_address(slot)
        self.probes.await_upstream(f"{host.view.front_url}{self.target.health_path}", upstream)
        return upstream

    def _retire_and_record(
        self, plans: list[HostPlan], request: Request, record: HistoryRecord
    ) -> tuple[str, ...]:
        """The new version serves everywhere: from here a failure is logged, never undone (the
        next release reconciles from what serves)."""
        old = [p for p in plans if p.state.live is not None and p.state.live.slot is not p.slot]
        # Only nginx moves requests off an old slot; without it nothing is in flight to wait for.
        behind_nginx = [p for p in old if p.host.view.front_url is not None]
        if behind_nginx:
            self.probes.drain(self.target.drain_s, f"{len(behind_nginx)} old slot(s)")
        pruned: set[str] = set()

        def finish(plan: HostPlan) -> None:
            if plan.state.live is not None and plan.state.live.slot is not plan.slot:
                plan.host.stop_slot(plan.state.live.slot)
            live = Release(
                version=request.version,
                image=request.image,
                git_sha=request.git_sha,
                slot=plan.slot,
                since=now(),
            )
            state, gone = after_success(plan.state, live, self.target.keep_versions, record)
            plan.host.write_state(state)
            if gone:
                pruned.update(set(gone) - set(plan.host.prune(gone)))

        for plan, error in zip(plans, on_each_settled(plans, finish), strict=True):
            if error is not None:
                self.log.warning("After the release, %s: %s", plan.ref, _one_line(error))
        return tuple(sorted(pruned))

    def _fail(
        self,
        exc: Exception,
        request: Request,
        began: str,
        plans: list[HostPlan],
        started: list[HostPlan],
        switched: list[HostPlan],
    ) -> None:
        """Undo what this release did, record it on each host, and report it. Every step runs
        even if an earlier one fails; the original exception is what the caller re-raises."""
        self.log.error("Release of %s halted: %s", request.version, _one_line(exc))
        switched_back: set[str] = set()
        stuck: set[str] = set()  # its switch back failed: its nginx may send traffic to it
        for plan in switch_back_order(switched):
            if plan.state.live is None:
                continue
            try:
                self._move_traffic(plan.host, plan.state.live.slot)
                switched_back.add(plan.ref)
            except Exception as undo:
                stuck.add(plan.ref)
                self.log.error(
                    "Could not switch %s back: %s; its candidate is left running, and the "
                    "next release records what serves there",
                    plan.ref,
                    _one_line(undo),
                )
        to_stop = [plan for plan in started if plan.ref not in stuck]
        for plan, error in zip(
            to_stop, on_each_settled(to_stop, lambda p: p.host.stop_slot(p.slot)), strict=True
        ):
            if error is not None:
                self.log.error("Could not stop the candidate on %s: %s", plan.ref, _one_line(error))
        for plan in plans:
            outcome = Outcome.SWITCHED_BACK if plan.ref in switched_back else Outcome.FAILED
            record = self._history(request, outcome, began, detail=_describe(exc))
            try:
                plan.host.write_state(after_failure(plan.state, record))
            except Exception as undo:
                self.log.error("Could not record the failure on %s: %s", plan.ref, _one_line(undo))
        if isinstance(exc, ReleaseError):
            exc.rolled_back = bool(switched_back)
        outcome = Outcome.SWITCHED_BACK if switched_back else Outcome.FAILED
        self._report(request, plans, outcome, detail=_describe(exc))

    def checks_that_ran(self) -> tuple[str, ...]:
        """What every release here checks before it counts as live, as the history says it."""
        target = self.target
        smoked = [f"GET {check.path}" for check in target.smoke]
        where = [h.front_url or "the slot" for h in target.hosts]
        checks = [f"health {target.health_path} on {len(target.hosts)} host(s)"]
        checks += [f"smoke {name} through {', '.join(sorted(set(where)))}" for name in smoked]
        if front := target.front_to_smoke:
            checks += [f"smoke {name} through {front}" for name in smoked]
        return tuple(checks)

    def _history(
        self, request: Request, outcome: Outcome, began: str, detail: str = ""
    ) -> HistoryRecord:
        return HistoryRecord(
            at=now(),
            outcome=outcome,
            version=request.version,
            image=request.image,
            git_sha=request.git_sha,
            requested_by=request.requested_by,
            flow_run=request.run,
            began=began,
            detail=detail,
            approval=request.approval,
        )

    def _report(
        self,
        request: Request,
        plans: list[HostPlan],
        outcome: Outcome,
        *,
        detail: str = "",
        timings: Mapping[str, float] | None = None,
        migration: str = "",
    ) -> None:
        before = plans[0].state.live if plans else None
        try:
            labels = self.record_host.image_labels(request.image)
        except Exception as exc:
            self.log.warning("Image labels not read: %s", _one_line(exc))
            labels = {}
        self.reporter.finished(
            FinishedRelease(
                service=self.target.app_name,
                environment=self.target.environment,
                outcome=outcome,
                version=request.version,
                image=request.image,
                git_sha=request.git_sha,
                requested_by=request.requested_by,
                at=now(),
                previous=(before.version, before.git_sha) if before else None,
                approval=request.approval,
                timings_s=dict(timings or {}),
                detail=detail,
                labels=labels,
                migration=migration,
            )
        )


def _runs_candidate(running: list[RunningSlot], slot: Slot, request: Request) -> bool:
    """Whether `slot` runs the candidate that `request`'s run started."""
    return bool(request.run) and any(
        r.slot is slot
        and r.run == request.run
        and r.image == request.image
        and r.version == request.version
        for r in running
    )


def on_each(items: Sequence[T], step: Callable[[T], R]) -> list[R]:
    """`step` on every item at once (threads keep the caller's context, so Prefect task runs
    belong to its flow run); waits for all, then raises the first failure in item order."""
    results: list[R] = []
    for outcome in _settle(items, step):
        if isinstance(outcome, _Failed):
            raise outcome.error
        results.append(outcome)
    return results


def on_each_settled(items: Sequence[T], step: Callable[[T], object]) -> list[Exception | None]:
    """`step` on every item at once; each item's exception, or None, in item order."""
    return [o.error if isinstance(o, _Failed) else None for o in _settle(items, step)]


@dataclasses.dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


def _settle(items: Sequence[T], step: Callable[[T], R]) -> list[R | _Failed]:
    def attempt(item: T) -> R | _Failed:
        try:
            return step(item)
        except Exception as exc:
            return _Failed(exc)

    if len(items) <= 1:
        return [attempt(item) for item in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, attempt, item) for item in items]
    return [future.result() for future in futures]


def _since(clock: float) -> float:
    return round(time.monotonic() - clock, 3)


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _describe(exc: BaseException) -> str:
    """A failure as the history and report say it: a ReleaseError's own words, else its type."""
    if isinstance(exc, ReleaseError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
