"""A TCP proxy on loopback that can hold an answer after the upstream has acted on it.

This is how the tests kill a worker "between the back-office write and the acknowledgement"
for any back office, whatever its protocol (HTTP to trytond or a fake ERP, MariaDB's wire
protocol for the SQL connector): `hold_after(*markers, seconds=)` waits for client bytes containing
each marker in turn (a URL path; or b"INSERT INTO" then b"COMMIT"), lets the last of them reach
the upstream, which acts on them, and keeps the upstream's answer from the client for `seconds`
— long enough to kill -9 the worker waiting for it. `held` is set while an answer is held.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class HoldingProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._markers: list[bytes] = []
        self._seconds = 0.0
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._running = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold_after(self, *markers: bytes, seconds: float) -> None:
        with self._lock:
            self._markers, self._seconds = list(markers), seconds
            self.held.clear()

    def _saw(self, chunk: bytes) -> float:
        with self._lock:
            if self._markers and self._markers[0] in chunk:
                self._markers.pop(0)
                if not self._markers:
                    return self._seconds
        return 0.0

    def _pipe(self, client: socket.socket, server: socket.socket) -> None:
        pending = {"hold": 0.0}

        def upstream() -> None:  # client → server, watching for the marker
            with contextlib.suppress(OSError):
                while chunk := client.recv(65536):
                    hold = self._saw(chunk)
                    if hold:
                        pending["hold"] = hold
                    server.sendall(chunk)
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)

        def downstream() -> None:  # server → client, holding the answer to the marked bytes
            with contextlib.suppress(OSError):
                while chunk := server.recv(65536):
                    if pending["hold"]:
                        hold, pending["hold"] = pending["hold"], 0.0
                        self.held.set()
                        time.sleep(hold)
                    client.sendall(chunk)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)

        threads = [threading.Thread(target=f, daemon=True) for f in (upstream, downstream)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        server.close()

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def start(self) -> HoldingProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._running = True
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._running = False
        if self._listener:
            self._listener.close()

    def __enter__(self) -> HoldingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
