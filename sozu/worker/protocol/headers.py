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

import re
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


REWRITTEN_REQUEST_HEADERS = HOP_BY_HOP | {
    b"x-forwarded-for",
    b"forwarded",
    b"x-forwarded-proto",
    b"x-forwarded-port",
    b"x-request-id",
}
"""Request header names `request_head` changes or drops (a `Cookie` too when sticky; and the
names a `Connection` header lists, but `Connection` is itself in this set)."""

REWRITTEN_LENGTHS = frozenset(len(name) for name in REWRITTEN_REQUEST_HEADERS)


def forwarded_item(peer_ip: bytes, peer_port: int, public_ip: bytes, proto: bytes) -> bytes:
    """This hop's `Forwarded` element: `proto=..;for="ip:port";by=public-ip`."""
    ip_text = b"[" + peer_ip + b"]" if b":" in peer_ip else peer_ip
    by = b'"[' + public_ip + b']"' if b":" in public_ip else public_ip
    return b'proto=%s;for="%s:%d";by=%s' % (proto, ip_text, peer_port, by)


def forwarding_headers(
    peer_ip: bytes, peer_port: int, public_ip: bytes, public_port: bytes, proto: bytes
) -> bytes:
    """What `request_head` adds to a head that has none of `REWRITTEN_REQUEST_HEADERS`, up to
    the request id (the same for every request of one client connection)."""
    return (
        b"X-Forwarded-For: %s\r\nForwarded: %s\r\nX-Forwarded-Port: %s\r\n"
        % (
            peer_ip,
            forwarded_item(peer_ip, peer_port, public_ip, proto),
            public_port,
        )
        + b"X-Forwarded-Proto: %s\r\nX-Request-Id: " % proto
    )


def plain_request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    forwarding: bytes,
    id_line: bytes,
    request_id: bytes,
) -> bytes:
    """`request_head` for a head with none of `REWRITTEN_REQUEST_HEADERS` (and no sticky
    cookie to strip): the headers as received, then `forwarding` (`forwarding_headers`), the
    request id, and `id_line` (`Sozu-Id: `) with the request id again."""
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        out += (name, b": ", value, b"\r\n")
    out += (forwarding, request_id, b"\r\n", id_line, request_id, b"\r\n\r\n")
    return b"".join(out)


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
    forwarded = forwarded_item(peer_ip, peer_port, public_ip, proto)
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
            value = value + b", " + forwarded
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
        out += (b"Forwarded: ", forwarded, b"\r\n")
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
    hsts: tuple[bytes, bool] | None = None,
) -> bytes:
    """The head written to the client; `connection` is the `Connection` value to send, `hsts`
    the `Strict-Transport-Security` line to add and whether it replaces the backend's own (else
    a backend's header wins)."""
    extra = None
    if hsts is not None:
        extra, replace = hsts
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
        if extra is not None and lower == b"strict-transport-security":
            if replace:
                continue
            extra = None
        out += (name, b": ", value, b"\r\n")
    if set_cookie is not None:
        out += (b"Set-Cookie: ", set_cookie, b"\r\n")
    if extra is not None:
        out.append(extra)
    out += (id_header, b": ", request_id, b"\r\n")
    if status == 101 and upgrade_value is not None:
        out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade_value, b"\r\n")
    elif connection is not None:
        out += (b"Connection: ", connection, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def with_hsts(head: bytes, hsts: tuple[bytes, bool]) -> bytes:
    """A forwarded response head (lines ending with CRLF, no blank line) with the HSTS line
    added; the backend's own `Strict-Transport-Security` wins unless the policy replaces it."""
    line, replace = hsts
    at = head.lower().find(b"\r\nstrict-transport-security:")
    if at < 0:
        return head + line
    if not replace:
        return head
    end = head.index(b"\r\n", at + 2)
    return with_hsts(head[:at] + head[end:], hsts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def last_chunk(trailers: Headers) -> bytes:
    """The terminating chunk with its trailer fields."""
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"


_STATUS_LINE_11 = b"HTTP/1.1 "
_NO_BODY_STATUSES = (204, 304)
_SCANNED = re.compile(
    rb"\r\n(content-length|connection|transfer-encoding|upgrade|keep-alive|proxy-connection|te)"
    rb":([^\r]*)",
    re.IGNORECASE,
)
"""The header lines `scan_response_head` looks at (framing and hop-by-hop), in one pass."""


_Scanned = tuple[int, bytes, int, bool]
_SCAN_CACHE: dict[bytes, _Scanned | None] = {}
_SCAN_CACHE_MAX = 256


def scan_response_head(head: bytes) -> _Scanned | None:
    """`read_response_head`, remembered: a backend sends the same few heads again and again
    (the `Date` header changes once a second), and the outcome depends on the bytes only."""
    try:
        return _SCAN_CACHE[head]
    except KeyError:
        pass
    scanned = read_response_head(head)
    if len(_SCAN_CACHE) >= _SCAN_CACHE_MAX:
        _SCAN_CACHE.clear()
    _SCAN_CACHE[head] = scanned
    return scanned


def read_response_head(head: bytes) -> _Scanned | None:
    """The common response head read as bytes, without a callback per header.

    `head` is the status line and the header lines, each ending with CRLF, without the blank
    line (validated by llhttp before anything is forwarded, so names have no whitespace and
    values no CR/LF). Answers `(status, head to forward, content length, backend keep-alive)`
    when the answer is a final one (200-599 but 204/304) framed by a single Content-Length,
    with no Transfer-Encoding, Upgrade, Keep-Alive, Proxy-Connection or TE header and at most
    one `Connection` header, listing only close/keep-alive/upgrade: the forwarded head is then
    the received one minus its `Connection` line, the status line rewritten to HTTP/1.1 (the
    reason kept). Anything else is None: the caller parses it header by header
    (`response_head`).
    """
    code = head[9:12]
    if not code.isdigit():
        return None
    status = int(code)
    if status < 200 or status in _NO_BODY_STATUSES:
        return None
    length = -1
    connection: tuple[bytes, bytes] | None = None
    for name, value in _SCANNED.findall(head):
        size = len(name)
        if size == 14:
            value = value.strip()
            if length >= 0 or not value.isdigit():
                return None
            length = int(value)
        elif size == 10 and name[0] in b"cC" and connection is None:
            connection = (name, value)
        else:
            return None
    if length < 0:
        return None
    http11 = head.startswith(_STATUS_LINE_11)
    keep_alive = http11
    if connection is not None:
        name, value = connection
        for token in value.lower().split(b","):
            token = token.strip()
            if token == b"close":
                keep_alive = False
            elif token == b"keep-alive":
                if not http11:
                    keep_alive = True
            elif token != b"upgrade" and token:
                return None  # names more headers to drop
        head = head.replace(b"\r\n" + name + b":" + value, b"", 1)
    if not http11 or head[12:13] != b" " or head[13:15] == b"\r\n":
        line_end = head.find(b"\r\n")
        reason = head[13:line_end].strip() or _REASONS.get(status, b"Unknown")
        head = b"HTTP/1.1 %d %s%s" % (status, reason, head[line_end:])
    return status, head, length, keep_alive
