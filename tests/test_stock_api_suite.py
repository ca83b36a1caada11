"""The sample service's own test suite (unit, API, data set) passes in a subprocess."""

import subprocess
import sys

from tests.conftest import PROJECT_DIR


def test_sample_service_suite_passes():
    """Every one of the sample's own tests passes, with no network and no sandbox."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=PROJECT_DIR / "examples" / "stock-api",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
