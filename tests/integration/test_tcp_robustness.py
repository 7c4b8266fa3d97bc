"""A bug in a TCP session's callback ends that session only, on real sockets, in-process.

Each test runs real `TcpSession`s (a real SessionHub and BackendPool) on this test's event loop
in front of a real echo backend, and bends one worker record to a value the command side never
produces, so a callback raises as a bug would. The broken session must be aborted (client and
backend connections), logged once, leave the hub, and the next session must be served.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sozu.command.addresses import to_proto
from sozu.command.proto import AddBackend, Cluster, Request
from sozu.command.state import ConfigState
from sozu.worker.backends import Backend, BackendPool
from sozu.worker.metrics import Counters
from sozu.worker.protocol.http1 import Routing
from sozu.worker.session import SessionHub
from sozu.worker.tcp import TcpListenerView, TcpSession

pytestmark = pytest.mark.timeout(30)


@dataclass
class EchoBackend:
    """Echoes what it receives; counts its connections and those that ended."""

    accepted: int = 0
    ended: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.ended += 1
            self.changed.set()

    async def wait_ended(self, count: int) -> None:
        while self.ended < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


@dataclass
class Proxy:
    port: int
    hub: SessionHub
    backend: Backend
    servers: list[asyncio.Server]


async def in_process_tcp_proxy(echo: EchoBackend) -> Proxy:
    """A TCP listener of real TcpSessions whose cluster has one backend, `echo`."""
    backend_server = await asyncio.start_server(echo.serve, "127.0.0.1", 0)
    backend_port = backend_server.sockets[0].getsockname()[1]
    state = ConfigState()
    state.apply(Request(add_cluster=Cluster(cluster_id="pipe")))
    address = to_proto(f"127.0.0.1:{backend_port}")
    state.apply(
        Request(add_backend=AddBackend(cluster_id="pipe", backend_id="pipe-0", address=address))
    )
    pool = BackendPool()
    pool.rebuild(state)
    hub = SessionHub(Routing(), Counters(), 100, 16384, pool)
    listening = socket.create_server(("127.0.0.1", 0))
    view = TcpListenerView(f"127.0.0.1:{listening.getsockname()[1]}", "pipe")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: TcpSession(hub, view, lambda: pool), sock=listening)
    (backend,) = pool.backends("pipe")
    return Proxy(listening.getsockname()[1], hub, backend, [server, backend_server])


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, then the end of stream; everything received until the proxy closes (a
    reset, even one that makes sending fail, counts as nothing received)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 5)
    except OSError:  # reset, or not connected any more
        return b""
    finally:
        writer.close()


def _bend_buffer_size(proxy: Proxy) -> Callable[[], None]:
    """connection_made fails: a negative write buffer limit is refused by the transport."""
    proxy.hub.buffer_size = -1

    def restore() -> None:
        proxy.hub.buffer_size = 16384

    return restore


def _bend_connection_count(proxy: Proxy) -> Callable[[], None]:
    """The backend is connected, then counting its connection fails (connect task)."""
    proxy.backend.active_connections = None  # type: ignore[assignment]

    def restore() -> None:
        proxy.backend.active_connections = 0

    return restore


@pytest.mark.parametrize(
    ("bend", "backend_reached"),
    [(_bend_buffer_size, False), (_bend_connection_count, True)],
    ids=["connection_made", "connect"],
)
def test_a_bug_in_a_tcp_callback_aborts_that_session_once_and_the_worker_goes_on(
    bend: Callable[[Proxy], Callable[[], None]],
    backend_reached: bool,
    capfd: pytest.CaptureFixture[str],
) -> None:
    problems: list[str] = []

    async def scenario() -> tuple[list[bytes], bytes, EchoBackend, int]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: problems.append(str(context["message"])))
        echo = EchoBackend()
        proxy = await in_process_tcp_proxy(echo)
        try:
            restore = bend(proxy)
            broken = [await exchange(proxy.port, b"lost") for _ in range(2)]
            if backend_reached:  # before: the backend connection stayed open, leaked
                await echo.wait_ended(2)
            sessions_left = len(proxy.hub.sessions)
            restore()
            served = await exchange(proxy.port, b"hello")
            return broken, served, echo, sessions_left
        finally:
            for server in proxy.servers:
                server.close()
            await asyncio.sleep(0)

    broken, served, echo, sessions_left = asyncio.run(scenario())
    assert broken == [b"", b""]  # aborted: nothing relayed, no hanging connection
    assert sessions_left == 0  # the broken sessions left the hub (max_connections, stops)
    assert served == b"hello"
    assert echo.accepted == (3 if backend_reached else 1)
    captured = capfd.readouterr()
    logged = captured.out + captured.err
    assert logged.count("tcp_session_failed") == 2, logged  # once per broken session
    assert not problems, problems


def test_a_bug_while_a_backend_callback_ends_the_session_still_frees_its_place(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The backend's end of stream ends the pipe, and releasing its backend count then fails
    (the count bent to None) half-way through the session's end, in a backend callback."""
    problems: list[str] = []

    async def scenario() -> tuple[bytes, int, bytes]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: problems.append(str(context["message"])))
        echo = EchoBackend()
        proxy = await in_process_tcp_proxy(echo)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            first = await asyncio.wait_for(reader.readexactly(4), 5)  # the pipe is up
            proxy.backend.active_connections = None  # type: ignore[assignment]
            writer.write_eof()  # passed on; the backend ends in turn, which ends the pipe
            with contextlib.suppress(OSError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await echo.wait_ended(1)
            deadline = loop.time() + 5
            while proxy.hub.sessions and loop.time() < deadline:  # before: never released
                await asyncio.sleep(0.01)
            left = len(proxy.hub.sessions)
            proxy.backend.active_connections = 0
            return first, left, await exchange(proxy.port, b"hello")
        finally:
            for server in proxy.servers:
                server.close()
            await asyncio.sleep(0)

    first, left, served = asyncio.run(scenario())
    assert (first, left, served) == (b"ping", 0, b"hello")
    captured = capfd.readouterr()
    logged = captured.out + captured.err
    assert logged.count("tcp_session_failed") == 1, logged
    assert "backend eof_received" in logged and not problems, problems
