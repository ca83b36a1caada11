"""Serve the API: `python -m stock_api`, port from PORT (default 8000)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from stock_api.app import Settings, make_server


def main() -> None:
    # A container listens on all its interfaces; the host decides what to publish.
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104  # nosec B104
    port = int(os.environ.get("PORT", "8000"))
    server = make_server(host, port, Settings.from_env(os.environ))

    def shut_down(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    print(f"stock-api listening on {host}:{port}", file=sys.stderr, flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
