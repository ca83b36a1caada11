"""`release` and `rollback`: put an image by digest live in an environment, keeping it serving.

The flows only sequence: check the input, take the environment's lock, and hand the hosts to
the release engine (`deliver.rollout`), which starts the candidate, checks it, switches
traffic batch by batch, and undoes everything on any failure. Production waits for an
approval between preparing its first batch and switching it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Literal, TypeVar, cast

from prefect import State, flow, get_run_logger
from prefect.context import SyncClientContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run, asuspend_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelled
from pydantic import BaseModel, ConfigDict, Field, field_validator

from deliver.approval_gate import await_decision
from deliver.errors import DeployTargetInvalid, NothingToRollBackTo, NotOnStaging
from deliver.planning.approval import Decision, evidence_markdown, rollback_evidence_markdown
from deliver.planning.fleet import batches
from deliver.planning.notices import Notice, NoticeKind, checked_block_reference
from deliver.planning.release import (
    APPROVED_ENVIRONMENT,
    ENVIRONMENT_NAME,
    Approval,
    HostState,
    Outcome,
    ReleaseResult,
    environment_name_problem,
    image_reference_problem,
    label_problem,
    rollback_choice,
)
from deliver.planning.target import TargetView
from deliver.rollout import Request, Rollout, now
from deliver.tasks.approval import (
    check_decision,
    find_ci_evidence,
    read_approval_timeout,
    read_emergency_rollback,
    read_rollback_policy,
)
from deliver.tasks.deploy import open_target
from deliver.tasks.limits import held, release_limit_name
from deliver.tasks.notify import notification_block, notify, run_link
from deliver.tasks.probes import HttpProbes
from deliver.tasks.release_outcome import PrefectReporter

# A paused (not suspended) release checks for its resume this often.
POLL_S = 0.25

P = TypeVar("P")
R = TypeVar("R")


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


APPROVE_OPTIONS = '--approver <you> --code <your code> --reason "<why>"'


@contextlib.contextmanager
def environment_lock(environment: str) -> Iterator[None]:
    """One release at a time per environment: its strict global concurrency limit, leased and
    renewed while held, so a release killed with -9 frees it within the lease."""
    with held(release_limit_name(environment), "one release at a time"):
        yield


@contextlib.contextmanager
def rollout_of(block: str, notify_block: str | None, run: str, image: str) -> Iterator[Rollout]:
    """The release engine on the target's hosts for the service `image` was built for, for one
    step: each host's SSH connection is opened once and handed back when the step ends."""
    with open_target(block, image) as (target, hosts):
        yield Rollout(
            target,
            hosts,
            HttpProbes(target.app_name, target.environment),
            PrefectReporter(notify_block, run),
            get_run_logger(),
        )


def _request(parameters: ReleaseParameters, run: str) -> Request:
    return Request(
        image=parameters.image,
        version=parameters.version,
        git_sha=parameters.git_sha,
        requested_by=parameters.requested_by,
        run=run,
    )


@flow(name="release", log_prints=True)
async def release(parameters: ReleaseParameters) -> ReleaseResult | State[Any]:
    """Deploy `parameters.image` to its environment; on failure the old version keeps serving."""
    # The work is sync (SSH, HTTP, waits) and runs in a thread that keeps the run's context: an
    # async flow ends without the sync engine's join of its heartbeat thread (up to 1 s a run).
    return await asyncio.to_thread(with_one_client, _release, parameters)


def with_one_client(work: Callable[[P], R], parameters: P) -> R:
    """`work` with one API client for all its tasks: without it each sync task run makes its
    own, loading the CA bundle and fetching a CSRF token (tens of ms apiece)."""
    with SyncClientContext.get_or_create():
        return work(parameters)


def _release(parameters: ReleaseParameters) -> ReleaseResult | State[Any]:
    if parameters.notify_block:
        notification_block(parameters.notify_block)  # a wrong name fails before any host
    run = str(flow_run.get_id() or "")
    request = _request(parameters, run)
    with rollout_of(parameters.block, parameters.notify_block, run, parameters.image) as rollout:
        if rollout.target.environment != APPROVED_ENVIRONMENT:
            with environment_lock(rollout.target.environment):
                return rollout.deploy(request)
        timeout_s = int(read_approval_timeout(parameters.approval_policy))  # checks the policy
        staging = require_on_staging(rollout.target, parameters.image)
        rollout.pull_everywhere(parameters.image)
        with environment_lock(rollout.target.environment):
            production = rollout.prepare(request)
        target = rollout.target
    return approve_then_deploy(parameters, target, request, production, staging, timeout_s)


def require_on_staging(target: TargetView, image: str) -> HostState:
    """Staging's state, if it serves the very digest offered to production. Which target is
    staging is the production target's to say (`staging_target`), never the release's."""
    if target.staging_target is None:
        detail = "production names the DeployTarget its releases must be live on first"
        raise DeployTargetInvalid(block=target.block, field="staging_target", detail=detail)
    with open_target(target.staging_target, image, with_env=False) as (_, hosts):
        staging = hosts[0].read_state()
    if staging.live is None or staging.live.image != image:
        on_staging = staging.live.image if staging.live else "nothing"
        raise NotOnStaging(image=image, staging=target.staging_target, live=on_staging)
    return staging


def approve_then_deploy(
    parameters: ReleaseParameters,
    target: TargetView,
    request: Request,
    production: HostState,
    staging: HostState,
    timeout_s: int,
) -> ReleaseResult | State[Any]:
    """Wait for a valid decision; deploy on approval, else stop the candidates and say why."""
    evidence = evidence_markdown(
        image=parameters.image,
        version=parameters.version,
        git_sha=parameters.git_sha,
        requested_by=parameters.requested_by,
        production=production,
        staging=staging,
        ci=find_ci_evidence(parameters.image.rsplit("@", 1)[1]),
        candidate=candidate_text(parameters.version, target),
    )
    form = ask_for_approval(
        parameters.notify_block,
        target,
        request,
        evidence,
        f"requested by {parameters.requested_by}; healthy on staging; waits {timeout_s} s",
    )

    def wait(remaining_s: int, key: str) -> Decision | None:
        return next_decision(form, remaining_s, key)

    def decided(decision: Decision | None) -> ReleaseResult | State[Any]:
        with rollout_of(
            parameters.block, parameters.notify_block, request.run, parameters.image
        ) as rollout:
            if decision is None or decision.decision == "reject":
                rollout.withdraw(request)
                if decision is None:
                    return Cancelled(
                        message=f"No decision within {timeout_s} s: production was not changed."
                    )
                message = f"Rejected by {decision.approver}: {decision.reason}"
                get_run_logger().info(message)
                return Cancelled(message=message + " Production was not changed.")
            try:  # up to the policy's timeout has passed: staging may have moved on since
                require_on_staging(rollout.target, parameters.image)
            except NotOnStaging:
                rollout.withdraw(request)
                raise
            reason = decision.reason or "(no reason)"
            get_run_logger().info("Approved by %s: %s", decision.approver, reason)
            approval = Approval(approver=decision.approver, reason=decision.reason, at=now())
            return rollout.deploy(dataclasses.replace(request, approval=approval))

    return await_decision(
        wait=wait,
        refusal=lambda d: check_decision(parameters.approval_policy, d, parameters.requested_by),
        locked=lambda: environment_lock(target.environment),
        decided=decided,
        timeout_s=timeout_s,
        log=get_run_logger(),
    )


def ask_for_approval(
    notify_block: str | None, target: TargetView, request: Request, evidence: str, detail: str
) -> type[ApprovalDecision]:
    """Tell the team a decision is awaited, and the Resume form that shows the evidence."""
    notify(
        notify_block,
        Notice(
            kind=NoticeKind.APPROVAL_WAITING,
            service=target.app_name,
            version=request.version,
            environment=target.environment,
            link=run_link(request.run),
            detail=detail,
            command=f"deliver approve {request.run} {APPROVE_OPTIONS}",
        ),
    )
    # No decision is preset: the form marks it required, and the approver picks one.
    return ApprovalDecision.with_initial_data(description=evidence)


def next_decision(form: type[ApprovalDecision], remaining_s: int, key: str) -> Decision | None:
    """The next resume's answer, or None once the wait is over."""
    try:
        answer = _wait_for_decision(form, remaining_s, key)
    except FlowPauseTimeout:
        # Past the pause deadline the server allows no other transition: it ends the run as
        # Failed("The flow was paused and never resumed."). Say why, and change nothing.
        return None
    return Decision(
        decision=answer.decision, approver=answer.approver, reason=answer.reason, code=answer.code
    )


def candidate_text(version: str, target: TargetView) -> str:
    """What the approver is told waits: the first batch's candidates, and how the rest roll."""
    first = batches(target.hosts, target.max_unavailable)[0]
    if target.migrate:
        text = f"{version} pulled on {', '.join(h.ref for h in first)}; once approved, its "
        text += f"migration `{' '.join(target.migrate)}` runs, then it starts and is checked"
    else:
        text = f"{version} healthy in the idle slot of {', '.join(h.ref for h in first)}, "
        text += "serving no traffic yet"
    if len(target.hosts) > len(first):
        text += (
            f"; once approved it rolls out {target.max_unavailable} host(s) at a time, "
            "and a failure switches every host back"
        )
    return text


def _wait_for_decision(form: type[ApprovalDecision], timeout_s: int, key: str) -> ApprovalDecision:
    """Suspend when run from a deployment (no process held while waiting), else pause. The flow
    is async and its work runs in a thread: Prefect's async pause runs on a loop of the
    thread's own, with the run's context (its sync form would hand back coroutines here)."""
    if deployment.id:
        waiting = asuspend_flow_run(wait_for_input=form, timeout=timeout_s, key=key)
    else:
        poll_s = cast(int, POLL_S)  # typed int, used as seconds to sleep
        waiting = apause_flow_run(
            wait_for_input=form, timeout=timeout_s, poll_interval=poll_s, key=key
        )
    return cast(ApprovalDecision, asyncio.run(cast(Coroutine[Any, Any, Any], waiting)))


class RollbackParameters(BaseModel):
    """Where to roll back, and optionally to which kept version."""

    model_config = ConfigDict(extra="forbid")

    environment: str = Field(pattern=ENVIRONMENT_NAME.pattern, description="Where to roll back.")
    to_version: str | None = Field(
        default=None, description="A kept version; default: the newest kept one not live."
    )
    requested_by: str = Field(description="Who asked for the rollback.")
    target_block: str | None = Field(default=None, description="DeployTarget block name.")
    service: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Which service, where the target serves several; default its app_name.",
    )
    approval_policy: str = Field(
        default="production-approvals",
        description="ApprovalPolicy block: whether a production rollback waits for an approval.",
    )
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
async def rollback(parameters: RollbackParameters) -> ReleaseResult | State[Any]:
    """Put a kept version back with the release's own start, health, switch and smoke steps."""
    return await asyncio.to_thread(with_one_client, _rollback, parameters)


def _rollback(parameters: RollbackParameters) -> ReleaseResult | State[Any]:
    if parameters.notify_block:
        notification_block(parameters.notify_block)
    run = str(flow_run.get_id() or "")
    block = parameters.target_block or parameters.environment
    with open_target(block, service=parameters.service, with_env=False) as (target, hosts):
        environment = target.environment
        needs_approval, timeout_s = False, 0.0
        if environment == APPROVED_ENVIRONMENT:
            needs_approval, timeout_s = read_rollback_policy(parameters.approval_policy)
        with environment_lock(environment):
            state = hosts[0].read_state()
            choice = rollback_choice(state, parameters.to_version)
            if isinstance(choice, str):
                raise NothingToRollBackTo(environment=environment, detail=choice)
            image, version, git_sha = choice
            request = Request(
                image=image,
                version=version,
                git_sha=git_sha or "0000000",
                requested_by=parameters.requested_by,
                run=run,
                outcome=Outcome.ROLLED_BACK,
            )
            if not needs_approval:
                with rollout_of(block, parameters.notify_block, run, image) as rollout:
                    return rollout.deploy(request)
    return approve_then_roll_back(parameters, block, target, request, state, int(timeout_s))


def approve_then_roll_back(
    parameters: RollbackParameters,
    block: str,
    target: TargetView,
    request: Request,
    production: HostState,
    timeout_s: int,
) -> ReleaseResult | State[Any]:
    """A production rollback waits for an approval like a release (one that may be given at
    once); people the policy lists for emergencies may approve their own, with their code."""
    emergency = read_emergency_rollback(parameters.approval_policy)
    evidence = rollback_evidence_markdown(
        environment=target.environment,
        to_version=request.version,
        image=request.image,
        requested_by=request.requested_by,
        production=production,
        emergency=emergency,
    )
    form = ask_for_approval(
        parameters.notify_block,
        target,
        request,
        evidence,
        f"rollback requested by {request.requested_by}; waits {timeout_s} s",
    )
    was_live = production.live.image if production.live else None

    def decided(decision: Decision | None) -> ReleaseResult | State[Any]:
        if decision is None:
            return Cancelled(message=f"No decision within {timeout_s} s: nothing was changed.")
        if decision.decision == "reject":
            message = f"Rejected by {decision.approver}: {decision.reason}"
            get_run_logger().info(message)
            return Cancelled(message=message + " Nothing was changed.")
        with rollout_of(block, parameters.notify_block, request.run, request.image) as rollout:
            live = rollout.record_host.read_state().live
            if (live.image if live else None) != was_live:
                detail = "what serves changed while the rollback waited; ask for it again"
                raise NothingToRollBackTo(environment=target.environment, detail=detail)
            reason = decision.reason or "(no reason)"
            get_run_logger().info("Rollback approved by %s: %s", decision.approver, reason)
            approval = Approval(approver=decision.approver, reason=decision.reason, at=now())
            return rollout.deploy(dataclasses.replace(request, approval=approval))

    return await_decision(
        wait=lambda remaining_s, key: next_decision(form, remaining_s, key),
        refusal=lambda d: check_decision(
            parameters.approval_policy, d, request.requested_by, rollback=True
        ),
        locked=lambda: environment_lock(target.environment),
        decided=decided,
        timeout_s=timeout_s,
        log=get_run_logger(),
    )


def release_here(parameters: ReleaseParameters) -> State[Any]:
    """Run `release` in this process, from sync code; its final state."""
    call = release(parameters, return_state=True)
    return asyncio.run(cast(Coroutine[Any, Any, State[Any]], call))


def rollback_here(parameters: RollbackParameters) -> State[Any]:
    """Run `rollback` in this process, from sync code; its final state."""
    call = rollback(parameters, return_state=True)
    return asyncio.run(cast(Coroutine[Any, Any, State[Any]], call))
