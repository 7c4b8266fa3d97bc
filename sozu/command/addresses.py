"""Socket addresses between their text form (`127.0.0.1:8080`, `[::1]:443`) and protobuf.

Sōzu's schema carries addresses as `SocketAddress {IpAddress ip; uint32 port}` where `IpAddress` is
a v4 `fixed32` (host order integer) or a v6 `Uint128 {low, high}`; the CLI, the config file and the
`ListenersCount` SCM message carry text. Every conversion goes through here.
"""

from __future__ import annotations

import ipaddress

from sozu.command.errors import AddressError
from sozu.command.proto import IpAddress, SocketAddress, Uint128

_LOW_MASK = (1 << 64) - 1


def parse_address(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """Split `host:port` (IPv6 in brackets) into an IP and a port, or raise AddressError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AddressError(f"invalid socket address {text!r}: expected IP:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f"invalid socket address {text!r}: put an IPv6 address in brackets")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(f"invalid socket address {text!r}: {host!r} is not an IP") from None
    if not port_text.isdigit() or int(port_text) > 65535:
        raise AddressError(f"invalid socket address {text!r}: port must be 0-65535")
    return ip, int(port_text)


def to_proto(text: str) -> SocketAddress:
    """Text address -> protobuf SocketAddress."""
    ip, port = parse_address(text)
    if isinstance(ip, ipaddress.IPv4Address):
        return SocketAddress(ip=IpAddress(v4=int(ip)), port=port)
    value = int(ip)
    return SocketAddress(
        ip=IpAddress(v6=Uint128(low=value & _LOW_MASK, high=value >> 64)), port=port
    )


def to_text(address: SocketAddress) -> str:
    """Protobuf SocketAddress -> text, in the form Sōzu prints (`[v6]:port` for IPv6)."""
    kind = address.ip.WhichOneof("inner")
    if kind == "v4":
        return f"{ipaddress.IPv4Address(address.ip.v4)}:{address.port}"
    if kind == "v6":
        v6 = ipaddress.IPv6Address((address.ip.v6.high << 64) | address.ip.v6.low)
        return f"[{v6}]:{address.port}"
    raise AddressError("socket address without an IP")


def normalize(text: str) -> str:
    """Canonical text form of an address, so `[::0001]:80` and `[::1]:80` compare equal."""
    return to_text(to_proto(text))
