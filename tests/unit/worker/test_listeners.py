"""The worker's pool of listening sockets (sozu.worker.listeners), in one event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from sozu.command.proto import ListenerType
from sozu.command.scm import Listeners, send_listeners
from sozu.worker.listeners import ListenerError, ListenerPool

HTTP = ListenerType.HTTP


class Hello(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"hello")  # type: ignore[attr-defined]
        transport.close()


@pytest.fixture
def scm() -> Iterator[tuple[socket.socket, socket.socket]]:
    supervisor, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield supervisor, worker
    supervisor.close()
    worker.close()


def bound() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


async def fetch(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = await reader.read()
    writer.close()
    return data


async def test_activation_waits_for_the_scm_message(scm: tuple[socket.socket, socket.socket]):
    supervisor, worker_end = scm
    pool = ListenerPool(worker_end)
    listener, address = bound()
    port = listener.getsockname()[1]
    assert not await pool.receive(HTTP, address, timeout=0.1)
    with pytest.raises(ListenerError, match="no listening socket"):
        await pool.activate(HTTP, address, Hello)
    send_listeners(supervisor, Listeners(http={address: listener}))
    assert await pool.receive(HTTP, address, timeout=5)
    await pool.activate(HTTP, address, Hello)
    assert pool.serving(HTTP, address) and not pool.holds(HTTP, address)
    assert await fetch(port) == b"hello"
    assert pool.deactivate(HTTP, address)
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        await fetch(port)
    assert not pool.deactivate(HTTP, address)


async def test_received_addresses_are_normalized_and_replace_older_copies(
    scm: tuple[socket.socket, socket.socket],
):
    _, worker_end = scm
    first, address = bound()
    pool = ListenerPool(worker_end, Listeners(http={address: first}))
    second = socket.socket()
    pool.add(Listeners(http={address: second}))
    assert first.fileno() == -1  # the older copy is closed
    pool.remove(HTTP, address)
    assert second.fileno() == -1 and not pool.holds(HTTP, address)
    third = socket.socket()
    pool.add(Listeners(http={"[::0001]:80": third}))
    assert pool.holds(HTTP, "[::1]:80")
    pool.close_all()
    assert third.fileno() == -1
