"""Robustness of the HTTP worker against hostile backends, bugs and idle pipes, on real sockets.

Each test plays the supervisor in front of a real worker process (`test_worker.start`), with
raw-socket backends that misbehave in one precise way, and checks what the client sees, that the
backend connection ends, and that the worker keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sozu.command.addresses import to_proto
from sozu.command.proto import (
    AddBackend,
    Cluster,
    PathRule,
    PathRuleKind,
    Request,
    RequestHttpFrontend,
    SoftStop,
)
from sozu.command.state import ConfigState
from sozu.worker.backends import BackendPool
from sozu.worker.metrics import Counters
from sozu.worker.protocol.http1 import ClusterView, ListenerView, Routing
from sozu.worker.session import HttpSession, SessionHub
from tests.integration.harness import wait_for
from tests.integration.test_http_proxy import (
    Backend,
    add_cluster,
    backends,
    connect,
    read_response,
)
from tests.integration.test_worker import OK, PROCESSING, Worker, start

__all__ = ["backends", "start"]  # fixtures, re-exported for pytest

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[socket.socket], None]


class RawBackend:
    """A listening socket whose connections are each given to `handler` in a thread; records
    when a connection's handler ended (the worker closed or reset it)."""

    def __init__(self, handler: Handler) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.handler = handler
        self.ended = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()
            self.ended.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_backends() -> Iterator[Callable[[Handler], RawBackend]]:
    made: list[RawBackend] = []

    def make(handler: Handler) -> RawBackend:
        backend = RawBackend(handler)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def plain_backend() -> Iterator[Backend]:
    backend = Backend("ok")
    yield backend
    backend.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            raise ConnectionError("client gone")
        data += more
    return data


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the worker closes the connection (a socket timeout fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _still_serves(worker: Worker, backend: Backend) -> None:
    response = worker.get("ok.example", "/")
    assert (response.status, response.read()) == (200, b"ok")


def test_endless_backend_trailers_end_the_exchange_not_the_worker(
    start: Callable[..., Worker],
    raw_backends: Callable[[Handler], RawBackend],
    plain_backend: Backend,
) -> None:
    worker = start(extra="back_timeout = 30")  # the cut must come from the bound, not a timer

    def endless_trailer(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Endless: "
        )
        while True:
            conn.sendall(b"t" * 4096)

    bad = raw_backends(endless_trailer)
    add_cluster(worker, "bad", "bad.example", [bad.address])
    add_cluster(worker, "ok", "ok.example", [plain_backend])
    sock = connect(worker)
    sock.settimeout(5)  # before: the trailer grew in memory until back_timeout
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bad.example\r\n\r\n")
    data = _read_all(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"5\r\nhello\r\n" in data and not data.endswith(b"0\r\n\r\n")  # cut, not completed
    wait_for(bad.ended.is_set, 5, "the backend connection to be closed")
    _still_serves(worker, plain_backend)


async def in_process_proxy(
    backend_address: str, cluster: ClusterView
) -> tuple[asyncio.Server, int, BackendPool]:
    """A real HttpSession server on this test's event loop with one cluster (`cluster`) of one
    backend, routed from host `<cluster id>.example`; returns the server, its port and the
    worker's BackendPool (whose records a test may bend to reach a path no input reaches)."""
    loop = asyncio.get_running_loop()
    cluster_id = cluster.cluster_id
    state = ConfigState()
    state.apply(Request(add_cluster=Cluster(cluster_id=cluster_id)))
    add = AddBackend(
        cluster_id=cluster_id, backend_id=f"{cluster_id}-0", address=to_proto(backend_address)
    )
    state.apply(Request(add_backend=add))
    pool = BackendPool()
    pool.rebuild(state)
    routing = Routing()
    routing.clusters[cluster_id] = cluster
    listening = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listening.getsockname()[1]}"
    routing.http.add(
        RequestHttpFrontend(
            cluster_id=cluster_id,
            address=to_proto(address),
            hostname=f"{cluster_id}.example",
            path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        )
    )
    hub = SessionHub(routing, Counters(), 100, 16384, pool)
    view = ListenerView(address=address)
    server = await loop.create_server(lambda: HttpSession(hub, view), sock=listening)
    return server, listening.getsockname()[1], pool


def test_an_unexpected_connect_error_is_logged_and_answered_503(
    plain_backend: Backend,
) -> None:
    """In-process: the command side refuses a port beyond 65535, so the test sets one on the
    worker's own `Backend` record to make connecting raise OverflowError, which no connect
    path expects."""
    problems: list[str] = []

    async def scenario() -> bytes:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: problems.append(str(context["message"])))
        server, port, pool = await in_process_proxy(
            plain_backend.address, ClusterView("odd", backends=1)
        )
        (backend,) = pool.backends("odd")
        backend.port = 70000
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: odd.example\r\n\r\n")
            # before: the exception was lost and the client waited forever
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.close()
            return head
        finally:
            server.close()
            await asyncio.sleep(0)
            gc.collect()  # a task whose exception nobody retrieved complains when collected
            await asyncio.sleep(0)

    head = asyncio.run(scenario())
    assert head.startswith(b"HTTP/1.1 503 ")
    assert not [p for p in problems if "never retrieved" in p], problems


def test_a_bug_in_a_callback_closes_that_session_once_and_the_worker_goes_on(
    plain_backend: Backend, capfd: pytest.CaptureFixture[str]
) -> None:
    """In-process: a sticky id that is not text (impossible through the command side) makes
    building the Set-Cookie line raise inside `response_fast`, a backend callback."""
    problems: list[str] = []

    async def scenario() -> tuple[list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: problems.append(str(context["message"])))
        server, port, pool = await in_process_proxy(
            plain_backend.address, ClusterView("sticky", backends=1, sticky_session=True)
        )
        (backend,) = pool.backends("sticky")
        backend.sticky_id = 5  # type: ignore[assignment]
        try:
            broken = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: sticky.example\r\n\r\n")
                try:
                    broken.append(await asyncio.wait_for(reader.read(), 5))
                except ConnectionResetError:
                    broken.append(b"")
                writer.close()
            backend.sticky_id = "fixed"  # the next session is served as usual
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: sticky.example\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.close()
            return broken, head
        finally:
            server.close()
            await asyncio.sleep(0)

    broken, head = asyncio.run(scenario())
    assert broken == [b"", b""]  # aborted: no half answer, no hanging connection
    assert head.startswith(b"HTTP/1.1 200 ")
    captured = capfd.readouterr()
    logged = captured.out + captured.err
    assert logged.count("http_session_failed") == 2, logged  # once per broken session
    assert "AttributeError" in logged and not problems, problems


def test_an_idle_upgraded_pipe_closes_after_front_timeout(
    start: Callable[..., Worker], raw_backends: Callable[[Handler], RawBackend]
) -> None:
    worker = start(extra="front_timeout = 1\nback_timeout = 30")

    def websocket_echo(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        while data := conn.recv(65536):
            if data == b"push":  # the backend alone speaks for a while
                for _ in range(3):
                    time.sleep(0.4)
                    conn.sendall(b"tick")
            else:
                conn.sendall(data)

    ws = raw_backends(websocket_echo)
    add_cluster(worker, "ws", "ws.example", [ws.address])
    sock = connect(worker)
    sock.settimeout(5)  # before: an idle pipe stayed open for ever
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 101 ")
    began = time.monotonic()
    for _ in range(3):  # traffic keeps the pipe open past front_timeout
        time.sleep(0.4)
        sock.sendall(b"ping")
        assert sock.recv(65536) == b"ping"
    assert time.monotonic() - began > 1.1
    sock.sendall(b"push")  # then only backend -> client bytes: they keep it open too
    pushed = b""
    while len(pushed) < 12:
        pushed += sock.recv(65536)
    assert pushed == b"tick" * 3
    idle_from = time.monotonic()
    assert _read_all(sock) == b""
    assert 0.8 < time.monotonic() - idle_from < 3
    sock.close()
    wait_for(ws.ended.is_set, 5, "the backend side of the pipe to be closed")


def _chunked_backend(conn: socket.socket) -> None:
    while True:
        _read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n"
        )


def test_http10_client_gets_a_chunked_answer_dechunked_then_closed(
    start: Callable[..., Worker], raw_backends: Callable[[Handler], RawBackend]
) -> None:
    worker = start()
    chunked = raw_backends(_chunked_backend)
    add_cluster(worker, "c", "c.example", [chunked.address])
    for request in (
        b"GET / HTTP/1.0\r\nHost: c.example\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: c.example\r\nConnection: keep-alive\r\n\r\n",
    ):
        sock = connect(worker)
        sock.settimeout(5)
        sock.sendall(request)
        data = _read_all(sock)  # the end of the body is the end of the connection
        sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        lower = head.lower()
        assert b"transfer-encoding" not in lower and b"content-length" not in lower
        assert b"connection: close" in lower
        assert body == b"hello world"


def test_http10_keep_alive_is_kept_when_the_answer_has_a_length(
    start: Callable[..., Worker], plain_backend: Backend
) -> None:
    worker = start()
    add_cluster(worker, "ok", "ok.example", [plain_backend])
    sock = connect(worker)
    sock.settimeout(5)
    for _ in range(2):
        sock.sendall(b"GET / HTTP/1.0\r\nHost: ok.example\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = read_response(sock)
        assert (status, body) == (200, b"ok")
        assert headers.get("connection") == "keep-alive"
    sock.sendall(b"GET / HTTP/1.0\r\nHost: ok.example\r\n\r\n")  # no keep-alive: closed after
    status, headers, body = read_response(sock)
    assert (status, headers.get("connection"), body) == (200, "close", b"ok")
    assert sock.recv(65536) == b""
    sock.close()


def test_a_drain_gives_a_keep_alive_answer_in_progress_the_idle_grace(
    start: Callable[..., Worker], raw_backends: Callable[[Handler], RawBackend]
) -> None:
    """An answer whose head promised keep-alive before the worker began to drain: its
    connection is not closed under the client's next request, which is answered (with
    `Connection: close`)."""
    worker = start(extra="back_timeout = 30")
    go_on = threading.Event()

    def slow_body(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsl")
        go_on.wait(10)
        conn.sendall(b"ow")
        while True:
            _read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")

    backend = raw_backends(slow_body)
    add_cluster(worker, "slow", "slow.example", [backend.address])
    with connect(worker) as client:
        client.settimeout(10)
        client.sendall(b"GET / HTTP/1.1\r\nHost: slow.example\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(65536)
        assert b"Connection: close" not in head  # keep-alive was promised
        stop_id = worker.send(Request(soft_stop=SoftStop()))
        assert worker.recv(stop_id).status == PROCESSING
        go_on.set()
        rest = head.split(b"\r\n\r\n", 1)[1]
        while len(rest) < 4:
            rest += client.recv(65536)
        client.sendall(b"GET /again HTTP/1.1\r\nHost: slow.example\r\n\r\n")
        last = _read_all(client)
    assert last.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in last
    assert worker.recv(stop_id).status == OK
    assert worker.process.wait(10) == 0
