"""Connections from a worker to backends, and the idle ones kept for reuse.

`BackendConnection` is the asyncio Protocol of one TCP connection to one backend. While an
exchange uses it, its `owner` (the client's `HttpSession`) receives the parsed response through
the `response_*` callbacks; once the exchange is over the connection goes back to the
`IdlePool` (when both sides allow keep-alive) or is closed. An idle connection that receives
bytes or is closed by the backend leaves the pool. After a `101 Switching Protocols` the
connection becomes a plain pipe: bytes go to `owner.pipe_from_backend` unparsed.

The backend's response is parsed with httptools' `HttpResponseParser` (llhttp), in one of two
ways chosen once its head is complete (bytes are kept until the blank line, at most
`buffer_size`). The common answer (final status, one Content-Length, no hop-by-hop header but
`Connection`, not for HEAD: `headers.scan_response_head`) is read as bytes: a parser without
callbacks (`_SINK`) only validates its head (once per distinct head: `_VALID_HEADS`), the body
is counted down from Content-Length and the session gets it in one `response_fast` call. Any
other answer goes to a fresh parser with per-header callbacks (`response_head` /
`response_body` / `response_complete`), which keeps the connection until a final answer is
complete. httptools has no way to tell the parser that a response answers a HEAD request, so
for HEAD the session ends the response at its head and the parser is replaced before the next
response. Bytes a backend sends beyond the end of its answer close the connection once that
answer is delivered.

`BackendPool` (sans-io, `sozu.worker.backends`) is told about each opened and closed
connection, so least-loaded policies see live counts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import httptools

from sozu.command.logging import get_logger
from sozu.worker.backends import Backend, BackendPool
from sozu.worker.flow_control import WRITE, ReadGate
from sozu.worker.protocol.headers import Framing, connection_extras, scan_response_head

if TYPE_CHECKING:
    from sozu.worker.session import HttpSession

log = get_logger(__name__)

MAX_IDLE_PER_BACKEND = 128
"""Idle connections kept per backend; more are closed when released."""


class _StopParsing(Exception):
    """Raised from a parser callback to end a response at its head (HEAD requests)."""


class _TooLarge(Exception):
    """Raised from a parser callback when a response head exceeds `buffer_size`."""


class _Sink:
    """A parser protocol with no callbacks: llhttp only validates (and keeps its place)."""

    __slots__ = ()


_SINK = _Sink()

_VALID_HEADS: set[bytes] = set()
"""Response heads (status line and headers) llhttp accepted, so the same bytes again need no
parser: a backend sends the same few heads again and again (`Date` changes once a second)."""
_VALID_HEADS_MAX = 256

_HEAD = 0  # waiting for a response head (bytes kept in `_buf`)
_FAST = 1  # in the body of an answer read as bytes (`_remaining` bytes to go)
_FULL = 2  # the callback parser has the connection until a final answer is complete


class BackendConnection(asyncio.Protocol):
    """One connection to a backend (module docstring)."""

    __slots__ = (
        "_buf",
        "_buffer_size",
        "_chunk",
        "_head_bytes",
        "_in_body",
        "_keep",
        "_mode",
        "_remaining",
        "_sink",
        "_tail_bytes",
        "backend",
        "closed",
        "drop",
        "fast_head",
        "framing",
        "gate",
        "head_request",
        "headers",
        "idle",
        "owner",
        "parser",
        "piping",
        "pool",
        "reason",
        "reused",
        "status",
        "stop_at_head",
        "trailers",
        "transport",
        "write_paused",
    )

    def __init__(self, backend: Backend, pool: BackendPool, idle: IdlePool, buffer_size: int):
        self.backend = backend
        self.pool = pool
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.gate = ReadGate()
        self.owner: HttpSession | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.closed = False
        self.write_paused = False
        self.piping = False
        self.reused = False
        self.stop_at_head = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.framing = Framing.NONE
        self.drop: set[bytes] | None = None
        self._in_body = False
        self._head_bytes = 0
        self._tail_bytes = 0
        self._chunk = 0
        self._buffer_size = buffer_size
        self._mode = _HEAD
        self._buf = b""
        self._sink: Any = httptools.HttpResponseParser(_SINK)
        self._remaining = 0
        self._keep = True
        self.fast_head: bytes | None = None
        self.head_request = False

    # --- transport events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.gate.transport = self.transport
        transport.set_write_buffer_limits(high=self._buffer_size, low=self._buffer_size // 4)  # type: ignore[attr-defined]
        self.pool.connection_opened(self.backend)

    def data_received(self, data: bytes) -> None:
        try:
            owner = self.owner
            if owner is None:  # idle: a backend must not talk unasked
                self.close()
                return
            if self.piping:
                owner.pipe_from_backend(data)
                return
            mode = self._mode
            if mode == _FAST:
                self._fast_body(owner, data)
            elif mode == _FULL:
                self._feed(owner, data)
            else:
                self._head(owner, data)
        except Exception as error:  # a bug: this exchange ends, the worker goes on
            self._crash("backend data_received", error)

    def _head(self, owner: HttpSession, data: bytes) -> None:
        """Bytes while waiting for a head: kept until it is complete, then read one way."""
        fragmented = bool(self._buf)
        buf = self._buf + data if fragmented else data
        end = buf.find(b"\r\n\r\n")
        if end < 0 or end + 4 > self._buffer_size:
            if len(buf) > self._buffer_size:
                self._buf = b""
                owner.response_too_large(self)
                return
            try:
                self._sink.feed_data(data)  # refuse garbage now, not at the blank line
            except httptools.HttpParserUpgrade:
                pass
            except httptools.HttpParserError as error:
                owner.response_failed(self, str(error.__cause__ or error) or "invalid response")
                return
            self._buf = buf
            return
        self._buf = b""
        head = buf[: end + 2]
        scanned = None if self.head_request else scan_response_head(head)
        if scanned is None:
            self._mode = _FULL
            self._sink = httptools.HttpResponseParser(_SINK)
            self.parser = httptools.HttpResponseParser(self)
            self._feed(owner, buf)
            return
        status, fast_head, length, keep = scanned
        body_start = end + 4
        if head not in _VALID_HEADS:  # llhttp reads these bytes once
            try:
                self._sink.feed_data(data[: len(data) - (len(buf) - body_start)])
            except httptools.HttpParserError as error:
                owner.response_failed(self, str(error.__cause__ or error) or "invalid response")
                return
            self._sink = httptools.HttpResponseParser(_SINK)  # it waits for a body now
            if len(_VALID_HEADS) >= _VALID_HEADS_MAX:
                _VALID_HEADS.clear()
            _VALID_HEADS.add(head)
        elif fragmented:
            self._sink = httptools.HttpResponseParser(_SINK)  # it saw the start of this head
        body_end = body_start + length
        if len(buf) > body_end:  # bytes nobody asked for: this connection is not reused
            keep = False
        self.status = status
        self.fast_head = fast_head
        self.framing = Framing.LENGTH
        self._keep = keep
        body = buf[body_start:body_end]
        self._remaining = remaining = length - len(body)
        self._mode = _FAST if remaining else _HEAD
        owner.response_fast(self, body, not remaining)

    def _fast_body(self, owner: HttpSession, data: bytes) -> None:
        remaining = self._remaining
        if len(data) > remaining:  # bytes beyond the answer: no reuse of this connection
            data = data[:remaining]
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._remaining = remaining = remaining - len(data)
        if not remaining:
            self._mode = _HEAD
        owner.response_fast(self, data, not remaining)

    def _feed(self, owner: HttpSession, data: bytes) -> None:
        """The callback parser (any answer the byte path does not take).

        Bytes that are neither head nor body (chunk sizes, extensions, trailers) are counted
        from the last body bytes on (`_tail_bytes`, reset by `on_body`): beyond `buffer_size`
        the answer is cut, as the request side bounds a client's trailers (llhttp would
        otherwise keep growing a trailer that never ends)."""
        self._chunk = len(data)
        if self._in_body:
            self._tail_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            if self.status == 101 and self.owner is owner:
                self.piping = True
                owner.upgraded(self, data[offset:])
                return
            owner.response_failed(self, "Unexpected upgrade from the backend.")
            return
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _TooLarge):
                owner.response_too_large(self)
                return
            if isinstance(error.__context__, _StopParsing) or self.stop_at_head:
                self.parser = httptools.HttpResponseParser(self)
                self.stop_at_head = False
                self._mode = _HEAD
            else:  # our own callback raised: a bug, not the backend's fault
                self._crash("backend parser callback", error.__context__ or error)
                return
        except httptools.HttpParserError as error:
            owner.response_failed(self, str(error.__cause__ or error) or "invalid response")
            return
        if not self._in_body and self.parser is not None:  # a head still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > self._buffer_size and self.owner is not None:
                self.owner.response_too_large(self)
                return
        elif self._tail_bytes > self._buffer_size and self.owner is not None:
            self.owner.response_too_large(self)  # endless trailers or chunk extensions
            return
        if self.owner is not None:
            self.owner.flush_front()

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        owner, self.owner = self.owner, None
        try:
            self.idle.forget(self)
            self.pool.connection_closed(self.backend)
            if owner is not None:
                owner.backend_lost(self)
        except Exception as error:  # a bug: this exchange ends, the worker goes on
            if owner is not None:
                owner.crashed("backend connection_lost", error)
            else:
                log.error("backend_connection_failed", error=repr(error), exc_info=error)

    def pause_writing(self) -> None:
        try:
            self.write_paused = True
            if self.owner is not None:
                self.owner.gate.pause(WRITE)
        except Exception as error:  # a bug: this exchange ends, the worker goes on
            self._crash("backend pause_writing", error)

    def resume_writing(self) -> None:
        try:
            self.write_paused = False
            if self.owner is not None:
                self.owner.gate.resume(WRITE)

        # --- parser callbacks ------------------------------------------------------------------
        except Exception as error:  # a bug: this exchange ends, the worker goes on
            self._crash("backend resume_writing", error)

    def on_message_begin(self) -> None:
        if self.owner is None:  # a response after the answer was delivered: never reused
            self.close()
        self.fast_head = None
        self.headers = []
        self.trailers = []
        self.reason = b""
        self._in_body = False
        self._head_bytes = 0
        self._tail_bytes = 0
        self.framing = Framing.NONE
        self.drop = None

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            self.trailers.append((name, value))
            return
        self.headers.append((name, value))
        size = len(name)
        if size == 14 or size == 17 or size == 10:
            lower = name.lower()
            if lower == b"content-length":
                if self.framing == Framing.NONE:
                    self.framing = Framing.LENGTH
            elif lower == b"transfer-encoding":
                self.framing = Framing.CHUNKED
            elif lower == b"connection":
                self.drop = connection_extras(value, self.drop)

    def on_headers_complete(self) -> None:
        self._in_body = True
        if self._head_bytes + self._chunk > self._buffer_size:
            size = len(self.reason) + 16
            for name, value in self.headers:
                size += len(name) + len(value) + 4
            if size > self._buffer_size:
                raise _TooLarge
        self._head_bytes = 0
        self._tail_bytes = 0
        self.status = self.parser.get_status_code()
        if self.owner is not None:
            self.owner.response_head(self)
        if self.stop_at_head:
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self._tail_bytes = 0
        if self.owner is not None:
            self.owner.response_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._tail_bytes = 0
        if self.status >= 200:
            self._mode = _HEAD
        if self.owner is not None:
            self.owner.response_complete(self)

    # --- helpers ---------------------------------------------------------------------------

    def _crash(self, where: str, error: BaseException) -> None:
        """An exception nothing expected: this connection is aborted and its client session
        ends (logged there, or here when no session owns it)."""
        owner = self.owner
        self.abort()
        if owner is not None:
            owner.crashed(where, error)
        else:
            log.error(
                "backend_connection_failed", callback=where, error=repr(error), exc_info=error
            )

    def keep_alive(self) -> bool:
        if self.fast_head is not None:
            return self._keep
        return bool(self.parser.should_keep_alive())

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.owner = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.owner = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()


class IdlePool:
    """Idle keep-alive connections per backend, most recently used first."""

    __slots__ = ("_idle",)

    def __init__(self) -> None:
        self._idle: dict[Backend, list[BackendConnection]] = {}

    def take(self, backend: Backend) -> BackendConnection | None:
        idle = self._idle.get(backend)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def put(self, conn: BackendConnection) -> None:
        conn.owner = None
        if conn.closed or conn.backend.removed:
            conn.close()
            return
        idle = self._idle.setdefault(conn.backend, [])
        if len(idle) >= MAX_IDLE_PER_BACKEND:
            conn.close()
            return
        if conn.gate.reasons and conn.transport is not None:
            conn.gate.reasons = 0
            conn.transport.resume_reading()
        idle.append(conn)

    def forget(self, conn: BackendConnection) -> None:
        idle = self._idle.get(conn.backend)
        if idle and conn in idle:
            idle.remove(conn)

    def drop(self, backends: list[Backend]) -> None:
        """Close the idle connections of backends that were removed."""
        for backend in backends:
            for conn in self._idle.pop(backend, []):
                conn.close()

    def close_all(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def count(self, backend: Backend) -> int:
        return len(self._idle.get(backend, ()))
