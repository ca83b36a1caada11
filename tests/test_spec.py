"""The pipeline spec: the sample's validates; a malformed one names file, field and expectation."""

from pathlib import Path

import pytest

from deliver.errors import SpecError
from deliver.spec import load_spec, parse_spec
from tests.conftest import PROJECT_DIR

VALID = """
service: demo
checks: [{name: lint, run: [ruff, check, .]}]
image: {name: demo}
container: {port: 8000}
"""


def test_sample_spec_is_valid():
    """The sample service's deliver.yaml validates, with the six default kinds of check."""
    spec = load_spec(PROJECT_DIR / "examples" / "stock-api" / "deliver.yaml")
    assert [c.name for c in spec.checks] == [
        "lint",
        "format",
        "types",
        "tests",
        "security",
        "dependencies",
    ]
    assert spec.scan.fail_on == ["critical", "high"]
    assert any("--cov-fail-under=70" in arg for arg in spec.checks[3].run)


def test_minimal_spec_gets_defaults():
    """Unstated sections take defaults: health path /health, scan fails on critical and high."""
    spec = parse_spec(VALID, source="deliver.yaml")
    assert spec.container.health_path == "/health"
    assert spec.scan.fail_on == ["critical", "high"]
    assert spec.environment.tools


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        (VALID.replace("port: 8000", "port: 70000"), "container.port", "less than or equal"),
        (VALID.replace("name: demo}", "name: Demo Image}"), "image.name", "lowercase registry"),
        (VALID.replace("name: lint", "name: Lint!"), "checks[0].name", "kebab-case"),
        (VALID.replace("run: [ruff, check, .]", "run: []"), "checks[0].run", "at least 1"),
        (VALID + "surprise: 1\n", "surprise", "Extra inputs"),
        (VALID.replace("service: demo", ""), "service", "Field required"),
        (VALID + "scan: {fail_on: [severe]}\n", "scan.fail_on[0]", "critical"),
        ("- just\n- a list\n", "(top level)", "mapping"),
        ("service: [unclosed\n", "(file)", "not valid YAML"),
    ],
)
def test_malformed_spec_names_file_field_and_expectation(text, field, expected):
    """Each malformed spec fails with the file, the field and what was expected."""
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="app/deliver.yaml")
    message = str(caught.value)
    assert message.startswith(f"app/deliver.yaml: {field}: ")
    assert expected in message


def test_duplicate_check_names_are_refused():
    """Two checks with one name would share a cache key and a UI row; refused."""
    text = VALID.replace(
        "checks: [{name: lint, run: [ruff, check, .]}]",
        "checks: [{name: lint, run: [a]}, {name: lint, run: [b]}]",
    )
    with pytest.raises(SpecError, match="repeated: lint"):
        parse_spec(text, source="deliver.yaml")


def test_missing_spec_file(tmp_path: Path):
    """A spec path that doesn't exist names the path."""
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "deliver.yaml")


def test_equals_needs_a_field():
    """A smoke check comparing a value must say which JSON field."""
    text = VALID + "smoke: [{path: /health, equals: ok}]\n"
    with pytest.raises(SpecError, match="smoke\\[0\\]"):
        parse_spec(text, source="deliver.yaml")
