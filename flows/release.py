"""`release`: deploy an image by digest to an environment, keeping it serving at every step.

Staging: start the new version in the idle slot, check its health and smoke, then retire the
old slot. Production (a DeployTarget with nginx): the same, then switch nginx's upstream, smoke
through the front, switch back on failure, and retire the old slot after a drain window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import time
from collections.abc import Iterator
from typing import Any, Literal, cast

from prefect import State, flow, get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelled
from pydantic import BaseModel, ConfigDict, Field, field_validator

from deliver.errors import (
    HealthCheckFailed,
    NothingToRollBackTo,
    NotOnStaging,
    ReleaseError,
    SmokeCheckFailed,
)
from deliver.planning.approval import Decision
from deliver.planning.events import Outcome
from deliver.planning.notices import Notice, NoticeKind, checked_block_reference
from deliver.planning.release import (
    APPROVED_ENVIRONMENT,
    ENVIRONMENT_NAME,
    HostState,
    Release,
    RunningSlot,
    Slot,
    after_failure,
    after_success,
    environment_name_problem,
    image_reference_problem,
    label_problem,
    rollback_choice,
)
from deliver.tasks.approval import (
    check_decision,
    evidence_markdown,
    find_ci_evidence,
    read_approval_timeout,
)
from deliver.tasks.deploy import (
    TargetView,
    prune_images,
    pull_image,
    read_host_state,
    read_target,
    start_slot,
    stop_slot,
    write_host_state,
)
from deliver.tasks.limits import held, release_limit_name
from deliver.tasks.notify import notification_block, notify, run_link
from deliver.tasks.release_outcome import FinishedRelease, publish_outcome
from flows import fleet
from flows.release_steps import (
    check_health,
    drain,
    health_key,
    move_traffic,
    smoke_test,
    surveyed_state,
)

# A paused (not suspended) release checks for its resume this often.
POLL_S = 0.25


class ReleaseParameters(BaseModel):
    """What to release where; every value is checked before anything touches a host."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="The image by digest: repository@sha256:<64 hex>.")
    environment: str = Field(
        pattern=ENVIRONMENT_NAME.pattern,
        description="Where to release: staging, production (which waits for an approval), or "
        "any environment with a DeployTarget.",
    )
    version: str = Field(description="Version label, like 1.4.2 or a short sha.")
    git_sha: str = Field(description="The commit the image was built from.")
    requested_by: str = Field(description="Who asked for this release.")
    target_block: str | None = Field(
        default=None, description="DeployTarget block name; defaults to the environment's name."
    )
    staging_block: str = Field(
        default="staging", description="DeployTarget where production releases must be live first."
    )
    approval_policy: str = Field(
        default="production-approvals", description="ApprovalPolicy block for production."
    )
    notify_block: str | None = Field(
        default=None,
        description="Notification block as type/name (custom-webhook/team-chat); none: silent.",
    )

    @field_validator("image")
    @classmethod
    def _by_digest(cls, value: str) -> str:
        problem = image_reference_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return _token("version", value)

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> Any:
        return _environment_name(value) if isinstance(value, str) else value

    @field_validator("notify_block")
    @classmethod
    def _notify_block(cls, value: str | None) -> str | None:
        return checked_block_reference(value)

    @field_validator("git_sha")
    @classmethod
    def _sha(cls, value: str) -> str:
        return _token("git_sha", value)

    @field_validator("requested_by")
    @classmethod
    def _person(cls, value: str) -> str:
        return _token("person", value)

    @property
    def block(self) -> str:
        return self.target_block or self.environment


def _environment_name(value: str) -> str:
    problem = environment_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _token(kind: str, value: str) -> str:
    problem = label_problem(kind, value)
    if problem:
        raise ValueError(problem)
    return value


class ApprovalDecision(RunInput):
    """The resume form of a production release waiting for approval."""

    decision: Literal["approve", "reject"] = Field(description="Approve or reject the release.")
    approver: str = Field(description="Your name, as the approval policy lists it.")
    reason: str = Field(default="", description="Why; required to reject.")
    code: str = Field(default="", description="Your one-time code, if the policy gives you one.")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    approver: str
    reason: str
    at: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseResult:
    environment: str
    version: str
    image: str
    slot: str
    url: str
    previous: str | None
    pruned: tuple[str, ...]
    timings_s: dict[str, float]
    approval: Approval | None = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _record(
    params: ReleaseParameters, outcome: str, detail: str = "", approval: Approval | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "at": _now(),
        "outcome": outcome,
        "version": params.version,
        "image": params.image,
        "git_sha": params.git_sha,
        "requested_by": params.requested_by,
        "flow_run": str(flow_run.get_id() or ""),
        "detail": detail[:500],
    }
    if approval is not None:
        record["approval"] = dataclasses.asdict(approval)
    return record


def _wait_for_decision(form: type[ApprovalDecision], timeout_s: int, key: str) -> ApprovalDecision:
    """Suspend when run from a deployment (no process held while waiting), else pause."""
    if deployment.id:
        return suspend_flow_run(wait_for_input=form, timeout=timeout_s, key=key)
    poll_s = cast(int, POLL_S)  # typed int, used as seconds to sleep
    return pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=poll_s, key=key)


def require_on_staging(params: ReleaseParameters) -> HostState:
    """Staging's state, if it serves the very digest offered to production."""
    staging = read_host_state(params.staging_block)
    if staging.live is None or staging.live.image != params.image:
        on_staging = staging.live.image if staging.live else "nothing"
        raise NotOnStaging(image=params.image, staging=params.staging_block, live=on_staging)
    return staging


def approve_then_deploy(
    params: ReleaseParameters, target: TargetView, staging: HostState, run: str, timeout_s: int
) -> ReleaseResult | State[Any]:
    """Wait for a valid decision; deploy on approval, else change nothing and say why.

    The decision is checked with the environment's limit already held: taken first, it is
    the first write after the resume, which on SQLite meets "database is locked" far less.
    """
    logger = get_run_logger()
    production = prepare_candidate(params, target, run)
    evidence = evidence_markdown(
        image=params.image,
        version=params.version,
        git_sha=params.git_sha,
        requested_by=params.requested_by,
        production=production,
        staging=staging,
        ci=find_ci_evidence(params.image.rsplit("@", 1)[1]),
        candidate=_candidate_text(params.version, target),
    )
    form = ApprovalDecision.with_initial_data(description=evidence, decision="approve")
    notify(
        params.notify_block,
        Notice(
            kind=NoticeKind.APPROVAL_WAITING,
            service=target.app_name,
            version=params.version,
            environment=target.environment,
            link=run_link(run),
            detail=f"requested by {params.requested_by}; healthy on staging; waits {timeout_s} s",
            command=f'deliver approve {run} --approver <you> --reason "<why>"',
        ),
    )
    deadline = time.monotonic() + timeout_s
    for attempt in itertools.count(1):
        remaining = max(1, int(deadline - time.monotonic()))
        try:
            answer = _wait_for_decision(form, remaining, key=f"approval-{attempt}")
        except FlowPauseTimeout:
            # Past the pause deadline the server allows no other transition: it ends the run
            # as Failed("The flow was paused and never resumed."). Say why, and change nothing.
            message = f"No decision within {timeout_s} s: production was not changed."
            logger.warning(message)
            with environment_lock(target):
                withdraw_candidate(params, target, run)
            return Cancelled(message=message)
        with environment_lock(target):
            decision = Decision(
                decision=answer.decision,
                approver=answer.approver,
                reason=answer.reason,
                code=answer.code,
            )
            refused = check_decision(params.approval_policy, decision, params.requested_by)
            if refused:
                logger.warning("Resume refused (%s); still waiting for a valid decision.", refused)
                continue
            if decision.decision == "reject":
                message = f"Rejected by {decision.approver}: {decision.reason}"
                logger.info(message)
                withdraw_candidate(params, target, run)
                return Cancelled(message=message + " Production was not changed.")
            logger.info("Approved by %s: %s", decision.approver, decision.reason or "(no reason)")
            approval = Approval(approver=decision.approver, reason=decision.reason, at=_now())
            state = read_host_state(params.block)  # what is live may have changed while waiting
            return _deploy(params, target, state, approval, run=run)
    raise AssertionError("unreachable")  # pragma: no cover


def _candidate_text(version: str, target: TargetView) -> str:
    if target.hosts:
        return (
            f"{version} pulled on {len(target.hosts)} hosts; once approved it rolls out "
            f"{target.max_unavailable} host(s) at a time; a failure switches every host back"
        )
    return f"{version} healthy in the idle slot, serving no traffic yet"


@contextlib.contextmanager
def environment_lock(target: TargetView) -> Iterator[None]:
    """One release at a time per environment: its strict global concurrency limit, leased and
    renewed while held, so a release killed with -9 frees it within the lease."""
    with held(release_limit_name(target.environment), "one release at a time"):
        yield


def _ours(running: list[RunningSlot], slot: Slot, params: ReleaseParameters, run: str) -> bool:
    """Whether `slot` runs the candidate that flow run `run` started for these parameters."""
    return bool(run) and any(
        r.slot is slot and r.run == run and r.image == params.image and r.version == params.version
        for r in running
    )


def prepare_candidate(params: ReleaseParameters, target: TargetView, run: str) -> HostState:
    """Start the candidate in production's idle slot and check its health, before the approval
    wait, so approval leads straight to the switch. It serves no traffic until then; a rejected
    or expired release stops it, and any other release to the environment may replace it.
    Idempotent: a suspended run re-executed after its resume finds its candidate running."""
    block = params.block
    if target.hosts:
        return read_host_state(block)  # a fleet starts its candidates batch by batch, approved
    with environment_lock(target):
        state, running, slot = surveyed_state(block, read_host_state(block), _now())
        if not _ours(running, slot, params, run):
            start_slot(block, params.image, slot, params.version, run)
        try:
            check_health(
                f"{target.slot_url(slot)}{target.health_path}",
                target.health_timeout_s,
                health_key(target),
            )
        except HealthCheckFailed as exc:
            stop_slot(block, slot)
            write_host_state(block, after_failure(state, _record(params, "failed", str(exc))))
            raise
    return state


def withdraw_candidate(params: ReleaseParameters, target: TargetView, run: str) -> None:
    """Stop this run's candidate if it is still the one waiting in the idle slot (lock held)."""
    if target.hosts:
        return  # a fleet starts no candidate before its approval
    _, running, slot = surveyed_state(params.block, read_host_state(params.block), _now())
    if _ours(running, slot, params, run):
        stop_slot(params.block, slot)


def _verify_candidate(target: TargetView, slot: Slot, timings: dict[str, float]) -> None:
    """Health of the new slot, probed directly; without a front, its smoke checks too."""
    started = time.monotonic()
    url = target.slot_url(slot)
    check_health(f"{url}{target.health_path}", target.health_timeout_s, health_key(target))
    if not target.blue_green:
        smoke_test(url, target.smoke)
    timings["verify_candidate"] = round(time.monotonic() - started, 3)


def _switch_and_verify(
    params: ReleaseParameters, target: TargetView, state: HostState, slot: Slot
) -> None:
    """Move traffic to `slot`; if the front then fails its smoke checks, move it back."""
    assert target.front_url is not None  # noqa: S101 (blue_green targets have a front)
    upstream = move_traffic(target, slot)
    try:
        smoke_test(target.front_url, target.smoke, upstream)
    except (SmokeCheckFailed, HealthCheckFailed) as exc:
        if state.live is not None:
            move_traffic(target, state.live.slot)
            exc.rolled_back = True
        raise


@flow(name="release", log_prints=True)
def release(parameters: ReleaseParameters) -> ReleaseResult | State[Any]:
    """Deploy `parameters.image` to its environment; on failure the old version keeps serving."""
    block = parameters.block
    if parameters.notify_block:
        notification_block(parameters.notify_block)  # a wrong name fails before any host
    target = read_target(block)
    run = str(flow_run.get_id() or "")
    try:
        if target.environment == APPROVED_ENVIRONMENT:
            timeout_s = int(read_approval_timeout(parameters.approval_policy))  # checks policy
            staging = require_on_staging(parameters)
            if target.hosts:
                fleet.pull_everywhere(target, parameters.image)
            else:
                pull_image(block, parameters.image)
            return approve_then_deploy(parameters, target, staging, run, timeout_s)
        with environment_lock(target):
            return _deploy(parameters, target, read_host_state(block), None, run=run)
    except ReleaseError as exc:
        if not isinstance(exc, NotOnStaging):  # refused up front: nothing was tried
            _report_failure(parameters, target, exc, run)
        raise


def _report_failure(
    parameters: ReleaseParameters, target: TargetView, exc: ReleaseError, run: str
) -> None:
    live = read_host_state(parameters.block).live
    outcome = Outcome.ROLLED_BACK if exc.rolled_back else Outcome.FAILED
    publish_outcome(
        FinishedRelease(
            block=parameters.block,
            service=target.app_name,
            environment=target.environment,
            outcome=outcome,
            version=parameters.version,
            image=parameters.image,
            git_sha=parameters.git_sha,
            requested_by=parameters.requested_by,
            at=_now(),
            previous=(live.version, live.git_sha) if live else None,
            detail=str(exc),
        )
    )
    serving = live.version if live else "nothing"
    kind = NoticeKind.ROLLED_BACK if exc.rolled_back else NoticeKind.RELEASE_FAILED
    notify(
        parameters.notify_block,
        Notice(
            kind=kind,
            service=target.app_name,
            version=parameters.version,
            environment=target.environment,
            link=run_link(run),
            detail=f"{str(exc).splitlines()[0]} — {serving} is serving",
        ),
    )


def _report_success(
    parameters: ReleaseParameters,
    target: TargetView,
    before: HostState,
    approval: Approval | None,
    outcome: str,
    timings: dict[str, float],
    run: str,
) -> None:
    rollback = outcome == "rolled-back"
    previous = (before.live.version, before.live.git_sha) if before.live else None
    publish_outcome(
        FinishedRelease(
            block=parameters.block,
            service=target.app_name,
            environment=target.environment,
            outcome=Outcome.ROLLBACK if rollback else Outcome.LIVE,
            version=parameters.version,
            image=parameters.image,
            git_sha=parameters.git_sha,
            requested_by=parameters.requested_by,
            at=_now(),
            previous=previous,
            approval=dataclasses.asdict(approval) if approval else None,
            timings_s=timings,
        )
    )
    if rollback:
        kind, detail = NoticeKind.ROLLED_BACK, f"by {parameters.requested_by}"
    elif target.environment == APPROVED_ENVIRONMENT:
        kind = NoticeKind.PRODUCTION_RELEASED
        detail = (
            f"approved by {approval.approver}: {approval.reason or 'no reason given'}"
            if approval
            else f"requested by {parameters.requested_by}"
        )
    else:
        kind, detail = NoticeKind.STAGING_DEPLOYED, f"requested by {parameters.requested_by}"
    replaced = f"; replaced {previous[0]}" if previous else ""
    notify(
        parameters.notify_block,
        Notice(
            kind=kind,
            service=target.app_name,
            version=parameters.version,
            environment=target.environment,
            detail=detail + replaced,
            link=run_link(run),
        ),
    )


def _deploy(
    parameters: ReleaseParameters,
    target: TargetView,
    state: HostState,
    approval: Approval | None,
    outcome: str = "released",
    run: str = "",
) -> ReleaseResult:
    """The part that changes what serves; runs while the environment's limit is held."""
    if target.hosts:
        return _deploy_fleet(parameters, target, approval, outcome, run)
    logger = get_run_logger()
    block = parameters.block
    state, running, slot = surveyed_state(block, state, _now())
    timings: dict[str, float] = {}
    began = _now()
    logger.info(
        "Releasing %s to %s (%s slot); live now: %s",
        parameters.version,
        target.environment,
        slot.value,
        state.live.version if state.live else "nothing",
    )
    started = time.monotonic()
    if not _ours(running, slot, parameters, run):
        pull_image(block, parameters.image)
        timings["pull"] = round(time.monotonic() - started, 3)
        start_slot(block, parameters.image, slot, parameters.version, run)
    try:
        _verify_candidate(target, slot, timings)
        if target.blue_green:
            _switch_and_verify(parameters, target, state, slot)
    except ReleaseError as exc:
        stop_slot(block, slot)
        failed = {**_record(parameters, "failed", str(exc)), "began": began}
        write_host_state(block, after_failure(state, failed))
        raise
    if state.live is not None and state.live.slot is not slot:
        drain(target, state.live.slot)
        stop_slot(block, state.live.slot)
    new = Release(
        version=parameters.version,
        image=parameters.image,
        git_sha=parameters.git_sha,
        slot=slot,
        since=_now(),
    )
    record = {**_record(parameters, outcome, approval=approval), "began": began}
    new_state, pruned = after_success(state, new, target.keep_versions, record)
    write_host_state(block, new_state)
    left = prune_images(block, list(pruned)) if pruned else []
    timings["total"] = round(time.monotonic() - started, 3)
    url = target.front_url if target.blue_green and target.front_url else target.slot_url(slot)
    logger.info(
        "%s %s is live on %s at %s", target.environment, parameters.version, slot.value, url
    )
    _report_success(parameters, target, state, approval, outcome, timings, run)
    return ReleaseResult(
        environment=target.environment,
        version=parameters.version,
        image=parameters.image,
        slot=slot.value,
        url=url,
        previous=state.live.version if state.live else None,
        pruned=tuple(image for image in pruned if image not in left),
        timings_s=timings,
        approval=approval,
    )


def _deploy_fleet(
    parameters: ReleaseParameters,
    target: TargetView,
    approval: Approval | None,
    outcome: str,
    run: str,
) -> ReleaseResult:
    """`_deploy` for a fleet: every host ends on the new version, or every host on its old one."""
    began = _now()
    started = time.monotonic()
    plans = fleet.survey(target, began)
    before = plans[0].state
    get_run_logger().info(
        "Releasing %s to %s: %d hosts, %d at a time; live now: %s",
        parameters.version,
        target.environment,
        len(plans),
        target.max_unavailable,
        before.live.version if before.live else "nothing",
    )
    try:
        fleet.roll_out(target, plans, parameters.image, parameters.version, run)
    except ReleaseError as exc:
        failed = {**_record(parameters, "failed", str(exc)), "began": began}
        for plan in plans:
            write_host_state(plan.host.block, after_failure(plan.state, failed))
        raise
    timings = {"rollout": round(time.monotonic() - started, 3)}
    fleet.retire_old(target, plans)
    record = {**_record(parameters, outcome, approval=approval), "began": began}
    pruned: set[str] = set()
    for plan in plans:
        new = Release(
            version=parameters.version,
            image=parameters.image,
            git_sha=parameters.git_sha,
            slot=plan.slot,
            since=_now(),
        )
        new_state, gone = after_success(plan.state, new, target.keep_versions, record)
        write_host_state(plan.host.block, new_state)
        if gone:
            pruned.update(set(gone) - set(prune_images(plan.host.block, list(gone))))
    timings["total"] = round(time.monotonic() - started, 3)
    _report_success(parameters, target, before, approval, outcome, timings, run)
    return ReleaseResult(
        environment=target.environment,
        version=parameters.version,
        image=parameters.image,
        slot=",".join(plan.slot.value for plan in plans),
        url=target.front_url or "",
        previous=before.live.version if before.live else None,
        pruned=tuple(sorted(pruned)),
        timings_s=timings,
        approval=approval,
    )


class RollbackParameters(BaseModel):
    """Where to roll back, and optionally to which kept version."""

    model_config = ConfigDict(extra="forbid")

    environment: str = Field(pattern=ENVIRONMENT_NAME.pattern, description="Where to roll back.")
    to_version: str | None = Field(
        default=None, description="A kept version; default: the newest kept one not live."
    )
    requested_by: str = Field(description="Who asked for the rollback.")
    target_block: str | None = Field(default=None, description="DeployTarget block name.")
    notify_block: str | None = Field(
        default=None, description="Notification block as type/name; none: silent."
    )

    @field_validator("notify_block")
    @classmethod
    def _notify_block(cls, value: str | None) -> str | None:
        return checked_block_reference(value)

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> Any:
        return _environment_name(value) if isinstance(value, str) else value

    @field_validator("to_version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return None if value is None else _token("version", value)

    @field_validator("requested_by")
    @classmethod
    def _person(cls, value: str) -> str:
        return _token("person", value)


@flow(name="rollback", log_prints=True)
def rollback(parameters: RollbackParameters) -> ReleaseResult:
    """Switch back to a kept version with the release's own health, smoke and switch steps."""
    block = parameters.target_block or parameters.environment
    if parameters.notify_block:
        notification_block(parameters.notify_block)
    target = read_target(block)
    with environment_lock(target):
        state = read_host_state(block)
        choice = rollback_choice(state, parameters.to_version)
        if isinstance(choice, str):
            raise NothingToRollBackTo(environment=target.environment, detail=choice)
        image, version, git_sha = choice
        release_parameters = ReleaseParameters(
            image=image,
            environment=parameters.environment,
            version=version,
            git_sha=git_sha or "0000000",
            requested_by=parameters.requested_by,
            target_block=parameters.target_block,
            notify_block=parameters.notify_block,
        )
        run = str(flow_run.get_id() or "")
        return _deploy(release_parameters, target, state, None, outcome="rolled-back", run=run)
