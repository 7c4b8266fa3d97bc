"""The control-plane audit trail: one record per audited command, in three sinks.

The supervisor owns one `AuditLog`. Each command-socket client is a `ClientContext` (peer
credentials read at accept time, a session ULID, a per-accept client id); each audited command
is an `AuditSubject` (Sōzu's stable snake_case verb, a target text, the cluster and backend ids
it touches) that `describe()` derives from the Request. `AuditLog.record()` renders the record
in Sōzu's layout and writes it to:

- the main log, always, at info level (the line carries the word `AUDIT`);
- `audit_logs_target`, a text file opened O_APPEND|O_CREAT with mode 0640, colours stripped;
- `audit_logs_json_target`, one JSON object per line, every key always present.

Every free-form value (ids, target, reason, user, comm, socket path) is sanitised before it is
rendered: control characters (C0, DEL, C1) and the Unicode line/paragraph separators, BOM and
bidi overrides become `?`, so no input can forge a second line, a tab-separated column or a
second JSON record. A sink that cannot be written logs a warning and never raises: auditing
never blocks a change. `reopen()` (SIGHUP, after logrotate renamed the files) opens the paths
again.

This module decides nothing about when to audit (attempt-time and completion-time lines,
refusals): the supervisor's request handlers do, and pass the outcome in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import secrets
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from sozu import __version__
from sozu.command import certificate
from sozu.command.addresses import to_text
from sozu.command.errors import AddressError
from sozu.command.logging import get_logger
from sozu.command.proto import (
    ListenerType,
    MetricDetail,
    MetricsConfiguration,
    Request,
    SocketAddress,
)
from sozu.command.state import ConfigState, StateError
from sozu.supervisor.peer import UNKNOWN, PeerCredentials

# --------------------------------------------------------------------------------------
# Vocabulary (Sōzu's strings; operators and SIEM rules match on them)

RESULT_OK = "ok"
RESULT_ERR = "err"

ERROR_DISPATCH = "dispatch_error"
"""The main process state refused the request."""
ERROR_WORKER_FAILURE = "worker_failure"
"""At least one worker answered FAILURE during the fan-out."""
ERROR_WORKER_TIMEOUT = "worker_timeout"
"""The fan-out did not complete before `worker_timeout`."""
ERROR_PEER_CRED_UNAVAILABLE = "peer_cred_unavailable"
"""SO_PEERCRED gave nothing, so the actor cannot be attributed."""
ERROR_INVALID_INPUT = "invalid_input"
"""The operator's input is malformed (a logging filter, an undecodable request...)."""
ERROR_IO = "io_error"
"""Reading or writing a file failed (state save / load, configuration)."""
ERROR_OTHER = "other"
"""Anything else."""

ERROR_CODES = (
    ERROR_DISPATCH,
    ERROR_WORKER_FAILURE,
    ERROR_WORKER_TIMEOUT,
    ERROR_PEER_CRED_UNAVAILABLE,
    ERROR_INVALID_INPUT,
    ERROR_IO,
    ERROR_OTHER,
)

FANOUT_OK = "ok"
FANOUT_PARTIAL = "partial"
FANOUT_TIMEOUT = "timeout"
FANOUT_LOCAL_ONLY = "local_only"

REASON_MAX_CHARS = 256
"""A rendered `reason` is at most this many characters (a cut one ends with `…`)."""

SOZU_VERSION = __version__

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ufeff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ANSI_CSI = re.compile("\x1b(?:\\[[\x20-\x3f]*[\x40-\x7e]?)?")
_SLOT_UNSAFE = re.compile(r"[\s\[\]]")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# Sōzu prints these enum values with Rust's Debug formatting (prost's CamelCase names).
_LISTENER_DEBUG = {
    ListenerType.HTTP: "Http",
    ListenerType.HTTPS: "Https",
    ListenerType.TCP: "Tcp",
    ListenerType.UDP: "Udp",
}
_METRICS_DEBUG = {
    MetricsConfiguration.ENABLED: "Enabled",
    MetricsConfiguration.DISABLED: "Disabled",
    MetricsConfiguration.CLEAR: "Clear",
}
_DETAIL_DEBUG = {
    MetricDetail.DETAIL_PROCESS: "DetailProcess",
    MetricDetail.DETAIL_FRONTEND: "DetailFrontend",
    MetricDetail.DETAIL_CLUSTER: "DetailCluster",
    MetricDetail.DETAIL_BACKEND: "DetailBackend",
}

# --------------------------------------------------------------------------------------
# Small pure helpers


def sanitize(text: str) -> str:
    """Replace every character that could break a line, a column or a JSON record with `?`."""
    return _UNSAFE.sub("?", text)


def truncate_reason(text: str) -> str:
    """Sanitise `text` and cut it to `REASON_MAX_CHARS` characters, ending a cut one with `…`."""
    clean = sanitize(text)
    if len(clean) <= REASON_MAX_CHARS:
        return clean
    return clean[: REASON_MAX_CHARS - 1] + "…"


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (CSI `ESC [ ... final`, or a lone ESC)."""
    if "\x1b" not in text:
        return text
    return _ANSI_CSI.sub("", text)


def rfc3339_utc(timestamp: float | None = None) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` for a POSIX timestamp (now when None)."""
    when = time.time() if timestamp is None else timestamp
    moment = datetime.datetime.fromtimestamp(when, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def actor_role(uid: int | None) -> str:
    """Sōzu's coarse role of a uid: root (0), system (< 1000), user, or unknown."""
    if uid is None:
        return "unknown"
    if uid == 0:
        return "root"
    if uid < 1000:
        return "system"
    return "user"


def new_ulid(timestamp_ms: int | None = None) -> str:
    """A ULID: 48-bit Unix time in milliseconds and 80 random bits, 26 Crockford base32 chars.

    ULIDs sort by creation time, so session and request ids in the audit log sort as they
    happened (within a millisecond, the order is random).
    """
    millis = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    value = ((millis & ((1 << 48) - 1)) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def request_sha256(request: Request) -> str:
    """First 16 hex characters of the SHA-256 of the Request's protobuf wire bytes.

    Never raises: a Request missing proto2 `required` fields is hashed as encoded.
    """
    wire = request.SerializePartialToString(deterministic=True)
    return hashlib.sha256(wire).hexdigest()[:16]


def certificate_fingerprint_prefix(pem: str) -> str:
    """First 16 hex chars of a PEM certificate's SHA-256 fingerprint, `unknown` if unparseable."""
    try:
        return certificate.fingerprint_hex(pem)[:16]
    except certificate.CertificateError:
        return UNKNOWN


def _address(address: SocketAddress) -> str:
    try:
        return to_text(address)
    except AddressError:
        return "?"


# --------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class ClientContext:
    """One accepted command-socket client, as the audit log identifies it."""

    client_id: int
    session_ulid: str
    connect_ts: str
    """RFC 3339 UTC time of the accept."""
    socket_path: str
    peer: PeerCredentials

    @classmethod
    def accepted(cls, client_id: int, socket_path: str, peer: PeerCredentials) -> ClientContext:
        """Context for a client accepted now: a fresh session ULID and the current time."""
        return cls(
            client_id=client_id,
            session_ulid=new_ulid(),
            connect_ts=rfc3339_utc(),
            socket_path=socket_path,
            peer=peer,
        )


@dataclass(frozen=True)
class FanOut:
    """How the workers answered a fanned-out request."""

    status: str
    """`ok`, `partial`, `timeout` or `local_only`."""
    workers_ok: int
    workers_err: int
    workers_expected: int

    @classmethod
    def from_counts(cls, ok: int, err: int, expected: int, *, timed_out: bool) -> FanOut:
        """Sōzu's status rule: timeout first, then partial on any error, local_only when no
        worker was expected, ok otherwise."""
        if timed_out:
            status = FANOUT_TIMEOUT
        elif err > 0:
            status = FANOUT_PARTIAL
        elif expected == 0:
            status = FANOUT_LOCAL_ONLY
        else:
            status = FANOUT_OK
        return cls(status, ok, err, expected)

    @property
    def failed(self) -> bool:
        """True for the statuses that make the completion line `result=err`."""
        return self.status in (FANOUT_PARTIAL, FANOUT_TIMEOUT)


@dataclass(frozen=True)
class AuditSubject:
    """What an audited command is about: Sōzu's verb, a target text, the ids it touches."""

    verb: str
    target: str
    cluster_id: str | None = None
    backend_id: str | None = None

    def with_target(self, target: str) -> AuditSubject:
        """The same subject with another target (e.g. `file:<path> ok:<n> errors:<n>`)."""
        return dataclasses.replace(self, target=target)


# --------------------------------------------------------------------------------------
# describe(): Request -> AuditSubject


def _listener_patch_diff(request: Request, state: ConfigState | None) -> str:
    """`field=old→new` for each field an Update*ListenerConfig sets (`?` when old is unknown)."""
    variant = request.WhichOneof("request_type")
    patch = getattr(request, variant or "")
    kind = {
        "update_http_listener": ListenerType.HTTP,
        "update_https_listener": ListenerType.HTTPS,
        "update_tcp_listener": ListenerType.TCP,
        "update_udp_listener": ListenerType.UDP,
    }[variant or ""]
    current: Any = None
    if state is not None:
        try:
            current = state.listener(kind, patch.address)
        except StateError:
            current = None
    parts: list[str] = []
    for field, value in patch.ListFields():
        name = field.name
        if name == "address":
            continue
        if name in ("http_answers", "answers", "hsts"):
            parts.append(f"{name}=<patched>")
            continue
        if name == "alpn_protocols":
            old = ",".join(current.alpn_protocols) if current is not None else "?"
            new = ",".join(value.values) if value.values else "<reset>"
            parts.append(f"alpn_protocols={old}→{new}")
            continue
        old_text = "?"
        if current is not None and name in current.DESCRIPTOR.fields_by_name:
            has = not current.DESCRIPTOR.fields_by_name[name].has_presence or current.HasField(name)
            if has:
                old_text = _display(getattr(current, name))
        parts.append(f"{name}={old_text}→{_display(value)}")
    return " ".join(parts) if parts else "(no-op)"


def _display(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SocketAddress):
        return _address(value)
    return str(value)


def describe(
    request: Request,
    state: ConfigState | None = None,
    *,
    client_id: int | None = None,
    config_path: str | None = None,
    executable: str | None = None,
    boot_generation: int | None = None,
) -> AuditSubject | None:
    """Sōzu's audit verb and target for a Request, or None when it is not audited (queries).

    `state` (the state before the change) gives the old values of an Update*Listener diff.
    The keyword arguments fill targets the Request alone cannot: `client_id` for
    `events_subscribed`, `config_path` for `configuration_reloaded` when the request names
    none, `executable` and `boot_generation` for `main_upgraded`. Never raises.
    """
    try:
        return _describe(
            request,
            state,
            client_id=client_id,
            config_path=config_path,
            executable=executable,
            boot_generation=boot_generation,
        )
    except Exception:  # an audit line must never block the change: log the bug, audit coarsely
        get_logger("sozu.audit").exception("audit_describe_failed")
        variant = request.WhichOneof("request_type")
        if variant is None:
            return None
        return AuditSubject(verb=f"{variant}_requested", target=f"request:{variant}")


def _describe(
    request: Request,
    state: ConfigState | None,
    *,
    client_id: int | None,
    config_path: str | None,
    executable: str | None,
    boot_generation: int | None,
) -> AuditSubject | None:
    variant = request.WhichOneof("request_type")
    if variant is None:
        return None
    r = request
    match variant:
        case "add_cluster":
            cid = r.add_cluster.cluster_id
            return AuditSubject("cluster_added", f"cluster:{cid}", cluster_id=cid)
        case "remove_cluster":
            cid = r.remove_cluster
            return AuditSubject("cluster_removed", f"cluster:{cid}", cluster_id=cid)
        case (
            "add_http_frontend"
            | "remove_http_frontend"
            | "add_https_frontend"
            | ("remove_https_frontend")
        ):
            front = getattr(r, variant)
            proto = "https" if "https" in variant else "http"
            action = "added" if variant.startswith("add") else "removed"
            return AuditSubject(
                f"{proto}_frontend_{action}",
                f"frontend:{proto}:{front.hostname}:{_address(front.address)}",
                cluster_id=front.cluster_id if front.HasField("cluster_id") else None,
            )
        case (
            "add_tcp_frontend"
            | "remove_tcp_frontend"
            | "add_udp_frontend"
            | ("remove_udp_frontend")
        ):
            front = getattr(r, variant)
            proto = "udp" if "udp" in variant else "tcp"
            action = "added" if variant.startswith("add") else "removed"
            return AuditSubject(
                f"{proto}_frontend_{action}",
                f"frontend:{proto}:{front.cluster_id}:{_address(front.address)}",
                cluster_id=front.cluster_id,
            )
        case "add_backend":
            b = r.add_backend
            return AuditSubject(
                "backend_added",
                f"backend:{b.cluster_id}/{b.backend_id}",
                cluster_id=b.cluster_id,
                backend_id=b.backend_id,
            )
        case "remove_backend":
            rb = r.remove_backend
            return AuditSubject(
                "backend_removed",
                f"backend:{rb.cluster_id}/{rb.backend_id}",
                cluster_id=rb.cluster_id,
                backend_id=rb.backend_id,
            )
        case "add_certificate":
            return AuditSubject(
                "certificate_added", f"certificate:{_address(r.add_certificate.address)}"
            )
        case "remove_certificate":
            rc = r.remove_certificate
            return AuditSubject(
                "certificate_removed", f"certificate:{_address(rc.address)}:{rc.fingerprint}"
            )
        case "replace_certificate":
            rp = r.replace_certificate
            new = certificate_fingerprint_prefix(rp.new_certificate.certificate)
            return AuditSubject(
                "certificate_replaced",
                f"certificate:{_address(rp.address)}:old={rp.old_fingerprint}:new={new}",
            )
        case "activate_listener" | "deactivate_listener" | "remove_listener":
            lst = getattr(r, variant)
            verb = {
                "activate_listener": "listener_activated",
                "deactivate_listener": "listener_deactivated",
                "remove_listener": "listener_removed",
            }[variant]
            kind = _LISTENER_DEBUG.get(lst.proxy, str(lst.proxy))
            return AuditSubject(verb, f"listener:{kind}:{_address(lst.address)}")
        case "add_http_listener" | "add_https_listener" | "add_tcp_listener" | ("add_udp_listener"):
            proto = variant.removeprefix("add_").removesuffix("_listener")
            addr = _address(getattr(r, variant).address)
            return AuditSubject(f"{proto}_listener_added", f"listener:{proto}:{addr}")
        case (
            "update_http_listener"
            | "update_https_listener"
            | "update_tcp_listener"
            | ("update_udp_listener")
        ):
            proto = variant.removeprefix("update_").removesuffix("_listener")
            addr = _address(getattr(r, variant).address)
            diff = _listener_patch_diff(r, state)
            return AuditSubject(f"{proto}_listener_updated", f"listener:{proto}:{addr}:{diff}")
        case "save_state":
            return AuditSubject("state_saved", f"file:{r.save_state}")
        case "load_state":
            return AuditSubject("state_loaded", f"file:{r.load_state}")
        case "reload_configuration":
            path = r.reload_configuration or config_path or ""
            return AuditSubject("configuration_reloaded", f"config:{path}")
        case "upgrade_main":
            exe = executable if executable is not None else sys.executable
            gen = "-" if boot_generation is None else str(boot_generation)
            return AuditSubject("main_upgraded", f"executable:{exe} boot_generation:{gen}")
        case "upgrade_worker":
            return AuditSubject("worker_upgraded", f"worker:{r.upgrade_worker}")
        case "subscribe_events":
            cid_text = "-" if client_id is None else str(client_id)
            return AuditSubject("events_subscribed", f"subscribe:client_id:{cid_text}")
        case "soft_stop":
            return AuditSubject("sozu_stop_requested", "stop:soft")
        case "hard_stop":
            return AuditSubject("sozu_stop_requested", "stop:hard")
        case "Logging":
            return AuditSubject("logging_level_changed", f"logging:{r.Logging}")
        case "configure_metrics":
            value = _METRICS_DEBUG.get(r.configure_metrics, str(r.configure_metrics))
            return AuditSubject("metrics_configured", f"metrics:{value}")
        case "set_metric_detail":
            md = r.set_metric_detail
            if md.HasField("clear") and md.clear:
                level = "clear"
            elif md.HasField("detail"):
                level = _DETAIL_DEBUG.get(md.detail, "<invalid>")
            else:
                level = "<invalid>"
            return AuditSubject("metric_detail_changed", f"metric_detail:{level}")
        case "set_health_check":
            cid = r.set_health_check.cluster_id
            return AuditSubject("health_check_set", f"health_check:{cid}", cluster_id=cid)
        case "remove_health_check":
            cid = r.remove_health_check
            return AuditSubject("health_check_removed", f"health_check:{cid}", cluster_id=cid)
        case "set_max_connections_per_ip":
            return AuditSubject(
                "max_connections_per_ip_set",
                f"max_connections_per_ip:{r.set_max_connections_per_ip}",
            )
    # Queries, and requests that change nothing (launch_worker, return_listen_sockets).
    return None


def refusal_subject(request: Request, state: ConfigState | None = None) -> AuditSubject:
    """The subject to audit when a request is refused before it is handled.

    That is `describe()`'s subject when the request is audited, else (a query, a request
    with no variant) `request_refused` with target `request:<variant>`, so every refusal
    (uid not allowed, undecodable input) still leaves one audit line.
    """
    subject = describe(request, state)
    if subject is not None:
        return subject
    variant = request.WhichOneof("request_type") or "empty"
    return AuditSubject("request_refused", f"request:{variant}")


def unauthorized_message(uid: int | None) -> str:
    """Sōzu's answer to a client whose uid is not in `command_allowed_uids`."""
    shown = UNKNOWN if uid is None else str(uid)
    return f"unauthorized: actor UID {shown} not in command_allowed_uids"


def unauthorized_error_code(peer: PeerCredentials) -> str:
    """`peer_cred_unavailable` when SO_PEERCRED gave nothing, else `other`.

    Sōzu only logs these refusals; we audit them. No code of Sōzu's taxonomy names an
    allow-list refusal, so it is `other`, with the refusal message as reason.
    """
    return ERROR_PEER_CRED_UNAVAILABLE if peer.uid is None else ERROR_OTHER


def state_saved_target(path: str, messages: int | None = None) -> str:
    """Sōzu's `state_saved` target: `file:<path>`, plus ` messages:<n>` once written."""
    return f"file:{path}" if messages is None else f"file:{path} messages:{messages}"


def state_loaded_target(path: str, ok: int | None = None, errors: int | None = None) -> str:
    """Sōzu's `state_loaded` target: `file:<path>`, plus ` ok:<n> errors:<n>` when done."""
    if ok is None or errors is None:
        return f"file:{path}"
    return f"file:{path} ok:{ok} errors:{errors}"


def invalid_request_subject(target: str) -> AuditSubject:
    """Subject for input that is not a usable Request (`frame:<kind>`, `request:empty`)."""
    return AuditSubject("invalid_request", target)


# --------------------------------------------------------------------------------------
# Rendering

_PALETTE_ON = ("\x1b[1;97m", "\x1b[0m", "\x1b[37m", "\x1b[90m", "\x1b[97m")
_PALETTE_OFF = ("", "", "", "", "")


@dataclass(frozen=True)
class AuditRecord:
    """Everything one audit line says, before rendering (values not yet sanitised)."""

    ts: str
    boot_generation: int
    client: ClientContext | None
    subject: AuditSubject
    request_ulid: str
    result: str
    error_code: str | None = None
    reason: str | None = None
    elapsed_ms: int | None = None
    fanout: FanOut | None = None
    request_sha256: str | None = None
    sozu_version: str = SOZU_VERSION
    build_git_sha: str = UNKNOWN


def _slot(value: str) -> str:
    """A bracket slot: sanitised, and without the space or `]` that would shift the slots."""
    return _SLOT_UNSAFE.sub("?", sanitize(value)) or "?"


def _opt(value: object) -> str:
    if value is None:
        return UNKNOWN
    return sanitize(str(value))


def render_text(record: AuditRecord, *, colored: bool = False) -> str:
    """Sōzu's audit line: `[session request cluster|- backend|-]<TAB>AUDIT<TAB>Command(...)`."""
    open_, reset, grey, gray, white = _PALETTE_ON if colored else _PALETTE_OFF
    client = record.client
    peer = client.peer if client is not None else PeerCredentials.unavailable()
    subject = record.subject
    session = _slot(client.session_ulid) if client is not None else "-"
    cluster = _slot(subject.cluster_id) if subject.cluster_id is not None else "-"
    backend = _slot(subject.backend_id) if subject.backend_id is not None else "-"
    context = f"[{session} {_slot(record.request_ulid)} {cluster} {backend}]"

    fields: list[tuple[str, str]] = [
        ("ts", record.ts),
        ("verb", sanitize(subject.verb)),
        ("actor_uid", _opt(peer.uid)),
        ("actor_gid", _opt(peer.gid)),
        ("actor_pid", _opt(peer.pid)),
        ("actor_role", actor_role(peer.uid)),
        ("actor_user", _opt(peer.user)),
        ("actor_comm", _opt(peer.comm)),
        ("client_id", str(client.client_id) if client is not None else UNKNOWN),
        ("connect_ts", sanitize(client.connect_ts) if client is not None else UNKNOWN),
        ("socket", sanitize(client.socket_path) if client is not None else UNKNOWN),
        ("target", sanitize(subject.target)),
        ("result", sanitize(record.result)),
    ]
    if record.error_code is not None:
        fields.append(("error_code", sanitize(record.error_code)))
    if record.reason is not None:
        fields.append(("reason", truncate_reason(record.reason)))
    if record.elapsed_ms is not None:
        fields.append(("elapsed_ms", str(record.elapsed_ms)))
    if record.fanout is not None:
        f = record.fanout
        fields.append(("fanout", sanitize(f.status)))
        fields.append(("workers", f"{f.workers_ok}/{f.workers_err}/{f.workers_expected}"))
    if record.request_sha256 is not None:
        fields.append(("request_sha256", sanitize(record.request_sha256)))
    fields.append(("sozu_version", sanitize(record.sozu_version)))
    fields.append(("build_git_sha", sanitize(record.build_git_sha)))
    fields.append(("boot_generation", str(record.boot_generation)))

    body = ", ".join(f"{gray}{key}{reset}={white}{value}{reset}" for key, value in fields)
    return f"{gray}{context}{reset}\t{open_}AUDIT{reset}\t{grey}Command{reset}({body})"


def record_to_json(record: AuditRecord) -> dict[str, Any]:
    """The JSON sink's object: Sōzu's schema, every key present (None when unknown)."""
    client = record.client
    peer = client.peer if client is not None else PeerCredentials.unavailable()
    subject = record.subject

    def clean(value: str | None) -> str | None:
        return None if value is None else sanitize(value)

    fanout: dict[str, Any] | None = None
    if record.fanout is not None:
        fanout = {
            "status": sanitize(record.fanout.status),
            "workers_ok": record.fanout.workers_ok,
            "workers_err": record.fanout.workers_err,
            "workers_expected": record.fanout.workers_expected,
        }
    return {
        "ts": record.ts,
        "boot_generation": record.boot_generation,
        "session_ulid": clean(client.session_ulid) if client is not None else None,
        "request_ulid": sanitize(record.request_ulid),
        "actor": {
            "uid": peer.uid,
            "gid": peer.gid,
            "pid": peer.pid,
            "user": clean(peer.account),
            "comm": clean(peer.comm),
            "role": actor_role(peer.uid),
        },
        "client_id": client.client_id if client is not None else None,
        "connect_ts": clean(client.connect_ts) if client is not None else None,
        "socket": clean(client.socket_path) if client is not None else None,
        "verb": sanitize(subject.verb),
        "target": sanitize(subject.target),
        "result": sanitize(record.result),
        "cluster_id": clean(subject.cluster_id),
        "backend_id": clean(subject.backend_id),
        "sozu_version": sanitize(record.sozu_version),
        "build_git_sha": sanitize(record.build_git_sha),
        "extras": {
            "error_code": clean(record.error_code),
            "reason": None if record.reason is None else truncate_reason(record.reason),
            "elapsed_ms": record.elapsed_ms,
            "fanout": fanout,
            "request_sha256": clean(record.request_sha256),
        },
    }


def render_json(record: AuditRecord) -> str:
    """One compact JSON line (no newline), keys sorted as Sōzu's serializer writes them."""
    return json.dumps(
        record_to_json(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


# --------------------------------------------------------------------------------------
# Sinks

_FILE_MODE = 0o640


class _AppendSink:
    """One append-only file; failures are warnings, never exceptions."""

    def __init__(self, path: str, label: str) -> None:
        self.path = path.removeprefix("file://")
        self.label = label
        self._fd: int | None = None
        self._closed = False
        self._open()

    def _open(self) -> None:
        log = get_logger("sozu.audit")
        try:
            fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE
            )
        except OSError as error:
            log.warning("audit_sink_open_failed", sink=self.label, path=self.path, error=str(error))
            self._fd = None
            return
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                pass  # a FIFO or /dev/null is the operator's choice
            elif stat.S_IMODE(info.st_mode) != _FILE_MODE:
                if stat.S_IMODE(info.st_mode) & ~_FILE_MODE:
                    log.warning(
                        "audit_sink_mode_narrowed",
                        sink=self.label,
                        path=self.path,
                        mode=oct(stat.S_IMODE(info.st_mode)),
                    )
                os.fchmod(fd, _FILE_MODE)
        except OSError as error:
            log.warning(
                "audit_sink_chmod_failed", sink=self.label, path=self.path, error=str(error)
            )
        self._fd = fd

    def write_line(self, line: str) -> None:
        if self._closed:
            return
        if self._fd is None:
            self._open()
            if self._fd is None:
                return
        data = (line + "\n").encode("utf-8", errors="replace")
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as error:
            get_logger("sozu.audit").warning(
                "audit_sink_write_failed", sink=self.label, path=self.path, error=str(error)
            )

    def reopen(self) -> None:
        self.close()
        self._closed = False
        self._open()

    def close(self) -> None:
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class AuditLog:
    """The supervisor's audit trail: renders each record once and writes it to every sink.

    `boot_generation` is public and mutable: a main upgrade bumps it before its own audit
    line. Thread-safe (one lock around rendering and writing), although the supervisor calls
    it from its event loop only.
    """

    def __init__(
        self,
        *,
        text_path: str | None,
        json_path: str | None,
        boot_generation: int,
        sozu_version: str,
        build_git_sha: str = UNKNOWN,
        colored: bool = False,
    ) -> None:
        self.boot_generation = boot_generation
        self.sozu_version = sozu_version
        self.build_git_sha = build_git_sha
        self.colored = colored
        self._lock = threading.Lock()
        self._text = _AppendSink(text_path, "audit_logs_target") if text_path else None
        self._json = _AppendSink(json_path, "audit_logs_json_target") if json_path else None

    def record(
        self,
        client: ClientContext | None,
        subject: AuditSubject,
        *,
        request_ulid: str,
        result: str,
        error_code: str | None = None,
        reason: str | None = None,
        elapsed_ms: int | None = None,
        fanout: FanOut | None = None,
        request_sha256: str | None = None,
    ) -> None:
        """Write one audit record to the main log, the text file and the JSON file.

        Never raises: a failing sink logs a warning, a rendering bug logs an error.
        """
        try:
            entry = AuditRecord(
                ts=rfc3339_utc(),
                boot_generation=self.boot_generation,
                client=client,
                subject=subject,
                request_ulid=request_ulid,
                result=result,
                error_code=error_code,
                reason=reason,
                elapsed_ms=elapsed_ms,
                fanout=fanout,
                request_sha256=request_sha256,
                sozu_version=self.sozu_version,
                build_git_sha=self.build_git_sha,
            )
            line = render_text(entry, colored=self.colored)
            with self._lock:
                get_logger("sozu.audit").info(line)
                if self._text is not None:
                    self._text.write_line(strip_ansi(line))
                if self._json is not None:
                    self._json.write_line(render_json(entry))
        except Exception as error:  # auditing must never break a change
            with contextlib.suppress(Exception):
                get_logger("sozu.audit").error("audit_record_failed", error=repr(error))

    def reopen(self) -> None:
        """Open both files again by path (after logrotate renamed them; SIGHUP)."""
        with self._lock:
            for sink in (self._text, self._json):
                if sink is not None:
                    sink.reopen()

    def close(self) -> None:
        """Close both files; later records go to the main log only, until `reopen()`."""
        with self._lock:
            for sink in (self._text, self._json):
                if sink is not None:
                    sink.close()
