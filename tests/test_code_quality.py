"""ruff and mypy are clean: the same checks a contributor runs with `make lint`."""

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.lint


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=PROJECT_DIR, capture_output=True, text=True, check=False
    )


def test_ruff_lint_is_clean():
    """ruff check finds nothing."""
    done = run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout


def test_ruff_format_is_clean():
    """ruff format would change nothing."""
    done = run("ruff", "format", "--check", ".")
    assert done.returncode == 0, done.stdout


def test_mypy_strict_is_clean():
    """mypy (strict) finds no type errors."""
    done = run("mypy")
    assert done.returncode == 0, done.stdout[-3000:]


def test_sample_service_lints_clean_by_its_own_rules():
    """The sample is its own project: its ruff and mypy settings pass on its code and tests."""
    sample = PROJECT_DIR / "examples" / "stock-api"
    for argv in (
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "stock_api", "tests"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *argv], cwd=sample, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout[-3000:]}"
