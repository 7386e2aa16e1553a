"""`broker sink`: a tiny back office on loopback for trials, demos and the README example.

It accepts the http connector's POSTs, prints each order it books, dedupes on the
Idempotency-Key header like a careful REST ERP, and answers 201 with a reference. Its
bookings are kept in a journal file (JSON lines), so a restarted sink goes on numbering
(SO-00003 after SO-00002, never a second SO-00001) and still recognises a retried request.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click


def default_journal(port: int) -> Path:
    from broker.settings import user_dir

    return user_dir("state") / f"sink-{port}.jsonl"


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Idempotency key → the answer given, from earlier runs (a torn last line is skipped)."""
    seen: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                seen[entry["key"]] = entry["reply"]
            except (ValueError, KeyError, TypeError):
                continue
    return seen


def run_sink(host: str, port: int, journal: str | Path | None = None) -> None:
    path = Path(journal) if journal else default_journal(port)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen = read_journal(path)
    lock = threading.Lock()
    log = path.open("a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                key = self.headers.get("Idempotency-Key") or f"anon-{len(seen) + 1}"
                reply = seen.get(key)
                if reply is None:
                    reply = seen[key] = {"id": f"SO-{len(seen) + 1:05d}"}
                    log.write(json.dumps({"key": key, "reply": reply}) + "\n")
                    log.flush()
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
    click.echo(f"sink listening on http://{host}:{port}/orders (Ctrl-C to stop); bookings kept in "
               f"{path} (next SO-{len(seen) + 1:05d})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log.close()
