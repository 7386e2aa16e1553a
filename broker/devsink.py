"""`broker sink`: a tiny back office on loopback for trials, demos and the README example.

It accepts the http connector's POSTs, prints each order it books, dedupes on the
Idempotency-Key header like a careful REST ERP, and answers 201 with a reference.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click


def run_sink(host: str, port: int) -> None:
    seen: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get("Idempotency-Key") or f"anon-{len(seen)}"
            with lock:
                reply = seen.get(key)
                if reply is None:
                    reply = seen[key] = {"id": f"SO-{len(seen) + 1:05d}"}
                    try:
                        doc = json.loads(body)
                        order = doc.get("order", doc)
                        click.echo(f"{reply['id']}  {doc.get('action', 'create'):<6}  "
                                   f"{order.get('number') or order.get('external_id')}  "
                                   f"{order.get('totals', {}).get('total')} {order.get('currency')}")
                    except (ValueError, AttributeError):
                        click.echo(f"{reply['id']}  {len(body)} bytes")
            data = json.dumps(reply).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_PUT = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    click.echo(f"sink listening on http://{host}:{port}/orders (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
