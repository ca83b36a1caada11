"""What the CI pipeline decides from values alone: ref names, tags, labels, cache keys, verdicts."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence

from deliver.planning.runtime import RUNTIME_LABEL, RuntimeFacts
from deliver.spec import SEVERITY_ORDER, CheckSpec, ContainerSpec, ScanPolicy

SHORT_SHA = 7
MAX_TAG = 128
_HEX_SHA = re.compile(r"^[0-9a-f]{7,40}$")


class RefKind(enum.Enum):
    BRANCH = "branch"
    TAG = "tag"
    COMMIT = "commit"


SOURCE_TAG_PREFIX = "src-"  # the tag naming an image by the source tree it was built from


def ref_name_problem(ref: str) -> str | None:
    """None when `ref` is a valid git ref name (git check-ref-format rules), else why not."""
    if not ref or ref == "@":
        return "a ref must be a branch, tag or commit sha"
    if ref.startswith(("-", "/")) or ref.endswith(("/", ".", ".lock")):
        return "a ref cannot start with '-' or '/' or end with '/', '.' or '.lock'"
    if ".." in ref or "//" in ref or "@{" in ref:
        return "a ref cannot contain '..', '//' or '@{'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in " ~^:?*[\\" for c in ref):
        return "a ref cannot contain spaces, control characters or any of ~^:?*[\\"
    if any(part.startswith(".") for part in ref.split("/")):
        return "no part of a ref can start with '.'"
    return None


def looks_like_sha(ref: str) -> bool:
    return bool(_HEX_SHA.match(ref))


def docker_tag(text: str) -> str:
    """A registry tag from a branch or tag name: [A-Za-z0-9_.-], not starting with '.' or '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).lstrip(".-")
    return (cleaned or "ref")[:MAX_TAG]


def version_from_tag(tag: str) -> str:
    return tag[1:] if re.match(r"^v\d", tag) else tag


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedRef:
    ref: str
    kind: RefKind
    sha: str
    commit_time: str  # ISO 8601, from the commit, so rebuilds of one commit label alike

    @property
    def short_sha(self) -> str:
        return self.sha[:SHORT_SHA]

    @property
    def version(self) -> str:
        return version_from_tag(self.ref) if self.kind is RefKind.TAG else self.short_sha


def image_tags(resolved: ResolvedRef, source_tag: str) -> list[str]:
    """Short sha, branch or version, and the source-tree tag that lets a later run find it."""
    tags = [resolved.short_sha]
    if resolved.kind is RefKind.BRANCH:
        tags.append(docker_tag(resolved.ref))
    elif resolved.kind is RefKind.TAG:
        tags.append(docker_tag(resolved.version))
    tags.append(source_tag)
    return list(dict.fromkeys(tags))


def oci_labels(resolved: ResolvedRef, *, source: str, tree: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.revision": resolved.sha,
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.created": resolved.commit_time,
        "org.opencontainers.image.version": resolved.version,
        "dev.deliver.source-tree": tree,
    }


def standard_build_args(
    resolved: ResolvedRef, *, source: str, declared: set[str], given: Mapping[str, str]
) -> dict[str, str]:
    """What CI passes for the usual build args a Dockerfile declares and the spec leaves unset:
    VERSION and GIT_SHA, and the OCI ones (REVISION, SOURCE, CREATED), so what runs can say
    what was built."""
    standard = {
        "VERSION": resolved.version,
        "GIT_SHA": resolved.sha,
        "REVISION": resolved.sha,
        "SOURCE": source,
        "CREATED": resolved.commit_time,
    }
    return {
        name: value for name, value in standard.items() if name in declared and name not in given
    }


def source_tree_tag(
    *,
    tree: str,
    dockerfile: str,
    build_args: Mapping[str, str],
    runtime: str = "",
    base_image_id: str = "",
) -> str:
    """A tag naming what the image is built from: the context's digest (the Dockerfile's text
    included), the Dockerfile's path, build args, the runtime facts it is labelled with, and the
    id of the base image it starts from (a base image updated under its name rebuilds)."""
    extra = [*([runtime] if runtime else []), *([f"base:{base_image_id}"] if base_image_id else [])]
    material = json.dumps([tree, dockerfile, sorted(build_args.items()), *extra])
    return SOURCE_TAG_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BuildPlan:
    """The image's identity, fixed by the commit before any check writes in the tree: what is
    built from where, and every name and label it gets."""

    image_name: str  # in the registry, without the registry's address
    context: str  # absolute path of the build context
    dockerfile: str
    build_args: Mapping[str, str]
    source_tag: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]


def plan_build(
    *,
    image_name: str,
    context: str,
    dockerfile: str,
    build_args: Mapping[str, str],
    tree_digest: str,
    resolved: ResolvedRef,
    source: str,
    runtime: RuntimeFacts | None = None,
    describing_args: Mapping[str, str] | None = None,
    base_image_id: str = "",
) -> BuildPlan:
    """`tree_digest` is the digest of what the context sends (after .dockerignore); `runtime`
    goes with the image as a label, for every release of it. `describing_args` (VERSION,
    GIT_SHA...) are passed to the build but not part of its identity: an image whose inputs
    did not change is reused, and says which build made it."""
    runtime_label = runtime.to_label() if runtime else ""
    source_tag = source_tree_tag(
        tree=tree_digest,
        dockerfile=dockerfile,
        build_args=build_args,
        runtime=runtime_label,
        base_image_id=base_image_id,
    )
    labels = oci_labels(resolved, source=source, tree=source_tag)
    if runtime_label:
        labels[RUNTIME_LABEL] = runtime_label
    return BuildPlan(
        image_name=image_name,
        context=context,
        dockerfile=dockerfile,
        build_args={**(describing_args or {}), **build_args},
        source_tag=source_tag,
        tags=tuple(image_tags(resolved, source_tag)),
        labels=labels,
    )


# Raised when a kept result gains or loses a field, so results of an older shape are not
# reused: 2, the check's sarif; 3, the run each result was made in.
CHECK_RESULT_SHAPE = 3
CONTAINER_TEST_SHAPE = 2
SCAN_REPORT_SHAPE = 2


def check_cache_key(
    check: CheckSpec,
    *,
    files_digest: str,
    environment_digest: str,
    placeholders: Mapping[str, str] | None = None,
) -> str:
    """What a check's outcome depends on: its command, the files it reads, the tools' versions,
    and the shape of the result that is kept (a result of an older shape is not reused)."""
    filled = sorted((placeholders or {}).items())
    material = json.dumps(
        [
            CHECK_RESULT_SHAPE,
            check.name,
            check.run,
            check.inputs,
            files_digest,
            environment_digest,
            filled,
        ]
    )
    return f"check-{check.name}-" + hashlib.sha256(material.encode()).hexdigest()


def longest_first(names: Sequence[str], last_durations: Mapping[str, float]) -> list[str]:
    """The order to start `names` in: those never timed first, as given (one may be the
    longest), then the rest slowest first, so the check a run waits for starts first."""
    untimed = [name for name in names if name not in last_durations]
    timed = sorted((n for n in names if n in last_durations), key=lambda n: -last_durations[n])
    return [*untimed, *timed]


def container_test_cache_key(image_id: str, container: ContainerSpec) -> str:
    """What the container test's outcome depends on: the image, its port, health path and env."""
    env = hashlib.sha256(repr(sorted(container.env.items())).encode()).hexdigest()[:12]
    return (
        f"container-test-{CONTAINER_TEST_SHAPE}-{image_id}-{container.port}-"
        f"{container.health_path}-{env}"
    )


def scan_cache_key(image_id: str, advisory_url: str, policy: ScanPolicy) -> str:
    """What the scan's outcome depends on (and the advisories of the day: it also expires)."""
    return f"scan-{SCAN_REPORT_SHAPE}-{image_id}-{advisory_url}-{policy.model_dump_json()}"


def expand_command(argv: Sequence[str], placeholders: Mapping[str, str]) -> list[str]:
    """Fill `{name}` placeholders; an unknown one is an error naming the known ones."""
    expanded = []
    for arg in argv:
        for name in re.findall(r"\{([a-z_]+)\}", arg):
            if name not in placeholders:
                known = ", ".join(f"{{{key}}}" for key in sorted(placeholders))
                msg = f"unknown placeholder {{{name}}} in {arg!r}; known: {known}"
                raise ValueError(msg)
            arg = arg.replace(f"{{{name}}}", placeholders[name])
        expanded.append(arg)
    return expanded


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TestCounts:
    passed: int
    failed: int
    errors: int
    skipped: int


def parse_junit(xml_text: str) -> TestCounts:
    root = ET.fromstring(xml_text)  # noqa: S314 (pytest's own report)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = failed = errors = skipped = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0))
        errors += int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    passed = total - failed - errors - skipped
    return TestCounts(passed=passed, failed=failed, errors=errors, skipped=skipped)


def parse_coverage(json_text: str) -> float:
    """Total line coverage in percent from coverage.py's JSON report."""
    return float(json.loads(json_text)["totals"]["percent_covered"])


def tail(lines: Sequence[str], count: int = 30) -> str:
    return "\n".join(lines[-count:])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    package: str
    version: str
    advisory: str
    aliases: tuple[str, ...]
    severity: str
    fixed_in: tuple[str, ...]


def severity_from_osv(record: Mapping[str, object]) -> str:
    """Severity an OSV record states: GitHub's database_specific label, else 'unknown'."""
    specific = record.get("database_specific")
    if isinstance(specific, Mapping):
        label = str(specific.get("severity", "")).lower()
        label = {"moderate": "medium"}.get(label, label)
        if label in SEVERITY_ORDER:
            return label
    return "unknown"


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(SEVERITY_ORDER, 0)
    for finding in findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    return counts


def scan_verdict(
    findings: Sequence[Finding], *, reachable: bool, policy: ScanPolicy
) -> tuple[bool, str]:
    """(passed, why): the spec's policy applied to the findings of one scan."""
    if not reachable:
        if policy.fail_when_unreachable:
            return False, "the advisory service could not be reached, so nothing was audited"
        return True, "the advisory service could not be reached (allowed by policy): NOT audited"
    blocking = [f for f in findings if f.severity in policy.fail_on]
    if blocking:
        named = ", ".join(f"{f.package} {f.version} ({f.advisory}, {f.severity})" for f in blocking)
        return False, f"{len(blocking)} finding(s) at a failing severity: {named}"
    return True, f"{len(findings)} finding(s), none at {', '.join(policy.fail_on) or 'any'}"


def parse_trivy(report: Mapping[str, object]) -> list[Finding]:
    """Findings from trivy's JSON report (Results[].Vulnerabilities[])."""
    findings = []
    results = report.get("Results") or []
    for result in results if isinstance(results, list) else []:
        for vuln in result.get("Vulnerabilities") or []:
            severity = str(vuln.get("Severity", "unknown")).lower()
            findings.append(
                Finding(
                    package=str(vuln.get("PkgName", "?")),
                    version=str(vuln.get("InstalledVersion", "?")),
                    advisory=str(vuln.get("VulnerabilityID", "?")),
                    aliases=(),
                    severity=severity if severity in SEVERITY_ORDER else "unknown",
                    fixed_in=tuple(v for v in [vuln.get("FixedVersion")] if v),
                )
            )
    return findings
