"""`ci-pipeline`: check out, run the checks in parallel, build, test the container, scan, push.

Its output, an image in the registry by digest with its evidence, is what `release` ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import Artifact, MarkdownArtifact, TableArtifact
from prefect.context import SyncClientContext
from prefect.events import emit_event
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, field_validator

from deliver.errors import BuildFailed, CheckFailed, ChecksFailed
from deliver.planning.ci import (
    BuildPlan,
    TestCounts,
    container_test_cache_key,
    longest_first,
    plan_build,
    ref_name_problem,
    scan_cache_key,
    standard_build_args,
)
from deliver.planning.dockerfile import base_image, declared_args
from deliver.planning.events import CI_FAILED, CI_STARTED, ci_progress, ci_succeeded
from deliver.planning.notices import NoticeKind, checked_block_reference
from deliver.planning.report import ci_report
from deliver.planning.runtime import runtime_facts
from deliver.planning.sarif import markdown as sarif_markdown
from deliver.planning.sarif import sarif_key
from deliver.planning.services import filled_env
from deliver.spec import PathInRepository, PipelineSpec, RepositoryLocation
from deliver.tasks.app_environment import app_environment, job_image
from deliver.tasks.checks import CheckResult, check_key, run_check
from deliver.tasks.docker_image import (
    build_image,
    context_digest,
    local_image_id,
    test_container,
)
from deliver.tasks.job import Job, RunContainers, run_containers
from deliver.tasks.limits import Lease, build_limit_name, taking
from deliver.tasks.notify import notification_block
from deliver.tasks.registry import (
    RegistryImage,
    RegistryLookup,
    find_image,
    push_image,
    tag_image,
)
from deliver.tasks.reuse import (
    Reused,
    ReuseKeys,
    find_reusable,
    keep_durations,
    last_durations,
)
from deliver.tasks.scan import ScanReport, scan_image, scan_sarif_artifact
from flows.prepared_app import PreparedApp, checked_out_app

PUBLIC_OSV = "https://api.osv.dev/v1/query"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "deliver"


class CiParameters(BaseModel):
    """What to build: a repository at a ref, with the pipeline its spec declares."""

    model_config = ConfigDict(extra="forbid")

    repo: RepositoryLocation = Field(
        min_length=1, description="Git URL or local path of the application repo."
    )
    ref: str = Field(default="main", description="Branch, tag or commit sha to build.")
    spec_path: PathInRepository = Field(
        default="deliver.yaml",
        description="Pipeline spec inside the repo; the application is the folder it is in.",
    )
    registry_block: str = Field(
        default="sandbox-registry",
        description="Name of the DockerRegistryCredentials block to look up and push with.",
    )
    advisory_url: str = Field(
        default=PUBLIC_OSV, description="OSV query endpoint for vulnerability advisories."
    )
    build_args: dict[str, str] = Field(
        default_factory=dict,
        description="Build args added to the spec's (never secrets), e.g. BASE_IMAGE.",
    )
    cache_dir: str | None = Field(
        default=None, description="Where app environments and work dirs live; ~/.cache/deliver."
    )
    untrusted: bool = Field(
        default=False,
        description="A pull request's code: its environments and caches are kept apart from, "
        "and never read by, trusted runs.",
    )
    notify_block: str | None = Field(
        default=None,
        description="Notification block as type/name (custom-webhook/team-chat), told when CI "
        "fails; none: silent.",
    )

    @field_validator("notify_block")
    @classmethod
    def _notify_block(cls, value: str | None) -> str | None:
        return checked_block_reference(value)

    @field_validator("ref")
    @classmethod
    def _valid_ref(cls, value: str) -> str:
        problem = ref_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CheckOutcome:
    name: str
    status: str  # passed, failed or cached
    duration_s: float
    exit_code: int
    tests: TestCounts | None = None
    coverage: float | None = None
    tail: str = ""
    sarif: str = ""  # SARIF runs the check wrote, as JSON
    reused_from: str = ""  # the flow run whose result this run took, when cached


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CiResult:
    service: str
    image: str  # repository@sha256:..., what a release deploys
    digest: str
    image_id: str
    sha: str
    ref: str
    version: str
    tags: tuple[str, ...]
    built: bool  # False when the registry already held this source tree
    checks: tuple[CheckOutcome, ...]
    scan: ScanReport


def _passed(result: CheckResult, *, cached: bool) -> CheckOutcome:
    return CheckOutcome(
        name=result.name,
        status="cached" if cached else "passed",
        duration_s=result.duration_s,
        exit_code=result.exit_code,
        tests=result.tests,
        coverage=result.coverage,
        sarif=result.sarif,
        reused_from=result.made_in if cached else "",
    )


def _outcome(name: str, future: PrefectFuture[CheckResult]) -> CheckOutcome:
    value = future.result(raise_on_failure=False)
    if isinstance(value, CheckResult):
        return _passed(value, cached=future.state.name == "Cached")
    if isinstance(value, CheckFailed):
        return CheckOutcome(
            name=name,
            status="failed",
            duration_s=0.0,
            exit_code=value.exit_code,
            tail=value.tail,
            sarif=value.sarif,
        )
    return CheckOutcome(name=name, status="failed", duration_s=0.0, exit_code=-1, tail=str(value))


def run_checks(
    spec: PipelineSpec,
    job: Job,
    placeholders: dict[str, str],
    reused: Reused,
    last_durations: Mapping[str, float],
) -> list[CheckOutcome]:
    """Every check not reused at once in the job container, the slowest last time first; all
    outcomes are collected (and published when one failed) before any failure is raised."""
    to_run = {check.name: check for check in spec.checks if check.name not in reused.checks}
    futures = {
        name: run_check.with_options(retries=to_run[name].retries, retry_delay_seconds=2).submit(
            to_run[name], job, placeholders
        )
        for name in longest_first(list(to_run), last_durations)
    }
    wait(list(futures.values()))
    outcomes = [
        _passed(reused.checks[c.name], cached=True)
        if c.name in reused.checks
        else _outcome(c.name, futures[c.name])
        for c in spec.checks
    ]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        publish_checks(spec.service, outcomes)
        summary = "\n".join(f"- {o.name}: exit {o.exit_code}\n{o.tail[-1500:]}" for o in failed)
        raise ChecksFailed(failed=[o.name for o in failed], summary=summary)
    return outcomes


@task(name="publish_checks")
def publish_checks(
    service: str, outcomes: list[CheckOutcome], reused_scan: tuple[ScanReport, str] | None = None
) -> None:
    """For a run that fails after its checks: their table and every check's SARIF, and the
    SARIF of a scan it reused, (report, Dockerfile): a failed run's artifacts hold all its
    tools' results."""
    artifacts = checks_artifacts(service, outcomes)
    if reused_scan is not None:
        artifacts.append(scan_sarif_artifact(service, *reused_scan))
    for artifact in artifacts:
        artifact.create()


def checks_artifacts(
    service: str, outcomes: list[CheckOutcome], sarif_of: list[CheckOutcome] | None = None
) -> list[Artifact]:
    """The table of `outcomes`, and the SARIF of `sarif_of` (all of them unless given)."""
    rows = []
    for o in outcomes:
        tests = f"{o.tests.passed} passed, {o.tests.failed} failed" if o.tests else ""
        coverage = f"{o.coverage:.1f}%" if o.coverage is not None else ""
        rows.append(
            {
                "check": o.name,
                "status": o.status,
                "duration_s": o.duration_s,
                "tests": tests,
                "coverage": coverage,
            }
        )
    artifacts: list[Artifact] = [
        TableArtifact(key=f"ci-checks-{service}", table=rows, description="CI checks")
    ]
    for o in outcomes if sarif_of is None else sarif_of:
        if o.sarif:
            runs = json.loads(o.sarif)
            artifacts.append(
                MarkdownArtifact(
                    key=sarif_key(service, o.name),
                    markdown=sarif_markdown(f"SARIF of check {o.name} ({service})", runs),
                    description=f"{sum(len(r.get('results') or []) for r in runs)} result(s)",
                )
            )
    return artifacts


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PassedRun:
    """What a run that passed publishes."""

    result: CiResult
    dockerfile: str  # in the repository: where the scan's findings are located
    reused: Reused


@task(name="publish_result")
async def publish_result(run: PassedRun) -> None:
    """The run's report, naming what it took from earlier runs (whose artifacts show those
    steps), then the checks' table and the SARIF of what ran in this run. One task at the
    end, async so its artifacts are created at once on the flow's own API client."""
    result, reused = run.result, run.reused
    artifacts: list[Artifact] = []
    ran = [c for c in result.checks if c.status != "cached"]
    if ran:
        artifacts += checks_artifacts(result.service, list(result.checks), sarif_of=ran)
    if reused.scan is None:
        artifacts.append(scan_sarif_artifact(result.service, result.scan, run.dockerfile))
    report = MarkdownArtifact(
        key=f"ci-{result.service}",
        markdown=ci_report(
            service=result.service,
            version=result.version,
            image=result.image,
            sha=result.sha,
            ref=result.ref,
            tags=result.tags,
            built=result.built,
            checks=[(c.name, c.status) for c in result.checks],
            scan_verdict=result.scan.verdict,
            reused=reused.listing(),
        ),
        description=f"{result.service} {result.version}: {result.image}",
    )
    await asyncio.gather(*(artifact.acreate() for artifact in [*artifacts, report]))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TestedImage:
    image_id: str
    pushed: RegistryImage  # what the registry holds under the run's tags
    scan: ScanReport
    built: bool  # False when the registry already held this source tree


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ImageStep:
    """What the image's part of a run works from, once its checks have passed."""

    parameters: CiParameters
    app: PreparedApp
    plan: BuildPlan
    containers: RunContainers
    reused: Reused


def build_slot(
    lookup: RegistryLookup, image: str
) -> contextlib.AbstractContextManager[Lease | None]:
    """The image's build slot, taken while the checks run, unless the registry holds this
    source tree already. Two runs of one source tree at once would both build and push it, and
    the second push would move the first's tags: the second waits, then finds the first's image.
    """
    if lookup.existing is not None:
        return contextlib.nullcontext()
    return taking(build_limit_name(image), "one build and push of an image at a time")


def _tested_image(step: ImageStep, lookup: RegistryLookup, slot: Lease | None) -> TestedImage:
    if slot is None:
        return _image(step, lookup)
    slot.wait()
    lookup = find_image(
        step.parameters.registry_block,
        step.app.spec.image.name,
        step.plan.source_tag,
        list(step.plan.tags),
    )
    return _image(step, lookup)


def _image(step: ImageStep, lookup: RegistryLookup) -> TestedImage:
    """Build (unless the registry holds this source tree), test the container and scan
    (unless an earlier run did, on this image), then push or re-tag."""
    parameters, app, plan, containers, reused = (
        step.parameters,
        step.app,
        step.plan,
        step.containers,
        step.reused,
    )
    existing = lookup.existing
    spec = app.spec
    if existing is None:
        built = build_image(
            Path(plan.context),
            plan.dockerfile,
            lookup.repository,
            list(plan.tags),
            plan.build_args,
            plan.labels,
        )
        image_id = built.image_id
    else:
        get_run_logger().info(
            "Source tree unchanged since %s: no build, no push", existing.reference
        )
        image_id = existing.image_id  # what the reused container test and scan were of

    health = None
    if reused.container_test is None:
        health = test_container.submit(
            image_id,
            spec.container,
            containers.run_label,
            spec.service,
            bool(spec.services),
            filled_env(spec.container.env, containers.access),
        )
    scan: ScanReport | PrefectFuture[ScanReport]
    if reused.scan is None:
        dockerfile = dockerfile_in_repo(app, plan)
        scan = scan_image.submit(
            image_id, spec.service, parameters.advisory_url, spec.scan, dockerfile
        )
    else:
        scan = reused.scan
    pending: list[PrefectFuture[Any]] = [f for f in (health, scan) if isinstance(f, PrefectFuture)]
    wait(pending)
    if health is not None:
        health.result()
    report = scan.result() if isinstance(scan, PrefectFuture) else scan

    if existing is None:
        pushed = push_image(parameters.registry_block, spec.image.name, list(plan.tags))
        return TestedImage(image_id=image_id, pushed=pushed, scan=report, built=True)
    untagged = [tag for tag in plan.tags if tag not in lookup.tagged]
    if untagged:
        tag_image(parameters.registry_block, spec.image.name, existing.digest, untagged)
    else:
        get_run_logger().info("Its tags %s already point at it", ", ".join(plan.tags))
    return TestedImage(image_id=image_id, pushed=existing, scan=report, built=False)


def dockerfile_in_repo(app: PreparedApp, plan: BuildPlan) -> str:
    dockerfile = Path(plan.context, plan.dockerfile).relative_to(app.checkout.workdir.resolve())
    return dockerfile.as_posix()


@flow(name="ci-pipeline", log_prints=True)
async def ci_pipeline(parameters: CiParameters) -> CiResult:
    """Check out `parameters.ref`, check, build, test, scan and push; return the image by digest."""
    cache = Path(parameters.cache_dir) if parameters.cache_dir else DEFAULT_CACHE_DIR
    workdir = cache / "work" / str(flow_run.get_id() or "local")
    if parameters.notify_block:
        notification_block(parameters.notify_block)  # a wrong name fails before any work
    # One API client for every sync task (without it each builds its own, ~20 ms apiece),
    # made while git checks out: its CA bundle takes ~30 ms to load.
    sync_client = asyncio.create_task(asyncio.to_thread(SyncClientContext))

    def tell_failed(app: PreparedApp) -> None:
        emit_event(**ci_progress(event=CI_FAILED, **_ci_resource(parameters, app)))

    async with checked_out_app(
        parameters.repo,
        parameters.ref,
        parameters.spec_path,
        workdir,
        notify_block=parameters.notify_block,
        failure=NoticeKind.CI_FAILED,
        on_failure=tell_failed,
    ) as app:
        with await sync_client:
            emit_event(**ci_progress(event=CI_STARTED, **_ci_resource(parameters, app)))
            passed = _pipeline(parameters, app, cache, workdir)
            await publish_result(passed)
            _announce(parameters, app, passed.result)
            return passed.result


def _ci_resource(parameters: CiParameters, app: PreparedApp) -> dict[str, str]:
    kind = app.checkout.resolved.kind.value
    return {"service": app.service, "ref": parameters.ref, "kind": kind}


def build_plan(parameters: CiParameters, app: PreparedApp) -> BuildPlan:
    """Made before the checks run: they may write in the tree, the image's identity may not
    change with it."""
    context = (app.app_dir / app.spec.image.context).resolve()
    root = app.checkout.workdir.resolve()
    if not context.is_relative_to(root):  # a symlink in the repository pointing out of it
        detail = f"image.context {app.spec.image.context!r} resolves outside the repository"
        raise BuildFailed(context=str(context), detail=detail)
    if not (context / app.spec.image.dockerfile).is_file():  # before any container starts
        detail = f"no {app.spec.image.dockerfile} in the build context"
        raise BuildFailed(context=str(context), detail=detail)
    given = {**app.spec.image.build_args, **parameters.build_args}
    dockerfile_text = (context / app.spec.image.dockerfile).read_text(errors="replace")
    declared = declared_args(dockerfile_text)
    standard = standard_build_args(
        app.checkout.resolved, source=parameters.repo, declared=declared, given=given
    )
    return plan_build(
        image_name=app.spec.image.name,
        context=str(context),
        dockerfile=app.spec.image.dockerfile,
        build_args=given,
        describing_args=standard,
        base_image_id=local_image_id(base_image(dockerfile_text, given)),
        tree_digest=context_digest(context, app.spec.image.dockerfile),
        resolved=app.checkout.resolved,
        source=parameters.repo,
        runtime=runtime_facts(app.spec),
    )


def _pipeline(parameters: CiParameters, app: PreparedApp, cache: Path, workdir: Path) -> PassedRun:
    spec, checkout = app.spec, app.checkout
    plan = build_plan(parameters, app)
    # The lookup reads the registry only, so it runs while the environment is prepared.
    first_lookup = find_image.submit(
        parameters.registry_block, spec.image.name, plan.source_tag, list(plan.tags)
    )
    base = job_image(app.app_dir, spec, dict(plan.build_args))
    environment = app_environment(
        app.app_dir, spec.environment, base, cache, untrusted=parameters.untrusted
    )
    placeholders = {
        "advisory_url": parameters.advisory_url,
        "requirements": environment.runtime_requirements,
    }
    lookup = first_lookup.result()
    found = lookup.existing.image_id if lookup.existing else None
    keys = ReuseKeys(
        checks={
            check.name: check_key(
                check,
                app_dir=app.app_dir,
                environment_digest=environment.frozen_digest,
                placeholders=placeholders,
                untrusted=parameters.untrusted,
            )
            for check in spec.checks
        },
        container_test=container_test_cache_key(found, spec.container) if found else None,
        scan=scan_cache_key(found, parameters.advisory_url, spec.scan) if found else None,
    )
    reused = find_reusable(keys)
    run_label = str(flow_run.get_id() or "local")
    with (
        run_containers(run_label, spec.services) as containers,
        build_slot(lookup, spec.image.name) as slot,
    ):
        job = containers.plan_job(
            app.checkout.workdir,
            app.app_dir,
            environment,
            filled_env(spec.env, containers.access),
            cache,
            workdir,
            untrusted=parameters.untrusted,
        )
        timed = last_durations(cache, spec.service, untrusted=parameters.untrusted)
        try:
            checks = run_checks(spec, job, placeholders, reused, timed)
        finally:
            containers.stop_job()
        ran = {c.name: c.duration_s for c in checks if c.status == "passed"}
        keep_durations(cache, spec.service, ran, untrusted=parameters.untrusted)
        try:
            step = ImageStep(
                parameters=parameters, app=app, plan=plan, containers=containers, reused=reused
            )
            image = _tested_image(step, lookup, slot)
        except Exception:
            scan = (reused.scan, dockerfile_in_repo(app, plan)) if reused.scan else None
            publish_checks(spec.service, checks, scan)
            raise
    result = CiResult(
        service=spec.service,
        image=image.pushed.reference,
        digest=image.pushed.digest,
        image_id=image.image_id,
        sha=checkout.resolved.sha,
        ref=parameters.ref,
        version=checkout.resolved.version,
        tags=plan.tags,
        built=image.built,
        checks=tuple(checks),
        scan=image.scan,
    )
    return PassedRun(result=result, dockerfile=dockerfile_in_repo(app, plan), reused=reused)


def _announce(parameters: CiParameters, app: PreparedApp, result: CiResult) -> None:
    get_run_logger().info("CI of %s %s: %s", result.service, result.version, result.image)
    # Deployment triggers (prefect.yaml) turn this into releases: main to staging, v* tags
    # to production. The chain shows in the UI's event feed and automations.
    emit_event(
        **ci_succeeded(
            **_ci_resource(parameters, app),
            image=result.image,
            version=result.version,
            sha=result.sha,
        )
    )
