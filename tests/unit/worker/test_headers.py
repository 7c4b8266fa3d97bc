"""Head rewriting between clients and backends (sans-io)."""

from __future__ import annotations

import pytest

from sozu.worker.protocol.headers import (
    REWRITTEN_REQUEST_HEADERS,
    Framing,
    body_framing,
    chunk,
    connection_tokens,
    forwarding_headers,
    last_chunk,
    plain_request_head,
    read_response_head,
    request_head,
    response_head,
    scan_response_head,
    sticky_cookie,
    strip_cookie,
)


def build(headers: list[tuple[bytes, bytes]], **overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "peer_ip": b"10.1.2.3",
        "peer_port": 4242,
        "public_ip": b"192.0.2.1",
        "public_port": b"8080",
        "proto": b"http",
        "request_id": b"01ID",
        "id_header": b"Sozu-Id",
        "sticky_name": None,
        "framing": body_framing(headers),
        "upgrade": False,
        "drop": connection_tokens(headers),
    }
    arguments.update(overrides)
    return request_head(b"GET", b"/p?q", headers, **arguments)  # type: ignore[arg-type]


def lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def test_request_head_adds_forwarding_headers_and_keeps_host() -> None:
    head = lines(build([(b"Host", b"app.example")]))
    assert head == [
        b"GET /p?q HTTP/1.1",
        b"Host: app.example",
        b"X-Forwarded-For: 10.1.2.3",
        b'Forwarded: proto=http;for="10.1.2.3:4242";by=192.0.2.1',
        b"X-Forwarded-Port: 8080",
        b"X-Forwarded-Proto: http",
        b"X-Request-Id: 01ID",
        b"Sozu-Id: 01ID",
    ]


def test_request_head_appends_to_existing_chains_and_trusts_client_values() -> None:
    headers = [
        (b"Host", b"a"),
        (b"x-forwarded-for", b"1.1.1.1"),
        (b"Forwarded", b"for=1.1.1.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Port", b"443"),
        (b"X-Request-Id", b"abc"),
    ]
    head = lines(build(headers))
    assert b"x-forwarded-for: 1.1.1.1, 10.1.2.3" in head
    assert b'Forwarded: for=1.1.1.1, proto=http;for="10.1.2.3:4242";by=192.0.2.1' in head
    assert b"X-Forwarded-Proto: https" in head and b"X-Forwarded-Port: 443" in head
    assert b"X-Request-Id: abc" in head and b"Sozu-Id: 01ID" in head
    assert sum(line.lower().startswith(b"x-forwarded-proto") for line in head) == 1


def test_ipv6_addresses_are_bracketed() -> None:
    head = build([(b"Host", b"a")], peer_ip=b"::1", public_ip=b"::2")
    assert b'Forwarded: proto=http;for="[::1]:4242";by="[::2]"' in head
    assert b"X-Forwarded-For: ::1\r\n" in head


def test_hop_by_hop_and_connection_listed_headers_are_dropped() -> None:
    headers = [
        (b"Host", b"a"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"X-Secret", b"1"),
        (b"X-Kept", b"2"),
    ]
    head = build(headers)
    for name in (b"Connection", b"Keep-Alive", b"Proxy-Connection", b"TE", b"X-Secret"):
        assert name + b":" not in head
    assert b"X-Kept: 2" in head


def test_chunked_framing_keeps_transfer_encoding_and_upgrade_is_forwarded() -> None:
    head = build([(b"Host", b"a"), (b"Transfer-Encoding", b"gzip, chunked")])
    assert b"Transfer-Encoding: gzip, chunked\r\n" in head
    upgrade = [(b"Host", b"a"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    head = build(upgrade, upgrade=True)
    assert head.endswith(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert b"Upgrade" not in build(upgrade, upgrade=False)


def test_sticky_cookie_is_read_and_removed() -> None:
    headers = [(b"Host", b"a"), (b"Cookie", b"a=1; SOZUBALANCEID=b2; c=3")]
    assert sticky_cookie(headers, b"SOZUBALANCEID") == b"b2"
    head = build(headers, sticky_name=b"SOZUBALANCEID")
    assert b"Cookie: a=1; c=3\r\n" in head
    only = [(b"Host", b"a"), (b"Cookie", b"SOZUBALANCEID=b2")]
    assert b"Cookie" not in build(only, sticky_name=b"SOZUBALANCEID")
    assert strip_cookie(b"x=1", b"SOZUBALANCEID") == (b"x=1", None)


def test_response_head_drops_hop_by_hop_and_adds_id_and_cookie() -> None:
    headers = [
        (b"Content-Length", b"3"),
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Server", b"x"),
    ]
    head = response_head(
        200,
        b"OK",
        headers,
        request_id=b"01ID",
        id_header=b"Sozu-Id",
        chunked=False,
        set_cookie=b"SOZUBALANCEID=b1; Path=/",
        connection=None,
    )
    assert lines(head) == [
        b"HTTP/1.1 200 OK",
        b"Content-Length: 3",
        b"Server: x",
        b"Set-Cookie: SOZUBALANCEID=b1; Path=/",
        b"Sozu-Id: 01ID",
    ]
    closing = response_head(
        204, b"", [], request_id=b"i", id_header=b"Sozu-Id", chunked=False,
        set_cookie=None, connection=b"close",
    )  # fmt: skip
    assert closing.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert closing.endswith(b"Connection: close\r\n\r\n")


def test_framing_and_chunks() -> None:
    assert body_framing([(b"Content-Length", b"3")]) == Framing.LENGTH
    assert body_framing([(b"transfer-encoding", b"chunked")]) == Framing.CHUNKED
    assert body_framing([]) == Framing.NONE
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert last_chunk([]) == b"0\r\n\r\n"
    assert last_chunk([(b"X-Sum", b"1")]) == b"0\r\nX-Sum: 1\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Host", b"a.example")],
        [(b"Host", b"a.example"), (b"Accept", b"*/*"), (b"User-Agent", b"t/1")],
        [(b"host", b"[::1]:80"), (b"Content-Length", b"3"), (b"X-Other", b"")],
        [],
    ],
)
@pytest.mark.parametrize("peer", [b"10.1.2.3", b"2001:db8::1"])
def test_plain_request_head_is_request_head_without_rewritten_headers(
    headers: list[tuple[bytes, bytes]], peer: bytes
) -> None:
    assert not {name.lower() for name, _ in headers} & REWRITTEN_REQUEST_HEADERS
    forwarding = forwarding_headers(peer, 4242, b"192.0.2.1", b"8080", b"http")
    plain = plain_request_head(b"GET", b"/p?q", headers, forwarding, b"Sozu-Id: ", b"01ID")
    assert plain == build(headers, peer_ip=peer)


def _full(head: bytes) -> bytes:
    """What the per-header path forwards for the same head (keep-alive client, no cookie)."""
    lines_ = head[:-2].split(b"\r\n")
    status = int(lines_[0][9:12])
    reason = lines_[0][13:]
    headers = [tuple(line.split(b": ", 1)) for line in lines_[1:]]
    out = response_head(
        status,
        reason,
        headers,  # type: ignore[arg-type]
        request_id=b"01ID",
        id_header=b"Sozu-Id",
        chunked=False,
        set_cookie=None,
        connection=None,
        drop=connection_tokens(headers),  # type: ignore[arg-type]
    )
    return out[: -len(b"Sozu-Id: 01ID\r\n\r\n")]


@pytest.mark.parametrize(
    ("head", "length", "keep_alive"),
    [
        (
            b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 13\r\nConnection: keep-alive\r\n",
            13,
            True,
        ),
        (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n", 0, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n", 2, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n", 2, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n", 2, True),
        (b"HTTP/1.1 503 \r\nX-A: 1\r\nContent-Length: 5\r\nX-B: 2\r\n", 5, True),
    ],
)
def test_scanned_response_heads_match_the_per_header_path(
    head: bytes, length: int, keep_alive: bool
) -> None:
    scanned = scan_response_head(head)
    assert scanned is not None
    status, forwarded, scanned_length, scanned_keep = scanned
    assert status == int(head[9:12]) and scanned_length == length
    assert scanned_keep is keep_alive
    assert forwarded == _full(head)
    assert scan_response_head(head) is scanned  # remembered


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 100 Continue\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: upgrade\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close, x-secret\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\nConnection: x\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nKeep-Alive: timeout=5\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nUpgrade: h2c\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nProxy-Connection: x\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTE: trailers\r\n",
    ],
)
def test_uncommon_response_heads_are_left_to_the_per_header_path(head: bytes) -> None:
    assert read_response_head(head) is None
