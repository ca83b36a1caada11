"""Steady requests against a URL until stdin closes, then the outcomes as JSON.

Run as its own process (`python -m tests.load URL`), so the load never shares an interpreter
lock with the flow it watches. An outcome is the answer's `version`, or "failed".
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter

import httpx

PAUSE_S = 0.01  # between one client's requests: load, without starving the flow of CPU


def ask(url: str, stop: threading.Event, outcomes: Counter[str], lock: threading.Lock) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.wait(PAUSE_S):
            try:
                response = client.get(url)
                outcome = str(response.json()["version"]) if response.is_success else "failed"
            except (httpx.HTTPError, ValueError, KeyError):
                outcome = "failed"
            with lock:
                outcomes[outcome] += 1


def main(url: str, clients: int) -> None:
    stop, lock, outcomes = threading.Event(), threading.Lock(), Counter[str]()
    threads = [
        threading.Thread(target=ask, args=(url, stop, outcomes, lock)) for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join()
    print(json.dumps(dict(outcomes)))


class Load:
    """The load in a child process, from construction until `finish()`."""

    def __init__(self, url: str, clients: int = 4) -> None:
        argv = [sys.executable, "-m", "tests.load", url, str(clients)]
        self.child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def finish(self) -> Counter[str]:
        out, _ = self.child.communicate(input="", timeout=30)
        return Counter(json.loads(out))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
