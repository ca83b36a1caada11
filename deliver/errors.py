"""Errors raised by the delivery system.

DeliveryError
 └── SandboxError           a sandbox component could not be set up, checked or stopped
      ├── MissingSystemPackages   tools are missing and cannot be installed here
      ├── PortInUse               a sandbox port answers for a process the sandbox did not start
      └── ComponentFailed         a component did not become healthy
"""

from __future__ import annotations

from collections.abc import Sequence


class DeliveryError(Exception):
    """Root of every error this project raises on purpose."""


class SandboxError(DeliveryError):
    """A sandbox component could not be set up, checked or stopped."""


class MissingSystemPackages(SandboxError):
    """System tools are missing and this process may not install them."""

    def __init__(self, *, packages: Sequence[str], reason: str) -> None:
        self.packages = tuple(packages)
        command = "apt-get install -y " + " ".join(self.packages)
        super().__init__(
            f"Missing system packages: {', '.join(self.packages)} ({reason}). "
            f"Install them as root with: {command}"
        )


class PortInUse(SandboxError):
    """A port the sandbox needs answers for a process it did not start."""

    def __init__(self, *, component: str, address: str) -> None:
        self.component, self.address = component, address
        super().__init__(
            f"{component}: {address} is already in use by a process this sandbox did not start. "
            f"Stop that process, or point DELIVER_SANDBOX_DIR at the sandbox that owns it."
        )


class ComponentFailed(SandboxError):
    """A component was started but did not become healthy."""

    def __init__(self, *, component: str, detail: str, log_path: str | None = None) -> None:
        self.component, self.detail, self.log_path = component, detail, log_path
        where = f" See its log: {log_path}" if log_path else ""
        super().__init__(f"{component} is not healthy: {detail}.{where}")
