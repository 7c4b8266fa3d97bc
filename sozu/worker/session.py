"""Client connections of a worker: asyncio Protocols on the accepted sockets.

`HttpSession` serves an HTTP listener. It feeds received bytes to an httptools (llhttp)
parser; once a request head is complete it asks `sozu.worker.protocol.http1.answer_request`
what to answer and writes it. Proxying to backends is the next issue: a request that a
backend should serve is answered 503 ("proxying is not available yet") for now. Keep-alive
is honoured when the answer allows it (a custom template without `Connection: close`) and
the request did not ask to close (`Connection: close`, HTTP/1.0 without keep-alive); the
built-in answers carry `Connection: close` as in Sōzu, so after one the connection closes.
Invalid HTTP gets 400, a request head larger than `buffer_size` 413, a request not complete
within the listener's `request_timeout` 408 (all then close); an idle keep-alive connection
closes silently after `front_timeout`.

`ClosingSession` serves HTTPS and TCP listeners until TLS and TCP proxying exist: it accepts
the connection (so clients are not left hanging in the kernel queue) and closes it at once.

`SessionHub` is what all sessions of a worker share: routing tables, counters, the set of
live sessions (for `max_connections`, soft stop and hard stop) and the buffer size.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, cast

import httptools

from sozu.command.logging import get_logger
from sozu.worker import metrics
from sozu.worker.metrics import Counters
from sozu.worker.protocol.http1 import (
    Answer,
    ListenerView,
    Routing,
    answer_request,
    bad_request,
    render,
    route_text,
)

log = get_logger(__name__)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_request_id() -> str:
    """A ULID (Sōzu's request id): 48-bit milliseconds then 80 random bits, Crockford base32."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


class SessionHub:
    """State shared by every client session of one worker."""

    def __init__(
        self,
        routing: Routing,
        counters: Counters,
        max_connections: int,
        buffer_size: int,
    ) -> None:
        self.routing = routing
        self.counters = counters
        self.max_connections = max_connections
        self.buffer_size = buffer_size
        self.sessions: set[Session] = set()
        self.draining = False
        self._on_empty: list[Callable[[], None]] = []

    def admit(self, session: Session) -> bool:
        """Register a new connection; False when it must be closed (limit or stopping)."""
        self.counters.incr(metrics.ACCEPTED)
        if self.draining or len(self.sessions) >= self.max_connections:
            self.counters.incr(metrics.REJECTED)
            return False
        self.sessions.add(session)
        return True

    def release(self, session: Session) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._on_empty:
            callbacks, self._on_empty = self._on_empty, []
            for callback in callbacks:
                callback()

    def drain(self) -> None:
        """Soft stop: idle connections close now, busy ones after their current exchange."""
        self.draining = True
        for session in list(self.sessions):
            session.shutdown()

    def abort_all(self) -> None:
        """Hard stop: every connection closes now."""
        self.draining = True
        for session in list(self.sessions):
            session.abort()

    def when_empty(self, callback: Callable[[], None]) -> None:
        """Call `callback` once no session is left (at once if none is)."""
        if not self.sessions:
            callback()
        else:
            self._on_empty.append(callback)


class Session(asyncio.Protocol):
    """Common part of client sessions: admission, release, stop orders."""

    def __init__(self, hub: SessionHub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.hub.admit(self):
            self.transport.close()
            self.transport = None
            return
        self.started()

    def started(self) -> None:
        """The connection is admitted (subclasses start their work here)."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.release(self)
        self.transport = None

    def shutdown(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ClosingSession(Session):
    """HTTPS and TCP listeners for now: accept, then close at once."""

    def started(self) -> None:
        assert self.transport is not None
        self.transport.close()


class HttpSession(Session):
    """One HTTP/1.x client connection (module docstring)."""

    __slots__ = (
        "_authority",
        "_closing",
        "_head_bytes",
        "_headers_done",
        "_in_request",
        "_pending",
        "_served",
        "_timer",
        "_url",
        "listener",
        "parser",
    )

    def __init__(self, hub: SessionHub, listener: ListenerView) -> None:
        super().__init__(hub)
        self.listener = listener
        self.parser: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._in_request = False
        self._headers_done = False
        self._head_bytes = 0
        self._served = 0
        self._url = b""
        self._authority: bytes | None = None
        self._pending: Answer | None = None

    # --- connection events -------------------------------------------------------------

    def started(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self._arm(self.listener.request_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if not (self._in_request and self._headers_done):
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._closing and self._pending is not None:
                self._send(self._pending, close=True)
        except httptools.HttpParserError as error:
            if not self._closing:
                self.hub.counters.incr(metrics.PARSE_ERRORS)
                message = str(error.__cause__ or error) or type(error).__name__
                self._fail(bad_request(self.listener, new_request_id(), message, self._phase()))
            return
        if (
            not self._closing
            and not self._headers_done
            and self._head_bytes > self.hub.buffer_size
            and self._in_request
        ):
            self._too_large()

    def eof_received(self) -> bool | None:
        if self._pending is not None and not self._closing:
            self._send(self._pending, close=True)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self._in_request or self._pending is not None:
            return  # closes after this answer: hub.draining forbids keep-alive
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    # --- parser callbacks (httptools) --------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_request = True
        self._headers_done = False
        self._url = b""
        self._authority = None
        if self._served:
            self._arm(self.listener.request_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._authority is None and name.lower() == b"host":
            self._authority = value

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._closing:
            return
        self.hub.counters.incr(metrics.REQUESTS)
        method = self.parser.get_method().decode("latin-1")
        request_id = new_request_id()
        target = self._url.decode("latin-1")
        authority = self._authority.decode("latin-1") if self._authority is not None else None
        path = target
        if not target.startswith("/") and target != "*":
            if method == "CONNECT":
                authority, path = target, ""
            else:
                try:
                    url = httptools.parse_url(self._url)
                except httptools.HttpParserInvalidURLError:
                    self._fail(
                        bad_request(self.listener, request_id, "Invalid request target.", "Headers")
                    )
                    return
                if url.host:
                    host = url.host.decode("latin-1")
                    authority = f"{host}:{url.port}" if url.port else host
                path = (url.path or b"/").decode("latin-1")
                if url.query:
                    path += "?" + url.query.decode("latin-1")
        answer = answer_request(
            self.listener, self.hub.routing, method, authority, path, request_id
        )
        if answer.forward:
            values = {
                "REQUEST_ID": request_id,
                "ROUTE": route_text(method, authority, path),
                "CLUSTER_ID": answer.cluster_id or "",
                "MESSAGE": "Proxying to backends is not available yet.",
            }
            cluster = self.hub.routing.clusters.get(answer.cluster_id or "")
            answer = render(503, self.listener, cluster, values)
        keep_alive = answer.keep_alive and self.parser.should_keep_alive()
        if not keep_alive or self.hub.draining or self.parser.should_upgrade():
            self._send(answer, close=True)
        else:
            self._pending = answer

    def on_message_complete(self) -> None:
        if self._closing:
            return
        self._in_request = False
        self._head_bytes = 0
        answer, self._pending = self._pending, None
        if answer is not None:
            self._send(answer, close=self.hub.draining)
        if not self._closing:
            self._served += 1
            self._arm(self.listener.front_timeout)

    # --- helpers -------------------------------------------------------------------------

    def _send(self, answer: Answer, close: bool) -> None:
        self.hub.counters.answered(answer.status)
        transport = self.transport
        if transport is None:
            return
        transport.write(answer.data)
        if close:
            self._closing = True
            self._pending = None
            self._disarm()
            transport.close()

    def _fail(self, answer: Answer) -> None:
        self._send(answer, close=True)

    def _too_large(self) -> None:
        values = {
            "REQUEST_ID": new_request_id(),
            "ROUTE": "",
            "CAPACITY": str(self.hub.buffer_size),
            "PHASE": self._phase(),
            "MESSAGE": "",
        }
        self._fail(render(413, self.listener, None, values))

    def _phase(self) -> str:
        if not self._in_request or not self._url:
            return "StatusLine"
        return "Body" if self._headers_done else "Headers"

    def _arm(self, delay: float) -> None:
        self._disarm()
        if self.transport is not None and delay > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._closing or self.transport is None:
            return
        if self._served and not self._in_request:
            self._closing = True
            self.transport.close()
            return
        values = {
            "REQUEST_ID": new_request_id(),
            "ROUTE": "",
            "DURATION": f"{self.listener.request_timeout:g}s",
        }
        self._fail(render(408, self.listener, None, values))
