"""What the sandbox started: one JSON file, written atomically, readable by its owner only.

Several processes change it (`up`, `down`, the tests' fixtures): each change is made under an
exclusive lock on the file's folder, to the file as it is on disk then, so no process writes
back an old copy over another's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


class SandboxState:
    """What `up` started (pids, addresses) and what it generated (credentials, image names)."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, state_dir: Path) -> SandboxState:
        path = state_dir / STATE_FILE
        if not path.exists():
            return cls(path, {"components": {}, "credentials": {}, "facts": {}})
        data = json.loads(path.read_text())
        for section in ("components", "credentials", "facts"):
            data.setdefault(section, {})
        return cls(path, data)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """The file's current content, under the lock; saved when the block ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / ".state.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = SandboxState.load(self.path.parent).data
            yield current
            self.data = current
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(handle, "w") as temp:
            json.dump(self.data, temp, indent=2, sort_keys=True)
            temp.write("\n")
        Path(temp_name).chmod(0o600)
        Path(temp_name).replace(self.path)

    def component(self, name: str) -> dict[str, Any]:
        record: dict[str, Any] = self.data["components"].get(name, {})
        return record

    def set_component(self, name: str, record: dict[str, Any]) -> None:
        with self._changing() as data:
            data["components"][name] = record

    def forget_component(self, name: str) -> None:
        with self._changing() as data:
            data["components"].pop(name, None)

    def credentials(self, name: str) -> dict[str, str]:
        found: dict[str, str] = self.data["credentials"].get(name, {})
        return found

    def set_credentials(self, name: str, values: dict[str, str]) -> None:
        with self._changing() as data:
            data["credentials"][name] = values

    def fact(self, name: str) -> Any:
        return self.data["facts"].get(name)

    def set_fact(self, name: str, value: Any) -> None:
        with self._changing() as data:
            data["facts"][name] = value
