"""ruff and mypy are clean: the same checks a contributor runs with `make lint`.

They start as soon as the session has collected them (conftest's pytest_collection_finish) and
run beside the rest of the suite, which mostly waits on real components; each test collects its
linter's verdict.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.lint
SAMPLE = PROJECT_DIR / "examples" / "stock-api"


class Background:
    """A command started now, its output kept in a file (a pipe could fill and stall it)."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.argv = argv
        self.log = Path(tempfile.mkdtemp(prefix="lint-")) / "output"
        with self.log.open("w") as output:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", *argv], cwd=cwd, stdout=output, stderr=subprocess.STDOUT
            )

    def result(self) -> tuple[int, str]:
        code = self.process.wait(timeout=600)
        return code, self.log.read_text()


COMMANDS = {
    "ruff check": (["ruff", "check", "."], PROJECT_DIR),
    "ruff format": (["ruff", "format", "--check", "."], PROJECT_DIR),
    "mypy": (["mypy"], PROJECT_DIR),
    "sample ruff check": (["ruff", "check", "."], SAMPLE),
    "sample ruff format": (["ruff", "format", "--check", "."], SAMPLE),
    "sample mypy": (["mypy", "stock_api", "tests"], SAMPLE),
}
_started: dict[str, Background] = {}


def start_linters() -> None:
    for name, (argv, cwd) in COMMANDS.items():
        if name not in _started:
            _started[name] = Background(argv, cwd)


def verdict(name: str) -> tuple[int, str]:
    start_linters()
    return _started[name].result()


def test_ruff_lint_is_clean():
    """ruff check finds nothing."""
    code, output = verdict("ruff check")
    assert code == 0, output


def test_ruff_format_is_clean():
    """ruff format would change nothing."""
    code, output = verdict("ruff format")
    assert code == 0, output


def test_mypy_strict_is_clean():
    """mypy (strict) finds no type errors."""
    code, output = verdict("mypy")
    assert code == 0, output[-3000:]


@pytest.mark.parametrize("linter", ["sample ruff check", "sample ruff format", "sample mypy"])
def test_sample_service_lints_clean_by_its_own_rules(linter):
    """The sample is its own project: its ruff and mypy settings pass on its code and tests."""
    code, output = verdict(linter)
    assert code == 0, f"{linter}:\n{output[-3000:]}"
