"""How a release rolls across a fleet: which hosts switch together, in what order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def batches(hosts: Sequence[T], max_unavailable: int) -> list[tuple[T, ...]]:
    """The hosts in their order, `max_unavailable` at a time; the last batch may be smaller."""
    if max_unavailable < 1:
        raise ValueError(f"max_unavailable must be at least 1, not {max_unavailable}")
    return [tuple(hosts[i : i + max_unavailable]) for i in range(0, len(hosts), max_unavailable)]


def switch_back_order(switched: Sequence[T]) -> list[T]:
    """Undo in reverse: the host switched last goes back first, the first host last."""
    return list(reversed(switched))
