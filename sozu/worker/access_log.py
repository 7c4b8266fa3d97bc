"""Access logs of a worker: one record per HTTP exchange or TCP session, Sōzu's formats.

`AccessLog.from_server_config` gives the worker's access log, or None when access logs are
off (no `access_logs_target`): sessions then pay nothing per request. Sōzu writes access logs
to the main log when `access_logs_target` is unset; here they are off in that case, which keeps
the hot path free of logging (a deliberate divergence, documented in doc/access-logs.md).

Formats:
- `ascii` (Sōzu's text line, `access_log_format = Ascii`)::

    <time> <unix-ns> <pid> INFO-ACCESS  <tag>\t[<session> <request> <cluster|-> <backend|->] \
    <client|-> <backend address|-> <request>/<service>/<response|->/-/- <bytes in> <bytes out> \
    [<tags>, user-agent=<ua>] None <protocol> <host|-> <method|-> <path|-> <status|->

  durations in Sōzu's units (`ns`, `μs` from 10 µs, `ms` from 10 ms, `s` from 10 s); spaces
  in the user agent become `_`, brackets become braces; TCP endpoints are `-`.
- `protobuf` (Sōzu's binary records): each `ProtobufAccessLog` length-delimited (varint
  prefix) and followed by two zero bytes.
- `json` (a sozu-py extension, `access_logs_format = "json"`): one object per line with
  every field (null when unknown). ServerConfig cannot say json, so the supervisor starts
  its workers with `--access-logs-format json`, which reaches `from_server_config(fmt=...)`.

Each format is one builder, `(now_ns, AccessRecord) -> bytes`, picked once at construction.

Writes never wait: records are collected and written with one `os.write` at the end of the
current event loop iteration (`call_soon`), or at once when no loop runs. Targets: `stdout`,
`stderr`, `file:///path` or a bare path (opened O_APPEND|O_CREAT, 0640); `reopen()` reopens
the file after logrotate. A failed write drops the batch with one warning, never an error
into the session that logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable

from sozu.command.logging import get_logger
from sozu.command.proto import ProtobufAccessLog, ProtobufAccessLogFormat, ServerConfig

log = get_logger(__name__)

FORMATS = ("ascii", "json", "protobuf")
FLUSH_SIZE = 1 << 16
"""Bytes collected before a write is forced within the same loop iteration."""


def duration_text(us: int | float | None) -> str:
    """Sōzu's rendering of a duration given in microseconds."""
    if us is None or us < 0:
        return "-"
    if us >= 10_000_000:
        return f"{int(us // 1_000_000)}s"
    if us >= 10_000:
        return f"{int(us // 1000)}ms"
    if us >= 10:
        return f"{int(us)}μs"
    return f"{int(us * 1000)}ns"


def _user_agent(value: str) -> str:
    return value.replace(" ", "_").replace("[", "{").replace("]", "}")


def _crockford_to_int(text: str) -> int:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = 0
    for char in text.upper():
        index = alphabet.find(char)
        if index < 0:
            return 0
        value = value * 32 + index
    return value & ((1 << 128) - 1)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _open_target(target: str) -> tuple[int, bool]:
    """File descriptor for a target and whether this log owns (and may reopen) it."""
    if target in ("", "stdout"):
        return 1, False
    if target == "stderr":
        return 2, False
    path = target.removeprefix("file://")
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640), True


_U64 = (1 << 64) - 1
_NO_ENDPOINT: tuple[None, None, None, None] = (None, None, None, None)

Endpoint = tuple[str | None, str | None, str | None, int | None]
"""method, host, path, status of an HTTP exchange."""


AccessRecord = tuple[
    str,  # session id
    str | None,  # request id (None for TCP)
    str | None,  # cluster id
    str | None,  # backend id
    str | None,  # client address
    str | None,  # backend address
    int | float,  # request time (µs)
    int | float | None,  # service time (µs)
    int | float | None,  # response time (µs)
    int,  # bytes in
    int,  # bytes out
    str | None,  # tags
    str | None,  # user agent
    str,  # protocol
    Endpoint | None,  # None for TCP
    str | None,  # message
    str | None,  # tag (None: the log's own)
]
"""What one record says, whatever the format: a plain tuple, the cheapest thing to build."""


class AccessLog:
    """Formats access records and writes them in batches (module docstring)."""

    def __init__(self, target: str, fmt: str = "ascii", tag: str = "WRK") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown access log format {fmt!r}: expected one of {FORMATS}")
        self.target = target
        self.format = fmt
        self.tag = tag
        self.pid = os.getpid()
        self._fd, self._owned = _open_target(target)
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._failed = False
        self._second = -1
        self._second_text = ""
        builders = {"ascii": self._ascii, "json": self._json, "protobuf": self._protobuf}
        self._build: Callable[[int, AccessRecord], bytes] = builders[fmt]

    def _when(self, now_ns: int) -> str:
        """RFC 3339 UTC time with microseconds; the seconds part is formatted once a second."""
        second, rest = divmod(now_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{rest // 1000:06d}Z"

    @classmethod
    def from_server_config(
        cls, config: ServerConfig, tag: str = "WRK", fmt: str | None = None
    ) -> AccessLog | None:
        """The worker's access log, or None when `access_logs_target` is unset (off).

        `fmt` overrides the ServerConfig's format (`sozu worker --access-logs-format`): json
        has no value in ServerConfig.
        """
        if not config.HasField("access_logs_target") or not config.access_logs_target:
            return None
        if fmt is None:
            binary = config.access_log_format == ProtobufAccessLogFormat.Protobuf
            fmt = "protobuf" if binary else "ascii"
        try:
            return cls(config.access_logs_target, fmt, tag)
        except OSError as error:
            log.warning("access_log_unusable", target=config.access_logs_target, error=str(error))
            return None

    # --- records -------------------------------------------------------------------------

    def http(
        self,
        request_id: str,
        cluster_id: str | None,
        backend_id: str | None,
        client_address: str | None,
        method: str | None,
        host: str | None,
        path: str | None,
        status: int | None,
        bytes_in: int,
        bytes_out: int,
        front_us: int | float,
        back_us: int | float | None,
        response_us: int | float | None,
        user_agent: str | None,
        tag: str | None = None,
        *,
        session_id: str | None = None,
        backend_address: str | None = None,
        protocol: str = "HTTP",
        tags: str | None = None,
        message: str | None = None,
    ) -> None:
        """One HTTP exchange. `front_us`: first request byte to last answer byte (Sōzu's
        request time); `back_us`: time the proxy spent on it (service time); `response_us`:
        backend connection to end of the answer (response time); all in microseconds."""
        record: AccessRecord = (
            session_id or request_id, request_id, cluster_id, backend_id, client_address,
            backend_address, front_us, back_us, response_us, bytes_in, bytes_out, tags,
            user_agent, protocol, (method, host, path, status), message, tag,
        )  # fmt: skip
        self._push(self._build(time.time_ns(), record))

    def tcp(
        self,
        session_id: str,
        cluster_id: str | None,
        backend_id: str | None,
        client_address: str | None,
        backend_address: str | None,
        bytes_in: int,
        bytes_out: int,
        front_us: int | float,
        back_us: int | float | None = None,
        tag: str | None = None,
        *,
        tags: str | None = None,
        message: str | None = None,
    ) -> None:
        """One TCP session (bytes_in from the client, bytes_out to it)."""
        record: AccessRecord = (
            session_id, None, cluster_id, backend_id, client_address, backend_address,
            front_us, back_us, None, bytes_in, bytes_out, tags, None, "TCP", None, message, tag,
        )  # fmt: skip
        self._push(self._build(time.time_ns(), record))

    def _ascii(self, now_ns: int, record: AccessRecord) -> bytes:
        """Sōzu's text line (module docstring)."""
        (session_id, request_id, cluster_id, backend_id, client, backend_address, request_us,
         service_us, response_us, bytes_in, bytes_out, tags, user_agent, protocol, endpoint,
         message, tag) = record  # fmt: skip
        if user_agent is not None:
            ua = "user-agent=" + _user_agent(user_agent)
            full_tags = f"{tags}, {ua}" if tags else ua
        else:
            full_tags = tags or ""
        if endpoint is None:
            where = "-"
        else:
            method, host, path, status = endpoint
            where = (
                f"{host or '-'} {method or '-'} {path or '-'} "
                f"{status if status is not None else '-'}"
            )
        line = (
            f"{self._when(now_ns)} {now_ns} {self.pid} INFO-ACCESS  {tag or self.tag}\t"
            f"[{session_id} {request_id or '-'} {cluster_id or '-'} {backend_id or '-'}] "
            f"{client or '-'} {backend_address or '-'} "
            f"{duration_text(request_us)}/{duration_text(service_us)}/"
            f"{duration_text(response_us)}/-/- {bytes_in} {bytes_out} [{full_tags}] None "
            f"{protocol} {where}{f' | {message}' if message else ''}\n"
        )
        return line.encode("utf-8", "replace")

    def _json(self, now_ns: int, record: AccessRecord) -> bytes:
        """One JSON object per line, every field present (null when unknown)."""
        (session_id, request_id, cluster_id, backend_id, client, backend_address, request_us,
         service_us, response_us, bytes_in, bytes_out, tags, user_agent, protocol, endpoint,
         message, tag) = record  # fmt: skip
        method, host, path, status = endpoint or _NO_ENDPOINT
        fields = {
            "time": self._when(now_ns),
            "pid": self.pid,
            "tag": tag or self.tag,
            "session_id": session_id,
            "request_id": request_id,
            "cluster_id": cluster_id,
            "backend_id": backend_id,
            "client_address": client,
            "backend_address": backend_address,
            "protocol": protocol,
            "method": method,
            "host": host,
            "path": path,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "request_time_us": int(request_us),
            "service_time_us": None if service_us is None else int(service_us),
            "response_time_us": None if response_us is None else int(response_us),
            "user_agent": user_agent,
            "tags": tags,
            "message": message,
        }
        return (json.dumps(fields, ensure_ascii=False) + "\n").encode("utf-8", "replace")

    def _protobuf(self, now_ns: int, record: AccessRecord) -> bytes:
        """Sōzu's binary record: length-delimited `ProtobufAccessLog`, then two zero bytes."""
        (session_id, request_id, cluster_id, backend_id, _client, _backend_address, request_us,
         service_us, response_us, bytes_in, bytes_out, _tags, user_agent, protocol, endpoint,
         message, tag) = record  # fmt: skip
        entry = ProtobufAccessLog(protocol=protocol, tag=tag or self.tag)
        rid = _crockford_to_int(request_id or session_id)
        entry.request_id.low, entry.request_id.high = rid & _U64, rid >> 64
        sid = _crockford_to_int(session_id)
        entry.session_id.low, entry.session_id.high = sid & _U64, sid >> 64
        entry.time.low, entry.time.high = now_ns & _U64, now_ns >> 64
        if message:
            entry.message = message
        if cluster_id:
            entry.cluster_id = cluster_id
        if backend_id:
            entry.backend_id = backend_id
        if endpoint is None:
            entry.endpoint.tcp.SetInParent()
        else:
            method, host, path, status = endpoint
            http = entry.endpoint.http
            if method is not None:
                http.method = method
            if host is not None:
                http.authority = host
            if path is not None:
                http.path = path
            if status is not None:
                http.status = status
        entry.service_time = int((service_us or 0) * 1000)
        entry.request_time = int(request_us * 1000)
        if response_us is not None:
            entry.response_time = int(response_us * 1000)
        entry.bytes_in = bytes_in
        entry.bytes_out = bytes_out
        if user_agent is not None:
            entry.user_agent = user_agent
        payload = entry.SerializeToString()
        return _varint(len(payload)) + payload + b"\0\0"

    # --- writing -------------------------------------------------------------------------

    def _push(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= FLUSH_SIZE:
            self.flush()
            return
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is collected, in one system call when the target takes it all."""
        self._scheduled = False
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BlockingIOError:
            self._warn("target is full; access log records dropped")
        except OSError as error:
            self._warn(str(error))
        else:
            self._failed = False

    def _warn(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            log.warning("access_log_write_failed", target=self.target, reason=reason)

    def reopen(self) -> None:
        """Reopen a file target (after logrotate moved it)."""
        self.flush()
        if not self._owned:
            return
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd, self._owned = _open_target(self.target)

    def close(self) -> None:
        self.flush()
        if self._owned:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._owned = False
