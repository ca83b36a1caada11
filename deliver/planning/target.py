"""An environment as a release sees it: its hosts (one, or a fleet) and its checks. Pure.

Loading a `DeployTarget` block gives one `TargetView` whether the block names one host or a
fleet: a single host is a fleet of one. Nothing here holds a secret.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from deliver.planning.release import Slot


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostView:
    """One deploy host: where its slots answer, and the nginx in front of them, if any."""

    ref: str  # how runs and logs name it: the block, or `<block>@<host>` for a fleet's host
    name: str  # the fleet host's name; empty for a target's only host
    address: str  # user@host:port, for messages
    service_host: str
    slot_ports: Mapping[Slot, int]
    front_url: str | None  # the host's own nginx; None: no switch, the slot itself serves

    @property
    def switches(self) -> bool:
        """Whether traffic reaches this host's slots through an nginx the release switches."""
        return self.front_url is not None

    def slot_address(self, slot: Slot) -> str:
        """host:port of a slot, as nginx's upstream and its X-Deliver-Upstream name it."""
        return f"{self.service_host}:{self.slot_ports[slot]}"

    def slot_url(self, slot: Slot) -> str:
        return f"http://{self.slot_address(slot)}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TargetView:
    """An environment: its hosts in release order, and what every release there checks."""

    block: str
    environment: str
    app_name: str
    hosts: tuple[HostView, ...]
    health_path: str
    health_timeout_s: float
    smoke: tuple[Any, ...]
    keep_versions: int
    drain_s: float
    max_unavailable: int = 1
    front_url: str | None = None  # the environment's own front (a fleet's balancer)
    staging_target: str | None = None  # where a production release must be live first
    migrate: tuple[str, ...] = ()  # the service's migration command; empty: none
    accessories: tuple[str, ...] = ()  # the environment's accessories, booted when absent

    @property
    def record_host(self) -> HostView:
        """The host whose state stands for the environment's (status, the staging check)."""
        return self.hosts[0]

    @property
    def serving_url(self) -> str | None:
        """Where users reach the environment: its front, else its first host's."""
        return self.front_url or self.hosts[0].front_url

    @property
    def front_to_smoke(self) -> str | None:
        """The environment's front when no host's own smoke already went through it."""
        if self.front_url is None or self.front_url in {h.front_url for h in self.hosts}:
            return None
        return self.front_url

    def host(self, ref: str) -> HostView:
        return next(host for host in self.hosts if host.ref == ref)
