"""Connections still waiting for their PROXY header (listeners with `expect_proxy`) are bounded:
they count against `max_connections`, and their wait ends even when request_timeout is 0.

In-process: a real `ProxyAcceptor` hands real `HttpSession`s (real SessionHub, BackendPool and
routing) to a threaded HTTP backend, on this test's event loop and real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from sozu.command.addresses import to_proto
from sozu.command.proto import (
    AddBackend,
    Cluster,
    PathRule,
    PathRuleKind,
    Request,
    RequestHttpFrontend,
)
from sozu.command.state import ConfigState
from sozu.worker import metrics
from sozu.worker.backends import BackendPool
from sozu.worker.metrics import Counters
from sozu.worker.protocol.http1 import ClusterView, ListenerView, Routing
from sozu.worker.protocol.proxy_protocol import build_v1
from sozu.worker.proxy_accept import ProxyAcceptor
from sozu.worker.session import HttpSession, SessionHub
from tests.integration.test_http_proxy import Backend

pytestmark = pytest.mark.timeout(30)

CLIENT = ("203.0.113.9", 40123)
BEGUN = b"PROXY TCP4 "  # a v1 header begun, not finished
GET = b"GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"


@pytest.fixture
def http_backend() -> Iterator[Backend]:
    backend = Backend("ok")
    yield backend
    backend.close()


@dataclass
class Listener:
    acceptor: ProxyAcceptor
    port: int
    hub: SessionHub


async def expect_proxy_listener(
    backend_address: str, max_connections: int, request_timeout: float, front_timeout: float
) -> Listener:
    """An HTTP listener with expect_proxy, routing app.example to `backend_address`, as the
    worker sets it up (`ListenerPool.activate` gives ProxyAcceptor the request_timeout)."""
    state = ConfigState()
    state.apply(Request(add_cluster=Cluster(cluster_id="app")))
    address = to_proto(backend_address)
    state.apply(
        Request(add_backend=AddBackend(cluster_id="app", backend_id="app-0", address=address))
    )
    pool = BackendPool()
    pool.rebuild(state)
    routing = Routing()
    routing.clusters["app"] = ClusterView("app", backends=1)
    listening = socket.create_server(("127.0.0.1", 0))
    listener_address = f"127.0.0.1:{listening.getsockname()[1]}"
    routing.http.add(
        RequestHttpFrontend(
            cluster_id="app",
            address=to_proto(listener_address),
            hostname="app.example",
            path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        )
    )
    hub = SessionHub(routing, Counters(), max_connections, 16384, pool)
    view = ListenerView(
        listener_address, request_timeout=request_timeout, front_timeout=front_timeout
    )
    acceptor = ProxyAcceptor(listening, lambda: HttpSession(hub, view), None, request_timeout)
    return Listener(acceptor, listening.getsockname()[1], hub)


async def until(condition: Callable[[], bool], what: str, timeout: float = 5) -> None:
    """Poll `condition` on the event loop (the proxy runs on it too) until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def closed_without_answer(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True


def test_connections_waiting_for_their_header_count_against_max_connections(
    http_backend: Backend,
) -> None:
    async def scenario() -> tuple[bool, bytes, int, int]:
        listener = await expect_proxy_listener(http_backend.address, 2, 30, 60)
        hub = listener.hub
        try:
            waiting = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(2)]
            for _, writer in waiting:
                writer.write(BEGUN)
            await until(lambda: len(hub.sessions) == 2, "both connections to count")
            # before: a third connection was taken as well, unbounded by max_connections
            reader, extra = await asyncio.open_connection("127.0.0.1", listener.port)
            rejected = await closed_without_answer(reader, 5)  # at once, not after 30 s
            extra.close()
            # the first one finishes its header: its session takes its place and is served
            reader, writer = waiting[0]
            header = build_v1(CLIENT, ("127.0.0.1", listener.port))
            writer.write(header[len(BEGUN) :] + GET)
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            waiting[1][1].close()
            await until(lambda: not hub.sessions, "every connection to leave the hub")
            return rejected, answer, hub.counters.counts[metrics.REJECTED], len(hub.sessions)
        finally:
            listener.acceptor.close()

    rejected, answer, rejected_count, left = asyncio.run(scenario())
    assert rejected
    assert rejected_count == 1
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert left == 0


@pytest.mark.parametrize(
    ("request_timeout", "front_timeout"), [(1, 60), (0, 1)], ids=["request", "front"]
)
def test_the_header_wait_is_bounded_even_without_request_timeout(
    http_backend: Backend, request_timeout: float, front_timeout: float
) -> None:
    async def scenario() -> tuple[bool, float, int]:
        listener = await expect_proxy_listener(
            http_backend.address, 10, request_timeout, front_timeout
        )
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            began = time.monotonic()
            closed = await closed_without_answer(reader, 5)  # before: waited for ever
            waited = time.monotonic() - began
            writer.close()
            await until(lambda: not listener.hub.sessions, "the connection to leave the hub")
            return closed, waited, listener.hub.counters.counts[metrics.ACCEPTED]
        finally:
            listener.acceptor.close()

    closed, waited, accepted = asyncio.run(scenario())
    assert closed
    assert 0.8 < waited < 3
    assert accepted == 1
