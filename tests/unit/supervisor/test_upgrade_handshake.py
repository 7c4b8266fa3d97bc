"""The two halves of the main upgrade handshake on F, with a real child process as the new main:
it may read shared sockets only once the old main said go ahead (after its `true`), and it
keeps no descriptor of a worker it does not adopt."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

from sozu.command.proto import RunState
from sozu.supervisor.upgrade import (
    HAND_OVER_ACK,
    _await_confirmation,
    adoptable_workers,
    confirm_take_over,
)
from sozu.supervisor.upgrade_record import WorkerEntry

MAX_BUFFER = 1_000_000

# A new main reduced to its confirmation: exit 0 when told to go ahead, 3 otherwise.
NEW_MAIN = """
import socket, sys
from sozu.supervisor.upgrade import confirm_take_over
channel = socket.socket(fileno=int(sys.argv[1]))
sys.exit(0 if confirm_take_over(channel, 1_000_000, 5.0) else 3)
"""


def test_the_old_main_tells_a_confirmed_new_main_to_go_ahead() -> None:
    old_end, new_end = socket.socketpair()
    child = subprocess.Popen(
        [sys.executable, "-c", NEW_MAIN, str(new_end.fileno())], pass_fds=(new_end.fileno(),)
    )
    new_end.close()
    steps: list[str] = []

    async def stop_accepting() -> None:
        steps.append("stopped accepting")

    try:
        asyncio.run(_await_confirmation(child, old_end, 10.0, MAX_BUFFER, stop_accepting))
        assert child.wait(timeout=10) == 0
        assert steps == ["stopped accepting"]  # before the go-ahead: one main accepts at a time
    finally:
        old_end.close()
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_new_main_takes_over_only_once_told_to_go_ahead() -> None:
    told, new_end = socket.socketpair()
    told.sendall(HAND_OVER_ACK)
    assert confirm_take_over(new_end, MAX_BUFFER, 1.0)
    assert told.recv(64).endswith(b"\x08\x01")  # it did say `true` first
    told.close()

    silent, new_end = socket.socketpair()  # the old main gave up: no word, then it kills us
    assert not confirm_take_over(new_end, MAX_BUFFER, 0.05)
    silent.close()

    gone, new_end = socket.socketpair()
    gone.close()
    assert not confirm_take_over(new_end, MAX_BUFFER, 1.0)


def test_a_new_main_keeps_no_descriptor_of_a_worker_it_does_not_adopt() -> None:
    states = (RunState.RUNNING, RunState.STOPPING, RunState.STOPPED, RunState.NOT_ANSWERING)
    peers: list[tuple[socket.socket, socket.socket]] = []
    entries = []
    for worker_id, state in enumerate(states):
        channel, channel_peer = socket.socketpair()
        scm, scm_peer = socket.socketpair()
        peers.append((channel_peer, scm_peer))
        entries.append(
            WorkerEntry(channel.detach(), 100 + worker_id, worker_id, state, scm.detach())
        )
    adopted = adoptable_workers(entries)
    assert [entry.id for entry in adopted] == [0, 3]
    for worker_id, pair in enumerate(peers):
        for peer in pair:
            peer.setblocking(False)
            if worker_id in (1, 2):
                assert peer.recv(1) == b""  # the other end is closed
            else:
                try:
                    peer.recv(1)
                except BlockingIOError:
                    pass
                else:
                    raise AssertionError(f"worker {worker_id}: its descriptor was closed")
            peer.close()
    for entry in adopted:
        socket.socket(fileno=entry.channel_fd).close()
        socket.socket(fileno=entry.scm_fd).close()
