"""`sozu worker`: the worker's side of Sōzu's start-up handshake, then its event loop.

The supervisor starts `sozu worker --id N --fd F --scm S --configuration-state-fd C ...` with
F and S ends of two socketpairs and C an unlinked temp file. The worker:

1. reads the first frame of its channel, a `ServerConfig`, and sets up logging from it (it
   cannot log before, as in Sōzu);
2. reads C to its end: one raw (not framed) protobuf `InitialState`;
3. receives one SCM message on S with every listening socket the supervisor holds;
4. starts one asyncio loop (uvloop when importable), applies the initial state's requests
   to its own state without answering them, and answers WorkerRequests from then on, the
   first being `INITIAL-STATUS-N`.

One `FrameDecoder` reads the channel from the first byte to the last: the handshake reads
with blocking calls into it, and whatever arrived behind the `ServerConfig` (the next
WorkerRequests) is still in it when the event loop takes the socket over.

`--access-logs-format` (a sozu-py extension) overrides the ServerConfig's access log format,
which cannot say `json`. SIGHUP (forwarded by the supervisor when it gets one, for logrotate)
reopens the access log file and the log file; it is ignored outside the event loop, so a late
one never kills a worker that is exiting.

Exit codes: 0 after SoftStop / HardStop, 1 when the handshake fails or the supervisor went
away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from google.protobuf.message import DecodeError

from sozu.command import logging as sozu_logging
from sozu.command.channel import decode_payload
from sozu.command.errors import ExitCode
from sozu.command.framing import FrameDecoder, FrameError, FrameErrorKind
from sozu.command.logging import LoggingError, get_logger, setup_logging
from sozu.command.proto import InitialState, ServerConfig
from sozu.command.scm import ScmError, receive_listeners
from sozu.worker.server import WorkerServer

log = get_logger(__name__)

HANDSHAKE_TIMEOUT = 10.0
"""Seconds to wait for the ServerConfig frame, then for the listeners message."""
_READ_CHUNK = 65536


def run(
    worker_id: int,
    channel_fd: int,
    scm_fd: int,
    state_fd: int,
    command_buffer_size: int,
    max_command_buffer_size: int,
    *,
    access_logs_format: str | None = None,
) -> int:
    """Run one worker process to its end; returns the process exit code."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop handles it (reopen_logs)
    try:
        channel = socket.socket(fileno=channel_fd)
        scm = socket.socket(fileno=scm_fd)
    except OSError as error:
        _early_error(worker_id, f"unusable channel or scm descriptor: {error}")
        return ExitCode.FAILURE
    max_size = max(max_command_buffer_size, command_buffer_size, 16)
    decoder = FrameDecoder(max(command_buffer_size, 16), max_size)
    try:
        config = read_server_config(channel, decoder, HANDSHAKE_TIMEOUT)
    except FrameError as error:
        _early_error(worker_id, f"no ServerConfig from the supervisor: {error}")
        return ExitCode.FAILURE
    _setup_logging(worker_id, config)
    log.info("worker_starting", worker_id=worker_id, pid=os.getpid())
    try:
        initial = read_initial_state(state_fd)
    except (OSError, DecodeError) as error:
        log.error("initial_state_unreadable", error=str(error))
        return ExitCode.FAILURE
    try:
        received = receive_listeners(scm, timeout=HANDSHAKE_TIMEOUT)
    except ScmError as error:
        log.error("listeners_not_received", error=str(error))
        return ExitCode.FAILURE
    log.info(
        "listeners_received",
        http=sorted(received.http),
        tls=sorted(received.tls),
        tcp=sorted(received.tcp),
        udp=sorted(received.udp),
    )
    server = WorkerServer(
        worker_id,
        config,
        channel,
        decoder,
        scm,
        received,
        max_size,
        access_logs_format=access_logs_format,
    )

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reopen_logs, server)
        try:
            return await server.serve(initial)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    code = run_loop(serve)
    log.info("worker_exiting", worker_id=worker_id, code=code)
    return code


def reopen_logs(server: WorkerServer) -> None:
    """SIGHUP: reopen the access log and the log file at their paths (after logrotate)."""
    if server.access_log is not None:
        server.access_log.reopen()
    sozu_logging.reopen()
    log.info("logs_reopened", access_log=server.access_log is not None)


def read_server_config(sock: socket.socket, decoder: FrameDecoder, timeout: float) -> ServerConfig:
    """Read the first frame (a ServerConfig), leaving any later bytes in `decoder`."""
    deadline = time.monotonic() + timeout
    sock.setblocking(True)
    try:
        while True:
            payload = decoder.next_payload()
            if payload is not None:
                return decode_payload(payload, ServerConfig)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameError(FrameErrorKind.TIMEOUT, f"no frame within {timeout} s")
            sock.settimeout(remaining)
            try:
                data = sock.recv(_READ_CHUNK)
            except TimeoutError:
                raise FrameError(FrameErrorKind.TIMEOUT, f"no frame within {timeout} s") from None
            except OSError as error:
                raise FrameError(FrameErrorKind.IO, f"read failed: {error}") from None
            if not data:
                raise decoder.end_of_stream()
            decoder.feed(data)
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(None)


def read_initial_state(fd: int) -> InitialState:
    """The raw protobuf InitialState in the state file, read to its end (the fd is closed)."""
    with os.fdopen(fd, "rb") as state_file:
        data = state_file.read()
    initial = InitialState()
    initial.ParseFromString(data)
    return initial


def run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run `main()` (a coroutine factory) in a fresh loop, uvloop when importable."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def _setup_logging(worker_id: int, config: ServerConfig) -> None:
    process = f"worker-{worker_id}"
    try:
        setup_logging(config.log_level, config.log_target, config.log_colored, process=process)
    except LoggingError as error:
        setup_logging("info", "stderr", False, process=process)
        log.warning("log_setup_failed", error=str(error), fallback="stderr")


def _early_error(worker_id: int, message: str) -> None:
    """Before the ServerConfig there is no log set-up: one line on stderr."""
    print(f"sozu worker {worker_id}: {message}", file=sys.stderr)
