"""Accepting on HTTP and HTTPS listeners with `expect_proxy`: the PROXY header comes first.

A listener that expects a PROXY protocol header is not served by `loop.create_server`: for
HTTPS the header precedes the TLS handshake, and a transport would read the first bytes of
the ClientHello together with the header, with no way to give them back to TLS. So
`ProxyAcceptor` accepts itself (the listening socket in the loop's reader) and reads each new
connection's header straight from its socket: it peeks at what arrived, and takes out of the
kernel buffer only the header's bytes (`MSG_PEEK`, then a `recv` of exactly those), so the
next byte, plain HTTP or a ClientHello, is still there for the transport. Then
`loop.connect_accepted_socket` (with the listener's `SSLContext` for HTTPS) hands the socket
to the session, which is told the header's source address (`Session.peer_override`) to use
as the client's: X-Forwarded-For, Forwarded, access logs, max_connections_per_ip.

A connection that sends no header, an invalid one, closes, or sends none complete within the
timeout is closed without an answer. The timeout is the listener's request_timeout, as in Sōzu;
when that is 0 (no request timeout) its front_timeout, and when both are 0
`FALLBACK_HEADER_TIMEOUT`: a connection never waits for its header without end. A header
carrying no addresses (v2 LOCAL or UNSPEC, v1 UNKNOWN) closes the connection too: Sōzu serves
no HTTP on those either.

A connection still waiting for its header counts against the worker's `max_connections` like
any other: its session is made at accept (`factory()`), and the session's hub holds the
waiting `_HeaderReader` among its sessions until the socket is handed to that session (which
then admits itself), so the connection gauge, soft and hard stops see it. Over the limit, the
connection is accepted and closed at once, counting `client.connections.rejected`, as the
other listeners do. The listener view of that session gives the timeouts, so a listener
update applies to the next connection.

Listeners without `expect_proxy` keep `create_server`: nothing here is on their path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from sozu.command.logging import get_logger
from sozu.worker import metrics
from sozu.worker.metrics import Counters
from sozu.worker.protocol.http1 import ListenerView
from sozu.worker.protocol.proxy_protocol import (
    MAX_V2_HEADER,
    Address,
    Invalid,
    NeedMore,
    parse,
)

log = get_logger(__name__)

ACCEPT_BATCH = 64
PEEK_SIZE = MAX_V2_HEADER  # more than any acceptable header, v1 or v2

FALLBACK_HEADER_TIMEOUT = 10.0  # seconds, when request_timeout and front_timeout are both 0

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class Hub(Protocol):
    """What the acceptor needs of the worker's session hub (`SessionHub`) to count waiting
    connections against `max_connections`."""

    sessions: set[Any]
    max_connections: int
    counters: Counters

    def release(self, session: Any) -> None: ...


def header_timeout(request_timeout: float, front_timeout: float) -> float:
    """How long a PROXY header may take: the first of these that is set (module docstring)."""
    for timeout in (request_timeout, front_timeout):
        if timeout > 0:
            return timeout
    return FALLBACK_HEADER_TIMEOUT


class ProxyAcceptor:
    """Accepts on one listening socket and reads each connection's PROXY header (module
    docstring). `close()` stops accepting and closes the connections still without header.
    `timeout` is the header timeout when the sessions made have no listener view to read it
    from."""

    def __init__(
        self,
        sock: socket.socket,
        factory: ProtocolFactory,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.pending: set[_HeaderReader] = set()
        self.handing: set[asyncio.Task[None]] = set()
        self._closed = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and friends: try again on the next event
                log.warning("accept_failed", error=str(error))
                return
            conn.setblocking(False)
            protocol = self.factory()
            hub: Hub | None = getattr(protocol, "hub", None)
            if hub is not None and len(hub.sessions) >= hub.max_connections:
                hub.counters.incr(metrics.ACCEPTED)
                hub.counters.incr(metrics.REJECTED)
                conn.close()
                continue
            reader = _HeaderReader(self, conn, protocol, hub, self._timeout(protocol))
            self.pending.add(reader)
            if hub is not None:
                hub.sessions.add(reader)

    def _timeout(self, protocol: asyncio.BaseProtocol) -> float:
        listener = getattr(protocol, "listener", None)
        if isinstance(listener, ListenerView):
            return header_timeout(listener.request_timeout, listener.front_timeout)
        return header_timeout(self.timeout, 0.0)

    def hand_over(
        self, reader: _HeaderReader, source: Address, destination: Address | None
    ) -> None:
        """The header is read: the socket goes to a transport and its session, which takes
        the waiting connection's place among the hub's sessions."""
        self.pending.discard(reader)
        protocol, hub = reader.protocol, reader.hub
        protocol.peer_override = source  # type: ignore[attr-defined]
        protocol.public_override = destination  # type: ignore[attr-defined]

        def session() -> asyncio.BaseProtocol:
            if hub is not None:  # the session's connection_made admits it in its place
                hub.sessions.discard(reader)
            return protocol

        task = self.loop.create_task(self._connect(reader, session))
        self.handing.add(task)
        task.add_done_callback(self.handing.discard)

    async def _connect(self, reader: _HeaderReader, session: ProtocolFactory) -> None:
        try:
            await self.loop.connect_accepted_socket(session, reader.conn, ssl=self.ssl_context)
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as error:
            log.debug("proxied_connection_failed", error=str(error))
            with contextlib.suppress(OSError):
                reader.conn.close()
        finally:
            if reader.hub is not None:  # gone, or replaced by its session: a stop may go on
                reader.hub.release(reader)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for reader in list(self.pending):
            reader.close("listener closed")


class _HeaderReader:
    """One accepted connection whose PROXY header is not complete yet; in its hub's sessions
    meanwhile, so it answers the hub's stop orders."""

    __slots__ = ("acceptor", "buffer", "conn", "fd", "hub", "protocol", "timer")

    def __init__(
        self,
        acceptor: ProxyAcceptor,
        conn: socket.socket,
        protocol: asyncio.BaseProtocol,
        hub: Hub | None,
        timeout: float,
    ) -> None:
        self.acceptor = acceptor
        self.conn = conn
        self.protocol = protocol
        self.hub = hub
        self.fd = conn.fileno()
        self.buffer = b""
        loop = acceptor.loop
        self.timer: asyncio.TimerHandle | None = loop.call_later(
            timeout, self.close, "no PROXY header in time"
        )
        loop.add_reader(self.fd, self._readable)

    def shutdown(self) -> None:
        """Soft stop: the header may still come (the wait is bounded); its session then
        serves one exchange, as for a connection accepted as the drain began."""

    def abort(self) -> None:
        self.close("aborted")

    def _readable(self) -> None:
        try:
            peeked = self.conn.recv(PEEK_SIZE - len(self.buffer), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.close(str(error))
            return
        if not peeked:
            self.close("closed before a PROXY header")
            return
        data = self.buffer + peeked
        result = parse(data)
        if isinstance(result, Invalid):
            self.close(result.reason)
            return
        # what is consumed now is header only: all of a prefix, or exactly the complete header
        take = len(peeked) if isinstance(result, NeedMore) else result.consumed - len(self.buffer)
        try:
            taken = self.conn.recv(take)
        except OSError as error:
            self.close(str(error))
            return
        self.buffer += taken
        if isinstance(result, NeedMore) or len(taken) != take:
            return
        if result.source is None:
            self.close("PROXY header without addresses")
            return
        self._stop()
        self.acceptor.hand_over(self, result.source, result.destination)

    def _stop(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.acceptor.loop.remove_reader(self.fd)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self, reason: str) -> None:
        self._stop()
        self.acceptor.pending.discard(self)
        log.debug("proxy_header_refused", reason=reason)
        with contextlib.suppress(OSError):
            self.conn.close()
        hub, self.hub = self.hub, None
        if hub is not None:  # accepted, never handed to a session: counted here
            hub.counters.incr(metrics.ACCEPTED)
            hub.release(self)
