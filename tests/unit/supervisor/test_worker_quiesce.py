"""Quiescing a worker channel: the main process stops reading between two frames, so that the
next main process, which shares the socket, reads every byte that follows."""

from __future__ import annotations

import asyncio
import os
import socket

from sozu.command.channel import encode_message
from sozu.command.framing import FrameDecoder
from sozu.command.proto import Event, EventKind, ResponseContent, ResponseStatus, WorkerResponse
from sozu.supervisor.processes import AdoptedProcess
from sozu.supervisor.workers import Worker


def event_frame(backend_id: str) -> bytes:
    response = WorkerResponse(
        id="", status=ResponseStatus.OK, message="",
        content=ResponseContent(event=Event(kind=EventKind.BACKEND_DOWN, backend_id=backend_id)),
    )  # fmt: skip
    return encode_message(response, 1_000_000)


async def quiesce_scenario() -> tuple[bool, list[str], bytes]:
    ours, theirs = socket.socketpair()
    scm_ours, scm_theirs = socket.socketpair()
    worker = Worker(0, AdoptedProcess(os.getpid()), ours, scm_ours, 1_000_000, 2_000_000)
    seen: list[str] = []
    reader = asyncio.ensure_future(
        worker.run_channel(lambda _w, event: seen.append(event.backend_id), lambda _w, _r: None)
    )
    second = event_frame("b")
    theirs.sendall(event_frame("a") + second[:5])  # a whole frame, then half of the next
    while not seen:
        await asyncio.sleep(0.001)
    quiet = asyncio.ensure_future(worker.quiesce(timeout=2.0))
    await asyncio.sleep(0.05)
    assert not quiet.done()  # caught mid-frame: it reads on until the frame boundary
    theirs.sendall(second[5:])
    stopped = await quiet
    theirs.sendall(event_frame("c"))  # for whoever reads next
    await asyncio.sleep(0.05)
    successor = socket.socket(fileno=os.dup(ours.fileno()))
    successor.setblocking(False)
    left = successor.recv(65536)
    successor.close()
    reader.cancel()
    for sock in (theirs, scm_theirs):
        sock.close()
    worker.close_sockets()
    return stopped, seen, left


def test_quiesce_stops_at_a_frame_boundary_and_leaves_the_rest_unread() -> None:
    stopped, seen, left = asyncio.run(quiesce_scenario())
    assert stopped
    assert seen == ["a", "b"]
    decoder = FrameDecoder()
    decoder.feed(left)
    assert decoder.next_payload() is not None and decoder.pending == 0
    assert left == event_frame("c")
