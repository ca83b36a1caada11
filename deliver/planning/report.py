"""The markdown reports runs leave in the UI: a release's, a CI result's, a nightly's. Pure."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from deliver.planning.release import Outcome


def release_report(
    *,
    service: str,
    environment: str,
    outcome: Outcome,
    version: str,
    image: str,
    git_sha: str,
    requested_by: str,
    previous: tuple[str, str] | None,  # (version, git sha) that served before
    approval: Mapping[str, str] | None,
    timings_s: Mapping[str, float],
    commits: Sequence[str] | None,
    detail: str = "",
    migration: str = "",
) -> str:
    headline = {
        Outcome.LIVE: f"{version} is live",
        Outcome.FAILED: f"{version} failed; {previous[0] if previous else 'nothing'} kept serving",
        Outcome.SWITCHED_BACK: f"{version} failed in {environment} and was switched back",
        Outcome.ROLLED_BACK: f"rolled back to {version}",
    }.get(outcome, str(outcome))
    lines = [f"# {service} → {environment}: {headline}", ""]
    lines += [f"- image: `{image}`", f"- commit: `{git_sha}`", f"- requested by: {requested_by}"]
    if previous:
        lines.append(f"- before: {previous[0]} (`{previous[1]}`)")
    if approval:
        reason = approval.get("reason") or "no reason given"
        lines.append(f"- approved by {approval['approver']} at {approval['at']}: {reason}")
    if detail:
        lines.append(f"- what failed: {' '.join(detail.split())[:500]}")
    lines += ["", "## What changed", ""]
    if previous is None:
        lines.append("First release to this environment.")
    elif commits:
        lines += changelog_lines(commits)
    elif commits is not None:
        lines.append("No commits between the two versions.")
    else:
        lines.append(f"`{previous[1]}` → `{git_sha}` (commit list not available here)")
    if migration:
        lines += ["", "## Migration", "", "```", migration.rstrip(), "```"]
    if timings_s:
        lines += ["", "## Timings", "", "| step | seconds |", "| --- | ---: |"]
        lines += [f"| {step} | {seconds:.2f} |" for step, seconds in timings_s.items()]
    return "\n".join(lines) + "\n"


def ci_report(
    *,
    service: str,
    version: str,
    image: str,
    sha: str,
    ref: str,
    tags: Sequence[str],
    built: bool,
    checks: Sequence[tuple[str, str]],  # (name, status)
    scan_verdict: str,
    reused: Sequence[tuple[str, str]] = (),  # (step, flow run id) taken from earlier runs
) -> str:
    """The CI result a production approval's evidence quotes (it starts with "# CI of")."""
    listed = ", ".join(f"{name} {status}" for name, status in checks)
    how = "yes" if built else "no, the registry already held this source tree"
    report = (
        f"# CI of {service} {version}\n\n"
        f"- image: `{image}`\n- commit: `{sha}` ({ref})\n"
        f"- tags: {', '.join(tags)}\n"
        f"- built: {how}\n"
        f"- checks: {listed}\n- scan: {scan_verdict}\n"
    )
    if not reused:
        return report
    rows = "\n".join(
        f"| {step} | [{run[:8]}](/runs/flow-run/{run}) |" if run else f"| {step} | - |"
        for step, run in reused
    )
    return (
        f"{report}\n## Reused from earlier runs\n\n"
        "Their inputs were the same, so their outcomes are this run's; they did not run again.\n\n"
        f"| step | from flow run |\n|---|---|\n{rows}\n"
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NightlyReport:
    service: str
    sha: str
    checks: dict[str, str]  # name -> passed / failed
    tests_passed: int
    coverage: float | None
    dependencies: dict[str, str]
    benchmarks: dict[str, Any]
    metrics: list[dict[str, str]]


def nightly_report(report: NightlyReport, failures: Mapping[str, str]) -> str:
    lines = [f"# Nightly: {report.service} at `{report.sha[:12]}`", ""]
    lines += [f"- {name}: {status}" for name, status in report.checks.items()]
    coverage = f", coverage {report.coverage:.1f}%" if report.coverage is not None else ""
    lines += [f"- tests passed: {report.tests_passed}{coverage}", ""]
    for name, tail in failures.items():
        lines += [f"## {name} failed", "", "```", tail[-1500:], "```", ""]
    lines += ["## Dependencies (newest allowed)", "", "| package | version |", "| --- | --- |"]
    lines += [f"| {name} | {version} |" for name, version in sorted(report.dependencies.items())]
    for command, figures in report.benchmarks.items():
        lines += ["", f"## bench.{command}", "", "```json", json.dumps(figures, indent=2), "```"]
    lines += ["", "## Delivery metrics", "", "| metric | value | basis |", "| --- | --- | --- |"]
    lines += [f"| {r['metric']} | {r['value']} | {r['basis']} |" for r in report.metrics]
    return "\n".join(lines) + "\n"


CONVENTIONAL = re.compile(
    r"^(?P<kind>[a-z]+)(?:\((?P<scope>[^)]{1,40})\))?(?P<breaking>!)?: (?P<subject>\S.*)$"
)
SECTIONS = {
    "feat": "Features",
    "fix": "Fixes",
    "perf": "Performance",
    "refactor": "Refactoring",
    "docs": "Documentation",
    "test": "Tests",
    "build": "Build",
    "ci": "CI",
    "chore": "Chores",
}
RELEASE_VERSION = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]+)?$")


def is_release_version(version: str) -> bool:
    """A version from a `v*` tag (1.4.2, 2.0.0-rc.1), not a short sha."""
    return bool(RELEASE_VERSION.match(version))


def changelog_lines(commits: Sequence[str]) -> list[str]:
    """`sha subject` lines grouped by their Conventional Commits type (breaking changes first,
    then features, fixes...); a list as it is when none follows the convention."""
    parsed = [
        (line.partition(" ")[0], CONVENTIONAL.match(line.partition(" ")[2])) for line in commits
    ]
    if not any(match for _, match in parsed):
        return [f"- `{commit}`" for commit in commits]
    groups: dict[str, list[str]] = {}
    for (sha, match), line in zip(parsed, commits, strict=True):
        if match is None:
            groups.setdefault("Other", []).append(f"- {line.partition(' ')[2]} (`{sha}`)")
            continue
        scope = f"**{match['scope']}:** " if match["scope"] else ""
        entry = f"- {scope}{match['subject']} (`{sha}`)"
        if match["breaking"] or "BREAKING CHANGE" in match["subject"]:
            groups.setdefault("Breaking changes", []).append(entry)
        groups.setdefault(SECTIONS.get(match["kind"], "Other"), []).append(entry)
    order = ["Breaking changes", *SECTIONS.values(), "Other"]
    lines: list[str] = []
    for section in order:
        if section in groups:
            lines += [f"### {section}", "", *groups[section], ""]
    return lines[:-1]


def changelog(
    *, service: str, version: str, previous: tuple[str, str] | None, commits: Sequence[str]
) -> str:
    """The changelog artifact of a release: what changed since the version it replaced."""
    since = f"since {previous[0]}" if previous else "(first release)"
    return (
        "\n".join([f"# {service} {version}: changes {since}", "", *changelog_lines(commits)]) + "\n"
    )
