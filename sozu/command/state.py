"""ConfigState: what the proxy is configured to do, changed only by applying Requests.

The state holds listeners (HTTP, HTTPS, TCP, UDP), clusters, frontends, backends and
certificates. Every process keeps one: the supervisor checks each client Request against its
own copy before fanning it out, and a worker rebuilds its copy from the list of Requests that
`requests()` produces. Acceptance rules follow Sōzu's `ConfigState::dispatch` (`AddCluster` and
`AddBackend` are upserts, a duplicate listener or frontend is refused, removing what is absent
is refused), with one strengthening: applying is atomic, a refused Request changes nothing.

The module is pure: no IO, no clock, no event loop. Messages are stored as canonical copies
(every proto2 `required` field explicitly set, addresses rebuilt from their parsed form), so
that message equality means what it means for Sōzu's Rust types, and a state that went
through a state file compares equal to the original.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from collections.abc import Iterable
from typing import TypeAlias, TypeVar, cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from sozu.command import certificate
from sozu.command.errors import SozuError
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    CertificateAndKey,
    CertificatesWithFingerprints,
    Cluster,
    ClusterHashes,
    ClusterInformation,
    ClusterInformations,
    CustomHttpAnswers,
    DeactivateListener,
    FrontendFilters,
    HealthCheckConfig,
    HealthChecksList,
    HttpListenerConfig,
    HttpsListenerConfig,
    InitialState,
    IpAddress,
    ListedFrontends,
    ListenersList,
    ListenerType,
    LoadBalancingAlgorithms,
    QueryCertificatesFilters,
    RemoveBackend,
    RemoveCertificate,
    RemoveListener,
    ReplaceCertificate,
    Request,
    RequestHttpFrontend,
    RequestTcpFrontend,
    RequestUdpFrontend,
    SetHealthCheck,
    SocketAddress,
    TcpListenerConfig,
    UdpListenerConfig,
    Uint128,
    UpdateHttpListenerConfig,
    UpdateHttpsListenerConfig,
    UpdateTcpListenerConfig,
    UpdateUdpListenerConfig,
    WorkerRequest,
)

AddressKey = tuple[int, int, int]
"""A parsed socket address: (4 or 6, IP as an integer, port); sorts as Sōzu's `SocketAddr`."""

ListenerConfig = HttpListenerConfig | HttpsListenerConfig | TcpListenerConfig | UdpListenerConfig
ListenerPatch = (
    UpdateHttpListenerConfig
    | UpdateHttpsListenerConfig
    | UpdateTcpListenerConfig
    | UpdateUdpListenerConfig
)
_Kind: TypeAlias = ListenerType.ValueType
_M = TypeVar("_M", bound=Message)
_StreamFront = TypeVar("_StreamFront", RequestTcpFrontend, RequestUdpFrontend)

# ListenerType values, also the index into the per-kind tables below.
HTTP, HTTPS, TCP, UDP = ListenerType.HTTP, ListenerType.HTTPS, ListenerType.TCP, ListenerType.UDP
_LISTENER_KINDS = (HTTP, HTTPS, TCP, UDP)
_LISTENER_NAMES = ("HTTP", "HTTPS", "TCP", "UDP")
_ADD_LISTENER_FIELDS = (
    "add_http_listener",
    "add_https_listener",
    "add_tcp_listener",
    "add_udp_listener",
)
_MAX_PORT = 65535
_LOW_64 = (1 << 64) - 1

# Requests that Sōzu's dispatch accepts without touching the state (runtime or worker-only).
_IGNORED_REQUESTS = frozenset(
    {
        "Logging",
        "count_requests",
        "status",
        "soft_stop",
        "hard_stop",
        "query_certificates_from_workers",
        "query_cluster_by_id",
        "query_clusters_by_domain",
        "query_metrics",
        "query_clusters_hashes",
        "configure_metrics",
        "set_metric_detail",
        "return_listen_sockets",
        "set_max_connections_per_ip",
        "query_max_connections_per_ip",
    }
)
_H2_AT_LEAST_ONE = (
    "h2_max_rst_stream_per_window",
    "h2_max_ping_per_window",
    "h2_max_settings_per_window",
    "h2_max_empty_data_per_window",
    "h2_max_continuation_frames",
    "h2_max_glitch_count",
    "h2_max_window_update_stream0_per_window",
    "h2_max_concurrent_streams",
    "h2_max_rst_stream_lifetime",
    "h2_max_rst_stream_abusive_lifetime",
    "h2_max_rst_stream_emitted_lifetime",
    "h2_max_header_list_size",
    "h2_max_header_table_size",
    "h2_max_header_fields",
)
_ALPN_VALUES = frozenset({"h2", "http/1.1"})
_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
)
_PATH_MARKERS = ("P", "R", "=")  # by PathRuleKind value


class Applied(enum.Enum):
    """What applying an accepted Request did to the state."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"  # a state request that found the state already as asked
    IGNORED = "ignored"  # a query or runtime request: accepted, never stored (as Sōzu)


_UDP_ONLY_ALGORITHMS = (LoadBalancingAlgorithms.HRW, LoadBalancingAlgorithms.MAGLEV)


def udp_only_message(algorithm: str) -> str:
    """Why an HTTP or TCP cluster cannot use a flow-hashing algorithm (shared with the config)."""
    return (
        f"{algorithm} load balancing is only for UDP clusters, which sozu-py does not serve yet; "
        "use ROUND_ROBIN, RANDOM, LEAST_LOADED or POWER_OF_TWO"
    )


class StateErrorKind(enum.Enum):
    """Why a Request was refused."""

    EMPTY_REQUEST = "empty_request"
    UNDISPATCHABLE = "undispatchable"  # handled by the supervisor itself, never by a state
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    INVALID_VALUE = "invalid_value"
    CERTIFICATE = "certificate"


class StateError(SozuError):
    """A Request the state refuses; the state is left exactly as it was."""

    def __init__(self, kind: StateErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --- addresses -----------------------------------------------------------------------------


def address_key(address: SocketAddress) -> AddressKey:
    """Parse a protobuf SocketAddress, refusing a missing IP or a port over 65535."""
    if address.port > _MAX_PORT:
        raise StateError(StateErrorKind.INVALID_VALUE, f"port {address.port} is out of range")
    match address.ip.WhichOneof("inner"):
        case "v4":
            return (4, address.ip.v4, address.port)
        case "v6":
            return (6, (address.ip.v6.high << 64) | address.ip.v6.low, address.port)
    raise StateError(StateErrorKind.INVALID_VALUE, "socket address without an IP")


def address_from_key(key: AddressKey) -> SocketAddress:
    """The canonical SocketAddress of a parsed address."""
    family, ip, port = key
    if family == 4:
        return SocketAddress(ip=IpAddress(v4=ip), port=port)
    return SocketAddress(ip=IpAddress(v6=Uint128(low=ip & _LOW_64, high=ip >> 64)), port=port)


def address_key_text(key: AddressKey) -> str:
    """`1.2.3.4:80` or `[::1]:80`, formatted as Sōzu (Rust) prints a socket address."""
    family, ip, port = key
    if family == 4:
        return f"{ipaddress.IPv4Address(ip)}:{port}"
    if ip >> 32 == 0xFFFF:
        text = f"::ffff:{ipaddress.IPv4Address(ip & 0xFFFFFFFF)}"
    else:
        text = str(ipaddress.IPv6Address(ip))
    return f"[{text}]:{port}"


def address_text(address: SocketAddress) -> str:
    """Text form of a protobuf SocketAddress (raises StateError when it is invalid)."""
    return address_key_text(address_key(address))


def frontend_key(front: RequestHttpFrontend) -> str:
    """The route key of an HTTP(S) frontend: `address;hostname;P/path[;METHOD]` (as Sōzu)."""
    base = (
        f"{address_text(front.address)};{front.hostname};"
        f"{_PATH_MARKERS[front.path.kind]}{front.path.value}"
    )
    return f"{base};{front.method}" if front.HasField("method") else base


# --- canonical messages --------------------------------------------------------------------


def canonical(message: _M) -> _M:
    """A copy of `message` with every proto2 required field explicitly set, recursively.

    Sōzu (prost) has no notion of an unset required field; this makes Python's message
    equality agree with it, and with a message that went through a state file.
    """
    copy = type(message)()
    copy.CopyFrom(message)
    _set_required(copy)
    return copy


def _set_required(message: Message) -> None:
    for field in message.DESCRIPTOR.fields:
        name = field.name
        if field.is_repeated:
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            entry = field.message_type
            assert entry is not None, field.full_name
            if entry.GetOptions().map_entry:
                value_field = entry.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for value in getattr(message, name).values():
                        _set_required(value)
            else:
                for item in getattr(message, name):
                    _set_required(item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_required:
                getattr(message, name).SetInParent()
            if message.HasField(name):
                _set_required(getattr(message, name))
        elif field.is_required and not message.HasField(name):
            setattr(message, name, getattr(message, name))


def _has(message: Message, name: str) -> bool:
    return message.HasField(name)


def _copy(message: _M) -> _M:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _request(field: str, value: Message | str) -> Request:
    request = Request()
    if isinstance(value, str):
        setattr(request, field, value)
    else:
        getattr(request, field).CopyFrom(value)
    return request


def _optional_key(message: Message, name: str) -> tuple[int] | tuple[int, object]:
    return (1, getattr(message, name)) if message.HasField(name) else (0,)


def _backend_order(backend: AddBackend) -> tuple[object, ...]:
    weight = (
        (1, backend.load_balancing_parameters.weight)
        if backend.HasField("load_balancing_parameters")
        else (0,)
    )
    return (
        backend.backend_id,
        _optional_key(backend, "sticky_id"),
        weight,
        _optional_key(backend, "backup"),
        address_key(backend.address),
    )


def _stream_front_order(front: RequestTcpFrontend | RequestUdpFrontend) -> tuple[object, ...]:
    return (address_key(front.address), tuple(sorted(front.tags.items())))


# --- validation ----------------------------------------------------------------------------


def is_header_name(text: str) -> bool:
    """True for a valid HTTP field name (an RFC 9110 token)."""
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def _invalid(message: str) -> StateError:
    return StateError(StateErrorKind.INVALID_VALUE, message)


def check_health_check(config: HealthCheckConfig) -> None:
    """Refuse (StateError) a health check with a zero period or threshold, or a bad URI."""
    for name in ("interval", "timeout", "healthy_threshold", "unhealthy_threshold"):
        if getattr(config, name) == 0:
            raise _invalid(f"health check {name} must be > 0")
    if not config.uri.startswith("/"):
        raise _invalid("health check URI must start with '/'")
    if any(ord(c) < 0x20 and c != "\t" for c in config.uri):
        raise _invalid("health check URI must not contain CR, LF, NUL or other control bytes")


def _check_listener_patch(patch: ListenerPatch) -> None:
    if isinstance(patch, UpdateHttpListenerConfig | UpdateHttpsListenerConfig):
        for name in _H2_AT_LEAST_ONE:
            if _has(patch, name) and getattr(patch, name) == 0:
                raise _invalid(f"{name} must be >= 1")
        if patch.HasField("h2_stream_shrink_ratio") and patch.h2_stream_shrink_ratio < 2:
            raise _invalid("h2_stream_shrink_ratio must be >= 2")
        if patch.HasField("sozu_id_header"):
            header = patch.sozu_id_header
            if not is_header_name(header):
                raise _invalid(f"sozu_id_header {header!r} is not a valid HTTP header name")
    if isinstance(patch, UpdateHttpsListenerConfig):
        if patch.HasField("alpn_protocols"):
            for value in patch.alpn_protocols.values:
                if value not in _ALPN_VALUES:
                    raise _invalid(f"ALPN protocol {value!r} is not one of h2, http/1.1")
        if patch.HasField("hsts") and not patch.hsts.HasField("enabled"):
            raise _invalid("an HSTS update must say whether HSTS is enabled")


def _patched_listener(current: _M, patch: ListenerPatch) -> _M:
    updated = _copy(current)
    for field, value in patch.ListFields():
        name = field.name
        if name == "address":
            continue
        if name == "http_answers":
            answers = cast(CustomHttpAnswers, getattr(updated, name))
            answers.SetInParent()
            for answer_field, answer in value.ListFields():
                setattr(answers, answer_field.name, answer)
        elif name == "alpn_protocols":
            target = getattr(updated, name)
            del target[:]
            target.extend(value.values)
        elif name == "answers":
            for code, body in value.items():
                if body:
                    getattr(updated, name)[code] = body
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(updated, name).CopyFrom(value)
        else:
            setattr(updated, name, value)
    return canonical(updated)


def _resolved_certificate(cert: CertificateAndKey) -> tuple[str, CertificateAndKey]:
    """Fingerprint (hex) and a canonical copy whose `names` are filled from the certificate."""
    try:
        fingerprint = certificate.fingerprint_hex(cert.certificate)
        resolved = canonical(cert)
        if not resolved.names:
            resolved.names.extend(certificate.names(cert.certificate))
    except (certificate.CertificateError, ValueError, TypeError) as error:
        raise StateError(StateErrorKind.CERTIFICATE, f"invalid certificate: {error}") from None
    return fingerprint, resolved


def _fingerprint_from_text(text: str) -> str:
    try:
        return certificate.decode_fingerprint(text).hex()
    except certificate.CertificateError as error:
        raise StateError(StateErrorKind.CERTIFICATE, str(error)) from None


# --- the state -----------------------------------------------------------------------------


class ConfigState:
    """Listeners, clusters, frontends, backends and certificates; see the module docstring."""

    __slots__ = (
        "_backends",
        "_certificates",
        "_clusters",
        "_http_fronts",
        "_https_fronts",
        "_listeners",
        "_tcp_fronts",
        "_udp_fronts",
    )

    def __init__(self) -> None:
        self._listeners: tuple[dict[AddressKey, ListenerConfig], ...] = ({}, {}, {}, {})
        self._clusters: dict[str, Cluster] = {}
        self._http_fronts: dict[str, RequestHttpFrontend] = {}
        self._https_fronts: dict[str, RequestHttpFrontend] = {}
        # Buckets by cluster id, kept sorted and never empty.
        self._tcp_fronts: dict[str, list[RequestTcpFrontend]] = {}
        self._udp_fronts: dict[str, list[RequestUdpFrontend]] = {}
        self._backends: dict[str, list[AddBackend]] = {}
        # Address -> fingerprint (hex) -> certificate; inner maps never empty.
        self._certificates: dict[AddressKey, dict[str, CertificateAndKey]] = {}

    @classmethod
    def from_requests(cls, requests: Iterable[Request]) -> ConfigState:
        """A new state with `requests` applied in order; raises StateError on the first refusal."""
        state = cls()
        for request in requests:
            state.apply(request)
        return state

    def copy(self) -> ConfigState:
        """An independent copy."""
        other = ConfigState()
        other._listeners = tuple(
            {key: _copy(value) for key, value in table.items()} for table in self._listeners
        )
        other._clusters = {key: _copy(value) for key, value in self._clusters.items()}
        other._http_fronts = {key: _copy(value) for key, value in self._http_fronts.items()}
        other._https_fronts = {key: _copy(value) for key, value in self._https_fronts.items()}
        other._tcp_fronts = {k: [_copy(f) for f in v] for k, v in self._tcp_fronts.items()}
        other._udp_fronts = {k: [_copy(f) for f in v] for k, v in self._udp_fronts.items()}
        other._backends = {k: [_copy(b) for b in v] for k, v in self._backends.items()}
        other._certificates = {
            key: {fp: _copy(cert) for fp, cert in certs.items()}
            for key, certs in self._certificates.items()
        }
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigState):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        listeners = sum(len(table) for table in self._listeners)
        return (
            f"<ConfigState listeners={listeners} clusters={len(self._clusters)} "
            f"frontends={self.count_frontends()} backends={self.count_backends()} "
            f"certificates={sum(len(c) for c in self._certificates.values())}>"
        )

    # --- applying requests -----------------------------------------------------------------

    def apply(self, request: Request) -> Applied:
        """Apply one Request; raise StateError (leaving the state untouched) if it is refused."""
        kind = request.WhichOneof("request_type")
        if kind is None:
            raise StateError(StateErrorKind.EMPTY_REQUEST, "the request is empty")
        if kind in _IGNORED_REQUESTS:
            return Applied.IGNORED
        match kind:
            case "add_cluster":
                return self._add_cluster(request.add_cluster)
            case "remove_cluster":
                return self._remove_cluster(request.remove_cluster)
            case "set_health_check":
                return self._set_health_check(request.set_health_check)
            case "remove_health_check":
                return self._remove_health_check(request.remove_health_check)
            case "add_http_listener":
                return self._add_listener(HTTP, request.add_http_listener)
            case "add_https_listener":
                return self._add_listener(HTTPS, request.add_https_listener)
            case "add_tcp_listener":
                return self._add_listener(TCP, request.add_tcp_listener)
            case "add_udp_listener":
                return self._add_listener(UDP, request.add_udp_listener)
            case "update_http_listener":
                return self._update_listener(HTTP, request.update_http_listener)
            case "update_https_listener":
                return self._update_listener(HTTPS, request.update_https_listener)
            case "update_tcp_listener":
                return self._update_listener(TCP, request.update_tcp_listener)
            case "update_udp_listener":
                return self._update_listener(UDP, request.update_udp_listener)
            case "remove_listener":
                return self._remove_listener(request.remove_listener)
            case "activate_listener":
                activate = request.activate_listener
                return self._set_listener_active(activate.proxy, activate.address, True)
            case "deactivate_listener":
                deactivate = request.deactivate_listener
                return self._set_listener_active(deactivate.proxy, deactivate.address, False)
            case "add_http_frontend":
                return self._add_http_frontend(self._http_fronts, request.add_http_frontend)
            case "remove_http_frontend":
                http_front = request.remove_http_frontend
                return self._remove_http_frontend(self._http_fronts, http_front, "HTTP")
            case "add_https_frontend":
                return self._add_http_frontend(self._https_fronts, request.add_https_frontend)
            case "remove_https_frontend":
                https_front = request.remove_https_frontend
                return self._remove_http_frontend(self._https_fronts, https_front, "HTTPS")
            case "add_tcp_frontend":
                return self._add_stream_frontend(self._tcp_fronts, request.add_tcp_frontend)
            case "remove_tcp_frontend":
                tcp_front = request.remove_tcp_frontend
                return self._remove_stream_frontend(self._tcp_fronts, tcp_front, "TCP")
            case "add_udp_frontend":
                return self._add_stream_frontend(self._udp_fronts, request.add_udp_frontend)
            case "remove_udp_frontend":
                udp_front = request.remove_udp_frontend
                return self._remove_stream_frontend(self._udp_fronts, udp_front, "UDP")
            case "add_certificate":
                return self._add_certificate(request.add_certificate)
            case "remove_certificate":
                return self._remove_certificate(request.remove_certificate)
            case "replace_certificate":
                return self._replace_certificate(request.replace_certificate)
            case "add_backend":
                return self._add_backend(request.add_backend)
            case "remove_backend":
                return self._remove_backend(request.remove_backend)
        raise StateError(
            StateErrorKind.UNDISPATCHABLE, f"a {kind} request is not a change of the state"
        )

    def _add_cluster(self, cluster: Cluster) -> Applied:
        if cluster.load_balancing in _UDP_ONLY_ALGORITHMS and not cluster.HasField("udp"):
            name = LoadBalancingAlgorithms.Name(cluster.load_balancing)
            raise StateError(StateErrorKind.INVALID_VALUE, udp_only_message(name))
        if cluster.HasField("health_check"):
            check_health_check(cluster.health_check)
        stored = canonical(cluster)
        if self._clusters.get(stored.cluster_id) == stored:
            return Applied.UNCHANGED
        self._clusters[stored.cluster_id] = stored
        return Applied.CHANGED

    def _cluster_or_raise(self, cluster_id: str) -> Cluster:
        cluster = self._clusters.get(cluster_id)
        if cluster is None:
            raise StateError(StateErrorKind.NOT_FOUND, f"cluster {cluster_id!r} not found")
        return cluster

    def _remove_cluster(self, cluster_id: str) -> Applied:
        self._cluster_or_raise(cluster_id)
        del self._clusters[cluster_id]
        return Applied.CHANGED

    def _set_health_check(self, request: SetHealthCheck) -> Applied:
        check_health_check(request.config)
        cluster = self._cluster_or_raise(request.cluster_id)
        config = canonical(request.config)
        if cluster.HasField("health_check") and cluster.health_check == config:
            return Applied.UNCHANGED
        cluster.health_check.CopyFrom(config)
        return Applied.CHANGED

    def _remove_health_check(self, cluster_id: str) -> Applied:
        cluster = self._cluster_or_raise(cluster_id)
        if not cluster.HasField("health_check"):
            return Applied.UNCHANGED
        cluster.ClearField("health_check")
        return Applied.CHANGED

    def _add_listener(self, kind: _Kind, listener: ListenerConfig) -> Applied:
        key = address_key(listener.address)
        table = self._listeners[kind]
        if key in table:
            raise StateError(
                StateErrorKind.EXISTS,
                f"{_LISTENER_NAMES[kind]} listener {address_key_text(key)} already exists",
            )
        stored = canonical(listener)
        stored.address.CopyFrom(address_from_key(key))
        table[key] = stored
        return Applied.CHANGED

    def _listener_or_raise(self, kind: _Kind, key: AddressKey) -> ListenerConfig:
        listener = self._listeners[kind].get(key)
        if listener is None:
            raise StateError(
                StateErrorKind.NOT_FOUND,
                f"no {_LISTENER_NAMES[kind]} listener at {address_key_text(key)}",
            )
        return listener

    def _remove_listener(self, request: RemoveListener) -> Applied:
        key = address_key(request.address)
        self._listener_or_raise(request.proxy, key)
        del self._listeners[request.proxy][key]
        return Applied.CHANGED

    def _set_listener_active(self, kind: _Kind, address: SocketAddress, active: bool) -> Applied:
        listener = self._listener_or_raise(kind, address_key(address))
        if listener.active == active:
            return Applied.UNCHANGED
        listener.active = active
        return Applied.CHANGED

    def _update_listener(self, kind: _Kind, patch: ListenerPatch) -> Applied:
        _check_listener_patch(patch)
        key = address_key(patch.address)
        current = self._listener_or_raise(kind, key)
        updated = _patched_listener(current, patch)
        if updated == current:
            return Applied.UNCHANGED
        self._listeners[kind][key] = updated
        return Applied.CHANGED

    def _add_http_frontend(
        self, table: dict[str, RequestHttpFrontend], front: RequestHttpFrontend
    ) -> Applied:
        key = frontend_key(front)
        if key in table:
            raise StateError(StateErrorKind.EXISTS, f"frontend {key} already exists")
        stored = canonical(front)
        stored.address.CopyFrom(address_from_key(address_key(front.address)))
        table[key] = stored
        return Applied.CHANGED

    def _remove_http_frontend(
        self, table: dict[str, RequestHttpFrontend], front: RequestHttpFrontend, name: str
    ) -> Applied:
        key = frontend_key(front)
        if key not in table:
            raise StateError(StateErrorKind.NOT_FOUND, f"no {name} frontend {key}")
        del table[key]
        return Applied.CHANGED

    def _add_stream_frontend(
        self,
        table: dict[str, list[_StreamFront]],
        front: _StreamFront,
    ) -> Applied:
        stored = canonical(front)
        stored.address.CopyFrom(address_from_key(address_key(front.address)))
        bucket: list[_StreamFront] = table.get(stored.cluster_id, [])
        if stored in bucket:
            raise StateError(
                StateErrorKind.EXISTS,
                f"frontend {address_text(stored.address)} of cluster {stored.cluster_id!r} "
                "already exists",
            )
        updated = list(bucket)
        updated.append(stored)
        updated.sort(key=_stream_front_order)
        table[stored.cluster_id] = updated
        return Applied.CHANGED

    def _remove_stream_frontend(
        self,
        table: dict[str, list[_StreamFront]],
        front: _StreamFront,
        name: str,
    ) -> Applied:
        key = address_key(front.address)
        bucket: list[_StreamFront] = table.get(front.cluster_id, [])
        kept = [f for f in bucket if address_key(f.address) != key]
        if len(kept) == len(bucket):
            raise StateError(
                StateErrorKind.NOT_FOUND,
                f"no {name} frontend at {address_key_text(key)} for cluster {front.cluster_id!r}",
            )
        if kept:
            table[front.cluster_id] = kept
        else:
            del table[front.cluster_id]
        return Applied.CHANGED

    def _add_certificate(self, request: AddCertificate) -> Applied:
        key = address_key(request.address)
        fingerprint, stored = _resolved_certificate(request.certificate)
        certs = self._certificates.setdefault(key, {})
        if fingerprint in certs:
            return Applied.UNCHANGED
        certs[fingerprint] = stored
        return Applied.CHANGED

    def _remove_certificate(self, request: RemoveCertificate) -> Applied:
        fingerprint = _fingerprint_from_text(request.fingerprint)
        key = address_key(request.address)
        certs = self._certificates.get(key)
        if certs is None or fingerprint not in certs:
            return Applied.UNCHANGED
        del certs[fingerprint]
        if not certs:
            del self._certificates[key]
        return Applied.CHANGED

    def _replace_certificate(self, request: ReplaceCertificate) -> Applied:
        old_fingerprint = _fingerprint_from_text(request.old_fingerprint)
        key = address_key(request.address)
        certs = self._certificates.get(key)
        if certs is None:
            raise StateError(
                StateErrorKind.NOT_FOUND, f"no certificate for {address_key_text(key)}"
            )
        fingerprint, stored = _resolved_certificate(request.new_certificate)
        replaced = {fp: cert for fp, cert in certs.items() if fp != old_fingerprint}
        replaced[fingerprint] = stored
        if replaced == certs:
            return Applied.UNCHANGED
        self._certificates[key] = replaced
        return Applied.CHANGED

    def _add_backend(self, request: AddBackend) -> Applied:
        key = address_key(request.address)
        stored = canonical(request)
        stored.address.CopyFrom(address_from_key(key))
        bucket = self._backends.get(stored.cluster_id, [])
        if stored in bucket:
            return Applied.UNCHANGED
        kept = [
            b for b in bucket if b.backend_id != stored.backend_id or address_key(b.address) != key
        ]
        self._backends[stored.cluster_id] = sorted([*kept, stored], key=_backend_order)
        return Applied.CHANGED

    def _remove_backend(self, request: RemoveBackend) -> Applied:
        key = address_key(request.address)
        bucket = self._backends.get(request.cluster_id, [])
        kept = [
            b for b in bucket if b.backend_id != request.backend_id or address_key(b.address) != key
        ]
        if len(kept) == len(bucket):
            raise StateError(
                StateErrorKind.NOT_FOUND,
                f"no backend {request.backend_id!r} at {address_key_text(key)} "
                f"in cluster {request.cluster_id!r}",
            )
        if kept:
            self._backends[request.cluster_id] = kept
        else:
            del self._backends[request.cluster_id]
        return Applied.CHANGED

    # --- rebuilding and diffing ------------------------------------------------------------

    def requests(self) -> list[Request]:
        """The Requests that rebuild this state from nothing, in Sōzu's order.

        Listeners (HTTP, HTTPS, TCP, UDP; each followed by ActivateListener when active),
        clusters, HTTP frontends, certificates, HTTPS frontends, TCP frontends, UDP frontends,
        backends; each kind sorted by its key.
        """
        out: list[Request] = []
        for kind in _LISTENER_KINDS:
            table = self._listeners[kind]
            for key in sorted(table):
                out.append(_request(_ADD_LISTENER_FIELDS[kind], table[key]))
                if table[key].active:
                    out.append(_activate(kind, key))
        out.extend(_request("add_cluster", self._clusters[i]) for i in sorted(self._clusters))
        out.extend(_request("add_http_frontend", f) for _, f in sorted(self._http_fronts.items()))
        for key in sorted(self._certificates):
            certs = self._certificates[key]
            for fingerprint in sorted(certs):
                out.append(_add_certificate_request(key, certs[fingerprint]))
        out.extend(_request("add_https_frontend", f) for _, f in sorted(self._https_fronts.items()))
        for cluster_id in sorted(self._tcp_fronts):
            out.extend(_request("add_tcp_frontend", f) for f in self._tcp_fronts[cluster_id])
        for cluster_id in sorted(self._udp_fronts):
            out.extend(_request("add_udp_frontend", f) for f in self._udp_fronts[cluster_id])
        for cluster_id in sorted(self._backends):
            out.extend(_request("add_backend", b) for b in self._backends[cluster_id])
        return out

    def initial_state(self, prefix: str = "SAVE") -> InitialState:
        """`requests()` as the numbered WorkerRequests a new worker starts from."""
        return InitialState(
            requests=[
                WorkerRequest(id=f"{prefix}-{n}", content=request)
                for n, request in enumerate(self.requests())
            ]
        )

    def diff(self, other: ConfigState) -> list[Request]:
        """The Requests that, applied in order to this state, turn it into `other`.

        Sōzu's order (listeners, clusters, backends, HTTP and HTTPS frontends, TCP and UDP
        frontends, certificates), made exact where Sōzu's is not: a changed active listener
        is deactivated before it is removed and added back, backends are told apart by id and
        address, frontends wiped by a TCP/UDP removal that are still wanted are added back,
        and a certificate whose content changed under the same fingerprint is replaced.
        """
        out: list[Request] = []
        for kind in (TCP, UDP, HTTP, HTTPS):
            mine, theirs = self._listeners[kind], other._listeners[kind]
            for key in sorted(mine.keys() - theirs.keys()):
                if mine[key].active:
                    out.append(_deactivate(kind, key))
                out.append(_remove_listener_request(kind, key))
            for key in sorted(theirs.keys() - mine.keys()):
                out.append(_request(_ADD_LISTENER_FIELDS[kind], theirs[key]))
                if theirs[key].active:
                    out.append(_activate(kind, key))
        for kind in (TCP, UDP, HTTP, HTTPS):
            mine, theirs = self._listeners[kind], other._listeners[kind]
            for key in sorted(mine.keys() & theirs.keys()):
                if mine[key] == theirs[key]:
                    continue
                if mine[key].active:
                    out.append(_deactivate(kind, key))
                out.append(_remove_listener_request(kind, key))
                inactive = _copy(theirs[key])
                inactive.active = False
                out.append(_request(_ADD_LISTENER_FIELDS[kind], inactive))
                if theirs[key].active:
                    out.append(_activate(kind, key))

        for cluster_id in sorted(self._clusters.keys() | other._clusters.keys()):
            wanted = other._clusters.get(cluster_id)
            if wanted is None:
                out.append(_request("remove_cluster", cluster_id))
            elif self._clusters.get(cluster_id) != wanted:
                out.append(_request("add_cluster", wanted))

        my_backends, their_backends = self._backend_index(), other._backend_index()
        for backend_key in sorted(my_backends.keys() | their_backends.keys()):
            old, new = my_backends.get(backend_key), their_backends.get(backend_key)
            if old == new:
                continue
            if old is not None:
                out.append(_remove_backend_request(old))
            if new is not None:
                out.append(_request("add_backend", new))

        for field, mine_fronts, their_fronts in (
            ("http_frontend", self._http_fronts, other._http_fronts),
            ("https_frontend", self._https_fronts, other._https_fronts),
        ):
            for route, front in sorted(mine_fronts.items()):
                if their_fronts.get(route) != front:
                    out.append(_request(f"remove_{field}", front))
            for route, front in sorted(their_fronts.items()):
                if mine_fronts.get(route) != front:
                    out.append(_request(f"add_{field}", front))

        out.extend(_diff_stream_fronts("tcp_frontend", self._tcp_fronts, other._tcp_fronts))
        out.extend(_diff_stream_fronts("udp_frontend", self._udp_fronts, other._udp_fronts))

        my_certs, their_certs = self._certificate_index(), other._certificate_index()
        for cert_key in sorted(my_certs):
            if their_certs.get(cert_key) != my_certs[cert_key]:
                address, fingerprint = cert_key
                removal = RemoveCertificate(
                    address=address_from_key(address), fingerprint=fingerprint
                )
                out.append(_request("remove_certificate", removal))
        for cert_key in sorted(their_certs):
            if my_certs.get(cert_key) != their_certs[cert_key]:
                out.append(_add_certificate_request(cert_key[0], their_certs[cert_key]))
        return out

    def _backend_index(self) -> dict[tuple[str, str, AddressKey], AddBackend]:
        return {
            (cluster_id, b.backend_id, address_key(b.address)): b
            for cluster_id, bucket in self._backends.items()
            for b in bucket
        }

    def _certificate_index(self) -> dict[tuple[AddressKey, str], CertificateAndKey]:
        return {
            (key, fingerprint): cert
            for key, certs in self._certificates.items()
            for fingerprint, cert in certs.items()
        }

    # --- queries ---------------------------------------------------------------------------

    def cluster_ids(self) -> list[str]:
        """Ids of every cluster, sorted."""
        return sorted(self._clusters)

    def cluster(self, cluster_id: str) -> Cluster | None:
        """A copy of one cluster's configuration."""
        found = self._clusters.get(cluster_id)
        return None if found is None else _copy(found)

    def backends(self, cluster_id: str) -> list[AddBackend]:
        """Copies of the backends of one cluster (known or not), in Sōzu's order."""
        return [_copy(b) for b in self._backends.get(cluster_id, [])]

    def listener(self, kind: _Kind, address: SocketAddress) -> ListenerConfig | None:
        """A copy of the listener of `kind` (a ListenerType value) at `address`, if any."""
        found = self._listeners[kind].get(address_key(address))
        return None if found is None else _copy(found)

    def listeners(self, kind: _Kind) -> list[ListenerConfig]:
        """Copies of the listeners of `kind` (a ListenerType value), sorted by address."""
        table = self._listeners[kind]
        return [_copy(table[key]) for key in sorted(table)]

    def list_listeners(self) -> ListenersList:
        """Every listener, keyed by address text (the ListListeners answer)."""
        result = ListenersList()
        for kind, target in (
            (HTTP, result.http_listeners),
            (HTTPS, result.https_listeners),
            (TCP, result.tcp_listeners),
            (UDP, result.udp_listeners),
        ):
            for key, listener in self._listeners[kind].items():
                entry: Message = target[address_key_text(key)]
                entry.CopyFrom(listener)
        return result

    def cluster_information(self, cluster_id: str) -> ClusterInformation | None:
        """Configuration, frontends and backends of one cluster (QueryClusterById)."""
        configuration = self._clusters.get(cluster_id)
        if configuration is None:
            return None
        return ClusterInformation(
            configuration=configuration,
            http_frontends=_fronts_of(self._http_fronts, cluster_id),
            https_frontends=_fronts_of(self._https_fronts, cluster_id),
            tcp_frontends=self._tcp_fronts.get(cluster_id, []),
            udp_frontends=self._udp_fronts.get(cluster_id, []),
            backends=self._backends.get(cluster_id, []),
        )

    def cluster_ids_by_domain(self, hostname: str, path: str | None = None) -> list[str]:
        """Clusters with an HTTP(S) frontend on exactly `hostname` (and path value), sorted."""
        found: set[str] = set()
        for table in (self._http_fronts, self._https_fronts):
            for front in table.values():
                if front.hostname != hostname or not front.HasField("cluster_id"):
                    continue
                if path is None or path == front.path.value:
                    found.add(front.cluster_id)
        return sorted(found)

    def clusters_by_domain(self, hostname: str, path: str | None = None) -> ClusterInformations:
        """Information on each cluster `cluster_ids_by_domain` finds (QueryClustersByDomain)."""
        infos = (self.cluster_information(i) for i in self.cluster_ids_by_domain(hostname, path))
        return ClusterInformations(vec=[info for info in infos if info is not None])

    def list_frontends(self, filters: FrontendFilters | None = None) -> ListedFrontends:
        """Frontends by protocol; a `domain` keeps the HTTP(S) ones whose hostname contains it."""
        filters = filters or FrontendFilters()
        everything = not (filters.http or filters.https or filters.tcp)
        domain = filters.domain if filters.HasField("domain") else None
        result = ListedFrontends()
        for wanted, table, target in (
            (filters.http, self._http_fronts, result.http_frontends),
            (filters.https, self._https_fronts, result.https_frontends),
        ):
            if wanted or everything:
                target.extend(
                    front
                    for _, front in sorted(table.items())
                    if domain is None or domain in front.hostname
                )
        if (filters.tcp or everything) and domain is None:
            for cluster_id in sorted(self._tcp_fronts):
                result.tcp_frontends.extend(self._tcp_fronts[cluster_id])
            for cluster_id in sorted(self._udp_fronts):
                result.udp_frontends.extend(self._udp_fronts[cluster_id])
        return result

    def certificates(
        self, filters: QueryCertificatesFilters | None = None
    ) -> CertificatesWithFingerprints:
        """Certificates by fingerprint, filtered by one of their names or by fingerprint."""
        filters = filters or QueryCertificatesFilters()
        result = CertificatesWithFingerprints()
        for key in sorted(self._certificates):
            for fingerprint, cert in sorted(self._certificates[key].items()):
                if filters.HasField("domain"):
                    if filters.domain not in cert.names:
                        continue
                elif filters.HasField("fingerprint") and filters.fingerprint != fingerprint:
                    continue
                result.certs[fingerprint].CopyFrom(cert)
        return result

    def certificates_at(self, address: SocketAddress) -> dict[str, CertificateAndKey]:
        """Copies of the certificates of one listener address, by fingerprint."""
        certs = self._certificates.get(address_key(address), {})
        return {fingerprint: _copy(certs[fingerprint]) for fingerprint in sorted(certs)}

    def health_checks(self, cluster_id: str | None = None) -> HealthChecksList:
        """Health check configurations by cluster id (QueryHealthChecks)."""
        result = HealthChecksList()
        for key, cluster in self._clusters.items():
            if (cluster_id is None or cluster_id == key) and cluster.HasField("health_check"):
                result.map[key].CopyFrom(cluster.health_check)
        return result

    def cluster_hashes(self) -> ClusterHashes:
        """A 64-bit digest per cluster of its configuration, backends and frontends.

        Stable across processes and runs (Sōzu's own hash is Rust-specific); two states give
        the same value for a cluster exactly when that cluster's part of them is equal.
        """
        result = ClusterHashes()
        for cluster_id, cluster in self._clusters.items():
            digest = hashlib.blake2b(digest_size=8)
            parts: list[Message] = [cluster]
            parts += self._backends.get(cluster_id, [])
            parts += self._tcp_fronts.get(cluster_id, [])
            parts += _fronts_of(self._http_fronts, cluster_id)
            parts += _fronts_of(self._https_fronts, cluster_id)
            for part in parts:
                data = part.SerializePartialToString(deterministic=True)
                digest.update(len(data).to_bytes(8, "little") + data)
            result.map[cluster_id] = int.from_bytes(digest.digest(), "little")
        return result

    def count_frontends(self) -> int:
        """Number of frontends of every protocol."""
        return (
            len(self._http_fronts)
            + len(self._https_fronts)
            + sum(len(bucket) for bucket in self._tcp_fronts.values())
            + sum(len(bucket) for bucket in self._udp_fronts.values())
        )

    def count_backends(self) -> int:
        """Number of backends over all clusters."""
        return sum(len(bucket) for bucket in self._backends.values())


def _fronts_of(table: dict[str, RequestHttpFrontend], cluster_id: str) -> list[RequestHttpFrontend]:
    return [
        front
        for _, front in sorted(table.items())
        if front.HasField("cluster_id") and front.cluster_id == cluster_id
    ]


def _diff_stream_fronts(
    field: str,
    mine: dict[str, list[_StreamFront]],
    theirs: dict[str, list[_StreamFront]],
) -> list[Request]:
    # A removal takes out every frontend of the cluster on that address, so the wanted ones
    # sharing a removed address are added back after it.
    out: list[Request] = []
    wiped: set[tuple[str, AddressKey]] = set()
    for cluster_id in sorted(mine):
        wanted = theirs.get(cluster_id, [])
        for front in mine[cluster_id]:
            spot = (cluster_id, address_key(front.address))
            if front not in wanted and spot not in wiped:
                wiped.add(spot)
                out.append(_request(f"remove_{field}", front))
    for cluster_id in sorted(theirs):
        present = mine.get(cluster_id, [])
        for front in theirs[cluster_id]:
            if front not in present or (cluster_id, address_key(front.address)) in wiped:
                out.append(_request(f"add_{field}", front))
    return out


def _activate(kind: _Kind, key: AddressKey) -> Request:
    return _request(
        "activate_listener",
        ActivateListener(address=address_from_key(key), proxy=kind, from_scm=False),
    )


def _deactivate(kind: _Kind, key: AddressKey) -> Request:
    return _request(
        "deactivate_listener",
        DeactivateListener(address=address_from_key(key), proxy=kind, to_scm=False),
    )


def _remove_listener_request(kind: _Kind, key: AddressKey) -> Request:
    return _request("remove_listener", RemoveListener(address=address_from_key(key), proxy=kind))


def _remove_backend_request(backend: AddBackend) -> Request:
    removal = RemoveBackend(
        cluster_id=backend.cluster_id, backend_id=backend.backend_id, address=backend.address
    )
    return _request("remove_backend", removal)


def _add_certificate_request(key: AddressKey, cert: CertificateAndKey) -> Request:
    return _request(
        "add_certificate", AddCertificate(address=address_from_key(key), certificate=cert)
    )
