"""A container registry on loopback with htpasswd authentication and generated credentials."""

from __future__ import annotations

import secrets

import bcrypt
import httpx

from deliver.sandbox.component import Context, Daemon, SystemTool
from deliver.sandbox.render import registry_config

REGISTRY_USER = "deliver"


class Registry(Daemon):
    name = "registry"
    tools = (SystemTool(program="docker-registry", package="docker-registry"),)

    def address(self, ctx: Context) -> str:
        return ctx.config.registry_address

    def port(self, ctx: Context) -> int:
        return ctx.config.registry_port

    def credentials(self, ctx: Context) -> tuple[str, str]:
        found = ctx.state.credentials(self.name)
        if not found:
            found = {"username": REGISTRY_USER, "password": secrets.token_urlsafe(24)}
            ctx.state.set_credentials(self.name, found)
        return found["username"], found["password"]

    def prepare(self, ctx: Context) -> None:
        folder = ctx.dir(self.name)
        username, password = self.credentials(ctx)
        # The registry checks the bcrypt hash on every authenticated request. Key stretching
        # guards guessable passwords; this one is 192 random bits, so a low cost loses nothing
        # and saves ~60 ms per request.
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd = folder / "htpasswd"
        htpasswd.write_text(f"{username}:{hashed}\n")
        htpasswd.chmod(0o600)
        config = registry_config(
            port=ctx.config.registry_port,
            data_dir=folder / "data",
            htpasswd_path=htpasswd,
            http_secret=secrets.token_hex(16),
        )
        (folder / "config.yml").write_text(config)
        (folder / "config.yml").chmod(0o600)

    def argv(self, ctx: Context) -> list[str]:
        config = ctx.config.component_dir(self.name) / "config.yml"
        return [self.tool_path(self.tools[0]), "serve", str(config)]

    def probe(self, ctx: Context) -> str | None:
        url = f"http://{self.address(ctx)}/v2/"
        try:
            anonymous = httpx.get(url, timeout=2.0)
            authenticated = httpx.get(url, auth=self.credentials(ctx), timeout=2.0)
        except httpx.HTTPError as exc:
            return f"GET {url} failed: {exc}"
        if anonymous.status_code != 401:
            return f"GET {url} without credentials answered {anonymous.status_code}, expected 401"
        if authenticated.status_code != 200:
            return f"GET {url} with the sandbox credentials answered {authenticated.status_code}"
        return None
