"""The listening sockets a worker holds, and the asyncio servers accepting on them.

Workers never bind (DESIGN.md §2): the supervisor binds each listener and sends a copy of the
socket over the scm socket, every active one in the start-up message, then one message per
listener activated at runtime, sent just before the `ActivateListener` that uses it. This pool
keeps the received sockets by (ListenerType, address text). Activating a listener hands its
socket to `loop.create_server`, which then owns it; deactivating closes that server, so this
worker's copy is closed and the listener needs a fresh socket to be activated again (the
supervisor sends one, since it closes its own copy on deactivation too).

HTTPS listeners accept with the listener's `ssl.SSLContext` (`sozu.worker.tls`), TCP listeners
with `sozu.worker.tcp.TcpSession`. HTTP and HTTPS listeners with `expect_proxy` accept through a
`sozu.worker.proxy_accept.ProxyAcceptor`, which reads the PROXY header before the session (and
the TLS handshake) starts. `Edge` keeps both in step with the worker's ConfigState:
the worker server asks it for a listener's context and TCP session factory, and tells it of
every applied change (`Edge.changed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from sozu.command.addresses import normalize, to_text
from sozu.command.certificate import CertificateError, fingerprint_hex
from sozu.command.errors import AddressError, SozuError
from sozu.command.logging import get_logger
from sozu.command.proto import ListenerType, Request
from sozu.command.scm import KINDS, Listeners, ScmError, receive_listeners
from sozu.command.state import ConfigState
from sozu.worker.access_log import AccessLog
from sozu.worker.backends import BackendPool
from sozu.worker.proxy_accept import ProxyAcceptor
from sozu.worker.tcp import Hub, TcpRoutes, TcpSession
from sozu.worker.tls import TlsContexts

log = get_logger(__name__)

Kind: TypeAlias = ListenerType.ValueType
SCM_KINDS: dict[str, Kind] = {
    "http": ListenerType.HTTP,
    "tls": ListenerType.HTTPS,
    "tcp": ListenerType.TCP,
    "udp": ListenerType.UDP,
}
KIND_NAMES: dict[Kind, str] = {
    ListenerType.HTTP: "HTTP",
    ListenerType.HTTPS: "HTTPS",
    ListenerType.TCP: "TCP",
    ListenerType.UDP: "UDP",
}
BACKLOG = 1024

Key = tuple[Kind, str]
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class Accepting(Protocol):
    """What accepts on an activated listener: an asyncio server or a `ProxyAcceptor`."""

    def close(self) -> None: ...


class ListenerError(SozuError):
    """A listener that cannot be activated."""


def _canonical(address: str) -> str:
    try:
        return normalize(address)
    except AddressError:
        return address


class ListenerPool:
    """Received listening sockets (idle) and the servers accepting on activated ones."""

    def __init__(self, scm: socket.socket, received: Listeners | None = None) -> None:
        self.scm = scm
        self._idle: dict[Key, socket.socket] = {}
        self._servers: dict[Key, Accepting] = {}
        if received is not None:
            self.add(received)

    def add(self, listeners: Listeners) -> list[Key]:
        """Keep the sockets of one SCM message (a newer socket replaces an idle older one)."""
        added: list[Key] = []
        for kind_name in KINDS:
            kind = SCM_KINDS[kind_name]
            for address, sock in listeners.by_kind(kind_name).items():
                key = (kind, _canonical(address))
                previous = self._idle.pop(key, None)
                if previous is not None:
                    previous.close()
                self._idle[key] = sock
                added.append(key)
        return added

    def holds(self, kind: Kind, address: str) -> bool:
        return (kind, address) in self._idle

    def serving(self, kind: Kind, address: str) -> bool:
        return (kind, address) in self._servers

    def active(self) -> list[Key]:
        return sorted(self._servers)

    async def receive(self, kind: Kind, address: str, timeout: float) -> bool:
        """Read SCM messages until one brings (kind, address) or `timeout` runs out."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while not self.holds(kind, address):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                listeners = await loop.run_in_executor(None, receive_listeners, self.scm, remaining)
            except ScmError as error:
                log.warning("listener_not_received", address=address, error=str(error))
                return False
            keys = self.add(listeners)
            log.info("listeners_received", addresses=[a for _, a in keys])
        return True

    async def activate(
        self,
        kind: Kind,
        address: str,
        factory: ProtocolFactory,
        ssl_context: ssl.SSLContext | None = None,
        proxy_header_timeout: float | None = None,
    ) -> None:
        """Start accepting on a held socket (TLS with `ssl_context`; a PROXY header first,
        awaited `proxy_header_timeout` seconds, when that is set); ListenerError when there
        is none or it fails."""
        key = (kind, address)
        if key in self._servers:
            return
        sock = self._idle.get(key)
        if sock is None:
            raise ListenerError(
                f"no listening socket for {KIND_NAMES.get(kind, str(kind))} listener {address}: "
                "the supervisor did not send one"
            )
        loop = asyncio.get_running_loop()
        try:
            sock.setblocking(False)
            server: Accepting
            if proxy_header_timeout is not None:
                server = ProxyAcceptor(sock, factory, ssl_context, proxy_header_timeout)
            else:
                server = await loop.create_server(
                    factory, sock=sock, backlog=BACKLOG, ssl=ssl_context
                )
        except (OSError, ValueError, RuntimeError) as error:
            raise ListenerError(f"cannot accept on {address}: {error}") from None
        del self._idle[key]
        self._servers[key] = server

    def deactivate(self, kind: Kind, address: str) -> bool:
        """Stop accepting and close this worker's copy; True if it was accepting."""
        server = self._servers.pop((kind, address), None)
        if server is None:
            return False
        server.close()
        return True

    def remove(self, kind: Kind, address: str) -> None:
        """Deactivate and forget the listener, closing any socket still held for it."""
        self.deactivate(kind, address)
        sock = self._idle.pop((kind, address), None)
        if sock is not None:
            sock.close()

    def stop_accepting(self) -> None:
        """Soft stop: no new connection on any listener; every held socket is closed."""
        for key in list(self._servers):
            self.deactivate(*key)
        for sock in self._idle.values():
            with contextlib.suppress(OSError):
                sock.close()
        self._idle.clear()

    close_all = stop_accepting


_TLS_CHANGES = frozenset(
    {
        "add_certificate",
        "replace_certificate",
        "remove_certificate",
        "add_https_listener",
        "update_https_listener",
    }
)
_TCP_CHANGES = frozenset(
    {
        "add_tcp_listener",
        "update_tcp_listener",
        "remove_listener",
        "add_tcp_frontend",
        "remove_tcp_frontend",
    }
)
_BACKEND_CHANGES = frozenset({"add_cluster", "remove_cluster", "add_backend", "remove_backend"})
_TCP_CLUSTER_CHANGES = frozenset({"add_cluster", "remove_cluster"})  # their proxy_protocol


class Edge:
    """TLS contexts of HTTPS listeners and TCP routes of one worker, following its state.

    The worker server calls `ssl_context(address)` when it activates an HTTPS listener,
    `tcp_factory(address)` when it activates a TCP one, and `changed(request)` after every
    request its ConfigState accepted (returns problems to answer FAILURE with). When no
    `BackendPool` is given, the Edge keeps its own and rebuilds it on cluster changes.
    """

    def __init__(
        self,
        state: ConfigState,
        hub: Hub,
        backends: BackendPool | None = None,
        access_log: AccessLog | None = None,
        session_id: Callable[[], str] | None = None,
    ) -> None:
        self.state = state
        self.hub = hub
        self._own_backends = backends is None
        self.backends = backends if backends is not None else BackendPool()
        self.access_log = access_log
        self.session_id = session_id
        self.tls = TlsContexts()
        self.tcp = TcpRoutes()
        if self._own_backends:
            self.backends.rebuild(state)
        self.tcp.rebuild(state)

    def ssl_context(self, address: str) -> ssl.SSLContext:
        return self.tls.context(self.state, address)

    def tcp_factory(self, address: str) -> ProtocolFactory:
        hub, routes, log_ = self.hub, self.tcp, self.access_log
        pool = self._pool
        ids = self.session_id

        def factory() -> asyncio.BaseProtocol:
            return TcpSession(hub, routes.get(address), pool, log_, ids)

        return factory

    def _pool(self) -> BackendPool:
        return self.backends

    def changed(self, request: Request) -> list[str]:
        """Follow one applied change; problems that make it unusable here."""
        kind = request.WhichOneof("request_type")
        problems: list[str] = []
        if kind in _TLS_CHANGES:
            address = _canonical(_address_of(getattr(request, kind)))
            if kind == "replace_certificate":
                replace = request.replace_certificate
                with contextlib.suppress(CertificateError):
                    new = fingerprint_hex(replace.new_certificate.certificate)
                    self.tls.replaced(address, replace.old_fingerprint, new)
            problems += self.tls.refresh(self.state, address)
        if kind in _TCP_CHANGES or kind in _TCP_CLUSTER_CHANGES:
            self.tcp.rebuild(self.state)
        if kind == "remove_listener" and request.remove_listener.proxy == ListenerType.HTTPS:
            self.tls.forget(_canonical(_address_of(request.remove_listener)))
        if self._own_backends and kind in _BACKEND_CHANGES:
            self.backends.rebuild(self.state)
        return problems


def _address_of(message: Any) -> str:
    return to_text(message.address)
