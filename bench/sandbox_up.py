"""Sandbox `up` timings, printed as JSON, with ratios to `status` measured in the same run.

    .venv/bin/python -m bench.sandbox_up            # warm: everything already running
    .venv/bin/python -m bench.sandbox_up --cold     # also: stop the daemons, then a cold `up`

A cold `up` here restarts every daemon the sandbox started; the base image stays in the engine
(remove it with `docker rmi` first to include its build).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from deliver import sandbox


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="also time a cold up after down")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = sandbox.config_from_env()

    def quiet(_message: str) -> None:
        pass

    sandbox.up(config, say=quiet)
    status_s = statistics.median(timed(lambda: sandbox.status(config), args.repeat))
    warm_s = statistics.median(timed(lambda: sandbox.up(config, say=quiet), args.repeat))
    report: dict[str, float | None] = {
        "status_s": round(status_s, 3),
        "warm_up_s": round(warm_s, 3),
        "warm_up_over_status": round(warm_s / status_s, 2),
        "cold_up_s": None,
        "cold_over_warm": None,
    }
    if args.cold:
        sandbox.down(config, say=quiet)
        cold_s = timed(lambda: sandbox.up(config, say=quiet), 1)[0]
        report["cold_up_s"] = round(cold_s, 3)
        report["cold_over_warm"] = round(cold_s / warm_s, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
