"""Putting a sandbox nginx back to blue between tests, as a host's first release finds it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from deliver.planning.release import Slot, green_marker, nginx_upstreams


def serve_blue(upstream_file: Path, slot_ports: Mapping[Slot, int] | Mapping[str, int]) -> None:
    """The slots' groups in `upstream_file`, and no green marker: blue takes the traffic."""
    ports = {Slot(getattr(slot, "value", slot)): port for slot, port in slot_ports.items()}
    upstream_file.write_text(nginx_upstreams(slot_ports=ports))
    Path(green_marker(str(upstream_file))).unlink(missing_ok=True)
