"""A CI run's service containers as the checks see them: templated env filled in. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from deliver.spec import SERVICE_TEMPLATE


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAccess:
    """How a run's containers reach one service: its name on the run's network, and the
    password generated for this run."""

    name: str
    password: str = dataclasses.field(repr=False)


def filled_env(env: Mapping[str, str], services: Mapping[str, ServiceAccess]) -> dict[str, str]:
    """`env` with {services.NAME.password} and {services.NAME.host} replaced (the spec checked
    that every name is declared)."""

    def value(name: str, field: str) -> str:
        access = services[name]
        return access.password if field == "password" else access.name

    return {
        key: SERVICE_TEMPLATE.sub(lambda match: value(match[1], match[2]), text)
        for key, text in env.items()
    }
