"""Main upgrade (`UpgradeMain`): hand the command socket, workers, listeners and state to a new
main process started from the `sozu` installed on disk (Sōzu's handshake, SOZU-FACTS.md).

The old main stops reading its worker channels between two frames (both mains hold the same
sockets: a byte it read ahead would be lost to the new one), writes the upgrade record to an
unlinked temp file, and starts `sozu main --fd F --upgrade-fd U ...` with exactly the descriptors
the record names. The new main confirms with a framed protobuf `true` on F once it holds
everything, and then waits for one go-ahead byte (`HAND_OVER_ACK`, a sozu-py addition) before it
reads any shared socket: the old main sends it only once it decided to hand over, so a `true`
that comes too late (the old main already gave up) never leaves two mains reading the same
sockets. Then the old main stops accepting clients, answers OK and exits without touching the
workers or the socket file. Anything else (the new main exits, says `false`, says nothing for
`worker_timeout` seconds, cannot be started) kills the new main; the old one resumes and keeps
serving, and the client is told why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sozu.command.channel import decode_payload, encode_message
from sozu.command.framing import FrameDecoder
from sozu.command.logging import get_logger
from sozu.command.proto import BoolValue, Request, RunState
from sozu.supervisor import notify
from sozu.supervisor.audit import ERROR_OTHER, RESULT_ERR, RESULT_OK
from sozu.supervisor.audit_trail import AuditTrail
from sozu.supervisor.upgrade_record import UpgradeRecord, WorkerEntry, encode

HAND_OVER_ACK = b"\x01"
"""What the old main sends on F once it decided to hand over (after the new main's `true`)."""

if TYPE_CHECKING:
    from sozu.supervisor.server import Supervisor
    from sozu.supervisor.sessions import ClientSession

log = get_logger("sozu.supervisor.upgrade")

QUIESCE_SECONDS = 1.0
_EXIT_GRACE_SECONDS = 0.5


class UpgradeFailed(Exception):
    """Why the new main process did not take over (said to the client)."""


def executable_command() -> tuple[str, ...]:
    """What a main upgrade starts: the `sozu` we were started through, as installed now.

    Started as a `sozu` script or launcher, that file (re-read from disk, so a new install is
    picked up); started as `python -m sozu`, the same interpreter and the package on disk.
    Never a PATH lookup: PATH could name another installation.
    """
    first = sys.argv[0] if sys.argv else ""
    if os.path.basename(first) == "sozu" and os.path.isfile(first) and os.access(first, os.X_OK):
        return (os.path.abspath(first),)
    return (sys.executable, "-m", "sozu")


def _refusal(sup: Supervisor) -> str | None:
    if sup.stopping:
        return "the proxy is shutting down"
    if sup.upgrading:
        return "a main upgrade is already in progress"
    if sup.worker_upgrades > 0:  # counted from its check on, the launch of the new worker too
        return "a worker upgrade is in progress"
    if any(w.retiring or w.run_state == RunState.STOPPING for w in sup.workers.alive()):
        return "a worker upgrade is in progress"
    return None


async def upgrade_main(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Answer an `UpgradeMain` request; True while the client session goes on."""
    trail = AuditTrail.of(sup, session, request)
    executable = " ".join(sup.executable or executable_command())
    generation = sup.audit.boot_generation + 1
    refusal = _refusal(sup)
    if refusal is not None:
        trail.record(RESULT_ERR, error_code=ERROR_OTHER, reason=refusal)
        await session.failure(refusal)
        return True
    sup.upgrading = True
    _notify(notify.reloading())
    await session.processing("Upgrading the main process...")
    try:
        new_pid = await _start_successor(sup, generation)
    except Exception as error:
        failure = error if isinstance(error, UpgradeFailed) else UpgradeFailed(repr(error))
        _notify(notify.READY)
        message = (
            f"Upgrade of main process failed: {failure}; "
            f"the current main process (pid {os.getpid()}) keeps serving"
        )
        log.error("main_upgrade_failed", reason=str(failure), exc_info=failure is not error)
        trail.record(
            RESULT_ERR,
            error_code=ERROR_OTHER,
            reason=message,
            target=f"executable:{executable} boot_generation:{sup.audit.boot_generation}",
        )
        await session.failure(message)
        sup.upgrade_ended(None)
        return True
    except BaseException:  # cancelled (the supervisor stops): never stay gated
        sup.upgrade_ended(None)
        raise
    # The new main serves the command socket from now on, whatever fails below: the outcome is
    # settled (hand over, act on a deferred stop signal) on every way out.
    sup.audit.boot_generation = generation
    try:
        try:
            # A client reconnecting after our answer must land on the new main.
            await sup.stop_accepting()
            _notify(f"MAINPID={new_pid}")
            trail.record(RESULT_OK, target=f"executable:{executable} boot_generation:{generation}")
            log.info("main_upgraded", new_pid=new_pid, boot_generation=generation)
        except Exception:
            log.exception("main_upgrade_wrap_up_failed", new_pid=new_pid)
        await session.ok(
            f"Upgrade successful, closing main process. New main process has pid {new_pid}"
        )
    finally:
        sup.hand_over()
        sup.upgrade_ended(new_pid)
    return False


def _notify(state: str) -> None:
    try:
        notify.notify(state)
    except OSError as error:
        log.warning("sd_notify_failed", state=state.split("\n", 1)[0], error=str(error))


async def _start_successor(sup: Supervisor, generation: int) -> int:
    """Quiesce, write the record, start the new main and wait for its word; its pid."""
    timeout = float(sup.config.worker_timeout)
    await _wait_no_pending(sup, timeout)
    quiesced = []
    try:
        for worker in sup.workers.alive():
            if not await worker.quiesce(QUIESCE_SECONDS):
                raise UpgradeFailed(f"the channel of worker {worker.id} did not fall quiet")
            quiesced.append(worker)
        return await _launch_and_wait(sup, generation, timeout)
    except BaseException:
        for worker in quiesced:
            worker.resume_reading()
        raise


async def _wait_no_pending(sup: Supervisor, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (pending := sup.workers.pending_count()) > 0:
        if time.monotonic() >= deadline:
            raise UpgradeFailed(
                f"workers still have {pending} requests in flight after {timeout:g} s"
            )
        await asyncio.sleep(0.01)


def build_record(sup: Supervisor, generation: int) -> UpgradeRecord:
    """What the new main rebuilds itself from (runtime changes folded into the config)."""
    config = dataclasses.replace(
        sup.config, log_level=sup.log_level, max_connections_per_ip=sup.max_connections_per_ip
    )
    next_client_id, last_task_id = sup.counters()
    return UpgradeRecord(
        command_socket_fd=sup.command_socket.sock.fileno(),
        config=config,
        next_client_id=next_client_id,
        next_session_id=next_client_id,
        next_task_id=last_task_id + 1,
        next_worker_id=sup.workers.next_id,
        workers=[
            WorkerEntry(w.channel_fd(), w.pid, w.id, w.run_state, w.scm.fileno())
            for w in sup.workers.workers.values()
            if not w.lost
        ],
        requests=sup.state.requests(),
        request_counts=collections.Counter(sup.request_counts),
        listeners=sup.listeners.fds(),
        boot_generation=generation,
    )


async def _launch_and_wait(sup: Supervisor, generation: int, timeout: float) -> int:
    record = build_record(sup, generation)
    executable = sup.executable or executable_command()
    old_end, new_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with tempfile.TemporaryFile() as record_file:
            record_file.write(encode(record))
            record_file.flush()
            record_file.seek(0)
            argv = [
                *executable, "main",
                "--fd", str(new_end.fileno()),
                "--upgrade-fd", str(record_file.fileno()),
                "--command-buffer-size", str(sup.config.command_buffer_size),
                "--max-command-buffer-size", str(sup.config.max_command_buffer_size),
            ]  # fmt: skip
            try:
                # pass_fds clears close-on-exec on exactly these, in the child only.
                child = subprocess.Popen(
                    argv, pass_fds=(new_end.fileno(), record_file.fileno(), *record.fds())
                )
            except OSError as error:
                raise UpgradeFailed(f"could not start {' '.join(executable)}: {error}") from None
        new_end.close()
        log.info("new_main_started", pid=child.pid, argv=" ".join(argv))
        try:
            await _await_confirmation(
                child, old_end, timeout, sup.config.max_command_buffer_size, sup.stop_accepting
            )
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
            sup.resume_accepting()
            raise
        return child.pid
    finally:
        new_end.close()
        old_end.close()


async def _await_confirmation(
    child: subprocess.Popen[bytes],
    channel: socket.socket,
    timeout: float,
    max_buffer_size: int,
    before_go_ahead: Callable[[], Awaitable[None]],
) -> None:
    """Return once the new main sent `true` and was told to go ahead; UpgradeFailed saying what
    happened instead (then the new main never got the go-ahead: it reads no shared socket).
    `before_go_ahead` runs just before the go-ahead (the old main stops accepting clients, so
    no client is accepted by both mains)."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    word = asyncio.ensure_future(_read_confirmation(loop, channel, max_buffer_size))
    exited = _exit_future(loop, child)
    try:
        waiters: set[asyncio.Future[Any]] = {word, exited}
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not (word.done() or exited.done()):
            # Timed out: a `true` already in the socket still counts (the new main may have
            # begun to serve), so look once more before giving up.
            await asyncio.wait({word}, timeout=0.05)
        answer = word.result() if word.done() and word.exception() is None else None
        if word.done() and answer is None and word.exception() is None:
            # End of stream: it is exiting; wait a moment to name its exit code.
            await asyncio.wait({exited}, timeout=_EXIT_GRACE_SECONDS)
        if child.poll() is not None:  # a new main that is gone cannot take over, whatever it said
            raise UpgradeFailed(
                f"new main process exited with code {child.returncode} before confirming"
            )
        if answer is True:
            await before_go_ahead()
            try:
                sent = channel.send(HAND_OVER_ACK)  # one byte on an idle socket: never blocks
            except OSError as error:
                sent, problem = 0, str(error)
            else:
                problem = "short write"
            if sent != len(HAND_OVER_ACK):
                raise UpgradeFailed(
                    f"cannot tell the new main process to go ahead: {problem} (killed)"
                )
            return
        if answer is False:
            raise UpgradeFailed("the new main process answered false (killed)")
        if word.done() and word.exception() is not None:
            raise UpgradeFailed(f"unreadable confirmation: {word.exception()} (killed)")
        if word.done():
            raise UpgradeFailed("new main process closed its channel without confirming (killed)")
        raise UpgradeFailed(f"new main process did not confirm within {timeout:g} s (killed)")
    finally:
        word.cancel()
        exited.cancel()


async def _read_confirmation(
    loop: asyncio.AbstractEventLoop, channel: socket.socket, max_buffer_size: int
) -> bool | None:
    """The new main's word: True/False, None when it closed the channel first."""
    decoder = FrameDecoder(max_buffer_size=max_buffer_size)
    while True:
        payload = decoder.next_payload()
        if payload is not None:
            return decode_payload(payload, BoolValue).value
        data = await loop.sock_recv(channel, 64)
        if not data:
            if decoder.pending:
                raise decoder.end_of_stream()
            return None
        decoder.feed(data)


def _exit_future(
    loop: asyncio.AbstractEventLoop, child: subprocess.Popen[bytes]
) -> asyncio.Future[None]:
    """Resolves when the child exits (pidfd; polling where the kernel has none)."""
    future: asyncio.Future[None] = loop.create_future()
    try:
        pidfd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):

        async def poll() -> None:
            while child.poll() is None:
                await asyncio.sleep(0.05)

        return asyncio.ensure_future(poll())

    def on_exit() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(pidfd, on_exit)

    def release(_future: asyncio.Future[None]) -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)

    future.add_done_callback(release)
    return future


# --- the new main's side -------------------------------------------------------------------


def confirm_take_over(channel: socket.socket, max_buffer_size: int, timeout: float) -> bool:
    """Send `true` on F, then wait (bounded) for the old main's go-ahead; closes F.

    True only once the go-ahead came: before, the old main may still give up (and kill us),
    so nothing shared may be read. `timeout` outlasts the old main's own deadline.
    """
    frame = encode_message(BoolValue(value=True), max_buffer_size)
    try:
        channel.settimeout(timeout)
        channel.sendall(frame)
        answer = channel.recv(len(HAND_OVER_ACK))
    except OSError as error:  # TimeoutError included
        log.error("upgrade_confirmation_failed", error=str(error) or type(error).__name__)
        return False
    finally:
        channel.close()
    if answer != HAND_OVER_ACK:
        log.error("upgrade_not_acknowledged", answer=answer.hex())
        return False
    return True


def adoptable_workers(entries: list[WorkerEntry]) -> list[WorkerEntry]:
    """The workers a new main adopts (running or not answering, as Sōzu); closes the channel
    and scm descriptors of the others, which it would otherwise hold for its whole life."""
    live = (RunState.RUNNING, RunState.NOT_ANSWERING)
    adopted = []
    for entry in entries:
        if entry.run_state in live:
            adopted.append(entry)
            continue
        log.info("worker_not_adopted", worker_id=entry.id, pid=entry.pid)
        for fd in (entry.channel_fd, entry.scm_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
    return adopted
