"""PostgreSQL on loopback for the Prefect server: Prefect's answer to SQLite's "database is
locked" under concurrent runs. A private cluster in the sandbox's folder, run as the
`postgres` system user when the sandbox runs as root.

The sandbox's database is a choice recorded in its state: `postgres` unless `deliver sandbox up
--database sqlite` chose SQLite.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from deliver import commands
from deliver.errors import ComponentFailed
from deliver.sandbox.component import ComponentStatus, Context, Daemon, SystemTool

POSTGRES = "postgres"
SQLITE = "sqlite"
DATABASES = (POSTGRES, SQLITE)
USER = "prefect"


def chosen_database(ctx: Context) -> str:
    return str(ctx.state.fact("database") or POSTGRES)


def server_binaries() -> Path | None:
    """Debian keeps each major version's programs in /usr/lib/postgresql/<major>/bin."""
    majors = [
        p
        for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")
        if p.parent.parent.name.isdigit()
    ]
    found = sorted(majors, key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


class PostgresDatabase(Daemon):
    name = "postgres"
    startup_timeout = 60.0
    tools = (SystemTool(program="pg_ctlcluster", package="postgresql"),)

    def used(self, ctx: Context) -> bool:
        return chosen_database(ctx) == POSTGRES

    def address(self, ctx: Context) -> str:
        return f"postgresql://{USER}@127.0.0.1:{ctx.config.postgres_port}/{USER}"

    def port(self, ctx: Context) -> int:
        return ctx.config.postgres_port

    def password(self, ctx: Context) -> str:
        found = ctx.state.credentials("postgres")
        if not found:
            found = {"password": secrets.token_urlsafe(24)}
            ctx.state.set_credentials("postgres", found)
        return found["password"]

    def connection_url(self, ctx: Context) -> str:
        """What the Prefect server connects with (its environment only, never a client's)."""
        port = ctx.config.postgres_port
        return f"postgresql+asyncpg://{USER}:{self.password(ctx)}@127.0.0.1:{port}/{USER}"

    def data_dir(self, ctx: Context) -> Path:
        return ctx.dir(self.name) / "data"

    def _as_owner(self) -> list[str]:
        """Run as `postgres` when we are root: PostgreSQL refuses to run as root."""
        if os.geteuid() != 0:
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    def _bin(self, program: str) -> str:
        folder = server_binaries()
        if folder is None:
            detail = (
                "PostgreSQL's server programs are missing; install the Debian package postgresql"
            )
            raise ComponentFailed(component=self.name, detail=detail)
        return str(folder / program)

    def prepare(self, ctx: Context) -> None:
        data = self.data_dir(ctx)
        if (data / "PG_VERSION").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        password_file = data.parent / "initdb-password"
        password_file.write_text(self.password(ctx) + "\n")
        password_file.chmod(0o600)
        if os.geteuid() == 0:
            for path in (data.parent, data, password_file):
                shutil.chown(path, user="postgres", group="postgres")
        done = commands.run(
            [
                *self._as_owner(),
                self._bin("initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            timeout_s=120,
        )
        password_file.unlink()
        if not done.ok:
            detail = f"initdb failed: {done.tail(10)}"
            raise ComponentFailed(component=self.name, detail=detail)
        # The database named after its owner, as clients expect by default; made in
        # single-user mode, before the server listens.
        created = commands.run(
            [*self._as_owner(), self._bin("postgres"), "--single", "-D", str(data), "postgres"],
            stdin=f"CREATE DATABASE {USER} OWNER {USER};\n",
            timeout_s=120,
        )
        if not created.ok or "ERROR" in created.stdout + created.stderr:
            detail = f"creating database {USER} failed: {created.tail(10)}"
            raise ComponentFailed(component=self.name, detail=detail)

    def argv(self, ctx: Context) -> list[str]:
        data = self.data_dir(ctx)
        return [
            *self._as_owner(),
            self._bin("postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(ctx.config.postgres_port),
            "-k",
            str(data),
            "-c",
            "max_connections=200",
            # A sandbox: losing the last moment's commits in a crash is acceptable, waiting for
            # every commit to reach the disk is not (the database stays consistent either way).
            "-c",
            "synchronous_commit=off",
        ]

    def probe(self, ctx: Context) -> str | None:
        done = commands.run(
            [
                self._bin("pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(ctx.config.postgres_port),
                "-U",
                USER,
                "-d",
                "postgres",
            ],
            timeout_s=10,
        )
        if not done.ok:
            return f"not accepting connections: {done.stdout.strip() or done.stderr.strip()}"
        return None

    def up(self, ctx: Context) -> ComponentStatus:
        if not self.used(ctx):
            return self.status(ctx)
        return super().up(ctx)

    def status(self, ctx: Context) -> ComponentStatus:
        if not self.used(ctx) and not ctx.state.component(self.name):
            detail = "not used: the Prefect server runs on SQLite"
            return ComponentStatus(name=self.name, address="-", healthy=True, detail=detail)
        return super().status(ctx)

    def tools_needed(self, ctx: Context) -> list[SystemTool]:
        return super().tools_needed(ctx) if self.used(ctx) else []
