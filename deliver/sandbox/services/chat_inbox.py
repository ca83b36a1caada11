"""A Slack-compatible incoming-webhook receiver on loopback that keeps what it is sent.

    python -m deliver.sandbox.services.chat_inbox --port 8091 --token-file FILE --out messages.jsonl

POST /hooks/<token> with a JSON body (Slack's `{"text": ...}`) is kept, one JSON line per
message; a wrong token gets 403 and is not kept. GET /messages lists what was kept. It stands
in for a team's chat on machines that cannot reach one; a real team points its notification
block at Slack, Teams or any webhook instead.
"""

from __future__ import annotations

import argparse
import datetime
import hmac
import json
import threading
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from deliver.sandbox.services.json_http import JsonHandler

MAX_BODY = 64 * 1024


class Inbox:
    """Messages kept in memory and, given `out`, appended to a JSON-lines file."""

    def __init__(self, token: str, out: Path | None = None) -> None:
        self.token, self.out = token, out
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        if out is not None and out.exists():
            self._messages = [json.loads(line) for line in out.read_text().splitlines() if line]

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._messages)

    def keep(self, path: str, body: bytes) -> int:
        """The HTTP status for one delivery to `path`."""
        token = unquote(path.removeprefix("/hooks/")) if path.startswith("/hooks/") else ""
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return 403
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            return 400
        if not isinstance(payload, dict):
            return 400
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        message = {"at": at, **payload}
        with self._lock:
            self._messages.append(message)
            if self.out is not None:
                with self.out.open("a") as file:
                    file.write(json.dumps(message) + "\n")
        return 200

    def serve(self, port: int = 0) -> ThreadingHTTPServer:
        inbox = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                if self.path == "/health":
                    self.reply(200, {"status": "ok"})
                elif self.path == "/messages":
                    self.reply(200, inbox.messages())
                else:
                    self.reply(404, {"error": "no such path"})

            def do_POST(self) -> None:
                body = self.read_body(MAX_BODY)
                if body is None:
                    return
                status = inbox.keep(self.path, body)
                self.reply(status, {"ok": status == 200})

        return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    inbox = Inbox(args.token_file.read_text().strip(), args.out)
    print(f"chat inbox on 127.0.0.1:{args.port}, keeping messages in {args.out}", flush=True)
    inbox.serve(args.port).serve_forever()


if __name__ == "__main__":
    main()
