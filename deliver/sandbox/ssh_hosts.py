"""SSH deploy hosts: one sshd per environment, and per fleet host, on loopback, each with its own
host key and deploy key."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import paramiko

from deliver.sandbox.component import Context, Daemon, SystemTool
from deliver.sandbox.config import LOOPBACK, Environment
from deliver.sandbox.keys import ensure_ed25519_key
from deliver.sandbox.render import known_hosts_line, sshd_config


class SshHost(Daemon):
    tools = (SystemTool(program="sshd", package="openssh-server"),)

    def __init__(self, host: Environment | str, deploy_key_of: str | None = None) -> None:
        """`host`: an environment, or a fleet host's name (fleet-1); `deploy_key_of`: the
        host whose deploy key this one accepts (a fleet shares one), by default its own."""
        self.host = host.value if isinstance(host, Environment) else host
        self.name = f"ssh-{self.host}"  # type: ignore[misc]
        self.key_owner = f"ssh-{deploy_key_of or self.host}"

    def address(self, ctx: Context) -> str:
        return f"{getpass.getuser()}@{LOOPBACK}:{self.port(ctx)}"

    def port(self, ctx: Context) -> int:
        return ctx.config.ssh_port(self.host)

    def paths(self, ctx: Context) -> dict[str, Path]:
        folder = ctx.dir(self.name)
        return {
            "host_key": folder / "host_key",
            "deploy_key": ctx.dir(self.key_owner) / "deploy_key",
            "authorized_keys": folder / "authorized_keys",
            "known_hosts": folder / "known_hosts",
            "config": folder / "sshd_config",
            "pid": folder / "sshd.pid",
        }

    def prepare(self, ctx: Context) -> None:
        paths = self.paths(ctx)
        host_public = ensure_ed25519_key(paths["host_key"], comment=f"{self.name}-host")
        deploy_public = ensure_ed25519_key(paths["deploy_key"], comment=f"{self.key_owner}-deploy")
        paths["authorized_keys"].write_text(deploy_public + "\n")
        paths["authorized_keys"].chmod(0o600)
        known_host = known_hosts_line(port=self.port(ctx), public_key=host_public)
        paths["known_hosts"].write_text(known_host)
        paths["config"].write_text(
            sshd_config(
                port=self.port(ctx),
                host_key=paths["host_key"],
                authorized_keys=paths["authorized_keys"],
                pid_file=paths["pid"],
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def argv(self, ctx: Context) -> list[str]:
        config = self.paths(ctx)["config"]
        return [self.tool_path(self.tools[0]), "-D", "-e", "-f", str(config)]

    def probe(self, ctx: Context) -> str | None:
        paths = self.paths(ctx)
        client = paramiko.SSHClient()
        client.load_host_keys(str(paths["known_hosts"]))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                LOOPBACK,
                port=self.port(ctx),
                username=getpass.getuser(),
                key_filename=str(paths["deploy_key"]),
                look_for_keys=False,
                allow_agent=False,
                timeout=3.0,
                banner_timeout=3.0,
                auth_timeout=3.0,
            )
            _, stdout, _ = client.exec_command("true", timeout=5.0)
            code = stdout.channel.recv_exit_status()
        except (OSError, paramiko.SSHException) as exc:
            return f"SSH login with the deploy key failed: {exc}"
        finally:
            client.close()
        return None if code == 0 else f"'true' over SSH exited {code}"
