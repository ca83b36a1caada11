"""An OSV-compatible advisory service on loopback, serving OSV-format files from a folder.

    python -m deliver.sandbox.services.advisory_mirror --port 8090 --data deliver/sandbox/advisories

Answers POST /v1/query, POST /v1/querybatch and GET /v1/vulns/{id} as api.osv.dev does, for the
records it holds. Real users keep the public service; this is for machines that cannot reach it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from deliver.planning.osv import matching
from deliver.sandbox.services.json_http import JsonHandler

MAX_BODY = 1 << 20


def load_records(folder: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        records[record["id"]] = record
    return records


def answer(
    method: str, path: str, body: Any, records: Mapping[str, Mapping[str, Any]]
) -> tuple[int, Any]:
    """(status, JSON body) for one request. Pure."""
    if method == "GET" and path == "/health":
        return 200, {"status": "ok", "advisories": len(records)}
    if method == "GET" and path.startswith("/v1/vulns/"):
        found = records.get(path.removeprefix("/v1/vulns/"))
        return (200, found) if found else (404, {"code": 5, "message": "Bug not found."})
    if method == "POST" and path == "/v1/query":
        vulns = matching(records.values(), body if isinstance(body, Mapping) else {})
        return 200, ({"vulns": vulns} if vulns else {})
    if method == "POST" and path == "/v1/querybatch":
        queries = body.get("queries", []) if isinstance(body, Mapping) else []
        results = [
            {
                "vulns": [
                    {"id": r["id"], "modified": r["modified"]}
                    for r in matching(records.values(), q)
                ]
            }
            for q in queries
        ]
        return 200, {"results": results}
    return 404, {"code": 5, "message": f"No route for {method} {path}"}


def make_server(
    port: int, records: Mapping[str, Mapping[str, Any]], host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            self.reply(*answer("GET", self.path, None, records))

        def do_POST(self) -> None:
            raw = self.read_body(MAX_BODY)
            if raw is None:
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self.reply(400, {"code": 3, "message": "Invalid JSON."})
                return
            self.reply(*answer("POST", self.path, body, records))

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args(argv)
    records = load_records(args.data)
    print(f"advisory mirror: {len(records)} advisories on {args.host}:{args.port}", flush=True)
    make_server(args.port, records, args.host).serve_forever()


if __name__ == "__main__":
    main()
