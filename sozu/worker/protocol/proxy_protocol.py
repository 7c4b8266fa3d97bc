"""PROXY protocol headers (HAProxy's v1 text and v2 binary formats): parse and build. Sans-io.

A load balancer in front of the proxy prepends one header to a connection to say who the client
really is. `parse(data)` looks at the first bytes of a stream and answers one of:

- `NEED_MORE`: what arrived so far is a valid beginning of a header; feed more bytes;
- `Parsed`: a complete header of `consumed` bytes; `source` and `destination` are the
  addresses it carries, or None when it carries none to use (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC
  or UNIX families): the receiver then keeps the connection's own addresses, as the spec says;
- `Invalid`: not a header, or a malformed or oversized one; the connection must be closed.

Sizes are bounded so a peer cannot make a receiver buffer much: a v1 line is at most 107 bytes
(its CRLF included), a v2 header at most `MAX_V2_HEADER` bytes (16 fixed bytes, the address
block and TLVs, which are skipped unread). Sōzu itself parses and sends v2 only; v1 is parsed
here too because many load balancers still send it.

This module knows bytes and `ipaddress`; no socket, no clock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

Address = tuple[str, int]

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX: Final = b"PROXY "
MAX_V1_HEADER: Final = 107
MAX_V2_HEADER: Final = 536  # 16 fixed bytes + 216 (two AF_UNIX paths) + room for TLVs
_V2_FIXED: Final = 16

_INET, _INET6, _UNIX = 0x1, 0x2, 0x3
_UNSPEC_PROTOCOL, _STREAM = 0x0, 0x1
_ADDRESS_LENGTHS: Final = {_INET: 12, _INET6: 36, _UNIX: 216}


class NeedMore:
    """The bytes so far begin a header; more are needed to decide."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore()


@dataclass(frozen=True, slots=True)
class Parsed:
    version: int  # 1 or 2
    local: bool  # v2 LOCAL (a health check of the load balancer itself)
    source: Address | None
    destination: Address | None
    consumed: int  # header length: the stream's own bytes start here


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str


Result = NeedMore | Parsed | Invalid


def parse(data: bytes) -> Result:
    """Decide on the header at the start of `data` (module docstring)."""
    if data[:12] == V2_SIGNATURE:
        return _parse_v2(data)
    if data[:6] == V1_PREFIX:
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data[:12]) or V1_PREFIX.startswith(data[:6]):
        return NEED_MORE  # an incomplete signature (an empty input included)
    return Invalid("no PROXY protocol header")


# --- v1 ------------------------------------------------------------------------------------


def _parse_v1(data: bytes) -> Result:
    end = data.find(b"\r\n", 0, MAX_V1_HEADER)
    if end < 0:
        carriage = data.find(b"\r", 0, MAX_V1_HEADER)
        if b"\n" in data[:MAX_V1_HEADER] or 0 <= carriage < len(data) - 1:
            return Invalid("v1 header line not ended by CRLF")
        if len(data) >= MAX_V1_HEADER:
            return Invalid(f"v1 header longer than {MAX_V1_HEADER} bytes")
        return NEED_MORE
    line = data[len(V1_PREFIX) : end]
    consumed = end + 2
    if line.startswith(b"UNKNOWN"):
        if line != b"UNKNOWN" and not line.startswith(b"UNKNOWN "):
            return Invalid("v1 unknown protocol")
        return Parsed(1, False, None, None, consumed)
    fields = line.split(b" ")
    if len(fields) != 5:
        return Invalid("v1 header needs protocol, two addresses and two ports")
    protocol, source_ip, destination_ip, source_port, destination_port = fields
    if protocol == b"TCP4":
        version = 4
    elif protocol == b"TCP6":
        version = 6
    else:
        return Invalid("v1 protocol is not TCP4, TCP6 or UNKNOWN")
    try:
        source = (_v1_ip(source_ip, version), _v1_port(source_port))
        destination = (_v1_ip(destination_ip, version), _v1_port(destination_port))
    except ValueError as error:
        return Invalid(f"v1 {error}")
    return Parsed(1, False, source, destination, consumed)


def _v1_ip(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"invalid address {text[:64]!r}") from None
    if address.version != version:
        raise ValueError(f"address {address} is not IPv{version}")
    return str(address)


def _v1_port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[:1] == b"0"):
        raise ValueError(f"invalid port {text[:16]!r}")
    port = int(text)
    if port > 65535:
        raise ValueError(f"invalid port {port}")
    return port


# --- v2 ------------------------------------------------------------------------------------


def _parse_v2(data: bytes) -> Result:
    if len(data) < _V2_FIXED:
        return NEED_MORE
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        return Invalid(f"v2 header with version {version}")
    if command > 1:
        return Invalid(f"v2 unknown command {command}")
    family, transport = data[13] >> 4, data[13] & 0x0F
    length = int.from_bytes(data[14:16], "big")
    total = _V2_FIXED + length
    if total > MAX_V2_HEADER:
        return Invalid(f"v2 header of {total} bytes, more than {MAX_V2_HEADER}")
    if family > _UNIX or transport > 2:
        return Invalid(f"v2 unknown address family or transport {data[13]:#04x}")
    if length < _ADDRESS_LENGTHS.get(family, 0):
        return Invalid(f"v2 address block of {length} bytes too short for its family")
    if len(data) < total:
        return NEED_MORE
    if command == 0:  # LOCAL: the addresses, if any, are to be ignored
        return Parsed(2, True, None, None, total)
    if family in (_INET, _INET6) and transport not in (_UNSPEC_PROTOCOL, _STREAM):
        return Invalid("v2 header for a datagram connection")
    block = data[_V2_FIXED:total]
    if family == _INET:
        source = (str(ipaddress.IPv4Address(block[0:4])), int.from_bytes(block[8:10], "big"))
        target = (str(ipaddress.IPv4Address(block[4:8])), int.from_bytes(block[10:12], "big"))
        return Parsed(2, False, source, target, total)
    if family == _INET6:
        source = (str(ipaddress.IPv6Address(block[0:16])), int.from_bytes(block[32:34], "big"))
        target = (str(ipaddress.IPv6Address(block[16:32])), int.from_bytes(block[34:36], "big"))
        return Parsed(2, False, source, target, total)
    return Parsed(2, False, None, None, total)  # UNSPEC or UNIX: nothing an IP proxy can use


# --- building ------------------------------------------------------------------------------


def build_v1(source: Address | None, destination: Address | None) -> bytes:
    """A v1 line; `PROXY UNKNOWN` when the two addresses are missing or of different families."""
    pair = _same_family(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    (src, src_port), (dst, dst_port), version = pair
    protocol = "TCP4" if version == 4 else "TCP6"
    return f"PROXY {protocol} {src} {dst} {src_port} {dst_port}\r\n".encode("ascii")


def build_v2(source: Address | None, destination: Address | None, local: bool = False) -> bytes:
    """A v2 header with command PROXY (LOCAL when `local`), stream transport. Like Sōzu's,
    two addresses of different families (or missing) give an UNSPEC header without addresses."""
    command = 0x20 if local else 0x21
    pair = _same_family(source, destination)
    if pair is None:
        return V2_SIGNATURE + bytes((command, 0x00, 0, 0))
    (src, src_port), (dst, dst_port), version = pair
    family = _INET if version == 4 else _INET6
    block = (
        ipaddress.ip_address(src).packed
        + ipaddress.ip_address(dst).packed
        + src_port.to_bytes(2, "big")
        + dst_port.to_bytes(2, "big")
    )
    head = bytes((command, (family << 4) | _STREAM)) + len(block).to_bytes(2, "big")
    return V2_SIGNATURE + head + block


def _same_family(
    source: Address | None, destination: Address | None
) -> tuple[Address, Address, int] | None:
    if source is None or destination is None:
        return None
    try:
        src = ipaddress.ip_address(source[0].strip("[]"))
        dst = ipaddress.ip_address(destination[0].strip("[]"))
    except ValueError:
        return None
    if src.version != dst.version:
        return None
    return (str(src), source[1]), (str(dst), destination[1]), src.version
