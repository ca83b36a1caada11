"""What the sandbox started: one JSON file, written atomically, readable by its owner only."""

from __future__ import annotations

import json
import os
import tempfile
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
        self.data["components"][name] = record
        self.save()

    def forget_component(self, name: str) -> None:
        self.data["components"].pop(name, None)
        self.save()

    def credentials(self, name: str) -> dict[str, str]:
        found: dict[str, str] = self.data["credentials"].get(name, {})
        return found

    def set_credentials(self, name: str, values: dict[str, str]) -> None:
        self.data["credentials"][name] = values
        self.save()

    def fact(self, name: str) -> Any:
        return self.data["facts"].get(name)

    def set_fact(self, name: str, value: Any) -> None:
        self.data["facts"][name] = value
        self.save()
