"""TCP listeners' sessions: accept, pick a backend, connect, then a byte pipe both ways.

`TcpSession` is the asyncio Protocol of an accepted client connection on a TCP listener. It
reads nothing until a backend is connected: the cluster of the TCP frontend on its listener's
address is asked to the `BackendPool` (the cluster's load balancing, backups last), the
connection is tried within `connect_timeout`, and a failure moves to another backend (at most
`MAX_CONNECT_RETRIES` tries, each failure reported to the pool, which marks a backend that
keeps failing down); no cluster, no backend or no successful connection closes the client.

Then bytes flow both ways untouched. Back-pressure: each transport's write buffer has its
high-water mark at `buffer_size`; over it, the other side stops reading until the buffer
drains, so a session holds a bounded amount of memory whatever the transfer size.
Half-close, idle timeouts and the end of the pipe are decided by `protocol.pipe.PipeState`.

PROXY protocol, as Sōzu does it, follows the cluster's `proxy_protocol` (the configuration
derives it from the cluster's `send_proxy` and the `expect_proxy` of the listener its frontend
is on; the TCP listener's own flag is not read here):

- EXPECT_HEADER: the client's first bytes must be a PROXY header (v1 or v2), complete within
  `front_timeout` (`FALLBACK_HEADER_TIMEOUT` when that is 0: the wait is always bounded); its
  source address becomes the client's (access log). No header, an invalid
  one or none in time closes the connection, and no backend is contacted.
- SEND_HEADER: a v2 header (source: the client's address, destination: the address it
  connected to) is written to the backend before any client byte.
- RELAY_HEADER: the header is expected as for EXPECT_HEADER, then written to the backend as
  received, before the bytes that followed it.

An exception nothing expects in a callback (either connection's data, end of stream, loss or
write pauses, the timers, the backend connect task, the PROXY header reading) is a bug:
`_crash` logs it once (`tcp_session_failed`) and aborts the client connection and its backend
connection; the worker goes on. As in `sozu.worker.session`, each callback body sits in one
`try`, free in CPython 3.11 while nothing is raised.

`TcpRoutes` is the worker's table (listener address -> cluster, its proxy_protocol, listener
timeouts) rebuilt from the ConfigState on change. One access log record is written per session
when enabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sozu.command.addresses import to_text
from sozu.command.logging import get_logger
from sozu.command.proto import (
    FrontendFilters,
    ListenerType,
    ProxyProtocolConfig,
    TcpListenerConfig,
)
from sozu.command.state import ConfigState
from sozu.worker.access_log import AccessLog
from sozu.worker.backends import MAX_CONNECT_RETRIES, Backend, BackendPool
from sozu.worker.protocol.pipe import BACK, FRONT, PipeState, Verdict
from sozu.worker.protocol.proxy_protocol import Invalid, Parsed, build_v2, parse
from sozu.worker.proxy_accept import header_timeout

log = get_logger(__name__)


class Hub(Protocol):
    """What a TCP session needs from the worker's session hub (admission, stop orders)."""

    buffer_size: int

    def admit(self, session: Any) -> bool: ...

    def release(self, session: Any) -> None: ...


@dataclass(frozen=True)
class TcpListenerView:
    address: str
    cluster_id: str | None
    front_timeout: float = 60.0
    back_timeout: float = 30.0
    connect_timeout: float = 3.0
    proxy_protocol: int | None = None  # a ProxyProtocolConfig value of the cluster

    @property
    def reads_header(self) -> bool:
        return self.proxy_protocol in (
            ProxyProtocolConfig.EXPECT_HEADER,
            ProxyProtocolConfig.RELAY_HEADER,
        )


class TcpRoutes:
    """Listener address -> its TCP frontend's cluster and timeouts; rebuilt on change."""

    def __init__(self) -> None:
        self.views: dict[str, TcpListenerView] = {}

    def get(self, address: str) -> TcpListenerView:
        return self.views.get(address) or TcpListenerView(address, None)

    def rebuild(self, state: ConfigState) -> None:
        clusters: dict[str, str] = {}
        listed = state.list_frontends(FrontendFilters(http=False, https=False, tcp=True))
        for front in listed.tcp_frontends:
            clusters.setdefault(to_text(front.address), front.cluster_id)
        views: dict[str, TcpListenerView] = {}
        for listener in state.listeners(ListenerType.TCP):
            assert isinstance(listener, TcpListenerConfig)
            address = to_text(listener.address)
            cluster_id = clusters.get(address)
            cluster = state.cluster(cluster_id) if cluster_id is not None else None
            proxy_protocol = (
                cluster.proxy_protocol
                if cluster is not None and cluster.HasField("proxy_protocol")
                else None
            )
            views[address] = TcpListenerView(
                address,
                cluster_id,
                float(listener.front_timeout),
                float(listener.back_timeout),
                float(listener.connect_timeout),
                proxy_protocol,
            )
        self.views = views


class _BackSide(asyncio.Protocol):
    """The backend connection of a TCP session: everything goes to the session."""

    def __init__(self, session: TcpSession) -> None:
        self.session = session

    def data_received(self, data: bytes) -> None:
        try:
            self.session.back_data(data)
        except Exception as error:  # a bug: this session ends, the worker goes on
            self.session._crash("backend data_received", error)

    def eof_received(self) -> bool | None:
        try:
            return self.session.side_ended(BACK)
        except Exception as error:
            self.session._crash("backend eof_received", error)
            return None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.session.side_lost(BACK)
        except Exception as error:
            self.session._crash("backend connection_lost", error)

    def pause_writing(self) -> None:
        try:
            self.session.pause(FRONT)
        except Exception as error:
            self.session._crash("backend pause_writing", error)

    def resume_writing(self) -> None:
        try:
            self.session.resume(FRONT)
        except Exception as error:
            self.session._crash("backend resume_writing", error)


class TcpSession(asyncio.Protocol):
    """One client connection of a TCP listener (module docstring)."""

    def __init__(
        self,
        hub: Hub,
        view: TcpListenerView,
        backends: Callable[[], BackendPool],
        access_log: AccessLog | None = None,
        session_id: Callable[[], str] | None = None,
    ) -> None:
        self.hub = hub
        self.view = view
        self.backends = backends
        self.access_log = access_log
        self.session_id = session_id() if session_id is not None else ""
        self.front: asyncio.Transport | None = None
        self.back: asyncio.Transport | None = None
        self.backend: Backend | None = None
        self.pipe: PipeState | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._client = "-"
        self._started = 0.0
        self._done = False
        self._crashed = False
        self._released = False
        self._early: list[bytes] = []  # client bytes received before the backend connected
        self._early_size = 0
        self._early_eof = False
        self._header: bytes | None = None  # PROXY header bytes so far, while one is expected
        self._relayed = b""  # the received header, for RELAY_HEADER
        self._peer: tuple[str, int] | None = None
        self._counted: Backend | None = None  # the backend whose connection count we hold

    # --- client side -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.front = cast(asyncio.Transport, transport)
        if not self.hub.admit(self):
            self._done = self._released = True
            self.front.close()
            self.front = None
            return
        try:
            self._admitted()
        except Exception as error:  # a bug: this session ends, the worker goes on
            self._crash("connection_made", error)

    def _admitted(self) -> None:
        assert self.front is not None
        self._started = time.monotonic()
        peer = self.front.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = (str(peer[0]), int(peer[1]))
            self._client = f"{peer[0]}:{peer[1]}"
        self.front.set_write_buffer_limits(high=self.hub.buffer_size)
        if self.view.reads_header:
            self._header = b""
            self._timer = asyncio.get_running_loop().call_later(
                header_timeout(self.view.front_timeout, 0.0), self._header_timed_out
            )
            return
        self._start_connecting()

    def _start_connecting(self) -> None:
        assert self.front is not None
        self.front.pause_reading()
        self._connecting = asyncio.get_running_loop().create_task(self._connect())
        self._connecting.add_done_callback(self._connected)

    def _header_timed_out(self) -> None:
        try:
            self._timer = None
            self._finish("no PROXY header in time")
        except Exception as error:
            self._crash("header timer", error)

    def _header_data(self, data: bytes) -> None:
        """Bytes while a PROXY header is expected: the header, maybe followed by stream bytes."""
        data = self._header + data if self._header else data
        result = parse(data)
        if isinstance(result, Invalid):
            log.debug("proxy_header_refused", address=self.view.address, reason=result.reason)
            self._finish(f"invalid PROXY header: {result.reason}")
            return
        if not isinstance(result, Parsed):
            self._header = data
            return
        self._header = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if result.source is not None:
            self._peer = result.source
            self._client = f"{result.source[0]}:{result.source[1]}"
        if self.view.proxy_protocol == ProxyProtocolConfig.RELAY_HEADER:
            self._relayed = data[: result.consumed]
        rest = data[result.consumed :]
        if rest:
            self._early.append(rest)
            self._early_size += len(rest)
        self._start_connecting()

    def _connected(self, task: asyncio.Task[None]) -> None:
        """The connect task's end: an exception it did not expect is a bug of this session
        (logged here, never "Task exception was never retrieved")."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._crash("connect", error)

    def data_received(self, data: bytes) -> None:
        try:
            if self._header is not None:
                self._header_data(data)
                return
            if self.back is None or self.pipe is None:
                # reading is paused until the backend is connected, but an event loop may have
                # read already: keep it, bounded by buffer_size
                self._early.append(data)
                self._early_size += len(data)
                if self._early_size >= self.hub.buffer_size and self.front is not None:
                    self.front.pause_reading()
                return
            self.pipe.received(FRONT, len(data), time.monotonic())
            self.back.write(data)
        except Exception as error:  # a bug: this session ends, the worker goes on
            self._crash("data_received", error)

    def eof_received(self) -> bool | None:
        try:
            if self._header is not None:
                self._finish("client closed before a PROXY header")
                return None
            if self.pipe is None and not self._done:
                self._early_eof = True
                return True
            return self.side_ended(FRONT)
        except Exception as error:
            self._crash("eof_received", error)
            return None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.side_lost(FRONT)
        except Exception as error:
            self._crash("connection_lost", error)

    def pause_writing(self) -> None:
        try:
            self.pause(BACK)
        except Exception as error:
            self._crash("pause_writing", error)

    def resume_writing(self) -> None:
        try:
            self.resume(BACK)
        except Exception as error:
            self._crash("resume_writing", error)

    # --- stop orders (SessionHub) ------------------------------------------------------

    def shutdown(self) -> None:
        """Soft stop: a TCP stream has no exchange boundary; it keeps running until its end
        or the hub's grace period cuts it."""

    def abort(self) -> None:
        try:
            self._finish("aborted")
        except Exception as error:  # a hard stop goes on with the other sessions
            self._crash("abort", error)

    # --- backend connection --------------------------------------------------------------

    async def _connect(self) -> None:
        cluster_id = self.view.cluster_id
        log.debug("tcp_session_connecting", address=self.view.address, cluster_id=cluster_id)
        if cluster_id is None:
            self._finish("no TCP frontend on this listener")
            return
        pool = self.backends()
        tried: list[Backend] = []
        loop = asyncio.get_running_loop()
        for _ in range(MAX_CONNECT_RETRIES):
            backend = pool.choose(cluster_id, time.monotonic(), exclude=tried)
            if backend is None:
                break
            tried.append(backend)
            try:
                transport, _ = await asyncio.wait_for(
                    loop.create_connection(lambda: _BackSide(self), backend.host, backend.port),
                    self.view.connect_timeout or None,
                )
            except (OSError, TimeoutError) as error:
                change = pool.connect_failed(backend, time.monotonic())
                log.debug("tcp_connect_failed", backend=backend.backend_id, error=str(error))
                if change is not None:
                    log.warning(
                        "backend_down" if not change.up else "backend_up",
                        cluster_id=cluster_id,
                        backend_id=backend.backend_id,
                        address=backend.address,
                    )
                continue
            if self._done or self.front is None:
                transport.close()
                return
            self.back = transport  # from now on, ending this session closes it too
            change = pool.connect_succeeded(backend, time.monotonic())
            if change is not None and change.up:
                log.info("backend_up", cluster_id=cluster_id, backend_id=backend.backend_id)
            pool.connection_opened(backend)
            self.backend = self._counted = backend
            self._piped(transport)
            return
        self._finish("no backend available" if not tried else "cannot connect to any backend")

    def _piped(self, back: asyncio.Transport) -> None:
        assert self.front is not None
        self.back = back
        back.set_write_buffer_limits(high=self.hub.buffer_size)
        now = time.monotonic()
        self.pipe = PipeState(self.view.front_timeout, self.view.back_timeout, now)
        self._arm()
        if self.view.proxy_protocol == ProxyProtocolConfig.SEND_HEADER:
            local = self.front.get_extra_info("sockname")
            destination = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None
            back.write(build_v2(self._peer, destination))
        elif self._relayed:
            back.write(self._relayed)
            self._relayed = b""
        if self._early:
            data = b"".join(self._early)
            self._early.clear()
            self.pipe.received(FRONT, len(data), now)
            back.write(data)
        if self._early_eof:
            self.side_ended(FRONT)
            return
        self.front.resume_reading()

    # --- pipe events ---------------------------------------------------------------------

    def back_data(self, data: bytes) -> None:
        if self.front is None or self.pipe is None:
            return
        self.pipe.received(BACK, len(data), time.monotonic())
        self.front.write(data)

    def side_ended(self, side: str) -> bool | None:
        if self.pipe is None:
            self._finish("client closed before the backend connection")
            return None
        other = self.back if side == FRONT else self.front
        can = other is not None and other.can_write_eof()
        verdict = self.pipe.ended(side, can)
        if verdict is Verdict.SHUT_OTHER and other is not None:
            other.write_eof()
            return True  # keep this transport open for the other direction
        self._finish(None)
        return None

    def side_lost(self, side: str) -> None:
        if side == FRONT:
            self.front = None
        else:
            self.back = None
        self._finish(None)

    def pause(self, reader: str) -> None:
        transport = self.front if reader == FRONT else self.back
        if transport is not None:
            with contextlib.suppress(RuntimeError):
                transport.pause_reading()

    def resume(self, reader: str) -> None:
        transport = self.front if reader == FRONT else self.back
        if transport is not None:
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()

    # --- timeouts and the end ------------------------------------------------------------

    def _arm(self) -> None:
        if self.pipe is None or self._done:
            return
        deadline = self.pipe.next_deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(deadline - time.monotonic() + loop.time(), self._tick)

    def _tick(self) -> None:
        try:
            self._timer = None
            if self.pipe is None or self._done:
                return
            side = self.pipe.idle_side(time.monotonic())
            if side is not None:
                self._finish(f"{side} timeout")
                return
            self._arm()
        except Exception as error:
            self._crash("timer", error)

    def _finish(self, reason: str | None) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        for transport in (self.front, self.back):
            if transport is not None:
                if reason is not None:
                    transport.abort()
                else:
                    transport.close()
        backend, self._counted = self._counted, None
        if backend is not None:
            self.backends().connection_closed(backend)
        if reason is not None:
            log.debug("tcp_session_closed", address=self.view.address, reason=reason)
        if self.access_log is not None:
            pipe = self.pipe
            self.access_log.tcp(
                self.session_id,
                self.view.cluster_id,
                self.backend.backend_id if self.backend is not None else None,
                self._client,
                self.backend.address if self.backend is not None else None,
                pipe.bytes_in if pipe is not None else 0,
                pipe.bytes_out if pipe is not None else 0,
                (time.monotonic() - self._started) * 1e6,
                message=reason,
            )
        self._released = True
        self.hub.release(self)

    def _crash(self, where: str, error: BaseException) -> None:
        """An exception nothing expected in a callback (a bug): logged once, then the client
        connection and its backend connection are aborted and the session leaves the hub; the
        worker goes on. Plain attribute work, and best effort for the pool's counts, so this
        cannot fail the way the callback did (`_finish` may be what failed, half done)."""
        if not self._crashed:
            self._crashed = True
            log.error(
                "tcp_session_failed",
                callback=where,
                address=self.view.address,
                error=repr(error),
                exc_info=error,
            )
        self._done = True
        self._header = None
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        task, self._connecting = self._connecting, None
        if task is not None and not task.done():
            task.cancel()
        for transport in (self.front, self.back):
            if transport is not None:
                transport.abort()
        backend, self._counted = self._counted, None
        if backend is not None:
            with contextlib.suppress(Exception):  # counts are best effort after a bug
                self.backends().connection_closed(backend)
        if not self._released:
            self._released = True
            self.hub.release(self)
