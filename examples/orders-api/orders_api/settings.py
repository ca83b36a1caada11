"""The service's configuration, read from its environment."""

from __future__ import annotations

import dataclasses
import os


class MissingSetting(RuntimeError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not set: orders-api needs it (see deliver.yaml's env)")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    redis_url: str
    version: str
    git_sha: str

    @classmethod
    def from_env(cls) -> Settings:
        def required(name: str) -> str:
            value = os.environ.get(name, "")
            if not value:
                raise MissingSetting(name)
            return value

        return cls(
            database_url=required("DATABASE_URL"),
            redis_url=required("REDIS_URL"),
            version=os.environ.get("ORDERS_API_VERSION", "0.0.0-dev"),
            git_sha=os.environ.get("ORDERS_API_GIT_SHA", "unknown"),
        )
