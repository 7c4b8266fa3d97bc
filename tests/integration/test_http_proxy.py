"""HTTP/1.1 proxying through a real worker process, with real backends and real clients.

The test plays the supervisor (harness of `test_worker.py`); backends are small threaded HTTP
servers in this process, parsing with httptools, that record every connection and request,
so each test can check what reached a backend and over how many connections.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import psutil
import pytest

from sozu.command.addresses import to_proto
from sozu.command.proto import (
    AddBackend,
    Cluster,
    HstsConfig,
    PathRule,
    PathRuleKind,
    Request,
    RequestHttpFrontend,
)
from tests.integration.harness import wait_for
from tests.integration.test_worker import OK, Worker, start

__all__ = ["start"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class Backend:
    """A threaded HTTP/1.1 server; the request path chooses the behaviour (see `_answer`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.stopped = True
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        backend = self

        class Handler:
            def __init__(self) -> None:
                self.done: list[Seen] = []
                self.current: Seen | None = None
                self.url = b""
                self.in_body = False
                self.sha = hashlib.sha256()

            def on_message_begin(self) -> None:
                self.url = b""
                self.in_body = False
                self.sha = hashlib.sha256()
                self.current = Seen("", "", [])

            def on_url(self, url: bytes) -> None:
                self.url += url

            def on_header(self, name: bytes, value: bytes) -> None:
                assert self.current is not None
                pair = (name.decode(), value.decode())
                (self.current.trailers if self.in_body else self.current.headers).append(pair)

            def on_headers_complete(self) -> None:
                assert self.current is not None
                self.in_body = True
                self.current.method = parser.get_method().decode()
                self.current.path = self.url.decode()
                if (self.current.header("Expect") or "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

            def on_body(self, body: bytes) -> None:
                assert self.current is not None
                self.sha.update(body)
                if not self.current.path.startswith("/sha"):
                    self.current.body += body

            def on_message_complete(self) -> None:
                assert self.current is not None
                if self.current.path.startswith("/sha"):
                    self.current.body = self.sha.hexdigest().encode()
                with backend.lock:
                    backend.seen.append(self.current)
                self.done.append(self.current)

        handler = Handler()
        parser = httptools.HttpRequestParser(handler)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade as upgrade:
                    early = data[upgrade.args[0] :] if upgrade.args else b""
                    for seen in handler.done:
                        self._answer(conn, seen, early)
                    return
                while handler.done:
                    if not self._answer(conn, handler.done.pop(0)):
                        return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, seen: Seen, early: bytes = b"") -> bool:
        """Write the answer to `seen`; False when the connection must end."""
        path = seen.path
        if path.startswith("/close"):
            return False
        if path.startswith("/sleep"):
            time.sleep(float(path.split("/")[2]))
        if path.startswith("/ws"):
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n" + early
            )
            while data := conn.recv(65536):
                conn.sendall(data)
            return False
        if path.startswith("/chunked"):
            head = (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n"
                b"X-Backend: " + self.name.encode() + b"\r\n\r\n"
            )
            body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n"
            conn.sendall(head + body)
            return True
        if path.startswith("/junkchunked"):  # junk after an answer read by the full parser
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"4\r\njunk\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
            )
            return True
        if path.startswith("/extra"):  # bytes nobody asked for after the answer
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextraHTTP/1.1 200 OK\r\n")
            return True
        if path.startswith("/slowhead"):  # the head in pieces, the body after a pause
            for piece in (b"HTTP/1.1 20", b"0 OK\r\nContent-Len", b"gth: 4\r\n", b"\r\nsl", b"ow"):
                conn.sendall(piece)
                time.sleep(0.05)
            return True
        if path.startswith("/bighead"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n")
            return False
        if path.startswith("/big/"):
            size = int(path.split("/")[2])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            block = bytes(range(256)) * 256
            sent = 0
            while sent < size:
                part = block[: size - sent]
                conn.sendall(part)
                sent += len(part)
            return True
        body = seen.body if path.startswith(("/echo", "/sha")) else self.name.encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n" % (
            len(body),
            self.name.encode(),
        )
        if path.startswith("/bye"):
            head += b"Connection: close\r\n"
        conn.sendall(head + b"\r\n" + (b"" if seen.method == "HEAD" else body))
        return not path.startswith(("/bye", "/drop"))  # /drop: closes without saying so


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    made: list[Backend] = []

    def make(name: str) -> Backend:
        backend = Backend(name)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def add_cluster(
    worker: Worker,
    cluster_id: str,
    hostname: str,
    backends: list[Backend | str],
    path: str = "",
    sticky: bool = False,
) -> None:
    cluster = Cluster(cluster_id=cluster_id, sticky_session=sticky)
    assert worker.call(Request(add_cluster=cluster)).status == OK
    for index, backend in enumerate(backends):
        add = AddBackend(
            cluster_id=cluster_id,
            backend_id=f"{cluster_id}-{index}",
            address=to_proto(backend if isinstance(backend, str) else backend.address),
        )
        assert worker.call(Request(add_backend=add)).status == OK
    frontend = RequestHttpFrontend(
        cluster_id=cluster_id,
        address=to_proto(worker.address),
        hostname=hostname,
        path=PathRule(kind=PathRuleKind.PREFIX, value=path),
    )
    assert worker.call(Request(add_http_frontend=frontend)).status == OK


def dead_address() -> str:
    """An address where connections are refused (bound, then closed without listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    return address


def connect(worker: Worker) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", worker.port()), timeout=10)
    return sock


_LEFTOVER: dict[int, bytes] = {}


def _need(sock: socket.socket, buffer: bytes, marker: bytes | int) -> bytes:
    """Read until `buffer` holds `marker` (bytes) or that many bytes (int)."""
    while (marker not in buffer) if isinstance(marker, bytes) else (len(buffer) < marker):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed with {buffer[:200]!r}")
        buffer += data
    return buffer


def read_response(
    sock: socket.socket, head_request: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """One response from a raw socket (status, lower-cased headers, decoded body); bytes
    of the next response stay for the next call."""
    buffer = _need(sock, _LEFTOVER.pop(id(sock), b""), b"\r\n\r\n")
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if head_request or status in (204, 304) or 100 <= status < 200:
        pass
    elif headers.get("transfer-encoding", "").endswith("chunked"):
        while True:
            buffer = _need(sock, buffer, b"\r\n")
            size_line, _, buffer = buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                buffer = (
                    _need(sock, buffer, b"\r\n\r\n") if not buffer.startswith(b"\r\n") else buffer
                )
                if buffer.startswith(b"\r\n"):
                    buffer = buffer[2:]
                else:
                    _, _, buffer = buffer.partition(b"\r\n\r\n")
                break
            buffer = _need(sock, buffer, size + 2)
            body += buffer[:size]
            buffer = buffer[size + 2 :]
    elif "content-length" in headers:
        size = int(headers["content-length"])
        buffer = _need(sock, buffer, size)
        body, buffer = buffer[:size], buffer[size:]
    else:
        while data := sock.recv(65536):
            buffer += data
        body, buffer = buffer, b""
    if buffer:
        _LEFTOVER[id(sock)] = buffer
    return status, headers, body


@pytest.fixture
def worker(start: Callable[..., Worker]) -> Worker:
    return start(extra="back_timeout = 1\nconnect_timeout = 1")


# --- tests -----------------------------------------------------------------------------------


def test_routes_by_host_and_path_to_two_clusters(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    one, two, api = backends("one"), backends("two"), backends("api")
    add_cluster(worker, "one", "one.example", [one])
    add_cluster(worker, "two", "two.example", [two])
    add_cluster(worker, "api", "one.example", [api], path="/api")
    for host, path, expected in [
        ("one.example", "/", "one"),
        ("two.example", "/x", "two"),
        ("one.example", "/api/v1", "api"),
    ]:
        response = worker.get(host, path)
        assert response.status == 200
        assert response.read() == expected.encode()
        assert response.getheader("X-Backend") == expected
        assert len(response.getheader("Sozu-Id") or "") == 26
    assert [s.path for s in api.seen] == ["/api/v1"]
    assert worker.get("three.example").status == 404


def test_forwarding_headers_are_added_and_hop_by_hop_dropped(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.sendall(
        b"GET /h HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"Connection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: 5\r\n\r\n"
    )
    status, headers, _ = read_response(sock)
    sock.close()
    assert status == 200
    (seen,) = app.seen
    assert seen.header("Host") == "app.example"
    assert seen.header("X-Forwarded-For") == "10.0.0.1, 127.0.0.1"
    forwarded = seen.header("Forwarded") or ""
    assert forwarded.startswith('proto=http;for="127.0.0.1:') and forwarded.endswith(
        ";by=127.0.0.1"
    )
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Port") == str(worker.port())
    assert seen.header("Sozu-Id") == headers["sozu-id"]
    for hop in ("Connection", "Keep-Alive", "X-Private"):
        assert seen.header(hop) is None


def test_keep_alive_reuses_connections_on_both_sides(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    connection = http.client.HTTPConnection("127.0.0.1", worker.port(), timeout=5)
    for _ in range(20):
        connection.request("GET", "/", headers={"Host": "app.example"})
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b"app"
    connection.close()
    assert len(app.seen) == 20
    assert app.connections == 1
    # a second client reuses the idle backend connection too
    assert worker.get("app.example").read() == b"app"
    assert app.connections == 1
    # a backend that says Connection: close gets a new connection next time
    assert worker.get("app.example", "/bye").read() == b"app"
    assert worker.get("app.example").read() == b"app"
    assert app.connections == 2


def test_pipelined_requests_are_answered_in_order(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    requests = b"".join(
        b"POST /echo/%d HTTP/1.1\r\nHost: app.example\r\nContent-Length: 6\r\n\r\nbody-%d" % (i, i)
        for i in range(5)
    )
    sock.sendall(requests + b"GET /h HTTP/1.1\r\nHost: nowhere.example\r\n\r\n")
    for i in range(5):
        status, _, body = read_response(sock)
        assert (status, body) == (200, b"body-%d" % i)
    status, _, _ = read_response(sock)
    assert status == 404
    sock.close()


def test_chunked_request_and_response_with_trailers(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.sendall(
        b"POST /echo HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Check: yes\r\n\r\n"
    )
    status, _, body = read_response(sock)
    assert (status, body) == (200, b"wikipedia")
    seen = app.seen[-1]
    assert seen.body == b"wikipedia" and seen.trailers == [("X-Check", "yes")]
    assert seen.header("Transfer-Encoding") == "chunked"
    sock.sendall(b"GET /chunked HTTP/1.1\r\nHost: app.example\r\n\r\n")
    raw = b""
    while not raw.endswith(b"\r\n\r\n") or b"0\r\n" not in raw:
        raw += sock.recv(65536)
    assert b"transfer-encoding: chunked" in raw.lower()
    assert raw.endswith(b"0\r\nX-Sum: 11\r\n\r\n")
    sock.close()


def test_expect_100_continue_is_relayed(worker: Worker, backends: Callable[[str], Backend]) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.sendall(
        b"POST /echo HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    interim = sock.recv(65536)
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
    sock.sendall(b"hello")
    status, _, body = read_response(sock)
    assert (status, body) == (200, b"hello")
    sock.close()


def test_websocket_upgrade_becomes_a_byte_pipe(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"upgrade: websocket" in head.lower()
    seen = app.seen[-1]
    assert seen.header("Upgrade") == "websocket"
    for message in (b"ping", b"\x81\x05hello", b"x" * 100_000):
        sock.sendall(message)
        echoed = b""
        while len(echoed) < len(message):
            echoed += sock.recv(65536)
        assert echoed == message
    sock.close()


def test_ten_mib_up_and_down_with_bounded_memory(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    process = psutil.Process(worker.process.pid)
    rss_before = process.memory_info().rss
    size = 10 * MIB
    payload = bytes(range(256)) * (size // 256)
    peak = rss_before

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    sampling = True
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        sock = connect(worker)
        sock.sendall(
            b"POST /sha HTTP/1.1\r\nHost: app.example\r\nContent-Length: %d\r\n\r\n" % size
        )
        view = memoryview(payload)
        for offset in range(0, size, MIB):
            sock.sendall(view[offset : offset + MIB])
        status, _, body = read_response(sock)
        assert status == 200
        assert body.decode() == hashlib.sha256(payload).hexdigest()

        sock.sendall(b"GET /big/%d HTTP/1.1\r\nHost: app.example\r\n\r\n" % size)
        digest = hashlib.sha256()
        got = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % size in head
        digest.update(rest)
        got = len(rest)
        while got < size:
            data = sock.recv(256 * 1024)
            assert data
            digest.update(data)
            got += len(data)
            time.sleep(0.001)  # a slowish reader: the proxy must not buffer it all
        sock.close()
    finally:
        sampling = False
        sampler.join()
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert peak - rss_before < 30 * MIB, (rss_before, peak)


def test_backend_failures_answer_502_503_504(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    response = worker.get("app.example", "/close")
    assert response.status == 502
    started = time.monotonic()
    response = worker.get("app.example", "/sleep/3")
    assert response.status == 504
    assert time.monotonic() - started < 2.5
    # the worker still serves that cluster after both
    assert worker.get("app.example").read() == b"app"

    add_cluster(worker, "dead", "dead.example", [dead_address(), dead_address()])
    response = worker.get("dead.example")
    assert response.status == 503


def test_back_timeout_on_a_reused_backend_connection_answers_504(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    assert worker.get("app.example").read() == b"app"  # leaves an idle backend connection
    started = time.monotonic()
    response = worker.get("app.example", "/sleep/3")
    assert response.status == 504
    assert time.monotonic() - started < 2.5
    assert app.connections == 1  # the idle connection was the one that timed out


def test_answers_read_as_bytes_whole_in_pieces_or_followed_by_junk(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    for path, body in (
        ("/slowhead", b"slow"),
        ("/x", b"app"),
        ("/extra", b"extra"),
        ("/y", b"app"),
    ):
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: app.example\r\n\r\n" % path.encode())
        status, headers, received = read_response(sock)
        assert (status, received) == (200, body), path
        assert "sozu-id" in headers and "connection" not in headers
    sock.close()
    # the connection that sent junk after its answer was not reused: a second one was opened
    assert app.connections == 2


def test_junk_after_a_chunked_answer_keeps_its_connection_out_of_the_pool(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    for path, body in (("/junkchunked", b"junk"), ("/x", b"app")):
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: app.example\r\n\r\n" % path.encode())
        status, _, received = read_response(sock)
        assert (status, received) == (200, body), path
    sock.close()
    # the connection that sent a head nobody asked for was not reused: a second one was opened
    assert app.connections == 2


def test_a_kept_alive_client_connection_follows_routing_changes(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    one, two = backends("one"), backends("two")
    add_cluster(worker, "one", "app.example", [one])
    add_cluster(worker, "two", "two.example", [two])
    request = b"GET /same HTTP/1.1\r\nHost: app.example\r\n\r\n"

    def ask(sock: socket.socket) -> tuple[int, bytes]:
        sock.sendall(request)
        status, _, body = read_response(sock)
        return status, body

    # the frontend goes: the next request on the same connection gets 404
    sock = connect(worker)
    assert ask(sock) == (200, b"one") and ask(sock) == (200, b"one")
    frontend = RequestHttpFrontend(
        cluster_id="one",
        address=to_proto(worker.address),
        hostname="app.example",
        path=PathRule(kind=PathRuleKind.PREFIX, value=""),
    )
    assert worker.call(Request(remove_http_frontend=frontend)).status == OK
    assert ask(sock)[0] == 404
    sock.close()
    # the hostname now leads to another cluster
    frontend.cluster_id = "two"
    assert worker.call(Request(add_http_frontend=frontend)).status == OK
    sock = connect(worker)
    assert ask(sock) == (200, b"two") and ask(sock) == (200, b"two")
    # that cluster changes (a new view of it): https redirect on the same connection
    changed = Cluster(cluster_id="two", https_redirect=True)
    assert worker.call(Request(add_cluster=changed)).status == OK
    assert ask(sock)[0] == 301
    sock.close()


def test_repeated_requests_are_each_forwarded_once_and_stray_blank_lines_are_nothing(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    """The same request bytes again on a keep-alive connection are served from their earlier
    parse; CR/LF alone between requests starts no request (it must not replay the last one)."""
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    request = b"DELETE /item/1 HTTP/1.1\r\nHost: app.example\r\n\r\n"
    sock = connect(worker)
    sock.sendall(request)
    assert read_response(sock)[0] == 200
    for _ in range(3):
        sock.sendall(b"\r\n\r\n")
        time.sleep(0.05)  # one chunk each
    for _ in range(2):
        sock.sendall(request)
        assert read_response(sock)[0] == 200
    sock.sendall(b"GET /last HTTP/1.1\r\nHost: app.example\r\n\r\n")
    assert read_response(sock)[0] == 200
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(65536)  # no answer nobody asked for
    sock.close()
    assert [(seen.method, seen.path) for seen in app.seen] == [
        ("DELETE", "/item/1"),
        ("DELETE", "/item/1"),
        ("DELETE", "/item/1"),
        ("GET", "/last"),
    ]


def test_routes_shared_between_connections_follow_every_change(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    """A route found on one connection serves the next connections too (one request per
    connection is routed once), until a frontend or the cluster changes."""
    one, two = backends("one"), backends("two")
    add_cluster(worker, "one", "app.example", [one])
    add_cluster(worker, "two", "two.example", [two])
    request = b"GET /same HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"

    def ask_once() -> tuple[int, bytes]:
        with connect(worker) as sock:
            sock.sendall(request)
            status, _, body = read_response(sock)
        return status, body

    assert ask_once() == (200, b"one") and ask_once() == (200, b"one")
    frontend = RequestHttpFrontend(
        cluster_id="one",
        address=to_proto(worker.address),
        hostname="app.example",
        path=PathRule(kind=PathRuleKind.PREFIX, value=""),
    )
    assert worker.call(Request(remove_http_frontend=frontend)).status == OK
    assert ask_once()[0] == 404
    frontend.cluster_id = "two"
    assert worker.call(Request(add_http_frontend=frontend)).status == OK
    assert ask_once() == (200, b"two") and ask_once() == (200, b"two")
    changed = Cluster(cluster_id="two", https_redirect=True)
    assert worker.call(Request(add_cluster=changed)).status == OK
    assert ask_once()[0] == 301


def test_connect_failure_retries_another_backend(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    good = backends("good")
    add_cluster(worker, "app", "app.example", [dead_address(), good, dead_address()])
    for _ in range(6):
        response = worker.get("app.example")
        assert response.status == 200 and response.read() == b"good"


HARDENING = {
    "content-length and transfer-encoding": b"POST / HTTP/1.1\r\nHost: app.example\r\n"
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "differing content-lengths": b"POST / HTTP/1.1\r\nHost: app.example\r\n"
    b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: app.example\r\nX-A: b\r\n c\r\n\r\n",
    "invalid chunk size": b"POST / HTTP/1.1\r\nHost: app.example\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\r\nHost: app.example\nX-A: b\r\n\r\n",
    "NUL in header": b"GET / HTTP/1.1\r\nHost: app.example\r\nX-A: b\x00c\r\n\r\n",
    "invalid method": b"G@T / HTTP/1.1\r\nHost: app.example\r\n\r\n",
    "invalid target": b"GET /a b HTTP/1.1\r\nHost: app.example\r\n\r\n",
    "relative target": b"GET a/b HTTP/1.1\r\nHost: app.example\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(HARDENING))
def test_hardening_case_gets_400_and_never_reaches_the_backend(
    worker: Worker, backends: Callable[[str], Backend], case: str
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.sendall(HARDENING[case])
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 400 "), data[:100]
    assert b"Connection: close" in data
    assert app.seen == [] and app.connections == 0


def test_sticky_session_sets_and_follows_the_cookie(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    one, two = backends("one"), backends("two")
    add_cluster(worker, "app", "app.example", [one, two], sticky=True)
    response = worker.get("app.example")
    cookie = response.getheader("Set-Cookie") or ""
    first = response.read().decode()
    assert cookie == f"SOZUBALANCEID=app-{0 if first == 'one' else 1}; Path=/"
    connection = http.client.HTTPConnection("127.0.0.1", worker.port(), timeout=5)
    for _ in range(4):
        headers = {"Host": "app.example", "Cookie": cookie.split(";")[0] + "; other=1"}
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        assert response.read().decode() == first
        assert response.getheader("Set-Cookie") is None
    connection.close()
    backend = one if first == "one" else two
    assert all(s.header("Cookie") == "other=1" for s in backend.seen[1:])


def test_head_request_ends_at_the_head(worker: Worker, backends: Callable[[str], Backend]) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    for _ in range(2):
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        status, headers, body = read_response(sock, head_request=True)
        assert status == 200 and headers["content-length"] == "3" and body == b""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
    assert read_response(sock)[2] == b"app"
    sock.close()
    assert app.connections == 1


def test_https_redirect_answers_301(worker: Worker, backends: Callable[[str], Backend]) -> None:
    app = backends("app")
    cluster = Cluster(cluster_id="secure", https_redirect=True, https_redirect_port=8443)
    assert worker.call(Request(add_cluster=cluster)).status == OK
    add = AddBackend(cluster_id="secure", backend_id="s-0", address=to_proto(app.address))
    assert worker.call(Request(add_backend=add)).status == OK
    frontend = RequestHttpFrontend(
        cluster_id="secure",
        address=to_proto(worker.address),
        hostname="secure.example",
        path=PathRule(kind=PathRuleKind.PREFIX, value=""),
    )
    assert worker.call(Request(add_http_frontend=frontend)).status == OK
    response = worker.get("secure.example", "/a?b=1")
    assert response.status == 301
    assert response.getheader("Location") == "https://secure.example:8443/a?b=1"
    assert app.seen == []


def test_backend_connections_close_with_the_client(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.sendall(b"GET /sleep/0.3 HTTP/1.1\r\nHost: app.example\r\n\r\n")
    wait_for(lambda: app.connections == 1, what="the backend connection")
    sock.close()
    wait_for(lambda: len(app.seen) == 1, what="the request at the backend")
    # the connection whose client left is not pooled: the next request gets a fresh one
    assert worker.get("app.example").read() == b"app"
    assert app.connections == 2


def test_access_log_line_per_request(
    start: Callable[..., Worker], backends: Callable[[str], Backend], tmp_path: Path
) -> None:
    target = tmp_path / "access.log"
    worker = start(extra=f'access_logs_target = "file://{target}"')
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    connection = http.client.HTTPConnection("127.0.0.1", worker.port(), timeout=5)
    connection.request("GET", "/logged?x=1", headers={"Host": "app.example", "User-Agent": "t/1"})
    response = connection.getresponse()
    request_id = response.getheader("Sozu-Id")
    assert response.read() == b"app"
    connection.close()
    assert worker.get("nowhere.example").status == 404

    def lines() -> list[str]:
        return target.read_text().splitlines() if target.exists() else []

    wait_for(lambda: len(lines()) >= 2, what="two access log lines")
    first, second = lines()[:2]
    assert f"{request_id} app app-0]" in first
    assert "app.example GET /logged?x=1 200" in first and "user-agent=t/1" in first
    assert "nowhere.example GET / 404" in second


def test_request_head_too_large_gets_413_and_response_head_too_large_507(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: app.example\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 413 ")
    assert app.seen == []
    response = worker.get("app.example", "/bighead")
    assert response.status == 507


def test_a_pipelined_head_too_large_gets_413_too(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    """A head after another request in the same chunk is measured like any other."""
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    small = b"GET /small HTTP/1.1\r\nHost: app.example\r\n\r\n"
    big = b"GET /big HTTP/1.1\r\nHost: app.example\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    sock = connect(worker)
    sock.sendall(small + big)
    assert read_response(sock)[0] == 200
    assert read_response(sock)[0] == 413
    assert sock.recv(65536) == b""  # and the connection is closed
    sock.close()
    assert [seen.path for seen in app.seen] == ["/small"]


def test_request_trailers_beyond_the_buffer_get_413(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.settimeout(5)
    head = b"POST /echo HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    sock.sendall(head + b"5\r\nhello\r\n0\r\nX-Trailer: ")
    time.sleep(0.1)
    sock.sendall(b"t" * 40_000)
    data = b""
    while chunk := sock.recv(65536):  # before: no answer, the trailer kept growing in memory
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 413 ")
    # bodies of any size are still fine: only head and trailer bytes count
    body = b"x" * 200_000
    client = http.client.HTTPConnection("127.0.0.1", worker.port(), timeout=5)
    client.request("POST", "/sha", body=body, headers={"Host": "app.example"})
    response = client.getresponse()
    assert (response.status, response.read()) == (200, hashlib.sha256(body).hexdigest().encode())
    client.close()


def test_idle_backend_connection_closed_by_the_backend_is_not_reused(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    for _ in range(3):
        response = worker.get("app.example", "/drop")
        assert response.status == 200 and response.read() == b"app"
    assert app.connections == 3


def test_upgrade_pipelined_after_a_request_waits_its_turn(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    app = backends("app")
    add_cluster(worker, "app", "app.example", [app])
    sock = connect(worker)
    sock.sendall(
        b"GET /sleep/0.2 HTTP/1.1\r\nHost: app.example\r\n\r\n"
        b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\n\r\nearly"
    )
    status, _, body = read_response(sock)
    assert (status, body) == (200, b"app")
    data = _LEFTOVER.pop(id(sock), b"")
    while b"early" not in data:
        data += sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 101 ") and data.endswith(b"\r\n\r\nearly")
    sock.sendall(b"more")
    assert sock.recv(65536) == b"more"
    sock.close()


def _get(sock: socket.socket, host: str) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return read_response(sock)


def test_max_connections_per_ip_answers_429_with_retry_after(
    start: Callable[..., Worker], backends: Callable[[str], Backend]
) -> None:
    worker = start(extra="max_connections_per_ip = 2\nretry_after = 7")
    add_cluster(worker, "app", "app.example", [backends("app")])
    first, second = connect(worker), connect(worker)
    assert _get(first, "app.example")[0] == 200
    assert _get(second, "app.example")[0] == 200
    assert _get(first, "app.example")[0] == 200  # a connection counts once
    third = connect(worker)
    status, headers, body = _get(third, "app.example")
    assert status == 429
    assert headers["retry-after"] == "7"
    assert headers["connection"] == "close"
    assert b"Too Many Requests" in body
    assert third.recv(1) == b""
    third.close()
    assert _get(connect(worker), "app.example2")[0] == 404  # unrouted: not counted
    first.close()

    def admitted() -> bool:
        with connect(worker) as sock:
            return _get(sock, "app.example")[0] == 200

    wait_for(admitted, what="a freed slot")
    # `connection-limit set 0` at runtime lifts the limit
    assert worker.call(Request(set_max_connections_per_ip=0)).status == OK
    held = [connect(worker) for _ in range(3)]
    assert [_get(sock, "app.example")[0] for sock in held] == [200, 200, 200]
    assert worker.call(Request(set_max_connections_per_ip=1)).status == OK
    extra = connect(worker)  # counts restarted from zero when the limit was lifted
    assert _get(extra, "app.example")[0] == 200
    assert _get(connect(worker), "app.example")[0] == 429
    for sock in (*held, extra, second):
        sock.close()


def test_cluster_max_connections_per_ip_overrides_the_global_one(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    backend = backends("app")
    add_cluster(worker, "app", "app.example", [backend])
    add_cluster(worker, "other", "other.example", [backend])
    limited = Cluster(cluster_id="app", max_connections_per_ip=1, retry_after=0)
    assert worker.call(Request(add_cluster=limited)).status == OK
    first = connect(worker)
    assert _get(first, "app.example")[0] == 200
    second = connect(worker)
    status, headers, _ = _get(second, "app.example")
    assert status == 429
    assert "retry-after" not in headers  # retry_after = 0: no header
    other = connect(worker)
    assert _get(other, "other.example")[0] == 200  # the limit is per cluster
    assert _get(other, "other.example")[0] == 200
    for sock in (first, second, other):
        sock.close()


def test_no_hsts_on_plain_http_even_when_a_frontend_asks(
    worker: Worker, backends: Callable[[str], Backend]
) -> None:
    add_cluster(worker, "app", "app.example", [backends("app")])
    frontend = RequestHttpFrontend(
        cluster_id="app",
        address=to_proto(worker.address),
        hostname="hsts.example",
        path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        hsts=HstsConfig(enabled=True, max_age=600),
    )
    response = worker.call(Request(add_http_frontend=frontend))
    if response.status == OK:  # accepted or refused, plain HTTP never carries HSTS
        with connect(worker) as sock:
            status, headers, _ = _get(sock, "hsts.example")
        assert status == 200
        assert "strict-transport-security" not in headers
