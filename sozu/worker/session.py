"""Client connections of a worker: asyncio Protocols on the accepted sockets.

`HttpSession` serves an HTTP listener (and HTTPS ones once TLS is terminated). Received bytes
go to an httptools (llhttp, strict) parser; each complete request head becomes an `Exchange`:
answered locally (`sozu.worker.protocol.http1.answer_request`: 400, 401, 404, 301, 503...) or
forwarded to a backend of its cluster, chosen by `BackendPool`, over an idle pooled connection
(`sozu.worker.backend_connection.IdlePool`) or a new one (connect timeout; on failure another
backend, at most `MAX_CONNECT_RETRIES` attempts, then 503). The rewritten head
(`sozu.worker.protocol.headers`) and the body are streamed to the backend, the response is
streamed back as it is parsed, and the backend connection returns to the idle pool when both
sides allow keep-alive. Pipelined requests are parsed ahead but answered in order: the client's
reading pauses while an answer is in progress. Back-pressure pauses reading on one side while
the other side's write buffer is over `buffer_size` (`sozu.worker.flow_control`). After a
`101 Switching Protocols` both connections become a byte pipe, closed once no byte moved either
way for `front_timeout` (or `back_timeout` when shorter), as Sōzu resets both timeouts on any
pipe activity.

Errors end only the exchange they hit: the backend closing before its answer -> 502 (a reused
idle connection is first retried once on a fresh connection when the request can be replayed),
no answer within `back_timeout` -> 504; after an answer started, the client connection is
closed. Invalid HTTP (llhttp strict: CL with TE, differing Content-Length, obs-fold, bad chunk
size, bare LF, NUL, invalid method or target) -> 400 and close, the request never reaching a
backend; a request head larger than `buffer_size` -> 413; a request not complete within
`request_timeout` -> 408; an idle keep-alive connection closes silently after `front_timeout`.
Trailers of a chunked answer beyond `buffer_size` cut that answer (both connections close).

An exception nothing expects in a protocol callback (data, end of stream, loss, write pauses,
timers, the backend connect task) is a bug: `_crash` logs it once and aborts this client
connection and its backend connections; the worker goes on. Each callback body sits in one
`try` (free in CPython 3.11 while nothing is raised), so the hot path pays nothing for it.

Hot path (DESIGN.md §5): a connection remembers the route of its last forwarded request and
reuses it while target, Host and method repeat and neither the routers (`Router.generation`)
nor that cluster's view changed; a head with none of the headers the proxy rewrites is built
from the received pairs plus this connection's constant forwarding headers
(`headers.plain_request_head`); the common answer comes in one `response_fast` call
(`BackendConnection`); the request timeout of a request that arrives whole is never armed.

`ClosingSession` serves listeners that have no protocol yet: it accepts and closes at once.

`SessionHub` is what all sessions of a worker share: routing tables, backends and idle
connections, counters, the set of live sessions (for `max_connections`, soft stop and hard
stop) and the buffer size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import httptools

from sozu.command.logging import get_logger
from sozu.worker import metrics
from sozu.worker.access_log import AccessLog
from sozu.worker.backend_connection import BackendConnection, IdlePool
from sozu.worker.backends import MAX_CONNECT_RETRIES, Backend, BackendPool, HealthChange
from sozu.worker.flow_control import PENDING, PIPELINE, WRITE, ReadGate, limit_writes
from sozu.worker.metrics import Counters
from sozu.worker.protocol.headers import (
    REWRITTEN_LENGTHS,
    REWRITTEN_REQUEST_HEADERS,
    Framing,
    chunk,
    connection_extras,
    forwarding_headers,
    last_chunk,
    plain_request_head,
    request_head,
    response_head,
    sticky_cookie,
    with_hsts,
)
from sozu.worker.protocol.http1 import (
    Answer,
    ClusterView,
    ListenerView,
    Routing,
    answer_request,
    bad_request,
    cert_covers,
    host_of,
    render,
    route_text,
)
from sozu.worker.router import Hsts, Router

log = get_logger(__name__)

_WATCHED_LENGTHS = REWRITTEN_LENGTHS | {len(b"host"), len(b"content-length"), len(b"cookie")}
"""Request header name lengths `on_header` looks at more closely (lower-cased)."""

_LastRoute = tuple[
    bytes,
    bytes | None,
    bytes,
    int,
    str,
    ClusterView | None,
    tuple[str, str | None, str],
    Hsts | None,
]
"""A connection's last forwarded request: target, Host, method, `Router.generation`, cluster
id, the cluster's view then, (method, authority, path) as text, and the frontend's HSTS
policy."""

DRAIN_IDLE_GRACE = 2.0
"""Seconds an idle keep-alive connection stays open once its worker soft-stops (module doc)."""

_Parsed = tuple[bytes, bool, bool, bool]
"""What the parser says of a request head: method, keep-alive, HTTP/1.0, upgrade."""

_Repeat = tuple[
    bytes,
    tuple[tuple[bytes, bytes], ...],
    bytes | None,
    set[bytes] | None,
    bool,
    bool,
    _Parsed,
]
"""`_remember_request`: url, headers, Host, Connection extras, plain, cookie, parser reading."""

_SHARED_ROUTES_MAX = 4096
_SHARED_TARGET_MAX = 256
"""Routes `SessionHub.share_route` keeps at most before starting over, and the longest
request target it shares (so the table stays within a few MiB whatever clients send)."""

_NEVER = float("inf")
_REQUESTS = metrics.REQUESTS

_ARM_REQUEST = -1.0
"""`_deadline` while the request timeout waits to be armed at the end of `data_received` (a
request that arrives whole is complete by then: no timer work for it)."""

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 digits


class _IdState:
    millisecond = -1
    prefix = ""  # time digits and the high 40 random bits
    random = 0
    entropy = b""  # os.urandom read ahead, 10 bytes per millisecond


def _digits(value: int, count: int) -> str:
    """The `count` (even) low base32 digits of `value`, most significant first."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(5 * count - 10, -1, -10)])


def new_request_id() -> str:
    """A ULID (Sōzu's request id): 48-bit milliseconds then 80 random bits, Crockford base32.

    Monotonic within a millisecond (the ULID spec's variant): the random part is drawn once per
    millisecond and incremented for each further id, so most ids cost a few table lookups. The
    random bytes come from `os.urandom`, read 4 KiB at a time (one system call per 400 ms).
    """
    state = _IdState
    now = time.time_ns() // 1_000_000
    if now != state.millisecond:
        state.millisecond = now
        entropy = state.entropy
        if len(entropy) < 10:
            entropy = os.urandom(4096)
        state.entropy = entropy[10:]
        state.random = rand = int.from_bytes(entropy[:10], "big")
        state.prefix = _digits(now, 10) + _digits(rand >> 40, 8)
    else:
        state.random = rand = (state.random + 1) & ((1 << 80) - 1)
        if not rand & 0xFFFFFFFFFF:
            state.prefix = state.prefix[:10] + _digits(rand >> 40, 8)
    low = rand & 0xFFFFFFFFFF
    pairs = _PAIRS
    return (
        state.prefix
        + pairs[low >> 30]
        + pairs[(low >> 20) & 1023]
        + pairs[(low >> 10) & 1023]
        + pairs[low & 1023]
    )


def _forget_entropy() -> None:
    _IdState.entropy = b""  # a forked child must not repeat its parent's ids
    _IdState.millisecond = -1


os.register_at_fork(after_in_child=_forget_entropy)


class SessionHub:
    """State shared by every client session of one worker."""

    def __init__(
        self,
        routing: Routing,
        counters: Counters,
        max_connections: int,
        buffer_size: int,
        backends: BackendPool | None = None,
    ) -> None:
        self.routing = routing
        self.backends = backends if backends is not None else BackendPool()
        self.idle = IdlePool()
        self.access_log: AccessLog | None = None
        self.counters = counters
        self.max_connections = max_connections
        self.buffer_size = buffer_size
        self.sessions: set[Session] = set()
        self.draining = False
        self._on_empty: list[Callable[[], None]] = []
        self.max_per_ip = 0  # max_connections_per_ip (0: unlimited); a cluster's own wins
        self.retry_after = 60  # Retry-After of the 429 (0: no header); a cluster's own wins
        self.per_ip: dict[str, dict[bytes, int]] = {}  # cluster id -> source ip -> connections
        self.per_ip_epoch = 0  # bumped when the counts are wiped
        self.routes: dict[tuple[str, bytes, bytes | None, bytes], _LastRoute] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # the worker's, once a session opened

    def share_route(self, key: tuple[str, bytes, bytes | None, bytes], route: _LastRoute) -> None:
        """Remember a forwarded request's route for every connection of its listener: a client
        that opens a connection per request is routed once, not once per connection. Entries
        are checked against `Router.generation` and the cluster's view when used; the table
        is bounded."""
        _address, url, authority, _method = key
        if len(url) > _SHARED_TARGET_MAX or (authority is not None and len(authority) > 255):
            return  # long targets stay per connection: the table holds short keys only
        routes = self.routes
        if len(routes) >= _SHARED_ROUTES_MAX:
            routes.clear()
        routes[key] = route

    def set_max_per_ip(self, limit: int) -> None:
        """`SetMaxConnectionsPerIp`: 0 turns the limit off and wipes the counts (as Sōzu)."""
        self.max_per_ip = limit
        if limit == 0:
            self.per_ip = {}
            self.per_ip_epoch += 1

    def hold_ip(self, cluster_id: str, ip: bytes, limit: int) -> bool:
        """Count one more connection from `ip` to `cluster_id`; False when at `limit`."""
        by_ip = self.per_ip.get(cluster_id)
        if by_ip is None:
            by_ip = self.per_ip[cluster_id] = {}
        count = by_ip.get(ip, 0)
        if count >= limit:
            return False
        by_ip[ip] = count + 1
        return True

    def free_ip(self, cluster_id: str, ip: bytes) -> None:
        by_ip = self.per_ip.get(cluster_id)
        if by_ip is not None:
            count = by_ip.get(ip, 0) - 1
            if count > 0:
                by_ip[ip] = count
            else:
                by_ip.pop(ip, None)
                if not by_ip:
                    del self.per_ip[cluster_id]

    def health_changed(self, change: HealthChange) -> None:
        """A backend went down or came back: logged here (the BackendPool's `on_event`
        publishes the Event)."""
        backend = change.backend
        log.info(
            "backend_up" if change.up else "backend_down",
            cluster_id=backend.cluster_id,
            backend_id=backend.backend_id,
            address=backend.address,
        )

    def admit(self, session: Session) -> bool:
        """Register a new connection; False when it must be closed (over `max_connections`).

        While draining, a connection the loop accepted before the listeners closed is still
        served: its client has sent its request already (one exchange, `Connection: close`).
        """
        self.counters.incr(metrics.ACCEPTED)
        if len(self.sessions) >= self.max_connections:
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
        self.idle.close_all()

    def when_empty(self, callback: Callable[[], None]) -> None:
        """Call `callback` once no session is left (at once if none is)."""
        if not self.sessions:
            callback()
        else:
            self._on_empty.append(callback)


class Session(asyncio.Protocol):
    """Common part of client sessions: admission, release, stop orders."""

    # the client address of a PROXY protocol header, set before `connection_made` when the
    # listener expects one (`sozu.worker.proxy_accept`); else the socket's peer is the client
    peer_override: tuple[str, int] | None = None
    public_override: tuple[str, int] | None = None  # a PROXY header's destination (as Sōzu)

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


class Exchange:
    """One request of a client connection and its answer (local or from a backend).

    Class attributes are the defaults, so creating one per request sets only what differs.
    """

    answer: Answer | None = None
    head = b""
    route_parts: tuple[str, str | None, str] | None = None
    sticky_found: str | None = None
    sticky = False
    rid = b""  # request_id as bytes, once the request is forwarded
    request_framing = Framing.NONE
    upgrade = False
    keep_alive = True
    http10 = False
    pending_size = 0
    replay_size = 0
    request_done = False
    backend: Backend | None = None
    conn: BackendConnection | None = None
    connecting: asyncio.Task[None] | None = None
    attempts = 0
    response_started = False
    response_chunked = False
    response_close = False
    close_client = False
    status = 0
    started = 0.0
    authority: str | None = None
    path = ""
    bytes_in = 0
    bytes_out = 0
    connected_at = 0.0
    user_agent: str | None = None
    tried: tuple[Backend, ...] = ()
    hsts: Hsts | None = None  # the HSTS policy of its answer (HTTPS only)

    def __init__(self, request_id: str, method: bytes) -> None:
        self.request_id = request_id
        self.method = method
        self.cluster_id = ""
        self.pending: list[bytes] = []
        self.replay: list[bytes] | None = None


class HttpSession(Session):
    """One HTTP/1.x client connection (module docstring)."""

    __slots__ = (
        "_authority",
        "_cert_names",
        "_closing",
        "_cookie",
        "_crashed",
        "_current",
        "_deadline",
        "_drop",
        "_forwarding",
        "_framing",
        "_head_bytes",
        "_headers",
        "_headers_done",
        "_id_line",
        "_in_request",
        "_ip_epoch",
        "_ip_held",
        "_last_route",
        "_loop",
        "_parsed",
        "_parsing",
        "_peer_ip",
        "_peer_port",
        "_pipe_timeout",
        "_plain",
        "_public",
        "_queue",
        "_refusal",
        "_repeat",
        "_repeat_raw",
        "_served",
        "_timer",
        "_timer_at",
        "_to_back",
        "_to_front",
        "_trailers",
        "_unmetered",
        "_url",
        "_write_paused",
        "gate",
        "listener",
        "parser",
    )

    def __init__(self, hub: SessionHub, listener: ListenerView) -> None:
        super().__init__(hub)
        self.listener = listener
        self.parser: Any = None
        self.gate = ReadGate()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER
        self._deadline = 0.0
        self._closing = False
        self._crashed = False
        self._pipe_timeout = 0.0  # idle limit of an upgraded (101) connection, both ways
        self._in_request = False
        self._headers_done = False
        self._head_bytes = 0
        self._served = 0
        self._url = b""
        self._authority: bytes | None = None
        self._headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...] = []
        self._trailers: list[tuple[bytes, bytes]] = []
        self._current: Exchange | None = None
        self._parsing: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._to_back: list[bytes] = []
        self._to_front: list[bytes] = []
        self._peer_ip = b""
        self._peer_port = 0
        self._refusal: bytes | None = None
        self._write_paused = False
        self._framing = Framing.NONE
        self._drop: set[bytes] | None = None
        self._plain = True
        self._public = (listener.public_ip, listener.public_port)
        self._unmetered = False  # a request ended in this chunk: later heads are not counted
        self._parsed: _Parsed | None = None  # the parser's reading of the last request head
        self._repeat_raw: bytes | None = None  # the last one-request chunk (`_remember_request`)
        self._repeat: _Repeat | None = None
        self._cookie = False
        self._forwarding = b""
        self._last_route: _LastRoute | None = None
        self._ip_held: set[str] | None = None  # clusters this connection counts against
        self._ip_epoch = 0
        self._cert_names: tuple[str, ...] | None = None  # strict SNI binding: names served
        loop = hub.loop
        if loop is None:  # asyncio.get_running_loop() costs a getpid() system call: once only
            loop = hub.loop = asyncio.get_running_loop()
        self._loop = loop
        self._id_line = listener.id_header + b": "

    # --- connection events -------------------------------------------------------------

    def started(self) -> None:
        transport = self.transport
        assert transport is not None
        self.gate.transport = transport
        limit_writes(transport, self.hub.buffer_size)
        peer = self.peer_override or transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer_ip = str(peer[0]).encode("ascii")
            self._peer_port = int(peer[1])
        listener = self.listener
        public = self.public_override
        if public is not None:  # else the listener's, set at creation
            self._public = (str(public[0]).encode("ascii"), str(public[1]).encode("ascii"))
        if listener.https and listener.strict_sni:
            ssl_object = transport.get_extra_info("ssl_object")
            self._cert_names = getattr(ssl_object, "sozu_names", None)  # None: no SNI
        self.parser = httptools.HttpRequestParser(self)
        self._arm(self._idle_limit(self.listener.request_timeout))

    def data_received(self, data: bytes) -> None:
        try:
            if self._closing or self._refusal is not None:
                return
            current = self._current
            if current is not None and current.status == 101:
                conn = current.conn
                if conn is not None:
                    conn.write(data)
                    self._arm(self._pipe_timeout)
                return
            idle = not self._in_request and current is None
            if idle:
                if data == self._repeat_raw:  # the previous request again, byte for byte
                    self._repeat_request(data)
                    return
                self._parsed = None  # set again only if `data` holds a request head
                self._head_bytes = 0  # stray CR/LF between requests count for nothing
                self._unmetered = False
            self._head_bytes += len(data)  # head and trailer bytes; `on_body` resets it
            try:
                self.parser.feed_data(data)
                if idle:
                    self._remember_request(data)
            except httptools.HttpParserUpgrade as upgrade:
                self._request_upgraded(data, upgrade)
            except httptools.HttpParserCallbackError as error:
                # a bug in a callback, not the client's fault: logged, connection closed
                self._crash("parser callback", error.__context__ or error)
                return
            except httptools.HttpParserError as error:
                if not self._closing:
                    self.hub.counters.incr(metrics.PARSE_ERRORS)
                    message = str(error.__cause__ or error) or type(error).__name__
                    self._refuse(
                        bad_request(self.listener, new_request_id(), message, self._phase())
                    )
                return
            finally:
                if self._deadline == _ARM_REQUEST:  # a request began: its timeout runs from now
                    self._arm(self.listener.request_timeout)
            if self._to_back:
                self.flush_back()
            if not self._closing and self._head_bytes > self.hub.buffer_size and self._in_request:
                self._too_large()  # a head, or a chunked request's trailers, beyond buffer_size
        except Exception as error:  # a bug: this connection ends, the worker goes on
            self._crash("data_received", error)

    def _remember_request(self, data: bytes) -> None:
        """Keep what `data` parsed to when it was exactly one request head with no body, for
        `_repeat_request`: clients on keep-alive connections often send the same bytes again
        (health checks, polling, benchmarks). llhttp has validated these very bytes."""
        parsed = self._parsed
        if (
            parsed is None
            or not 65 <= data[0] <= 90  # starts with its method (no CR/LF ahead of it)
            or self._in_request
            or parsed[3]
            or self._framing != Framing.NONE
            or data.find(b"\r\n\r\n") != len(data) - 4
        ):
            self._repeat_raw = None
            return
        self._repeat_raw = data
        self._repeat = (
            self._url,
            tuple(self._headers),
            self._authority,
            self._drop,
            self._plain,
            self._cookie,
            parsed,
        )

    def _repeat_request(self, data: bytes) -> None:
        """The callbacks `data` gave last time, without parsing it again (same bytes, same
        parser state: the same request)."""
        repeat = self._repeat
        assert repeat is not None
        url, headers, authority, drop, plain, cookie, parsed = repeat
        self.on_message_begin()
        self._url = url
        self._headers = headers  # read only from here on
        self._authority = authority
        self._drop = drop
        self._plain = plain
        self._cookie = cookie
        self._headers_done = True
        self._head_bytes = len(data)
        self._headers_ready(parsed)
        self.on_message_complete()
        if self._deadline == _ARM_REQUEST:
            self._arm(self.listener.request_timeout)
        if self._to_back:
            self.flush_back()

    def eof_received(self) -> bool | None:
        try:
            current = self._current
            if current is not None and not self._closing:
                if current.status == 101 and current.conn is not None:
                    if (
                        current.conn.transport is not None
                        and current.conn.transport.can_write_eof()
                    ):
                        current.conn.transport.write_eof()
                    return True  # half-close: the backend may still answer
                if current.request_done and not self._in_request:
                    current.close_client = True
                    return True  # let the pending answer be written, then close
            return None
        except Exception as error:
            self._crash("eof_received", error)
            return None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._closing = True
            self._disarm()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = _NEVER
            for exchange in (self._current, *self._queue):
                if exchange is not None:
                    self._drop_backend(exchange, abort=True)
            self._current = None
            self._queue.clear()
            held = self._ip_held
            if held is not None:
                self._ip_held = None
                hub = self.hub
                if hub.per_ip_epoch == self._ip_epoch:
                    for cluster_id in held:
                        hub.free_ip(cluster_id, self._peer_ip)
        except Exception as error:
            self._crash("connection_lost", error)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Soft stop: a busy connection closes after its answer (`Connection: close`, since
        hub.draining forbids keep-alive); an idle one gets `DRAIN_IDLE_GRACE` seconds, so a
        request already on its way is still answered rather than lost with a reset."""
        if self._in_request or self._current is not None:
            return
        self._arm(self._idle_limit(self.listener.front_timeout))

    def pause_writing(self) -> None:
        try:
            self._write_paused = True
            current = self._current
            if current is not None and current.conn is not None:
                current.conn.gate.pause(WRITE)
        except Exception as error:
            self._crash("pause_writing", error)

    def resume_writing(self) -> None:
        try:
            self._write_paused = False
            current = self._current
            if current is not None and current.conn is not None:
                current.conn.gate.resume(WRITE)
                if current.response_started:  # a slow client made progress: not a stalled backend
                    self._arm(self.listener.back_timeout)
        except Exception as error:
            self._crash("resume_writing", error)

    # --- request parser callbacks (httptools) ------------------------------------------

    def on_message_begin(self) -> None:
        self._in_request = True
        self._parsed = None
        self._headers_done = False
        self._url = b""
        self._authority = None
        self._headers = []
        self._trailers = []
        self._framing = Framing.NONE
        self._drop = None
        self._plain = True
        self._cookie = False
        if self._current is not None:
            self.gate.pause(PIPELINE)
        elif self._served:
            self._deadline = _ARM_REQUEST  # armed once this data is parsed (`data_received`)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:
            self._trailers.append((name, value))
            return
        self._headers.append((name, value))  # type: ignore[union-attr]  # a list while parsing
        if len(name) in _WATCHED_LENGTHS:
            lower = name.lower()
            if lower == b"host":
                if self._authority is None:
                    self._authority = value
            elif lower == b"content-length":
                if self._framing == Framing.NONE:
                    self._framing = Framing.LENGTH
            elif lower in REWRITTEN_REQUEST_HEADERS:
                self._plain = False
                if lower == b"transfer-encoding":
                    self._framing = Framing.CHUNKED
                elif lower == b"connection":
                    self._drop = connection_extras(value, self._drop)
            elif lower == b"cookie":
                self._cookie = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._closing or self._refusal is not None:
            return
        hub = self.hub
        if (self._head_bytes > hub.buffer_size or self._unmetered) and (
            self._head_size() > hub.buffer_size
        ):
            self._too_large()
            return
        parser = self.parser
        parsed = (
            parser.get_method(),
            bool(parser.should_keep_alive()),
            parser.get_http_version() == "1.0",
            bool(parser.should_upgrade()),
        )
        self._parsed = parsed
        self._headers_ready(parsed)

    def _headers_ready(self, parsed: _Parsed) -> None:
        """A request head is complete (parsed now, or the repeat of the previous one)."""
        hub = self.hub
        counters = hub.counters
        if counters.enabled:
            counters.counts[_REQUESTS] += 1
        method_bytes, keep_alive, http10, upgrade = parsed
        method = _METHODS.get(method_bytes) or method_bytes.decode("latin-1")
        request_id = new_request_id()
        exchange = Exchange(request_id, method_bytes)
        self._parsing = exchange
        exchange.keep_alive = keep_alive and not hub.draining
        if http10:
            exchange.http10 = True
        url = self._url
        routing = hub.routing
        listener = self.listener
        last = self._last_route
        if (
            last is not None
            and last[0] == url
            and last[1] == self._authority
            and last[2] == method_bytes
            and last[3] == Router.generation
            and routing.clusters.get(last[4]) is last[5]
        ):  # the same request as the previous one, and nothing changed since: same route
            cluster_id, cluster, route_parts, route_hsts = last[4], last[5], last[6], last[7]
        elif (
            shared := self._shared_route(url, method_bytes)
        ) is not None:  # another connection of this listener sent it: same route
            self._last_route = last = shared
            cluster_id, cluster, route_parts, route_hsts = last[4], last[5], last[6], last[7]
        else:
            generation = Router.generation
            routed = self._route_request(method, request_id)
            if routed is None:
                return
            answer, authority, path = routed
            cluster_id = answer.cluster_id or ""
            route_parts = (method, authority, path)
            route = answer.route
            route_hsts = route.hsts if route is not None else None
            if answer.forward:
                cluster = routing.clusters.get(cluster_id)
                self._last_route = last = (
                    url,
                    self._authority,
                    method_bytes,
                    generation,
                    cluster_id,
                    cluster,
                    route_parts,
                    route_hsts,
                )
                if self._cert_names is None:  # no per-connection SNI check in this route
                    hub.share_route((listener.address, url, self._authority, method_bytes), last)
            else:
                exchange.answer = answer
                if not answer.keep_alive:
                    exchange.keep_alive = False
        exchange.cluster_id = cluster_id
        if hub.access_log is not None:
            exchange.authority, exchange.path = route_parts[1], route_parts[2]
            exchange.bytes_in = self._head_bytes
            for name, value in self._headers:
                if len(name) == 10 and name.lower() == b"user-agent":
                    exchange.user_agent = value.decode("latin-1")
        if listener.https:
            hsts = route_hsts if route_hsts is not None else listener.hsts
            if hsts is not None and hsts[0]:
                exchange.hsts = hsts
        if exchange.answer is None and cluster is not None:
            limit = cluster.max_connections_per_ip
            if limit is None:
                limit = hub.max_per_ip
            if limit:
                held = self._ip_held
                if held is None or cluster_id not in held or self._ip_epoch != hub.per_ip_epoch:
                    self._hold_ip(exchange, cluster, limit, route_parts)
        if exchange.answer is None:
            exchange.route_parts = route_parts
            headers = self._headers
            exchange.request_framing = framing = self._framing
            exchange.rid = rid = request_id.encode("ascii")
            exchange.upgrade = upgrade
            sticky = cluster is not None and cluster.sticky_session
            if sticky:
                exchange.sticky = True
                found = sticky_cookie(headers, listener.sticky_name)
                exchange.sticky_found = found.decode("latin-1") if found is not None else None
            if self._plain and not (sticky and self._cookie):
                forwarding = self._forwarding or self._build_forwarding()
                head = plain_request_head(
                    method_bytes, url, headers, forwarding, self._id_line, rid
                )
            else:
                head = request_head(
                    method_bytes,
                    url,
                    headers,
                    peer_ip=self._peer_ip,
                    peer_port=self._peer_port,
                    public_ip=self._public[0],
                    public_port=self._public[1],
                    proto=listener.proto,
                    request_id=rid,
                    id_header=listener.id_header,
                    sticky_name=listener.sticky_name if sticky else None,
                    framing=framing,
                    upgrade=exchange.upgrade,
                    drop=self._drop,
                )
            exchange.head = head
            exchange.pending.append(head)
            exchange.pending_size = exchange.replay_size = len(head)
            exchange.replay = [head]
        if self._current is None:
            self._start(exchange)
        else:
            self._queue.append(exchange)

    def _hold_ip(
        self,
        exchange: Exchange,
        cluster: ClusterView,
        limit: int,
        route_parts: tuple[str, str | None, str],
    ) -> None:
        """Count this connection against (cluster, source ip), or answer 429 when the
        cluster's `max_connections_per_ip` is reached (Sōzu checks it when a request is routed
        to a cluster; a connection counts once per cluster until it closes)."""
        hub = self.hub
        cluster_id = cluster.cluster_id
        if hub.hold_ip(cluster_id, self._peer_ip, limit):
            if self._ip_held is None or self._ip_epoch != hub.per_ip_epoch:
                self._ip_held = set()
                self._ip_epoch = hub.per_ip_epoch
            self._ip_held.add(cluster_id)
            return
        retry_after = cluster.retry_after if cluster.retry_after is not None else hub.retry_after
        values = {
            "REQUEST_ID": exchange.request_id,
            "ROUTE": route_text(*route_parts),
            "CLUSTER_ID": cluster_id,
            "RETRY_AFTER": str(retry_after) if retry_after else "",
        }
        answer = render(429, self.listener, cluster, values)
        exchange.answer = answer
        if not answer.keep_alive:
            exchange.keep_alive = False
        log.debug("connection_limit_per_ip", cluster_id=cluster_id, limit=limit)

    def _build_forwarding(self) -> bytes:
        """This connection's forwarding headers, built for its first plain request head."""
        self._forwarding = forwarding_headers(
            self._peer_ip, self._peer_port, self._public[0], self._public[1], self.listener.proto
        )
        return self._forwarding

    def _shared_route(self, url: bytes, method_bytes: bytes) -> _LastRoute | None:
        """The route another connection of this listener found for the same target, Host and
        method, if nothing changed since (`SessionHub.share_route`)."""
        if self._cert_names is not None:
            return None
        shared = self.hub.routes.get((self.listener.address, url, self._authority, method_bytes))
        if (
            shared is None
            or shared[3] != Router.generation
            or self.hub.routing.clusters.get(shared[4]) is not shared[5]
        ):
            return None
        return shared

    def _route_request(self, method: str, request_id: str) -> tuple[Answer, str | None, str] | None:
        """What the request head just parsed gets (`answer_request`), with its authority and
        path as text; None when its target is invalid (a 400 is then on its way)."""
        url = self._url
        target = url.decode("latin-1")
        authority = self._authority.decode("latin-1") if self._authority is not None else None
        path = target
        if not target.startswith("/") and target != "*":
            if method == "CONNECT":
                authority, path = target, ""
            else:
                try:
                    parsed = httptools.parse_url(url)
                except httptools.HttpParserInvalidURLError:
                    answer = bad_request(
                        self.listener, request_id, "Invalid request target.", "Headers"
                    )
                    self._refuse(answer)
                    return None
                if parsed.host:
                    host = parsed.host.decode("latin-1")
                    authority = f"{host}:{parsed.port}" if parsed.port else host
                path = (parsed.path or b"/").decode("latin-1")
                if parsed.query:
                    path += "?" + parsed.query.decode("latin-1")
        names = self._cert_names
        if names is not None and authority is not None:
            bound = host_of(authority)
            if bound is not None and not cert_covers(names, bound):
                values = {"REQUEST_ID": request_id, "ROUTE": route_text(method, authority, path)}
                return render(421, self.listener, None, values), authority, path
        answer = answer_request(
            self.listener, self.hub.routing, method, authority, path, request_id
        )
        return answer, authority, path

    def on_body(self, body: bytes) -> None:
        self._head_bytes = 0
        exchange = self._parsing
        if exchange is None or exchange.answer is not None:
            return
        exchange.bytes_in += len(body)
        if exchange.request_framing == Framing.CHUNKED:
            body = chunk(body)
        self._send_back(exchange, body)

    def on_message_complete(self) -> None:
        self._in_request = False
        self._head_bytes = 0
        self._unmetered = True  # a head later in this chunk is measured by `_head_size`
        exchange, self._parsing = self._parsing, None
        if self._closing or exchange is None:
            return
        if exchange is self._current:
            self._disarm()
        if exchange.request_framing == Framing.CHUNKED and exchange.answer is None:
            self._send_back(exchange, last_chunk(self._trailers))
        exchange.request_done = True
        if exchange is self._current:
            if exchange.answer is not None:
                self._answer_locally(exchange)
            elif exchange.response_started and exchange.status >= 200 and exchange.conn is None:
                self._finish(exchange)
            elif exchange.conn is not None and not exchange.response_started:
                self._arm(self.listener.back_timeout)  # the backend has it all: its turn

    # --- the exchange in front ---------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        """`exchange` becomes the one answered now."""
        self._current = exchange
        exchange.started = self._loop.time()
        if exchange.answer is not None:
            if not exchange.answer.keep_alive or exchange.request_done:
                self._answer_locally(exchange)
            return
        self._pick_backend(exchange)

    def _pick_backend(self, exchange: Exchange) -> None:
        hub = self.hub
        backend = hub.backends.choose(
            exchange.cluster_id, self._loop.time(), exchange.sticky_found, exchange.tried
        )
        if backend is None:
            self._local_error(
                exchange, 503, f"No backend available for cluster {exchange.cluster_id}."
            )
            return
        exchange.backend = backend
        conn = hub.idle.take(backend)
        if conn is not None:
            self._attach(exchange, conn)
            return
        self._start_connect(exchange, backend)

    def _start_connect(self, exchange: Exchange, backend: Backend) -> None:
        task = self._loop.create_task(self._connect(exchange, backend))
        exchange.connecting = task
        task.add_done_callback(lambda done: self._connect_done(exchange, backend, done))

    def _connect_done(self, exchange: Exchange, backend: Backend, task: asyncio.Task[None]) -> None:
        """An exception `_connect` did not expect (not a refused or timed out connection): it
        is logged here (never "Task exception was never retrieved") and the exchange gets a
        503 (no backend connection) or its client connection closes (an answer started)."""
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        try:
            if exchange.connecting is task:
                exchange.connecting = None
            log.error(
                "backend_connect_failed",
                cluster_id=exchange.cluster_id,
                backend_id=backend.backend_id,
                address=backend.address,
                error=repr(error),
                exc_info=error,
            )
            if exchange is not self._current or self._closing:
                return
            if exchange.response_started:
                self._close()
                return
            self._drop_backend(exchange, abort=True)
            message = f"Connecting to backend {backend.backend_id} failed unexpectedly."
            self._local_error(exchange, 503, message)
        except Exception as failure:
            self._crash("connect", failure)

    async def _connect(self, exchange: Exchange, backend: Backend) -> None:
        hub = self.hub
        loop = self._loop
        began = loop.time()
        try:
            async with asyncio.timeout(self.listener.connect_timeout or None):
                _, conn = await loop.create_connection(
                    lambda: BackendConnection(backend, hub.backends, hub.idle, hub.buffer_size),
                    backend.host,
                    backend.port,
                )
        except (OSError, TimeoutError):
            exchange.connecting = None
            self._health(hub.backends.connect_failed(backend, self._loop.time()))
            if exchange is not self._current or self._closing:
                return
            exchange.tried = (*exchange.tried, backend)
            exchange.attempts += 1
            if exchange.attempts >= MAX_CONNECT_RETRIES:
                message = f"No backend of cluster {exchange.cluster_id} accepted a connection."
                self._local_error(exchange, 503, message)
            else:
                self._pick_backend(exchange)
            return
        exchange.connecting = None
        now = loop.time()
        self._health(hub.backends.connect_succeeded(backend, now, now - began))
        if exchange is not self._current or self._closing:
            hub.idle.put(conn)
            return
        self._attach(exchange, conn)

    def _health(self, change: HealthChange | None) -> None:
        if change is not None:
            self.hub.health_changed(change)

    def _attach(self, exchange: Exchange, conn: BackendConnection) -> None:
        exchange.conn = conn
        exchange.connected_at = self._loop.time()
        conn.owner = self
        conn.head_request = exchange.method == b"HEAD"
        if self._write_paused:  # the client is still slow: this backend waits too
            conn.gate.pause(WRITE)
        if conn.write_paused:  # the backend is still slow: the client waits too
            self.gate.pause(WRITE)
        hub = self.hub
        hub.backends.request_started(conn.backend)
        pending = exchange.pending
        if pending:
            conn.write(pending[0] if len(pending) == 1 else b"".join(pending))
            exchange.pending = []
            exchange.pending_size = 0
        if self.gate.reasons & PENDING:
            self.gate.resume(PENDING)
        if exchange.request_done:
            self._arm_back(exchange)

    def _send_back(self, exchange: Exchange, data: bytes) -> None:
        replay = exchange.replay
        if replay is not None:
            replay.append(data)
            exchange.replay_size += len(data)
            if exchange.replay_size > self.hub.buffer_size:
                exchange.replay = None  # too large to keep: not replayable
        if exchange.conn is not None and exchange is self._current:
            self._to_back.append(data)
            return
        exchange.pending.append(data)
        exchange.pending_size += len(data)
        if exchange.pending_size > self.hub.buffer_size:
            self.gate.pause(PENDING)

    def flush_back(self) -> None:
        data = self._to_back
        self._to_back = []
        current = self._current
        if current is not None and current.conn is not None:
            current.conn.write(data[0] if len(data) == 1 else b"".join(data))
            if current.request_done:
                self._arm_back(current)

    def flush_front(self) -> None:
        data = self._to_front
        if data and self.transport is not None:
            self._to_front = []
            if self.hub.access_log is not None and self._current is not None:
                self._current.bytes_out += sum(len(part) for part in data)
            self.transport.write(data[0] if len(data) == 1 else b"".join(data))

    # --- the backend's answer (BackendConnection callbacks) ----------------------------

    def response_head(self, conn: BackendConnection) -> None:
        exchange = self._current
        if exchange is None or exchange.conn is not conn:
            return
        status = conn.status
        if 100 <= status < 200 and status != 101:
            self._to_front.append(b"HTTP/1.1 %d %s\r\n\r\n" % (status, conn.reason or b"Continue"))
            return
        exchange.status = status
        exchange.response_started = True
        self._disarm()
        if status == 101:
            if not exchange.upgrade:
                self.response_failed(conn, "101 answer to a request without upgrade")
                return
            framing = Framing.NONE
        elif exchange.method == b"HEAD" or status in (204, 304):
            framing = Framing.NONE
            if exchange.method == b"HEAD":
                conn.stop_at_head = True
        else:
            framing = conn.framing
            if framing == Framing.NONE:
                framing = Framing.CLOSE
        close = not exchange.keep_alive or self.hub.draining or (exchange.upgrade and status != 101)
        chunked = framing == Framing.CHUNKED
        if framing == Framing.CLOSE or (chunked and exchange.http10):
            close = True
            chunked = False
        exchange.response_chunked = chunked
        exchange.response_close = framing == Framing.CLOSE or not conn.keep_alive()
        exchange.close_client = close
        set_cookie = self._set_cookie(exchange)
        connection = b"close" if close else (b"keep-alive" if exchange.http10 else None)
        self._to_front.append(
            response_head(
                status,
                conn.reason,
                conn.headers,
                request_id=exchange.request_id.encode("ascii"),
                id_header=self.listener.id_header,
                chunked=chunked,
                set_cookie=set_cookie,
                connection=connection,
                drop=conn.drop,
                hsts=exchange.hsts,
            )
        )
        if framing == Framing.NONE and status != 101:
            self.response_complete(conn)
        elif status != 101:
            self._arm(self.listener.back_timeout)

    def _set_cookie(self, exchange: Exchange) -> bytes | None:
        """The sticky cookie to set when the client does not hold its backend's id yet."""
        backend = exchange.backend
        if backend is not None and exchange.sticky_found != backend.sticky_id:
            cluster = self.hub.routing.clusters.get(exchange.cluster_id)
            if cluster is not None and cluster.sticky_session:
                return b"%s=%s; Path=/" % (
                    self.listener.sticky_name,
                    backend.sticky_id.encode("utf-8"),
                )
        return None

    def response_fast(self, conn: BackendConnection, body: bytes, complete: bool) -> None:
        """The common answer read as bytes (`BackendConnection`): its head, once, then body
        bytes; `complete` when its Content-Length is reached. Same outcome as `response_head`
        + `response_body` + `response_complete` for such an answer, in one call."""
        exchange = self._current
        if exchange is None or exchange.conn is not conn:
            return
        if not exchange.response_started:
            exchange.status = conn.status
            exchange.response_started = True
            self._deadline = 0.0  # _disarm
            close = not exchange.keep_alive or self.hub.draining or exchange.upgrade
            exchange.response_close = not conn.keep_alive()
            exchange.close_client = close
            head = conn.fast_head
            assert head is not None
            if exchange.hsts is not None:
                head = with_hsts(head, exchange.hsts)
            parts = [head]
            if exchange.sticky:
                set_cookie = self._set_cookie(exchange)
                if set_cookie is not None:
                    parts += (b"Set-Cookie: ", set_cookie, b"\r\n")
            parts += (self._id_line, exchange.rid, b"\r\n")
            if close:
                parts.append(b"Connection: close\r\n\r\n")
            elif exchange.http10:
                parts.append(b"Connection: keep-alive\r\n\r\n")
            else:
                parts.append(b"\r\n")
            if body:
                parts.append(body)
            self._to_front.append(b"".join(parts))
            if not complete:
                self._arm(self.listener.back_timeout)
        elif body:
            self._to_front.append(body)
            if len(body) > 4096:  # a long answer: its idle time counts from now
                self._arm(self.listener.back_timeout)
        if complete:
            self._release_backend(exchange, reusable=exchange.request_done)
            if not exchange.request_done:
                exchange.close_client = True
            self._finish(exchange)
        else:
            self.flush_front()

    def response_body(self, body: bytes) -> None:
        exchange = self._current
        if exchange is None:
            return
        self._to_front.append(chunk(body) if exchange.response_chunked else body)
        if len(body) > 4096:  # a long answer: its idle time counts from now
            self._arm(self.listener.back_timeout)

    def response_complete(self, conn: BackendConnection) -> None:
        exchange = self._current
        if exchange is None or exchange.conn is not conn or not exchange.response_started:
            return
        if exchange.status == 101:
            return
        if exchange.response_chunked:
            self._to_front.append(last_chunk(conn.trailers))
        self._release_backend(exchange, reusable=exchange.request_done)
        if not exchange.request_done:
            exchange.close_client = True
        self._finish(exchange)

    def upgraded(self, conn: BackendConnection, rest: bytes) -> None:
        """The backend switched protocols: both sides become a byte pipe."""
        if rest:
            self._to_front.append(rest)
        self.flush_front()
        timeouts = [t for t in (self.listener.front_timeout, self.listener.back_timeout) if t > 0]
        self._pipe_timeout = min(timeouts, default=0.0)
        self._arm(self._pipe_timeout)
        self.gate.resume(PIPELINE | PENDING)

    def pipe_from_backend(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self._arm(self._pipe_timeout)

    def _request_upgraded(self, data: bytes, upgrade: httptools.HttpParserUpgrade) -> None:
        """The parser stopped after a request asking to switch protocols: what follows it is
        for the backend (sent after the head), and nothing more is parsed on this connection."""
        exchange = self._queue[-1] if self._queue else self._current
        if exchange is None or exchange.answer is not None or not exchange.upgrade:
            if not self._closing:
                self.flush_front()
                self._close()
            return
        offset = upgrade.args[0] if upgrade.args else len(data)
        rest = data[offset:]
        if rest:
            self._send_back(exchange, rest)
        if self._to_back:
            self.flush_back()

    def response_too_large(self, conn: BackendConnection) -> None:
        """The backend's response head does not fit in `buffer_size`: 507; or, once the
        answer started, its trailers (or chunk extensions) outgrow it: the answer is cut, both
        connections close (the backend's is never pooled)."""
        exchange = self._current
        conn.abort()
        if exchange is None or exchange.conn is not conn:
            return
        self._drop_backend(exchange, abort=True)
        if exchange.response_started:
            log.warning(
                "response_trailers_too_large",
                request_id=exchange.request_id,
                cluster_id=exchange.cluster_id,
                capacity=self.hub.buffer_size,
            )
            self.flush_front()
            self._close()
            return
        capacity = str(self.hub.buffer_size)
        self._local_error(exchange, 507, "", capacity=capacity)

    def response_failed(self, conn: BackendConnection, message: str) -> None:
        exchange = self._current
        conn.abort()
        if exchange is None or exchange.conn is not conn:
            return
        self._drop_backend(exchange, abort=True)
        if exchange.response_started:
            self.flush_front()
            self._close()
            return
        self._local_error(exchange, 502, message)

    def backend_lost(self, conn: BackendConnection) -> None:
        exchange = self._current
        if exchange is None or exchange.conn is not conn:
            return
        if self.hub.backends is not None and exchange.backend is not None:
            self.hub.backends.request_finished(exchange.backend)
        exchange.conn = None
        self.gate.resume(WRITE)
        if exchange.response_started:
            if exchange.status == 101 or (
                exchange.response_close and not exchange.response_chunked
            ):
                self.flush_front()  # the body ended with the connection, as announced
            self._close()
            return
        if conn.reused and exchange.replay is not None and not self._closing:
            exchange.pending = list(exchange.replay)
            exchange.pending_size = sum(len(p) for p in exchange.pending)
            backend = conn.backend
            self._start_connect(exchange, backend)
            return
        self._local_error(exchange, 502, "The backend closed the connection before answering.")

    # --- ending exchanges --------------------------------------------------------------

    def _finish(self, exchange: Exchange) -> None:
        """The answer of the exchange in front is complete: next one, or close."""
        if self.hub.access_log is not None:
            self._log_access(exchange)
        self.flush_front()
        self.hub.counters.answered(exchange.status)
        self._served += 1
        if exchange.close_client or self._closing:
            self._close()
            return
        self._current = None
        if self._queue:
            self._start(self._queue.popleft())
            if self._current is None or not self._queue:
                self.gate.resume(PIPELINE)
            return
        if self._refusal is not None:
            if self.transport is not None:
                self.transport.write(self._refusal)
            self._close()
            return
        if self.gate.reasons & PIPELINE:
            self.gate.resume(PIPELINE)
        if not self._in_request:  # its answer promised keep-alive: idle now (a drain's grace)
            self._arm(self._idle_limit(self.listener.front_timeout))

    def _log_access(self, exchange: Exchange) -> None:
        access_log = self.hub.access_log
        assert access_log is not None
        exchange.bytes_out += sum(len(part) for part in self._to_front)
        now = self._loop.time()
        backend = exchange.backend
        connected = exchange.connected_at
        access_log.http(
            exchange.request_id,
            exchange.cluster_id or None,
            backend.backend_id if backend is not None else None,
            f"{self._peer_ip.decode()}:{self._peer_port}",
            exchange.method.decode("latin-1"),
            exchange.authority,
            exchange.path,
            exchange.status,
            exchange.bytes_in,
            exchange.bytes_out,
            (now - exchange.started) * 1e6,
            (now - exchange.started) * 1e6,
            (now - connected) * 1e6 if connected else None,
            exchange.user_agent,
            backend_address=backend.address if backend is not None else None,
        )

    def _release_backend(self, exchange: Exchange, reusable: bool) -> None:
        conn = exchange.conn
        if conn is None:
            return
        exchange.conn = None
        if self.gate.reasons & WRITE:
            self.gate.resume(WRITE)
        self.hub.backends.request_finished(conn.backend)
        if reusable and not exchange.response_close and not conn.closed:
            self.hub.idle.put(conn)
        else:
            conn.close()

    def _drop_backend(self, exchange: Exchange, abort: bool) -> None:
        task = exchange.connecting
        if task is not None:
            exchange.connecting = None
            task.cancel()
        conn = exchange.conn
        if conn is not None:
            exchange.conn = None
            self.gate.resume(WRITE)
            self.hub.backends.request_finished(conn.backend)
            if abort:
                conn.abort()
            else:
                conn.close()

    def _answer_locally(self, exchange: Exchange, close: bool = False) -> None:
        answer = exchange.answer
        assert answer is not None
        exchange.status = answer.status
        exchange.response_started = True
        self._to_front.append(answer.data)
        if close or not answer.keep_alive or not exchange.keep_alive or not exchange.request_done:
            exchange.close_client = True
        self._finish(exchange)

    def _local_error(
        self, exchange: Exchange, status: int, message: str, capacity: str = ""
    ) -> None:
        backend = exchange.backend
        duration = self.listener.back_timeout if status == 504 else 0.0
        values = {
            "REQUEST_ID": exchange.request_id,
            "ROUTE": route_text(*exchange.route_parts) if exchange.route_parts else "",
            "CLUSTER_ID": exchange.cluster_id,
            "BACKEND_ID": backend.backend_id if backend is not None else "",
            "MESSAGE": message,
            "DURATION": f"{duration:g}s",
            "PHASE": "Headers",
            "CAPACITY": capacity,
            "SUCCESSFULLY_PARSED": "null",
            "PARTIALLY_PARSED": "null",
            "INVALID": "null",
        }
        cluster = self.hub.routing.clusters.get(exchange.cluster_id)
        exchange.answer = render(status, self.listener, cluster, values)
        self._answer_locally(exchange)

    def _refuse(self, answer: Answer) -> None:
        """An answer that ends the connection (parse errors, limits, timeouts)."""
        self.hub.counters.answered(answer.status)
        current = self._current
        if current is not None and current is not self._parsing:
            # earlier requests are answered first; nothing is read any more
            self._refusal = answer.data
            self.gate.pause(PIPELINE)
            return
        if current is not None:
            if current.response_started:
                self._close()  # an answer is on its way: a refusal cannot follow it
                return
            self._drop_backend(current, abort=True)
        if self.transport is not None:
            self.transport.write(answer.data)
        self._close()

    def crashed(self, where: str, error: BaseException) -> None:
        """A callback of this session's backend connection raised (`BackendConnection`)."""
        self._crash(where, error)

    def _crash(self, where: str, error: BaseException) -> None:
        """An exception nothing expected in a protocol callback (a bug): logged once, then this
        client connection and its backend connections are aborted; the worker goes on. Only
        plain attribute work here, so it cannot fail the way the callback did."""
        if not self._crashed:
            self._crashed = True
            log.error("http_session_failed", callback=where, error=repr(error), exc_info=error)
        self._closing = True
        self._deadline = 0.0
        exchanges = (self._current, *self._queue)
        self._current = None
        self._parsing = None
        self._queue.clear()
        for exchange in exchanges:
            if exchange is None:
                continue
            task, exchange.connecting = exchange.connecting, None
            if task is not None:
                task.cancel()
            conn, exchange.conn = exchange.conn, None
            if conn is not None:
                conn.abort()
                with contextlib.suppress(Exception):  # counts are best effort after a bug
                    self.hub.backends.request_finished(conn.backend)
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        self._closing = True
        self._disarm()
        for exchange in (self._current, *self._queue):
            if exchange is not None:
                self._drop_backend(exchange, abort=False)
        if self.transport is not None:
            self.transport.close()

    def _too_large(self) -> None:
        values = {
            "REQUEST_ID": new_request_id(),
            "ROUTE": "",
            "CAPACITY": str(self.hub.buffer_size),
            "PHASE": self._phase(),
            "MESSAGE": "",
        }
        self._refuse(render(413, self.listener, None, values))

    def _head_size(self) -> int:
        size = len(self._url) + 16
        for name, value in self._headers:
            size += len(name) + len(value) + 4
        return size

    def _phase(self) -> str:
        if not self._in_request or not self._url:
            return "StatusLine"
        return "Body" if self._headers_done else "Headers"

    # --- timers --------------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        """One deadline for the client side (request, front or back timeout); 0 disarms."""
        if delay <= 0 or self.transport is None:
            self._deadline = 0.0
            return
        loop = self._loop
        deadline = loop.time() + delay
        self._deadline = deadline
        if deadline < self._timer_at:  # the timer goes off first, then waits more if need be
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._timed_out)
            self._timer_at = deadline

    def _idle_limit(self, timeout: float) -> float:
        """`timeout` for a connection waiting for a request, cut to `DRAIN_IDLE_GRACE` while the
        worker drains (0, no timeout, becomes the grace too)."""
        if not self.hub.draining:
            return timeout
        return min(timeout, DRAIN_IDLE_GRACE) if timeout else DRAIN_IDLE_GRACE

    def _arm_back(self, exchange: Exchange) -> None:
        if not exchange.response_started:
            self._arm(self.listener.back_timeout)

    def _disarm(self) -> None:
        self._deadline = 0.0

    def _timed_out(self) -> None:
        """The client side's deadline (request, front or back timeout, or an idle pipe)."""
        try:
            self._timer = None
            self._timer_at = _NEVER
            if self._closing or self.transport is None or not self._deadline:
                return
            loop = self._loop
            if loop.time() < self._deadline:
                self._timer = loop.call_at(self._deadline, self._timed_out)
                self._timer_at = self._deadline
                return
            self._deadline = 0.0
            current = self._current
            if (
                current is not None
                and current.request_done
                and not current.response_started
                and current.answer is None
            ):
                self._drop_backend(current, abort=True)
                self._local_error(current, 504, "")
                return
            if current is not None and current.response_started:
                if current.status == 101:
                    log.debug("pipe_timeout", request_id=current.request_id)
                self._close()  # the backend stalled in its answer, or an upgraded pipe idled
                return
            if (self._served or self.hub.draining) and not self._in_request and current is None:
                self._close()  # idle after its last answer, or through a drain's grace
                return
            values = {
                "REQUEST_ID": new_request_id(),
                "ROUTE": "",
                "DURATION": f"{self.listener.request_timeout:g}s",
            }
            self._refuse(render(408, self.listener, None, values))
        except Exception as error:
            self._crash("timer", error)
