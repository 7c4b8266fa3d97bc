"""TCP listeners of a real worker: a byte pipe to a backend chosen by the cluster's load
balancing, half-close, back-pressure on a large transfer, retries, idle timeout, access log.

The backend is a tiny threaded echo server in the test process (127.0.0.1 only): it echoes
every byte and shuts its writing side once the client's end of stream reached it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.edge_worker import EdgeWorker, spawn
from tests.integration.harness import bind_listener, wait_for

pytestmark = pytest.mark.timeout(60)


class EchoServer:
    """Echo backend; counts the connections it accepted."""

    def __init__(self) -> None:
        self.sock, self.address = bind_listener()
        self.accepted = 0
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        conn.settimeout(20)
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def dead_address() -> str:
    sock, address = bind_listener()
    sock.close()
    return address


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., EdgeWorker]]:
    started: list[EdgeWorker] = []

    def starter(backends: list[str], listener: str = "", access_log: bool = True) -> EdgeWorker:
        listed = ", ".join(f'{{ address = "{b}" }}' for b in backends)
        target = f'access_logs_target = "{tmp_path / "access.log"}"' if access_log else ""

        def render(addresses: dict[str, str]) -> str:
            return f"""
            command_socket = "sozu.sock"
            log_level = "info"
            log_target = "stderr"
            {target}

            [[listeners]]
            protocol = "https"
            address = "{addresses["https"]}"

            [[listeners]]
            protocol = "tcp"
            address = "{addresses["tcp"]}"
            {listener}

            [clusters.echo]
            protocol = "tcp"
            frontends = [{{ address = "{addresses["tcp"]}" }}]
            backends = [{listed}]
            """

        worker = spawn(tmp_path, render)
        started.append(worker)
        return worker

    yield starter
    for worker in started:
        worker.stop()


def connect(worker: EdgeWorker) -> socket.socket:
    return socket.create_connection(("127.0.0.1", worker.port("tcp")), timeout=10)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_echo(start: Callable[..., EdgeWorker], echo: EchoServer) -> None:
    worker = start([echo.address])
    with connect(worker) as client:
        for message in (b"hello", b"sozu " * 100):
            client.sendall(message)
            received = b""
            while len(received) < len(message):
                received += client.recv(65536)
            assert received == message


def test_half_close_keeps_the_other_direction(
    start: Callable[..., EdgeWorker], echo: EchoServer
) -> None:
    worker = start([echo.address])
    with connect(worker) as client:
        client.sendall(b"first part, ")
        client.sendall(b"then the end of stream")
        client.shutdown(socket.SHUT_WR)  # our end of stream reaches the backend...
        # ...which still answers everything, then ends its side: we read to EOF
        assert read_all(client) == b"first part, then the end of stream"


def test_large_transfer_with_checksum(start: Callable[..., EdgeWorker], echo: EchoServer) -> None:
    worker = start([echo.address])
    payload = os.urandom(8 << 20)
    received = hashlib.sha256()
    size = 0
    with connect(worker) as client:

        def send() -> None:
            view = memoryview(payload)
            for offset in range(0, len(view), 1 << 16):
                client.sendall(view[offset : offset + (1 << 16)])
            client.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        while chunk := client.recv(1 << 16):
            received.update(chunk)
            size += len(chunk)
        sender.join(10)
    assert size == len(payload)
    assert received.hexdigest() == hashlib.sha256(payload).hexdigest()


def test_back_pressure_bounds_worker_memory(
    start: Callable[..., EdgeWorker], echo: EchoServer
) -> None:
    """A client that sends 48 MiB without reading: the echo backend blocks, the worker stops
    reading the client, and the worker's memory does not grow with the transfer."""
    worker = start([echo.address])
    process = psutil.Process(worker.process.pid)
    payload = os.urandom(1 << 20)
    total = 48
    with connect(worker) as client:
        client.sendall(b"warm-up")
        assert client.recv(64) == b"warm-up"
        before = process.memory_info().rss
        sent = 0
        client.settimeout(0.5)
        for _ in range(total):
            try:
                client.sendall(payload)
            except TimeoutError:
                break  # everything on the way is full: the sender is held back
            sent += 1
        assert sent < total, "nothing held the sender back"
        grown = process.memory_info().rss - before
        assert grown < 16 << 20, f"worker grew by {grown} bytes"
        client.settimeout(10)
        client.shutdown(socket.SHUT_WR)
        received = 0
        while chunk := client.recv(1 << 16):
            received += len(chunk)
        assert received >= sent << 20


def test_connect_failure_moves_to_another_backend(
    start: Callable[..., EdgeWorker], echo: EchoServer
) -> None:
    worker = start([dead_address(), echo.address])
    for _ in range(4):  # round robin meets the dead backend at least once
        with connect(worker) as client:
            client.sendall(b"ping")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"ping"
    assert echo.accepted == 4


def test_no_live_backend_closes_the_client(start: Callable[..., EdgeWorker]) -> None:
    worker = start([dead_address()])
    with connect(worker) as client:
        client.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(10) == b""


def test_idle_front_timeout_closes(start: Callable[..., EdgeWorker], echo: EchoServer) -> None:
    worker = start([echo.address], listener="front_timeout = 1")
    with connect(worker) as client:
        client.sendall(b"x")
        assert client.recv(1) == b"x"
        began = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""
        assert 0.5 < time.monotonic() - began < 5


def test_tcp_sessions_are_access_logged(
    start: Callable[..., EdgeWorker], echo: EchoServer, tmp_path: Path
) -> None:
    worker = start([echo.address])
    with connect(worker) as client:
        client.sendall(b"12345")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"12345"
    log_file = tmp_path / "access.log"
    wait_for(lambda: log_file.exists() and log_file.read_text(), what="an access log line")
    line = log_file.read_text().splitlines()[0]
    pattern = (
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \d+ \d+ INFO-ACCESS  WRK-04\t"
        r"\[[0-9A-Z]{26} - echo echo-0-127\.0\.0\.1:\d+\] 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ "
        r"\S+/\S+/-/-/- 5 5 \[\] None TCP -$"
    )
    assert re.match(pattern, line), line
