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
timeout (the listener's request_timeout, as in Sōzu) is closed without an answer. So is one
whose header carries no addresses (v2 LOCAL or UNSPEC, v1 UNKNOWN): Sōzu serves no HTTP on
those either.

Listeners without `expect_proxy` keep `create_server`: nothing here is on their path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from sozu.command.logging import get_logger
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

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class ProxyAcceptor:
    """Accepts on one listening socket and reads each connection's PROXY header (module
    docstring). `close()` stops accepting and closes the connections still without header."""

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
            self.pending.add(_HeaderReader(self, conn))

    def hand_over(
        self, reader: _HeaderReader, source: Address, destination: Address | None
    ) -> None:
        """The header is read: the socket goes to a transport and a session."""
        self.pending.discard(reader)
        factory = self.factory

        def session() -> asyncio.BaseProtocol:
            protocol = factory()
            protocol.peer_override = source  # type: ignore[attr-defined]
            protocol.public_override = destination  # type: ignore[attr-defined]
            return protocol

        task = self.loop.create_task(self._connect(reader.conn, session))
        self.handing.add(task)
        task.add_done_callback(self.handing.discard)

    async def _connect(self, conn: socket.socket, session: ProtocolFactory) -> None:
        try:
            await self.loop.connect_accepted_socket(session, conn, ssl=self.ssl_context)
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as error:
            log.debug("proxied_connection_failed", error=str(error))
            with contextlib.suppress(OSError):
                conn.close()

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
    """One accepted connection whose PROXY header is not complete yet."""

    __slots__ = ("acceptor", "buffer", "conn", "fd", "timer")

    def __init__(self, acceptor: ProxyAcceptor, conn: socket.socket) -> None:
        self.acceptor = acceptor
        self.conn = conn
        self.fd = conn.fileno()
        self.buffer = b""
        loop = acceptor.loop
        self.timer: asyncio.TimerHandle | None = (
            loop.call_later(acceptor.timeout, self.close, "no PROXY header in time")
            if acceptor.timeout > 0
            else None
        )
        loop.add_reader(self.fd, self._readable)

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
