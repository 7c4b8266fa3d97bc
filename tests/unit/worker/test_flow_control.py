"""Write limits reach real transports, asyncio's and uvloop's alike (uvloop's transports do
not inherit from asyncio's classes, so an isinstance test would silently skip them)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import uvloop

from sozu.worker.flow_control import limit_writes


class _Limited(asyncio.Protocol):
    def __init__(self, seen: asyncio.Future[tuple[int, int]]) -> None:
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limit_writes(transport, 16_000)
        limits = transport.get_write_buffer_limits()  # type: ignore[attr-defined]
        self.seen.set_result(limits)
        transport.close()


async def _limits_of_an_accepted_connection() -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[tuple[int, int]] = loop.create_future()
    server = await loop.create_server(lambda: _Limited(seen), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        limits = await asyncio.wait_for(seen, 5)
    server.close()
    return limits


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_buffer_size_is_the_high_water_mark(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        assert runner.run(_limits_of_an_accepted_connection()) == (4_000, 16_000)
