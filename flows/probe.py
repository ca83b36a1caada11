"""`worker-probe`: proves a worker can pick up and run this project's code."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from prefect import flow


@flow(name="worker-probe", log_prints=True)
def worker_probe() -> dict[str, str]:
    report = {"host": platform.node(), "python": sys.executable, "cwd": str(Path.cwd())}
    print(f"worker-probe ran on {report['host']} with {report['python']}")
    return report
