"""The sandbox's state file under changes from several processes at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from deliver.sandbox.state import SandboxState


def _set_many(state_dir: str, prefix: str, count: int) -> None:
    state = SandboxState.load(Path(state_dir))  # one copy, loaded once, as a process holds it
    for n in range(count):
        state.set_credentials(f"{prefix}-{n}", {"value": str(n)})


def test_changes_from_several_processes_at_once_are_all_kept(tmp_path):
    """Four processes each add 25 entries through their own stale copy: all 100 are there."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_set_many, args=(str(tmp_path), f"p{i}", 25)) for i in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    saved = SandboxState.load(tmp_path).data["credentials"]
    assert len(saved) == 100
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
