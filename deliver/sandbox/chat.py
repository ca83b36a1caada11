"""The chat inbox: where the sandbox's notification block sends, kept for people to read."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from deliver.sandbox.component import Context, Daemon, http_probe


class ChatInbox(Daemon):
    name = "chat"

    def address(self, ctx: Context) -> str:
        return f"http://127.0.0.1:{ctx.config.chat_port}/messages"

    def port(self, ctx: Context) -> int:
        return ctx.config.chat_port

    def token(self, ctx: Context) -> str:
        """The secret part of the webhook's URL, as a chat service hands one out."""
        found = ctx.state.credentials("chat")
        if not found:
            found = {"token": secrets.token_urlsafe(24)}
            ctx.state.set_credentials("chat", found)
        return found["token"]

    def token_file(self, ctx: Context) -> Path:
        return ctx.dir(self.name) / "token"

    def messages_file(self, ctx: Context) -> Path:
        return ctx.dir(self.name) / "messages.jsonl"

    def prepare(self, ctx: Context) -> None:
        path = self.token_file(ctx)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(self.token(ctx))

    def argv(self, ctx: Context) -> list[str]:
        return [
            sys.executable,
            "-m",
            "deliver.sandbox.services.chat_inbox",
            "--port",
            str(ctx.config.chat_port),
            "--token-file",
            str(self.token_file(ctx)),
            "--out",
            str(self.messages_file(ctx)),
        ]

    def probe(self, ctx: Context) -> str | None:
        return http_probe(f"http://127.0.0.1:{ctx.config.chat_port}/health", timeout_s=2.0)
