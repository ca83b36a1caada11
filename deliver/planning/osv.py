"""OSV advisory matching (the subset the advisory mirror serves) and a CycloneDX SBOM. Pure."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from packaging.version import InvalidVersion, Version


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: runs of -, _ and . become one -, lowercased."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(version: Version, events: Sequence[Mapping[str, str]]) -> bool:
    """OSV ECOSYSTEM range events, walked in order: introduced opens, fixed/last_affected close."""
    affected = False
    for event in sorted(events, key=lambda e: _event_version(e) or Version("0")):
        if "introduced" in event:
            start = event["introduced"]
            if start == "0" or (_version(start) or Version("0")) <= version:
                affected = True
        elif "fixed" in event:
            fixed = _version(event["fixed"])
            if fixed is not None and version >= fixed:
                affected = False
        elif "last_affected" in event:
            last = _version(event["last_affected"])
            if last is not None and version > last:
                affected = False
    return affected


def _event_version(event: Mapping[str, str]) -> Version | None:
    value = next(iter(event.values()), "0")
    return Version("0") if value == "0" else _version(value)


def affects(record: Mapping[str, Any], *, ecosystem: str, name: str, version: str) -> bool:
    """Whether an OSV record lists `name` at `version` in `ecosystem` as affected."""
    if record.get("withdrawn"):
        return False
    wanted = canonical_name(name)
    parsed = _version(version)
    for affected in record.get("affected", []):
        package = affected.get("package", {})
        if (
            package.get("ecosystem") != ecosystem
            or canonical_name(package.get("name", "")) != wanted
        ):
            continue
        if version in affected.get("versions", []):
            return True
        if parsed is None:
            continue
        for entry in affected.get("ranges", []):
            if entry.get("type") == "ECOSYSTEM" and _in_range(parsed, entry.get("events", [])):
                return True
    return False


def matching(
    records: Iterable[Mapping[str, Any]], query: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """The records an OSV `/v1/query` body matches: {"package": {name, ecosystem}, "version"}."""
    package = query.get("package", {})
    name, ecosystem, version = package.get("name"), package.get("ecosystem"), query.get("version")
    if not (name and ecosystem and version):
        return []
    return [r for r in records if affects(r, ecosystem=ecosystem, name=name, version=version)]


def cyclonedx_sbom(
    *,
    image: str,
    os_packages: Sequence[tuple[str, str]],
    python_packages: Sequence[tuple[str, str]],
    distro: str = "debian",
) -> dict[str, Any]:
    """A CycloneDX 1.5 JSON document listing an image's OS and Python packages."""
    components = [
        {
            "type": "library",
            "name": name,
            "version": version,
            "purl": f"pkg:deb/{distro}/{name}@{version}",
        }
        for name, version in os_packages
    ] + [
        {
            "type": "library",
            "name": name,
            "version": version,
            "purl": f"pkg:pypi/{canonical_name(name)}@{version}",
        }
        for name, version in python_packages
    ]
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, image)}",
        "version": 1,
        "metadata": {"component": {"type": "container", "name": image}},
        "components": components,
    }


def parse_dpkg_status(text: str) -> list[tuple[str, str]]:
    """(package, version) of every installed package in a dpkg status file."""
    packages = []
    for paragraph in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in paragraph.splitlines()
            if ": " in line and line[0] != " "
        )
        if "Package" in fields and "Version" in fields and "installed" in fields.get("Status", ""):
            packages.append((fields["Package"], fields["Version"]))
    return sorted(packages)


def parse_python_metadata(text: str) -> tuple[str, str] | None:
    """(name, version) from a dist-info METADATA or egg-info PKG-INFO header."""
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break
        if line.startswith("Name: "):
            name = line.removeprefix("Name: ").strip()
        elif line.startswith("Version: "):
            version = line.removeprefix("Version: ").strip()
    return (name, version) if name and version else None
