"""The request handler the project's small loopback services share: JSON answers, no access
log (a path may hold a token)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    timeout = 5  # seconds a connection may stall, headers or body, before it is closed

    def read_body(self, max_bytes: int) -> bytes | None:
        """The request body, or None after answering 400 (a Content-Length that is not a plain
        non-negative decimal: a negative one would read to the end of the stream) or 413."""
        declared = self.headers.get("Content-Length", "0").strip()
        if not (declared.isascii() and declared.isdigit()):
            self.reply(400, {"error": "Content-Length must be a non-negative decimal"})
            return None
        if int(declared) > max_bytes:
            self.reply(413, {"error": f"body over {max_bytes} bytes"})
            return None
        return self.rfile.read(int(declared))

    def reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass
