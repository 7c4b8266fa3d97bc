"""Connections from a worker to backends, and the idle ones kept for reuse.

`BackendConnection` is the asyncio Protocol of one TCP connection to one backend. While an
exchange uses it, its `owner` (the client's `HttpSession`) receives the parsed response through
the `response_*` callbacks; once the exchange is over the connection goes back to the
`IdlePool` (when both sides allow keep-alive) or is closed. An idle connection that receives
bytes or is closed by the backend leaves the pool. After a `101 Switching Protocols` the
connection becomes a plain pipe: bytes go to `owner.pipe_from_backend` unparsed.

The backend's response is parsed with httptools' `HttpResponseParser` (llhttp). httptools has
no way to tell the parser that a response answers a HEAD request, so for HEAD the session ends
the response at its head and the parser is replaced before the next response.

`BackendPool` (sans-io, `sozu.worker.backends`) is told about each opened and closed
connection, so least-loaded policies see live counts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import httptools

from sozu.worker.backends import Backend, BackendPool
from sozu.worker.flow_control import WRITE, ReadGate
from sozu.worker.protocol.headers import Framing, connection_extras

if TYPE_CHECKING:
    from sozu.worker.session import HttpSession

MAX_IDLE_PER_BACKEND = 128
"""Idle connections kept per backend; more are closed when released."""


class _StopParsing(Exception):
    """Raised from a parser callback to end a response at its head (HEAD requests)."""


class _TooLarge(Exception):
    """Raised from a parser callback when a response head exceeds `buffer_size`."""


class BackendConnection(asyncio.Protocol):
    """One connection to a backend (module docstring)."""

    __slots__ = (
        "_buffer_size",
        "_chunk",
        "_head_bytes",
        "_in_body",
        "backend",
        "closed",
        "drop",
        "framing",
        "gate",
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
        self._chunk = 0
        self._buffer_size = buffer_size

    # --- transport events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.gate.transport = self.transport
        transport.set_write_buffer_limits(high=self._buffer_size, low=self._buffer_size // 4)  # type: ignore[attr-defined]
        self.pool.connection_opened(self.backend)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:  # idle: a backend must not talk unasked
            self.close()
            return
        if self.piping:
            owner.pipe_from_backend(data)
            return
        self._chunk = len(data)
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
            else:
                owner.response_failed(self, str(error.__cause__ or error))
                return
        except httptools.HttpParserError as error:
            owner.response_failed(self, str(error.__cause__ or error) or "invalid response")
            return
        if not self._in_body and self.parser is not None:  # a head still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > self._buffer_size and self.owner is not None:
                self.owner.response_too_large(self)
                return
        if self.owner is not None:
            self.owner.flush_front()

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.idle.forget(self)
        self.pool.connection_closed(self.backend)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.backend_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.owner is not None:
            self.owner.gate.pause(WRITE)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.owner is not None:
            self.owner.gate.resume(WRITE)

    # --- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.headers = []
        self.trailers = []
        self.reason = b""
        self._in_body = False
        self._head_bytes = 0
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
        self.status = self.parser.get_status_code()
        if self.owner is not None:
            self.owner.response_head(self)
        if self.stop_at_head:
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        if self.owner is not None:
            self.owner.response_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        if self.owner is not None:
            self.owner.response_complete(self)

    # --- helpers ---------------------------------------------------------------------------

    def keep_alive(self) -> bool:
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
