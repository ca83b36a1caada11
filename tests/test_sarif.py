"""SARIF 2.1.0 output, validated against the OASIS schema (tests/data/sarif-schema-2.1.0.json,
from oasis-tcs/sarif-spec's Schemata): the image scan's run, a tool's own run (bandit's shape)
made relative to the repository, and the artifact that carries them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from deliver.planning.ci import Finding
from deliver.planning.sarif import (
    NotSarif,
    markdown,
    runs_of,
    sarif_from,
    sarif_key,
    sarif_log,
    scan_run,
    summary_lines,
)

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())


def assert_valid_sarif(log: Any) -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(log)
    ]
    assert not errors, errors[:5]


FINDINGS = (
    Finding(
        package="jinja2",
        version="3.1.2",
        advisory="GHSA-h5c8-rqwp-cp95",
        aliases=("CVE-2024-22195",),
        severity="medium",
        fixed_in=("3.1.3",),
    ),
    Finding(
        package="urllib3",
        version="1.26.0",
        advisory="GHSA-x84v-xcm2-53pg",
        aliases=(),
        severity="critical",
        fixed_in=(),
    ),
)

BANDIT = {
    "version": "2.1.0",
    "runs": [
        {
            "tool": {"driver": {"name": "Bandit", "rules": [{"id": "B105"}]}},
            "results": [
                {
                    "ruleId": "B105",
                    "level": "error",
                    "message": {"text": "Possible hardcoded password: 'hunter2'"},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {"uri": "app/settings.py"},
                                "region": {"startLine": 3},
                            }
                        }
                    ],
                }
            ],
        }
    ],
}


def test_the_scan_run_is_valid_sarif_with_a_rule_per_advisory():
    run = scan_run(FINDINGS, image="sha256:abc", scanners=["pip-audit"], location="Dockerfile")
    assert_valid_sarif(sarif_log([run]))
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == [
        "GHSA-h5c8-rqwp-cp95",
        "GHSA-x84v-xcm2-53pg",
    ]
    assert [result["level"] for result in run["results"]] == ["warning", "error"]
    assert "fixed in: 3.1.3" in run["results"][0]["message"]["text"]
    empty = scan_run((), image="sha256:abc", scanners=[], location="services/api/Dockerfile")
    assert_valid_sarif(sarif_log([empty]))


def test_a_tools_runs_are_made_relative_to_the_repository():
    (run,) = runs_of(json.dumps(BANDIT), prefix="services/api")
    location = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location["uri"] == "services/api/app/settings.py"
    assert runs_of(json.dumps(BANDIT))[0] == BANDIT["runs"][0]
    assert summary_lines([run]) == [
        "B105 services/api/app/settings.py:3 Possible hardcoded password: 'hunter2'"
    ]
    assert_valid_sarif(sarif_log([run]))


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"version": "2.0.0", "runs": []}', '{"version": "2.1.0", "runs": [1]}'],
)
def test_what_is_not_sarif_is_refused(text):
    with pytest.raises(NotSarif):
        runs_of(text)


def test_the_artifact_carries_the_log_and_shows_the_results():
    runs = runs_of(json.dumps(BANDIT))
    shown = markdown("SARIF of check security (stock-api)", runs)
    assert "- `B105 app/settings.py:3 Possible hardcoded password: 'hunter2'`" in shown
    assert sarif_from(shown) == runs
    assert sarif_key("stock-api", "Security_Scan") == "sarif-stock-api-security-scan"
