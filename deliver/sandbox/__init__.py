"""The local delivery sandbox: real Docker, registry, SSH hosts, nginx and Prefect on loopback."""

from deliver.sandbox.config import SandboxConfig, config_from_env
from deliver.sandbox.connect import use_sandbox
from deliver.sandbox.manager import down, ensure_packages, status, up

__all__ = [
    "SandboxConfig",
    "config_from_env",
    "down",
    "ensure_packages",
    "status",
    "up",
    "use_sandbox",
]
