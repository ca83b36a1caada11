"""Image scans: an SBOM of OS and Python packages, pip-audit via an OSV service, trivy if any."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import MarkdownArtifact, create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

from deliver import commands
from deliver.errors import ScanFailed
from deliver.planning.ci import (
    Finding,
    parse_trivy,
    scan_cache_key,
    scan_verdict,
    severity_counts,
    severity_from_osv,
)
from deliver.planning.osv import cyclonedx_sbom, parse_dpkg_status, parse_python_metadata
from deliver.planning.sarif import markdown as sarif_markdown
from deliver.planning.sarif import sarif_key, scan_run
from deliver.spec import ScanPolicy
from deliver.tasks.engine import docker_client
from deliver.tasks.loading import http_client


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScanReport:
    image_id: str
    passed: bool
    verdict: str
    advisory_service: str
    reachable: bool
    os_packages: int
    python_packages: int
    counts: dict[str, int]
    findings: tuple[Finding, ...]
    scanners: tuple[str, ...]
    made_in: str = ""  # the flow run that scanned, named when a later run reuses the report


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks, so a tar stream is read without a copy on disk."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks, self._pending = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = cast(bytes, next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def image_inventory(image_id: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(OS packages, Python packages) read from the image's files; nothing in the image runs."""
    os_packages: list[tuple[str, str]] = []
    python_packages: set[tuple[str, str]] = set()
    with docker_client() as client:
        container = client.containers.create(image_id, entrypoint=["/nonexistent"])
        try:
            # The SDK yields the export as byte chunks; its stubs say str.
            chunks = cast(Iterator[bytes], container.export(chunk_size=1 << 20))
            stream = io.BufferedReader(_ChunkReader(chunks), 1 << 20)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = member.name.lstrip("./")
                    wanted_python = name.endswith(
                        (".dist-info/METADATA", ".egg-info/PKG-INFO")
                    ) and ("site-packages/" in name or "dist-packages/" in name)
                    if not member.isfile() or not (name == "var/lib/dpkg/status" or wanted_python):
                        continue
                    handle = tar.extractfile(member)
                    text = handle.read().decode(errors="replace") if handle else ""
                    if name == "var/lib/dpkg/status":
                        os_packages = parse_dpkg_status(text)
                    elif parsed := parse_python_metadata(text):
                        python_packages.add(parsed)
        finally:
            container.remove(force=True)
    return os_packages, sorted(python_packages)


def advisory_reachable(advisory_url: str) -> tuple[bool, str]:
    probe = {"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "0.0.0"}
    try:
        response = httpx.post(advisory_url, json=probe, timeout=10)
    except httpx.HTTPError as exc:
        return False, f"{advisory_url}: {type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return False, f"{advisory_url} answered {response.status_code}"
    return True, "reachable"


def _severity(http: httpx.Client, advisory_url: str, ids: list[str]) -> str:
    base = advisory_url.removesuffix("/query").removesuffix("/")
    for advisory in ids:
        try:
            response = http.get(f"{base}/vulns/{advisory}")
        except httpx.HTTPError:
            return "unknown"
        if response.status_code == 200:
            return severity_from_osv(response.json())
    return "unknown"


def audit_python(packages: list[tuple[str, str]], advisory_url: str) -> tuple[list[Finding], str]:
    """Findings from pip-audit for pinned `packages`, with severities looked up by advisory id."""
    if not packages:
        return [], "no Python packages to audit"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirements:
        requirements.write("".join(f"{name}=={version}\n" for name, version in packages))
    pip_audit = str(Path(sys.executable).parent / "pip-audit")
    done = commands.run(
        [
            pip_audit,
            "-r",
            requirements.name,
            "--no-deps",
            "--disable-pip",
            "-s",
            "osv",
            "--osv-url",
            advisory_url,
            "-f",
            "json",
            "--progress-spinner",
            "off",
        ],
        timeout_s=600,
    )
    Path(requirements.name).unlink()
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ScanFailed(image="-", reason=f"pip-audit failed: {last}") from None
    findings = []
    http = http_client(timeout=10)
    for dependency in report.get("dependencies", []):
        for vuln in dependency.get("vulns", []):
            ids = [vuln["id"], *vuln.get("aliases", [])]
            findings.append(
                Finding(
                    package=dependency["name"],
                    version=dependency["version"],
                    advisory=vuln["id"],
                    aliases=tuple(vuln.get("aliases", [])),
                    severity=_severity(http, advisory_url, ids),
                    fixed_in=tuple(vuln.get("fix_versions", [])),
                )
            )
    http.close()
    return findings, f"pip-audit {len(packages)} package(s)"


def run_trivy(trivy: str, image_id: str) -> list[Finding]:
    """OS and language findings from trivy, when the machine has it (with its own database)."""
    done = commands.run(
        [trivy, "image", "--quiet", "--format", "json", "--scanners", "vuln", image_id],
        timeout_s=900,
    )
    if not done.ok:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ScanFailed(image=image_id, reason=f"trivy failed: {last}")
    return parse_trivy(json.loads(done.stdout or "{}"))


def _scan_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return scan_cache_key(parameters["image_id"], parameters["advisory_url"], parameters["policy"])


def _findings_markdown(service: str, report: ScanReport) -> str:
    rows = "\n".join(
        f"| {f.package} | {f.version} | {f.advisory} | {f.severity} | {', '.join(f.fixed_in)} |"
        for f in report.findings
    )
    table = "| package | version | advisory | severity | fixed in |\n|---|---|---|---|---|\n" + rows
    counts = ", ".join(f"{k}: {v}" for k, v in report.counts.items())
    outcome = "passed" if report.passed else "FAILED"
    return (
        f"# Scan of {service}\n\n**{outcome}**: {report.verdict}\n\n"
        f"Image `{report.image_id}`, {report.os_packages} OS and {report.python_packages} Python "
        f"packages, advisories from `{report.advisory_service}` ({counts}).\n\n"
        + (table if report.findings else "No known vulnerabilities.")
    )


@task(
    name="scan_image",
    cache_key_fn=_scan_key,
    cache_expiration=datetime.timedelta(hours=6),  # advisories change; rescan at least this often
    persist_result=True,
)
def scan_image(
    image_id: str,
    service: str,
    advisory_url: str,
    policy: ScanPolicy,
    dockerfile: str = "Dockerfile",
) -> ScanReport:
    """SBOM (CycloneDX, kept as an artifact), pip-audit of its Python packages, then the policy."""
    logger = get_run_logger()
    os_packages, python_packages = image_inventory(image_id)
    sbom = cyclonedx_sbom(image=image_id, os_packages=os_packages, python_packages=python_packages)
    create_markdown_artifact(
        key=f"sbom-{service}",
        markdown=f"# SBOM of {service}\n\n```json\n{json.dumps(sbom, indent=1)}\n```\n",
        description=f"CycloneDX SBOM of {image_id}",
    )
    logger.info("SBOM: %d OS and %d Python packages", len(os_packages), len(python_packages))
    reachable, detail = advisory_reachable(advisory_url)
    findings: list[Finding] = []
    scanners = []
    if reachable:
        findings, used = audit_python(python_packages, advisory_url)
        scanners.append(used)
    else:
        logger.warning("Advisory service unreachable: %s", detail)
    trivy = shutil.which("trivy")
    if trivy:
        findings.extend(run_trivy(trivy, image_id))
        scanners.append("trivy")
    passed, verdict = scan_verdict(findings, reachable=reachable, policy=policy)
    report = ScanReport(
        image_id=image_id,
        passed=passed,
        verdict=verdict,
        advisory_service=advisory_url,
        reachable=reachable,
        os_packages=len(os_packages),
        python_packages=len(python_packages),
        counts=severity_counts(findings),
        findings=tuple(findings),
        scanners=tuple(scanners),
        made_in=str(flow_run.get_id() or ""),
    )
    create_markdown_artifact(
        key=f"scan-{service}", markdown=_findings_markdown(service, report), description=verdict
    )
    create_table_artifact(
        key=f"scan-counts-{service}",
        table=[
            {"severity": severity, "findings": count} for severity, count in report.counts.items()
        ],
        description=f"Findings by severity: {verdict}",
    )
    if not passed:
        scan_sarif_artifact(service, report, dockerfile).create()
        raise ScanFailed(image=image_id, reason=verdict)
    return report


def scan_sarif_artifact(service: str, report: ScanReport, dockerfile: str) -> MarkdownArtifact:
    """The scan's findings as SARIF, located at the Dockerfile the image was built from."""
    run = scan_run(
        report.findings, image=report.image_id, scanners=report.scanners, location=dockerfile
    )
    return MarkdownArtifact(
        key=sarif_key(service, "scan"),
        markdown=sarif_markdown(f"SARIF of the image scan ({service})", [run]),
        description=f"{len(report.findings)} finding(s)",
    )
