"""A backend that takes its time, and the helpers to send it a request through the proxy: for
tests of what happens to exchanges in flight (drains, stops, a killed main)."""

from __future__ import annotations

import http.client
import socket
import threading
import time

from tests.e2e.conftest import Sozu
from tests.e2e.test_traffic import ok

HOST = "slow.example"
SLOW_SECONDS = 1.5


class SlowBackend:
    """Answers each request after SLOW_SECONDS; `received` is set once a request arrived."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.received.set()
            time.sleep(SLOW_SECONDS)
            body = b"slow but sure\n"
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
            conn.sendall(head + body)

    def close(self) -> None:
        self.sock.close()


def serve_slow(sozu: Sozu, backend: SlowBackend) -> None:
    ok(sozu, "cluster", "add", "--id", "slow", "--load-balancing-policy", "round_robin")
    ok(sozu, "backend", "add", "--id", "slow", "--backend-id", "slow-0",
       "--address", f"127.0.0.1:{backend.port}")  # fmt: skip
    ok(sozu, "frontend", "http", "add", "--address", f"127.0.0.1:{sozu.http_port}",
       "--hostname", HOST, "id", "slow")  # fmt: skip


def request_in_background(port: int) -> tuple[threading.Thread, list[object]]:
    """GET through the proxy in a thread; the list gets (status, body) or the exception."""
    outcome: list[object] = []

    def run() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            connection.request("GET", "/", headers={"Host": HOST})
            answer = connection.getresponse()
            outcome.append((answer.status, answer.read()))
        except (OSError, http.client.HTTPException) as error:
            outcome.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome
