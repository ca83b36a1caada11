"""SARIF 2.1.0, the format code-scanning tools import: the image scan's findings as one run,
the runs a check wrote itself (bandit's `-f sarif`), and one log of them all. Pure."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from deliver.planning.ci import Finding

VERSION = "2.1.0"
SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SCAN_TOOL = "deliver-image-scan"

# GitHub's code scanning reads a rule's `security-severity` (CVSS-like, 0.0 to 10.0).
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "2.0"}
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}


def sarif_log(runs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"$schema": SCHEMA, "version": VERSION, "runs": list(runs)}


def scan_run(
    findings: Sequence[Finding], *, image: str, scanners: Sequence[str], location: str
) -> dict[str, Any]:
    """The image scan as one run: a rule per advisory, a result per vulnerable package, each
    located at `location` (the Dockerfile the image was built from, relative to the repo)."""
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for finding in findings:
        rule = rules.setdefault(
            finding.advisory,
            {
                "id": finding.advisory,
                "shortDescription": {"text": f"{finding.advisory} in {finding.package}"},
                "helpUri": f"https://osv.dev/vulnerability/{finding.advisory}",
                "properties": {
                    "tags": ["security", "vulnerability", *finding.aliases],
                    "security-severity": _SECURITY_SEVERITY.get(finding.severity, "0.0"),
                },
            },
        )
        fixed = ", ".join(finding.fixed_in) or "no fixed version yet"
        results.append(
            {
                "ruleId": rule["id"],
                "level": _LEVEL.get(finding.severity, "warning"),
                "message": {
                    "text": f"{finding.package} {finding.version} in {image} is affected by "
                    f"{finding.advisory} ({finding.severity}); fixed in: {fixed}"
                },
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": location}}}],
                "partialFingerprints": {
                    "package": f"{finding.package}@{finding.version}/{finding.advisory}"
                },
            }
        )
    return {
        "tool": {
            "driver": {
                "name": SCAN_TOOL,
                "informationUri": "https://osv.dev/",
                "rules": list(rules.values()),
                "properties": {"scanners": list(scanners)},
            }
        },
        "results": results,
    }


class NotSarif(ValueError):
    pass


def runs_of(text: str, *, prefix: str = "") -> list[dict[str, Any]]:
    """The runs of a SARIF 2.1.0 log a tool wrote, their relative locations made relative to
    the repository (`prefix`: the app's folder in it, `""` at its root)."""
    try:
        log = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotSarif(f"not JSON: {exc}") from None
    if not isinstance(log, dict) or log.get("version") != VERSION:
        raise NotSarif(f"not a SARIF {VERSION} log")
    runs = log.get("runs")
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        raise NotSarif("its runs are not a list of objects")
    if prefix:
        for run in runs:
            for result in run.get("results") or []:
                for location in result.get("locations") or []:
                    artifact = location.get("physicalLocation", {}).get("artifactLocation", {})
                    if _relative(artifact.get("uri")):
                        artifact["uri"] = f"{prefix.rstrip('/')}/{artifact['uri']}"
    return runs


def _relative(uri: object) -> bool:
    return isinstance(uri, str) and not uri.startswith("/") and not re.match(r"^\w+:", uri)


def summary_lines(runs: Iterable[Mapping[str, Any]], limit: int = 20) -> list[str]:
    """One line a result, `RULE path:line message`, for the log and a failed check's tail."""
    lines = []
    for run in runs:
        for result in run.get("results") or []:
            where = ""
            for location in result.get("locations") or []:
                physical = location.get("physicalLocation", {})
                uri = physical.get("artifactLocation", {}).get("uri", "")
                line = physical.get("region", {}).get("startLine")
                where = f"{uri}:{line}" if line else uri
                break
            message = str(result.get("message", {}).get("text", "")).splitlines()
            lines.append(f"{result.get('ruleId', '?')} {where} {message[0] if message else ''}")
    if len(lines) > limit:
        return [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


def markdown(title: str, runs: Sequence[Mapping[str, Any]]) -> str:
    """An artifact that shows the results and carries the log (read back by `sarif_from`)."""
    found = summary_lines(runs, limit=50)
    shown = "\n".join(f"- `{line}`" for line in found) or "No results."
    body = json.dumps(sarif_log(runs), indent=1)
    return f"# {title}\n\n{shown}\n\n```json\n{body}\n```\n"


_BLOCK = re.compile(r"```json\n(.*)\n```", re.DOTALL)


def sarif_from(artifact_markdown: str) -> list[dict[str, Any]]:
    """The runs a `markdown` artifact carries."""
    found = _BLOCK.search(artifact_markdown)
    return runs_of(found[1]) if found else []


def sarif_key(service: str, tool: str) -> str:
    """The artifact key of one tool's SARIF for a service (keys: lowercase, digits, dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"sarif-{service}-{tool}".lower())
