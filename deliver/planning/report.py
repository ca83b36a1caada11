"""The release report: the markdown a release leaves on its run page. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
        lines += [f"- `{commit}`" for commit in commits]
    elif commits is not None:
        lines.append("No commits between the two versions.")
    else:
        lines.append(f"`{previous[1]}` → `{git_sha}` (commit list not available here)")
    if timings_s:
        lines += ["", "## Timings", "", "| step | seconds |", "| --- | ---: |"]
        lines += [f"| {step} | {seconds:.2f} |" for step, seconds in timings_s.items()]
    return "\n".join(lines) + "\n"
