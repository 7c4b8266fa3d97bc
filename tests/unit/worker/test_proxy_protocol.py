"""PROXY protocol headers: v1 and v2 parsing (complete, incremental, malformed) and building."""

from __future__ import annotations

import pytest

from sozu.worker.protocol.proxy_protocol import (
    MAX_V1_HEADER,
    MAX_V2_HEADER,
    NEED_MORE,
    V2_SIGNATURE,
    Invalid,
    Parsed,
    build_v1,
    build_v2,
    parse,
)


def v2(command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes((command, family)) + size.to_bytes(2, "big") + block


IPV4_BLOCK = bytes((192, 0, 2, 1, 198, 51, 100, 7)) + (5555).to_bytes(2, "big") + b"\x00\x50"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.7 5555 80\r\nGET /",
            Parsed(1, False, ("192.0.2.1", 5555), ("198.51.100.7", 80), 43),
        ),
        (
            b"PROXY TCP6 2001:db8::1 ::1 65535 443\r\n",
            Parsed(1, False, ("2001:db8::1", 65535), ("::1", 443), 38),
        ),
        (b"PROXY UNKNOWN\r\n", Parsed(1, False, None, None, 15)),
        (b"PROXY UNKNOWN ff::1 ::1 1 2\r\nrest", Parsed(1, False, None, None, 29)),
        (
            v2(0x21, 0x11, IPV4_BLOCK) + b"\x16\x03\x01",
            Parsed(2, False, ("192.0.2.1", 5555), ("198.51.100.7", 80), 28),
        ),
        (
            v2(0x21, 0x21, bytes(15) + b"\x01" + bytes(15) + b"\x02" + b"\x00\x01\x00\x02"),
            Parsed(2, False, ("::1", 1), ("::2", 2), 52),
        ),
        (v2(0x20, 0x00, b""), Parsed(2, True, None, None, 16)),  # LOCAL: a health check
        (v2(0x20, 0x11, IPV4_BLOCK), Parsed(2, True, None, None, 28)),  # LOCAL ignores addresses
        (v2(0x21, 0x00, b""), Parsed(2, False, None, None, 16)),  # UNSPEC family
        (v2(0x21, 0x31, bytes(216)), Parsed(2, False, None, None, 232)),  # AF_UNIX
        (  # TLVs after the addresses are skipped
            v2(0x21, 0x11, IPV4_BLOCK + b"\x04\x00\x02ab"),
            Parsed(2, False, ("192.0.2.1", 5555), ("198.51.100.7", 80), 33),
        ),
    ],
)
def test_complete_headers(data: bytes, expected: Parsed) -> None:
    assert parse(data) == expected


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 192.0.2.1 198.51.100.7 5555 80\r\n",
        b"PROXY UNKNOWN\r\n",
        v2(0x21, 0x11, IPV4_BLOCK),
        v2(0x21, 0x21, bytes(36)),
    ],
)
def test_every_prefix_needs_more_then_the_whole_parses(header: bytes) -> None:
    for end in range(len(header)):
        assert parse(header[:end]) is NEED_MORE, header[:end]
    result = parse(header + b"payload")
    assert isinstance(result, Parsed)
    assert result.consumed == len(header)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "no PROXY"),
        (b"\x16\x03\x01\x02\x00", "no PROXY"),
        (b"PROXYTCP4", "no PROXY"),
        (b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "no PROXY"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 5555 80\n", "CRLF"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 5555 80\rX", "CRLF"),
        (b"PROXY TCP5 192.0.2.1 198.51.100.7 5555 80\r\n", "protocol"),
        (b"PROXY UNKNOWNX\r\n", "unknown protocol"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 5555\r\n", "two ports"),
        (b"PROXY TCP4 192.0.2.1  198.51.100.7 5555 80\r\n", "two ports"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 5555 80 \r\n", "two ports"),
        (b"PROXY TCP4 ::1 198.51.100.7 5555 80\r\n", "not IPv4"),
        (b"PROXY TCP6 192.0.2.1 ::1 5555 80\r\n", "not IPv6"),
        (b"PROXY TCP4 192.0.2.256 198.51.100.7 5555 80\r\n", "invalid address"),
        (b"PROXY TCP4 192.0.2.01 198.51.100.7 5555 80\r\n", "invalid address"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 65536 80\r\n", "invalid port"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 0080 80\r\n", "invalid port"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 -1 80\r\n", "invalid port"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 5555 8a\r\n", "invalid port"),
        (b"PROXY UNKNOWN " + b"x" * MAX_V1_HEADER, "longer than"),
        (b"PROXY \xff\xfe 1 2 3 4\r\n", "protocol"),
        (v2(0x11, 0x11, IPV4_BLOCK), "version 1"),
        (v2(0x31, 0x11, IPV4_BLOCK), "version 3"),
        (v2(0x22, 0x11, IPV4_BLOCK), "unknown command"),
        (v2(0x21, 0x41, IPV4_BLOCK), "unknown address family"),
        (v2(0x21, 0x13, IPV4_BLOCK), "unknown address family"),
        (v2(0x21, 0x12, IPV4_BLOCK), "datagram"),
        (v2(0x21, 0x11, IPV4_BLOCK[:11]), "too short"),
        (v2(0x21, 0x21, bytes(35)), "too short"),
        (v2(0x21, 0x31, bytes(200)), "too short"),
        (v2(0x21, 0x11, b"", length=MAX_V2_HEADER), "more than"),
        (v2(0x21, 0x11, b"", length=0xFFFF), "more than"),
    ],
)
def test_malformed_headers(data: bytes, reason: str) -> None:
    result = parse(data)
    assert isinstance(result, Invalid), result
    assert reason in result.reason


def test_oversized_headers_are_refused_before_they_are_complete() -> None:
    # a v1 line without CRLF is refused once it reaches the bound, whatever follows
    assert parse(b"PROXY UNKNOWN " + b"x" * (MAX_V1_HEADER - 15)) is NEED_MORE
    assert isinstance(parse(b"PROXY UNKNOWN " + b"x" * (MAX_V1_HEADER - 14)), Invalid)
    # a v2 length beyond the bound is refused from the 16 fixed bytes alone
    assert isinstance(parse(v2(0x21, 0x11, b"", length=MAX_V2_HEADER - 15)), Invalid)
    assert parse(v2(0x21, 0x11, b"", length=MAX_V2_HEADER - 16)) is NEED_MORE


def test_v1_at_the_maximum_length_parses() -> None:
    source = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {source} {source} 65535 65535\r\n".encode()
    assert parse(line) == Parsed(1, False, (source, 65535), (source, 65535), len(line))
    longest = f"PROXY UNKNOWN {source} {source} 65535 65535\r\n".encode()
    assert len(longest) == MAX_V1_HEADER  # the spec's worst case
    assert parse(longest) == Parsed(1, False, None, None, MAX_V1_HEADER)


def test_build_v2_round_trips_and_matches_the_spec_bytes() -> None:
    header = build_v2(("192.0.2.1", 5555), ("198.51.100.7", 80))
    assert header == v2(0x21, 0x11, IPV4_BLOCK)
    header6 = build_v2(("2001:db8::1", 40000), ("::1", 443))
    assert parse(header6) == Parsed(2, False, ("2001:db8::1", 40000), ("::1", 443), 52)
    assert build_v2(("[::1]", 1), ("::2", 2))[13] == 0x21


def test_build_v2_mixed_or_missing_families_is_unspec() -> None:
    for source, destination in ((("192.0.2.1", 1), ("::1", 2)), (None, ("::1", 2))):
        header = build_v2(source, destination)
        assert header == v2(0x21, 0x00, b"")
        assert parse(header) == Parsed(2, False, None, None, 16)
    assert parse(build_v2(None, None, local=True)) == Parsed(2, True, None, None, 16)


def test_build_v1() -> None:
    line = build_v1(("192.0.2.1", 5555), ("198.51.100.7", 80))
    assert line == b"PROXY TCP4 192.0.2.1 198.51.100.7 5555 80\r\n"
    assert parse(build_v1(("::1", 1), ("::2", 2))) == Parsed(1, False, ("::1", 1), ("::2", 2), 24)
    assert build_v1(("::1", 1), ("192.0.2.1", 2)) == b"PROXY UNKNOWN\r\n"
