"""Request and response heads as the proxy rewrites them between a client and a backend.

Sans-io: the session collects a parsed head (httptools callbacks: method, target, raw header
pairs) and calls `request_head` / `response_head` for the bytes to write. What changes, as in
Sōzu (`protocol/kawa_h1/editor.rs`):

- on the way in: `X-Forwarded-For` gets the client's IP appended (created when absent),
  `Forwarded` gets `proto=..;for="ip:port";by=public-ip` appended (created when absent),
  `X-Forwarded-Proto` and `X-Forwarded-Port` are added when the client sent none (a client's
  value is trusted, as in Sōzu), `X-Request-Id` is added when absent, and the listener's
  request id header (`Sozu-Id`) is always added; the listener's sticky cookie is removed from
  `Cookie` (the backend never sees it); `Host` is kept as sent;
- both ways: hop-by-hop headers (`Connection` and the names it lists, `Keep-Alive`,
  `Proxy-Connection`, `TE`, `Upgrade` unless switching protocols) are dropped; framing is kept:
  a `Content-Length` is passed as is, a chunked body is re-chunked by the session (the
  `Transfer-Encoding` value is kept, so codings before `chunked` survive);
- on the way out: `Sozu-Id` is added and, when the cluster is sticky and the client did not
  already hold the backend's sticky id, `Set-Cookie: <sticky_name>=<sticky_id>; Path=/`.

Header names and values are bytes as received; nothing is decoded on this path.
"""

from __future__ import annotations

from collections.abc import Sequence

Headers = Sequence[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"transfer-encoding"}
)
"""Dropped when a head is forwarded (`Transfer-Encoding` is re-added by the framing code)."""

_REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    204: b"No Content",
    301: b"Moved Permanently",
    304: b"Not Modified",
    400: b"Bad Request",
    404: b"Not Found",
    500: b"Internal Server Error",
}


class Framing:
    """How a message body is delimited (values of `RequestInfo.framing` / `ResponseInfo`)."""

    NONE = 0
    LENGTH = 1
    CHUNKED = 2
    CLOSE = 3


_PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", b""})


def connection_extras(value: bytes, into: set[bytes] | None) -> set[bytes] | None:
    """Header names a `Connection` value lists besides close/keep-alive/upgrade (to drop)."""
    for token in value.lower().split(b","):
        token = token.strip()
        if token not in _PLAIN_TOKENS:
            if into is None:
                into = set()
            into.add(token)
    return into


def connection_tokens(headers: Headers) -> set[bytes] | None:
    """`connection_extras` of every `Connection` header of `headers`."""
    tokens: set[bytes] | None = None
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            tokens = connection_extras(value, tokens)
    return tokens


def body_framing(headers: Headers) -> int:
    """`Framing` of a message from its headers (the parser already refused CL with TE)."""
    framing = Framing.NONE
    for name, _ in headers:
        size = len(name)
        if size == 17 and name.lower() == b"transfer-encoding":
            return Framing.CHUNKED
        if size == 14 and name.lower() == b"content-length":
            framing = Framing.LENGTH
    return framing


def strip_cookie(value: bytes, sticky_name: bytes) -> tuple[bytes, bytes | None]:
    """`Cookie` value without the sticky cookie, and that cookie's value (None if absent)."""
    found: bytes | None = None
    kept = []
    for part in value.split(b";"):
        key, sep, cookie_value = part.strip().partition(b"=")
        if sep and key == sticky_name:
            found = cookie_value
        else:
            kept.append(part.strip())
    return b"; ".join(p for p in kept if p), found


def sticky_cookie(headers: Headers, sticky_name: bytes) -> bytes | None:
    """Value of the sticky cookie among `Cookie` headers, if any."""
    marker = sticky_name + b"="
    for name, value in headers:
        if len(name) == 6 and name.lower() == b"cookie" and marker in value:
            return strip_cookie(value, sticky_name)[1]
    return None


def request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    *,
    peer_ip: bytes,
    peer_port: int,
    public_ip: bytes,
    public_port: bytes,
    proto: bytes,
    request_id: bytes,
    id_header: bytes,
    sticky_name: bytes | None,
    framing: int,
    upgrade: bool,
    drop: set[bytes] | None = None,
) -> bytes:
    """The head written to the backend (module docstring); `drop`: `connection_tokens`."""
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    has_xff = has_fwd = has_proto = has_port = has_rid = False
    upgrade_value: bytes | None = None
    ip_text = b"[" + peer_ip + b"]" if b":" in peer_ip else peer_ip
    by = b'"[' + public_ip + b']"' if b":" in public_ip else public_ip
    forwarded_item = b'proto=%s;for="%s:%d";by=%s' % (proto, ip_text, peer_port, by)
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"upgrade":
                upgrade_value = value
            elif lower == b"transfer-encoding" and framing == Framing.CHUNKED:
                out += (name, b": ", value, b"\r\n")
            continue
        if drop is not None and lower in drop:
            continue
        if lower == b"x-forwarded-for":
            has_xff = True
            value = value + b", " + peer_ip
        elif lower == b"forwarded":
            has_fwd = True
            value = value + b", " + forwarded_item
        elif lower == b"x-forwarded-proto":
            has_proto = True
        elif lower == b"x-forwarded-port":
            has_port = True
        elif lower == b"x-request-id":
            has_rid = True
        elif lower == b"cookie" and sticky_name is not None:
            value = strip_cookie(value, sticky_name)[0]
            if not value:
                continue
        out += (name, b": ", value, b"\r\n")
    if not has_xff:
        out += (b"X-Forwarded-For: ", peer_ip, b"\r\n")
    if not has_fwd:
        out += (b"Forwarded: ", forwarded_item, b"\r\n")
    if not has_port:
        out += (b"X-Forwarded-Port: ", public_port, b"\r\n")
    if not has_proto:
        out += (b"X-Forwarded-Proto: ", proto, b"\r\n")
    if not has_rid:
        out += (b"X-Request-Id: ", request_id, b"\r\n")
    out += (id_header, b": ", request_id, b"\r\n")
    if upgrade and upgrade_value is not None:
        out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade_value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    *,
    request_id: bytes,
    id_header: bytes,
    chunked: bool,
    set_cookie: bytes | None,
    connection: bytes | None,
    drop: set[bytes] | None = None,
) -> bytes:
    """The head written to the client; `connection` is the `Connection` value to send."""
    if not reason:
        reason = _REASONS.get(status, b"Unknown")
    out = [b"HTTP/1.1 %d " % status, reason, b"\r\n"]
    upgrade_value: bytes | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"upgrade":
                upgrade_value = value
            elif lower == b"transfer-encoding" and chunked:
                out += (name, b": ", value, b"\r\n")
            continue
        if drop is not None and lower in drop:
            continue
        out += (name, b": ", value, b"\r\n")
    if set_cookie is not None:
        out += (b"Set-Cookie: ", set_cookie, b"\r\n")
    out += (id_header, b": ", request_id, b"\r\n")
    if status == 101 and upgrade_value is not None:
        out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade_value, b"\r\n")
    elif connection is not None:
        out += (b"Connection: ", connection, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def last_chunk(trailers: Headers) -> bytes:
    """The terminating chunk with its trailer fields."""
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"
