"""The listening sockets the supervisor binds and hands to every worker (DESIGN.md §2).

Each active listener of the state is bound here once (SO_REUSEADDR, backlog 1024) and kept for the
supervisor's lifetime; every worker receives a copy of each socket over SCM_RIGHTS, so the kernel
accept queue outlives any worker. This module only binds, holds and closes sockets: which listener
is active is the state's business, sending them is the worker pool's.
"""

from __future__ import annotations

import socket

from sozu.command.addresses import parse_address, to_text
from sozu.command.errors import SozuError
from sozu.command.proto import ListenerType, SocketAddress
from sozu.command.scm import Listeners
from sozu.command.state import ConfigState

BACKLOG = 1024

# ListenerType -> the kind name used by `scm.Listeners` and the ListenersCount message.
SCM_KIND = {
    ListenerType.HTTP: "http",
    ListenerType.HTTPS: "tls",
    ListenerType.TCP: "tcp",
    ListenerType.UDP: "udp",
}
KIND_LABEL = {
    ListenerType.HTTP: "http",
    ListenerType.HTTPS: "https",
    ListenerType.TCP: "tcp",
    ListenerType.UDP: "udp",
}


class ListenerError(SozuError):
    """A listening socket could not be bound."""


def bind_socket(kind: ListenerType.ValueType, address: SocketAddress) -> socket.socket:
    """A bound socket for one listener (listening, unless UDP); ListenerError on failure."""
    text = to_text(address)
    ip, port = parse_address(text)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock_type = socket.SOCK_DGRAM if kind == ListenerType.UDP else socket.SOCK_STREAM
    sock = socket.socket(family, sock_type)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(ip), port))
        if sock_type == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise ListenerError(f"cannot bind {KIND_LABEL[kind]} listener {text}: {reason}") from None
    return sock


class ListenerSockets:
    """The listening sockets held by the supervisor, by kind and address text."""

    def __init__(self) -> None:
        self._held = Listeners()

    def _table(self, kind: ListenerType.ValueType) -> dict[str, socket.socket]:
        return self._held.by_kind(SCM_KIND[kind])

    def holds(self, kind: ListenerType.ValueType, address: SocketAddress) -> bool:
        return to_text(address) in self._table(kind)

    def bind(self, kind: ListenerType.ValueType, address: SocketAddress) -> Listeners:
        """Bind one listener (or reuse the socket already held) and return it alone."""
        text = to_text(address)
        table = self._table(kind)
        if text not in table:
            table[text] = bind_socket(kind, address)
        single = Listeners()
        single.by_kind(SCM_KIND[kind])[text] = table[text]
        return single

    def bind_active(self, state: ConfigState) -> None:
        """Bind every active listener of `state`; on a failure, close what this call bound."""
        bound: list[tuple[ListenerType.ValueType, SocketAddress]] = []
        try:
            for kind in SCM_KIND:
                for listener in state.listeners(kind):
                    if listener.active and not self.holds(kind, listener.address):
                        self.bind(kind, listener.address)
                        bound.append((kind, listener.address))
        except ListenerError:
            for kind, address in bound:
                self.close(kind, address)
            raise

    def adopt(self, kind: str, address: str, fd: int) -> None:
        """Hold a socket a previous main process bound (main upgrade); `kind` as in SCM."""
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        self._held.by_kind(kind)[address] = sock

    def fds(self) -> dict[str, dict[str, int]]:
        """Descriptor of each held socket, by SCM kind and address (the upgrade record's)."""
        return {
            kind: {address: sock.fileno() for address, sock in self._held.by_kind(kind).items()}
            for kind in SCM_KIND.values()
        }

    def all(self) -> Listeners:
        """Every held socket (the handshake message of a new worker); the sockets stay ours."""
        copy = Listeners()
        for kind in SCM_KIND.values():
            copy.by_kind(kind).update(self._held.by_kind(kind))
        return copy

    def close(self, kind: ListenerType.ValueType, address: SocketAddress) -> bool:
        sock = self._table(kind).pop(to_text(address), None)
        if sock is None:
            return False
        sock.close()
        return True

    def close_all(self) -> None:
        self._held.close()
        self._held = Listeners()

    def count(self) -> int:
        return len(self._held.all())
