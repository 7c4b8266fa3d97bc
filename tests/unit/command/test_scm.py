"""SCM_RIGHTS listener passing over a real socketpair, with real listening sockets."""

from __future__ import annotations

import socket

import pytest

from sozu.command.scm import (
    Listeners,
    ScmError,
    decode_listeners_count,
    encode_listeners_count,
    receive_listeners,
    send_listeners,
)


def listening(kind: int = socket.SOCK_STREAM) -> tuple[str, socket.socket]:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    host, port = sock.getsockname()
    return f"{host}:{port}", sock


def test_listeners_arrive_usable_and_in_their_kinds() -> None:
    sent = Listeners()
    for kind in ("http", "tls", "tcp"):
        for _ in range(2):
            address, sock = listening()
            sent.by_kind(kind)[address] = sock
    udp_address, udp = listening(socket.SOCK_DGRAM)
    sent.udp[udp_address] = udp
    left, right = socket.socketpair()
    send_listeners(left, sent)
    received = receive_listeners(right, timeout=2)
    for kind in ("http", "tls", "tcp", "udp"):
        assert list(received.by_kind(kind)) == list(sent.by_kind(kind))
    address = next(iter(received.http))
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2):
        accepted, _ = received.http[address].accept()
        accepted.close()
    sent.close()
    received.close()
    left.close()
    right.close()


def test_empty_listeners_are_still_one_message() -> None:
    left, right = socket.socketpair()
    send_listeners(left, Listeners())
    assert receive_listeners(right, timeout=2).all() == []
    left.close()
    right.close()


def test_count_is_varint_length_delimited() -> None:
    data = encode_listeners_count(Listeners(http={"127.0.0.1:80": socket.socket()}))
    assert data[0] == len(data) - 1
    assert list(decode_listeners_count(data).http) == ["127.0.0.1:80"]


def test_mismatched_fds_and_garbage_are_errors() -> None:
    left, right = socket.socketpair()
    data = encode_listeners_count(Listeners(http={"127.0.0.1:80": socket.socket()}))
    socket.send_fds(left, [data], [])
    with pytest.raises(ScmError, match="1 addresses announced but 0 fds"):
        receive_listeners(right, timeout=2)
    left.sendall(b"\x05\xff\xff")
    with pytest.raises(ScmError):
        receive_listeners(right, timeout=2)
    left.close()
    with pytest.raises(ScmError, match="closed"):
        receive_listeners(right, timeout=2)
    right.close()


def test_receive_times_out() -> None:
    left, right = socket.socketpair()
    with pytest.raises(ScmError):
        receive_listeners(right, timeout=0.05)
    left.close()
    right.close()
