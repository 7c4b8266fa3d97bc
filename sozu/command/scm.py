"""Passing listening sockets between processes with SCM_RIGHTS, in Sōzu's message shape.

One `sendmsg` carries everything: its data is a varint-length-delimited protobuf
`ListenersCount {http, tls, tcp, udp: repeated string address}` and its SCM_RIGHTS control
message carries one fd per address, in that order (http, then tls, then tcp, then udp). A message
holds at most 4096 bytes and 200 fds, as in Sōzu. Received fds become `socket.socket` objects the
receiver owns; any mismatch between the addresses and the fds closes every received fd.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]
from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]
from google.protobuf.message import DecodeError

from sozu.command.errors import SozuError
from sozu.command.proto import ListenersCount

MAX_FDS = 200
MAX_BYTES = 4096
KINDS = ("http", "tls", "tcp", "udp")


class ScmError(SozuError):
    """Listening sockets could not be sent or received."""


@dataclass
class Listeners:
    """Listening sockets by kind, each keyed by its address text (`127.0.0.1:8080`)."""

    http: dict[str, socket.socket] = field(default_factory=dict)
    tls: dict[str, socket.socket] = field(default_factory=dict)
    tcp: dict[str, socket.socket] = field(default_factory=dict)
    udp: dict[str, socket.socket] = field(default_factory=dict)

    def by_kind(self, kind: str) -> dict[str, socket.socket]:
        table: dict[str, socket.socket] = getattr(self, kind)
        return table

    def all(self) -> list[socket.socket]:
        return [sock for kind in KINDS for sock in self.by_kind(kind).values()]

    def close(self) -> None:
        for sock in self.all():
            sock.close()


def encode_listeners_count(listeners: Listeners) -> bytes:
    """The data part of the SCM message: the count, prefixed by its varint length."""
    count = ListenersCount(
        http=list(listeners.http), tls=list(listeners.tls),
        tcp=list(listeners.tcp), udp=list(listeners.udp),
    )  # fmt: skip
    payload = count.SerializeToString()
    return bytes(_VarintBytes(len(payload))) + payload


def decode_listeners_count(data: bytes) -> ListenersCount:
    """Parse the data part of an SCM message; ScmError when it is not a ListenersCount."""
    try:
        length, start = _DecodeVarint(data, 0)
        if start + length > len(data):
            raise ScmError(f"listeners message declares {length} bytes, {len(data) - start} came")
        count = ListenersCount()
        count.ParseFromString(data[start : start + length])
    except (DecodeError, IndexError) as error:
        raise ScmError(f"undecodable listeners message: {error}") from None
    return count


def send_listeners(sock: socket.socket, listeners: Listeners) -> None:
    """Send every listening socket of `listeners` in one message (the sender keeps its fds)."""
    fds = [s.fileno() for s in listeners.all()]
    data = encode_listeners_count(listeners)
    if len(fds) > MAX_FDS or len(data) > MAX_BYTES:
        raise ScmError(f"{len(fds)} listeners do not fit one SCM message (max {MAX_FDS})")
    try:
        socket.send_fds(sock, [data], fds)
    except OSError as error:
        raise ScmError(f"could not send listeners: {error}") from None


def receive_listeners(sock: socket.socket, timeout: float | None = None) -> Listeners:
    """Receive one listeners message; the returned sockets belong to the caller."""
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        data, fds, _flags, _address = socket.recv_fds(sock, MAX_BYTES, MAX_FDS)
    except OSError as error:
        raise ScmError(f"could not receive listeners: {error}") from None
    finally:
        sock.settimeout(previous)
    sockets = [socket.socket(fileno=fd) for fd in fds]
    try:
        if not data:
            raise ScmError("the peer closed the scm socket before sending listeners")
        count = decode_listeners_count(data)
        addresses = [(kind, address) for kind in KINDS for address in getattr(count, kind)]
        if len(addresses) != len(sockets):
            raise ScmError(f"{len(addresses)} addresses announced but {len(sockets)} fds received")
    except ScmError:
        for received in sockets:
            received.close()
        raise
    listeners = Listeners()
    for (kind, address), received in zip(addresses, sockets, strict=True):
        listeners.by_kind(kind)[address] = received
    return listeners
