"""Pure CI planning: refs, tags, labels, cache keys, reports, push streams, advisories, verdicts."""

from typing import Any

import pytest

from deliver.planning.ci import (
    Finding,
    RefKind,
    ResolvedRef,
    check_cache_key,
    docker_tag,
    expand_command,
    image_tags,
    longest_first,
    oci_labels,
    parse_coverage,
    parse_junit,
    parse_trivy,
    ref_name_problem,
    scan_verdict,
    severity_from_osv,
    source_tree_tag,
)
from deliver.planning.osv import (
    affects,
    cyclonedx_sbom,
    parse_dpkg_status,
    parse_python_metadata,
)
from deliver.planning.registry import read_push_stream, registry_api_base
from deliver.spec import CheckSpec, ScanPolicy

SHA = "0123456789abcdef0123456789abcdef01234567"


def resolved(kind: RefKind, ref: str) -> ResolvedRef:
    return ResolvedRef(ref=ref, kind=kind, sha=SHA, commit_time="2026-11-22T02:00:00+00:00")


@pytest.mark.parametrize("ref", ["main", "feature/x", "v1.2.3", SHA, "release-2026.11"])
def test_valid_ref_names(ref):
    """Branches, tags and shas pass git's ref-name rules."""
    assert ref_name_problem(ref) is None


@pytest.mark.parametrize(
    "ref", ["", "-rf", "a..b", "a b", "x~1", "x^", "a:b", "end/", "a.lock", "@", "x@{1}", ".hidden"]
)
def test_invalid_ref_names(ref):
    """Anything git would refuse as a ref name is refused before any command runs."""
    assert ref_name_problem(ref) is not None


def test_branch_image_tags():
    """A branch build is tagged with the short sha, the branch and the source tag."""
    tags = image_tags(resolved(RefKind.BRANCH, "feature/login"), "src-abc")
    assert tags == ["0123456", "feature-login", "src-abc"]


def test_version_tag_image_tags():
    """A v-tag build is tagged with the version without its v."""
    tags = image_tags(resolved(RefKind.TAG, "v2.0.1"), "src-abc")
    assert tags == ["0123456", "2.0.1", "src-abc"]


def test_docker_tag_sanitises():
    """Characters a registry tag can't hold become '-', and a leading '.' or '-' goes."""
    assert docker_tag("-feat/ü x") == "feat-x"
    assert len(docker_tag("a" * 300)) == 128


def test_oci_labels_use_commit_time():
    """Labels carry revision, source, the commit's time (not the build's) and the version."""
    labels = oci_labels(resolved(RefKind.TAG, "v1.0.0"), source="/repo", tree="src-1")
    assert labels["org.opencontainers.image.revision"] == SHA
    assert labels["org.opencontainers.image.created"] == "2026-11-22T02:00:00+00:00"
    assert labels["org.opencontainers.image.version"] == "1.0.0"


def test_source_tag_changes_with_build_args():
    """The same context with other build args is another image."""
    one = source_tree_tag(tree="t", dockerfile="Dockerfile", build_args={"A": "1"})
    two = source_tree_tag(tree="t", dockerfile="Dockerfile", build_args={"A": "2"})
    assert one != two
    assert one == source_tree_tag(tree="t", dockerfile="Dockerfile", build_args={"A": "1"})


def test_check_cache_key_depends_on_files_command_and_tools():
    """A check's key changes with its files, its command or its tools, and only with them."""
    check = CheckSpec(name="lint", run=["ruff", "check", "."])
    base = check_cache_key(check, files_digest="f", environment_digest="e")
    assert base == check_cache_key(check, files_digest="f", environment_digest="e")
    assert base != check_cache_key(check, files_digest="g", environment_digest="e")
    assert base != check_cache_key(check, files_digest="f", environment_digest="x")
    advised = check_cache_key(
        check, files_digest="f", environment_digest="e", placeholders={"advisory_url": "u"}
    )
    assert base != advised
    other = CheckSpec(name="lint", run=["ruff", "check", "--fix", "."])
    assert base != check_cache_key(other, files_digest="f", environment_digest="e")


def test_expand_command_fills_placeholders_and_refuses_unknown():
    """{name} placeholders are filled; an unknown one names the known ones."""
    assert expand_command(["x", "--out={reports}/j.xml"], {"reports": "/r"}) == [
        "x",
        "--out=/r/j.xml",
    ]
    with pytest.raises(ValueError, match=r"unknown placeholder \{nope\}.*\{reports\}"):
        expand_command(["{nope}"], {"reports": "/r"})


def test_junit_and_coverage_reports():
    """Test counts come from pytest's JUnit XML, coverage from coverage.py's JSON."""
    xml = '<testsuites><testsuite tests="10" failures="1" errors="1" skipped="2"/></testsuites>'
    counts = parse_junit(xml)
    assert (counts.passed, counts.failed, counts.errors, counts.skipped) == (6, 1, 1, 2)
    assert parse_coverage('{"totals": {"percent_covered": 86.5}}') == 86.5


def test_push_stream_digest():
    """A clean push stream yields the digest from its aux record."""
    stream: list[dict[str, object]] = [
        {"status": "Pushing"},
        {"aux": {"Tag": "x", "Digest": "sha256:" + "a" * 64}},
    ]
    assert read_push_stream(stream).digest == "sha256:" + "a" * 64


def test_push_stream_in_band_errors():
    """Errors inside the stream are found: refusals are final, connection failures transient."""
    refused = read_push_stream(
        [{"errorDetail": {"message": "unauthorized: authentication required"}}]
    )
    assert refused.error
    assert not refused.transient
    down = read_push_stream(
        [{"error": "Get http://127.0.0.1:5999/v2/: dial tcp: connection refused"}]
    )
    assert down.error
    assert down.transient
    silent = read_push_stream([{"status": "Pushing"}])
    assert silent.digest is None
    assert silent.error


def test_registry_api_base_uses_http_only_on_loopback():
    """Without a scheme, loopback registries use http (as Docker allows) and others https."""
    assert registry_api_base("127.0.0.1:5001") == "http://127.0.0.1:5001"
    assert registry_api_base("localhost:5000") == "http://localhost:5000"
    assert registry_api_base("ghcr.io") == "https://ghcr.io"
    assert registry_api_base("https://r.example/") == "https://r.example"


REQUESTS_ADVISORY = {
    "id": "GHSA-x84v-xcm2-53pg",
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "requests"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}],
        }
    ],
    "database_specific": {"severity": "HIGH"},
}


@pytest.mark.parametrize(
    ("name", "version", "hit"),
    [
        ("requests", "2.19.0", True),
        ("Requests", "2.19.1", True),
        ("requests", "2.20.0", False),
        ("requests", "2.31.0", False),
        ("urllib3", "1.0", False),
    ],
)
def test_osv_range_matching(name, version, hit):
    """An ECOSYSTEM range affects versions from introduced up to, not including, fixed."""
    assert affects(REQUESTS_ADVISORY, ecosystem="PyPI", name=name, version=version) is hit


def test_osv_severity_labels():
    """GitHub's severity labels map to ours; MODERATE is medium; none is unknown."""
    assert severity_from_osv(REQUESTS_ADVISORY) == "high"
    assert severity_from_osv({"database_specific": {"severity": "MODERATE"}}) == "medium"
    assert severity_from_osv({}) == "unknown"


def finding(severity: str) -> Finding:
    return Finding(
        package="p", version="1", advisory="A", aliases=(), severity=severity, fixed_in=()
    )


def test_scan_verdicts():
    """Findings at a failing severity fail; others pass; an unreachable service is never clean."""
    policy = ScanPolicy()
    assert scan_verdict([finding("medium")], reachable=True, policy=policy)[0] is True
    assert scan_verdict([finding("high")], reachable=True, policy=policy)[0] is False
    passed, why = scan_verdict([], reachable=False, policy=policy)
    assert not passed
    assert "could not be reached" in why
    lenient = ScanPolicy(fail_when_unreachable=False)
    passed, why = scan_verdict([], reachable=False, policy=lenient)
    assert passed
    assert "NOT audited" in why


def test_sbom_lists_os_and_python_packages():
    """The SBOM is CycloneDX with deb and pypi package URLs."""
    sbom = cyclonedx_sbom(
        image="sha256:x", os_packages=[("bash", "5.2")], python_packages=[("Py_YAML", "5.3")]
    )
    assert sbom["bomFormat"] == "CycloneDX"
    purls = [c["purl"] for c in sbom["components"]]
    assert purls == ["pkg:deb/debian/bash@5.2", "pkg:pypi/py-yaml@5.3"]


def test_inventory_parsers():
    """dpkg status and Python metadata headers give (name, version) pairs."""
    status = (
        "Package: bash\nStatus: install ok installed\nVersion: 5.2-1\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"
    )
    assert parse_dpkg_status(status) == [("bash", "5.2-1")]
    assert parse_python_metadata(
        "Metadata-Version: 2.1\nName: requests\nVersion: 2.19.0\n\nbody"
    ) == (
        "requests",
        "2.19.0",
    )


def test_trivy_report_parsing():
    """trivy's JSON findings become ours, severities lowercased."""
    report = {
        "Results": [
            {
                "Vulnerabilities": [
                    {
                        "PkgName": "openssl",
                        "InstalledVersion": "3.0.1",
                        "VulnerabilityID": "CVE-1",
                        "Severity": "CRITICAL",
                        "FixedVersion": "3.0.2",
                    }
                ]
            }
        ]
    }
    (only,) = parse_trivy(report)
    assert (only.package, only.severity, only.fixed_in) == ("openssl", "critical", ("3.0.2",))


def test_the_build_plan_names_the_image_once_for_every_step():
    """Tags, labels and the source tag come from one plan: the source tag is among the tags
    and in the labels, and a changed build arg changes it."""
    from deliver.planning.ci import plan_build

    def plan(**build_args: str) -> Any:
        return plan_build(
            image_name="reg/app",
            context="/src/app",
            dockerfile="Dockerfile",
            build_args=build_args,
            tree_digest="d" * 64,
            resolved=resolved(RefKind.TAG, "v1.2.0"),
            source="https://git.example/app.git",
        )

    first = plan(VERSION="1.2.0")
    assert first.tags == (SHA[:7], "1.2.0", first.source_tag)
    assert first.labels["dev.deliver.source-tree"] == first.source_tag
    assert first.labels["org.opencontainers.image.version"] == "1.2.0"
    assert plan(VERSION="1.2.1").source_tag != first.source_tag


def test_ci_passes_the_usual_build_args_the_dockerfile_declares():
    """VERSION and GIT_SHA (and the OCI ones) when declared and not set by the spec; they
    describe the build but are not its identity, so an unchanged tree is still reused."""
    from deliver.planning.ci import plan_build, standard_build_args
    from deliver.planning.dockerfile import declared_args

    dockerfile = "FROM python:3.12-slim\nCOPY . /app\nARG VERSION=dev\narg GIT_SHA\nARG OTHER=1\n"
    declared = declared_args(dockerfile)
    assert declared == {"VERSION", "GIT_SHA", "OTHER"}
    tag = resolved(RefKind.TAG, "v2.0.0")
    standard = standard_build_args(tag, source="repo", declared=declared, given={"GIT_SHA": "x"})
    assert standard == {"VERSION": "2.0.0"}

    def plan(ref: ResolvedRef) -> Any:
        return plan_build(
            image_name="app",
            context="/src",
            dockerfile="Dockerfile",
            build_args={},
            tree_digest="e" * 64,
            resolved=ref,
            source="repo",
            describing_args=standard_build_args(ref, source="repo", declared=declared, given={}),
        )

    on_tag, on_main = plan(tag), plan(resolved(RefKind.BRANCH, "main"))
    assert on_tag.build_args == {"VERSION": "2.0.0", "GIT_SHA": SHA}
    assert on_main.build_args == {"VERSION": SHA[:7], "GIT_SHA": SHA}
    assert on_tag.source_tag == on_main.source_tag


def test_the_runtime_facts_are_a_label_and_part_of_the_source_tag():
    """A release of the image reads them back as they were; changing them rebuilds."""
    from deliver.planning.ci import plan_build
    from deliver.planning.runtime import RUNTIME_LABEL, RuntimeFacts

    facts = RuntimeFacts(service="app", port=8000, required_env=("DATABASE_URL",))

    def plan(runtime: RuntimeFacts) -> Any:
        return plan_build(
            image_name="app",
            context="/src",
            dockerfile="Dockerfile",
            build_args={},
            tree_digest="e" * 64,
            resolved=resolved(RefKind.BRANCH, "main"),
            source="repo",
            runtime=runtime,
        )

    first = plan(facts)
    assert RuntimeFacts.from_label(first.labels[RUNTIME_LABEL]) == facts
    moved = RuntimeFacts(service="app", port=9000, required_env=("DATABASE_URL",))
    assert plan(moved).source_tag != first.source_tag


def test_a_new_base_image_under_the_same_name_changes_the_source_tag():
    """The base image's id is part of the build's identity; without one known, it is not."""
    from deliver.planning.ci import source_tree_tag

    def tag(base: str) -> str:
        return source_tree_tag(tree="t", dockerfile="Dockerfile", build_args={}, base_image_id=base)

    assert tag("sha256:" + "1" * 64) != tag("sha256:" + "2" * 64)
    assert tag("") == source_tree_tag(tree="t", dockerfile="Dockerfile", build_args={})


def test_checks_start_slowest_first_and_never_timed_ones_before_them():
    last = {"lint": 0.4, "tests": 1.8, "types": 0.9}
    names = ["lint", "format", "types", "tests", "security"]
    assert longest_first(names, last) == ["format", "security", "tests", "types", "lint"]
    assert longest_first(names, {}) == names
