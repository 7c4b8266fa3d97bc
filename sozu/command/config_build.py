"""From a parsed `config.toml` document to a validated `Config`: every rule of the format.

This is where Sōzu's configuration semantics live: which keys each table takes, their types and
value spellings, defaults and inheritance (listener timeouts from the globals), the files to read
(certificates, keys, answers), frontends resolved against listeners (a frontend without one gets a
default listener), default backend ids, and the cross-checks (duplicate listener addresses, HSTS
only over TLS, h2 and buffer_size...). Problems surface as ConfigErrors naming the key path, and
doubtful but accepted input as warnings on the result. The TOML text itself is parsed by
`sozu.command.config`, the only module that imports tomllib.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sozu.command.config_model import (
    ACCESS_LOG_FORMATS,
    DEFAULT_ALPN_PROTOCOLS,
    DEFAULT_CIPHER_LIST,
    DEFAULT_GROUPS_LIST,
    DEFAULT_HSTS_MAX_AGE,
    DEFAULT_SEND_TLS13_TICKETS,
    DEFAULT_STICKY_NAME,
    DEFAULT_TLS_VERSIONS,
    DEFAULT_UDP_MAX_RX_DATAGRAM_SIZE,
    DEFAULT_UDP_TIMEOUT,
    H2_MIN_BUFFER_SIZE,
    H2_U32_KNOBS,
    H2_U64_KNOBS,
    SLAB_ENTRIES_RANGE,
    TLS_VERSIONS,
    BackendConfig,
    ClusterConfig,
    ClusterProtocol,
    Config,
    HeaderEdit,
    HealthCheckConfig,
    HstsConfig,
    HttpFrontendConfig,
    ListenerConfig,
    ListenerProtocol,
    MetricsConfig,
    TcpFrontendConfig,
    UdpClusterConfig,
    UdpHealthConfig,
)
from sozu.command.config_reader import (
    U8_MAX,
    U16_MAX,
    U32_MAX,
    U64_MAX,
    Context,
    Table,
    join,
    show,
)
from sozu.command.state import is_header_name, udp_only_message

_LOAD_BALANCING = ("ROUND_ROBIN", "RANDOM", "LEAST_LOADED", "POWER_OF_TWO", "HRW", "MAGLEV")
_UDP_ONLY_LOAD_BALANCING = ("HRW", "MAGLEV")
_LOAD_METRICS = ("CONNECTIONS", "REQUESTS", "CONNECTION_TIME")
_PATH_TYPES = ("PREFIX", "REGEX", "EQUALS")
_POSITIONS = ("PRE", "POST", "TREE")
_REDIRECTS = MappingProxyType(
    {"forward": "FORWARD", "permanent": "PERMANENT", "unauthorized": "UNAUTHORIZED"}
)
_REDIRECT_SCHEMES = MappingProxyType(
    {
        "use-same": "USE_SAME",
        "use_same": "USE_SAME",
        "use-http": "USE_HTTP",
        "use_http": "USE_HTTP",
        "use-https": "USE_HTTPS",
        "use_https": "USE_HTTPS",
    }
)
_HEADER_POSITIONS = MappingProxyType({"request": "REQUEST", "response": "RESPONSE", "both": "BOTH"})
_METRIC_DETAILS = ("process", "frontend", "cluster", "backend")
_ALPN = ("h2", "http/1.1")
_AFFINITY_KEYS = ("SOURCE_IP", "SOURCE_IP_PORT")
_UDP_HEALTH_MODES = ("HEALTH_OFF", "TCP_PROBE", "UDP_PROBE")
# fmt: off
_LEGACY_ANSWER_CODES = (
    "301", "400", "401", "404", "408", "413", "421", "502", "503", "504", "507", "429",
)
# fmt: on
_FORBIDDEN_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_FILE_SIZE = 16 * 1024 * 1024


def describe_error(error: BaseException) -> str:
    """The short reason an OS-level failure gives (`No such file or directory`)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


# Keys of each table, as spelt in TOML.
# fmt: off
_TOP_U64 = (
    "command_buffer_size", "max_command_buffer_size", "max_connections", "min_buffers",
    "max_buffers", "buffer_size", "slab_entries_per_connection",
    "basic_auth_max_credential_bytes", "max_connections_per_ip", "splice_pipe_capacity_bytes",
    "ctl_command_timeout",
)
_TOP_U32 = (
    "retry_after", "front_timeout", "back_timeout", "connect_timeout", "request_timeout",
    "zombie_check_interval", "accept_queue_timeout", "worker_timeout",
)
_TOP_BOOL = (
    "automatic_state_save", "log_colored", "access_logs_colored", "worker_automatic_restart",
    "disable_cluster_metrics", "handle_process_affinity", "activate_listeners",
    "evict_on_queue_full",
)
_TOP_STR = (
    "log_level", "log_target", "audit_logs_target", "audit_logs_json_target",
    "access_logs_target", "pid_file_path",
)
_TOP_OTHER = (
    "command_socket", "saved_state", "command_allowed_uids", "access_logs_format",
    "worker_count", "metrics", "listeners", "clusters",
)
_TOP_KEYS = frozenset((*_TOP_U64, *_TOP_U32, *_TOP_BOOL, *_TOP_STR, *_TOP_OTHER))
_METRICS_KEYS = frozenset(("address", "tagged_metrics", "prefix", "detail"))
_HSTS_KEYS = frozenset((
    "enabled", "max_age", "include_subdomains", "preload", "force_replace_backend",
))
_LISTENER_TIMEOUTS = ("front_timeout", "back_timeout", "connect_timeout", "request_timeout")
_LISTENER_COMMON = frozenset(("address", "protocol", "public_address"))
_HTTP_LISTENER_KEYS = _LISTENER_COMMON | {
    *_LISTENER_TIMEOUTS, *H2_U32_KNOBS, *H2_U64_KNOBS,
    *(f"answer_{code}" for code in _LEGACY_ANSWER_CODES),
    "expect_proxy", "sticky_name", "answers", "sozu_id_header", "elide_x_real_ip",
    "send_x_real_ip", "hsts",
}
_HTTPS_LISTENER_KEYS = _HTTP_LISTENER_KEYS | {
    "tls_versions", "cipher_list", "cipher_suites", "groups_list", "certificate",
    "certificate_chain", "key", "send_tls13_tickets", "alpn_protocols", "strict_sni_binding",
    "disable_http11",
}
_TCP_LISTENER_KEYS = _LISTENER_COMMON | {
    "expect_proxy", "front_timeout", "back_timeout", "connect_timeout",
}
_UDP_LISTENER_KEYS = _LISTENER_COMMON | {
    "front_timeout", "back_timeout", "max_rx_datagram_size", "max_flows",
}
_CLUSTER_KEYS = frozenset((
    "frontends", "backends", "protocol", "sticky_session", "https_redirect", "send_proxy",
    "load_balancing", "answer_503", "load_metric", "http2", "answers", "https_redirect_port",
    "authorized_hashes", "www_authenticate", "max_connections_per_ip", "retry_after",
    "health_check", "udp",
))
_FRONTEND_KEYS = frozenset((
    "address", "hostname", "path", "path_type", "method", "certificate", "key",
    "certificate_chain", "tls_versions", "position", "tags", "redirect", "redirect_scheme",
    "redirect_template", "rewrite_host", "rewrite_path", "rewrite_port", "required_auth",
    "headers", "hsts",
))
_HEADER_KEYS = frozenset(("position", "key", "value"))
_BACKEND_KEYS = frozenset(("address", "weight", "sticky_id", "backup", "backend_id"))
_HEALTH_CHECK_KEYS = frozenset((
    "uri", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "expected_status",
))
_UDP_CLUSTER_KEYS = frozenset((
    "affinity_key", "responses", "requests", "send_proxy_protocol",
    "proxy_protocol_every_datagram", "health",
))
_UDP_HEALTH_KEYS = frozenset((
    "mode", "tcp_port", "rise", "fall", "fail_open", "udp_probe_payload",
    "probe_interval_seconds", "probe_timeout_seconds",
))
# fmt: on
_LISTENER_KEYS = _HTTPS_LISTENER_KEYS | _TCP_LISTENER_KEYS | _UDP_LISTENER_KEYS
_LISTENER_KEYS_BY_PROTOCOL = MappingProxyType(
    {
        ListenerProtocol.HTTP: _HTTP_LISTENER_KEYS,
        ListenerProtocol.HTTPS: _HTTPS_LISTENER_KEYS,
        ListenerProtocol.TCP: _TCP_LISTENER_KEYS,
        ListenerProtocol.UDP: _UDP_LISTENER_KEYS,
    }
)
_HTTP_ONLY_CLUSTER_KEYS = ("sticky_session", "https_redirect", "answer_503", "http2")
_TCP_FRONTEND_REFUSED = ("hostname", "path", "certificate", "certificate_chain")


def _read_file(table: Table, key: str, file_path: str) -> str:
    """The UTF-8 text of a file named by `key` (relative paths: the working directory)."""
    try:
        with open(file_path, "rb") as file:
            data = file.read(MAX_FILE_SIZE + 1)
    except (OSError, ValueError) as error:
        raise table.error(key, f"cannot read {show(file_path)}: {describe_error(error)}") from None
    if len(data) > MAX_FILE_SIZE:
        raise table.error(key, f"{show(file_path)} is larger than {MAX_FILE_SIZE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise table.error(key, f"{show(file_path)} is not UTF-8 text") from None


def _split_certificate_chain(chain: str) -> tuple[str, ...]:
    """Split a PEM bundle into its certificates, each ending at its END marker."""
    end = "-----END CERTIFICATE-----"
    blocks = []
    rest = chain
    while (position := rest.find(end)) >= 0:
        blocks.append(rest[: position + len(end)].strip())
        rest = rest[position + len(end) :]
    return tuple(blocks)


def _load_answers(table: Table, key: str) -> dict[str, str]:
    """An `answers` map: `file://PATH` values are read, other values are inline bodies."""
    raw = table.string_map(key)
    if raw is None:
        return {}
    answers = {}
    map_table = Table(table.ctx, table.key_path(key), dict(raw), raw.keys())
    for code, value in raw.items():
        if not value:
            continue
        if value.startswith("file://"):
            answers[code] = _read_file(map_table, code, value.removeprefix("file://"))
        else:
            answers[code] = value
    return answers


def _parse_hsts(table: Table, scope: str) -> HstsConfig:
    enabled = table.boolean("enabled")
    if enabled is None:
        raise table.error("enabled", "missing required key (an hsts table must say enabled)")
    max_age = table.integer("max_age", U32_MAX)
    if enabled and max_age is None:
        max_age = DEFAULT_HSTS_MAX_AGE
    include_subdomains = table.boolean("include_subdomains")
    preload = table.boolean("preload")
    if max_age is not None and 0 < max_age < 86_400:
        table.warn("max_age", f"{max_age}s on {scope} is under one day; 0 is the kill switch")
    if preload:
        if (max_age or 0) < DEFAULT_HSTS_MAX_AGE:
            table.warn("preload", f"the HSTS preload list needs max_age >= {DEFAULT_HSTS_MAX_AGE}")
        if include_subdomains is not True:
            table.warn("preload", "the HSTS preload list needs include_subdomains = true")
    return HstsConfig(
        enabled=enabled,
        max_age=max_age,
        include_subdomains=include_subdomains,
        preload=preload,
        force_replace_backend=table.boolean("force_replace_backend"),
    )


def _check_file_path(table: Table, key: str) -> str | None:
    value = table.string(key)
    if value is None:
        return None
    if "\0" in value or Path(value).name in ("", ".", ".."):
        raise table.error(key, f"invalid value {show(value)}, expected a file path")
    return value


@dataclass
class _Globals:
    """The top-level values listeners inherit."""

    front_timeout: int
    back_timeout: int
    connect_timeout: int
    request_timeout: int
    buffer_size: int


class _Builder:
    """Turns one parsed TOML document into a Config; holds the listeners while clusters resolve."""

    def __init__(self, ctx: Context, config_path: Path) -> None:
        self.ctx = ctx
        self.config_path = config_path
        self.listeners: dict[ListenerProtocol, list[ListenerConfig]] = {
            protocol: [] for protocol in ListenerProtocol
        }
        self.by_address: dict[str, tuple[ListenerConfig, str]] = {}

    def build(self, document: dict[str, Any]) -> Config:
        top = Table(self.ctx, "", document, _TOP_KEYS, strict=False)
        values: dict[str, Any] = {}
        for key in _TOP_U64:
            values[key] = top.integer(key, U64_MAX)
        for key in _TOP_U32:
            values[key] = top.integer(key, U32_MAX)
        for key in _TOP_BOOL:
            values[key] = top.boolean(key)
        for key in _TOP_STR:
            values[key] = top.string(key)
        values["worker_count"] = top.integer("worker_count", U16_MAX)
        values["access_logs_format"] = top.choice("access_logs_format", ACCESS_LOG_FORMATS)
        uids = top.integers("command_allowed_uids", U32_MAX)
        values["command_allowed_uids"] = tuple(uids) if uids is not None else None

        base = self.config_path.parent
        socket = _check_file_path(top, "command_socket") or "sozu.sock"
        values["command_socket"] = Path(os.path.normpath(base / socket))
        saved_state = _check_file_path(top, "saved_state")
        if saved_state is not None:
            values["saved_state"] = Path(os.path.normpath(base / saved_state))
        if values["automatic_state_save"] and saved_state is None:
            raise top.error("automatic_state_save", "is true but saved_state is not set")

        metrics = top.table("metrics", _METRICS_KEYS)
        if metrics is not None:
            values["metrics"] = MetricsConfig(
                address=metrics.required("address", metrics.address("address")),
                tagged_metrics=bool(metrics.boolean("tagged_metrics")),
                prefix=metrics.string("prefix"),
                detail=metrics.choice("detail", _METRIC_DETAILS) or "cluster",
            )

        given = {key: value for key, value in values.items() if value is not None}
        defaults = Config(config_path=self.config_path, command_socket=given["command_socket"])
        max_buffers = given.get("max_buffers", defaults.max_buffers)
        given["min_buffers"] = min(given.get("min_buffers", defaults.min_buffers), max_buffers)
        slab = given.get("slab_entries_per_connection")
        if slab is not None:
            low, high = SLAB_ENTRIES_RANGE
            if not low <= slab <= high:
                top.warn("slab_entries_per_connection", f"clamped into [{low}, {high}]")
            given["slab_entries_per_connection"] = max(low, min(high, slab))
        buffer_size = given.get("buffer_size", defaults.buffer_size)
        inherited = _Globals(
            front_timeout=given.get("front_timeout", defaults.front_timeout),
            back_timeout=given.get("back_timeout", defaults.back_timeout),
            connect_timeout=given.get("connect_timeout", defaults.connect_timeout),
            request_timeout=given.get("request_timeout", defaults.request_timeout),
            buffer_size=buffer_size,
        )

        for listener_table in top.tables("listeners", _LISTENER_KEYS) or []:
            self._add_listener(_parse_listener(listener_table, inherited), listener_table)

        clusters = []
        raw_clusters = top.raw_table("clusters")
        if raw_clusters is not None:
            for cluster_id, raw in raw_clusters.items():
                path = join("clusters", cluster_id)
                if not isinstance(raw, dict):
                    raise self.ctx.error(path, f"invalid value {show(raw)}, expected a table")
                cluster_table = Table(self.ctx, path, raw, _CLUSTER_KEYS)
                clusters.append(self._parse_cluster(cluster_id, cluster_table, inherited))

        listeners = tuple(
            listener for protocol in ListenerProtocol for listener in self.listeners[protocol]
        )
        self._check_global_limits(top, given, defaults, buffer_size, listeners)
        return Config(
            **given,
            config_path=self.config_path,
            listeners=listeners,
            clusters=tuple(clusters),
            warnings=self.ctx.warnings,
        )

    def _check_global_limits(
        self,
        top: Table,
        given: dict[str, Any],
        defaults: Config,
        buffer_size: int,
        listeners: tuple[ListenerConfig, ...],
    ) -> None:
        h2_listeners = [
            listener
            for listener in listeners
            if listener.protocol is ListenerProtocol.HTTPS and "h2" in listener.alpn_protocols
        ]
        if h2_listeners and buffer_size < H2_MIN_BUFFER_SIZE:
            raise top.error(
                "buffer_size",
                f"{buffer_size} is below {H2_MIN_BUFFER_SIZE}, the minimum for HTTP/2, and "
                f"{len(h2_listeners)} https listener(s) offer h2; raise buffer_size or remove "
                '"h2" from their alpn_protocols',
            )
        credential_cap = given.get("basic_auth_max_credential_bytes")
        if credential_cap is not None and credential_cap >= buffer_size // 3:
            top.warn(
                "basic_auth_max_credential_bytes",
                f"{credential_cap} is at least a third of buffer_size ({buffer_size})",
            )
        max_connections = given.get("max_connections", defaults.max_connections)
        if given.get("evict_on_queue_full") and max_connections < 100:
            top.warn(
                "evict_on_queue_full",
                f"with max_connections = {max_connections} each eviction drops one connection, "
                "more than 1% of capacity",
            )

    def _add_listener(self, listener: ListenerConfig, table: Table | None) -> None:
        owner = table.path if table is not None else "a frontend"
        if listener.address in self.by_address:
            assert table is not None  # default listeners are only made for unused addresses
            _, first = self.by_address[listener.address]
            raise table.error(
                "address", f"{listener.address} is already used by the listener {first}"
            )
        self.by_address[listener.address] = (listener, owner)
        self.listeners[listener.protocol].append(listener)

    def _default_listener(
        self, protocol: ListenerProtocol, address: str, inherited: _Globals
    ) -> ListenerConfig:
        listener = ListenerConfig(
            protocol=protocol,
            address=address,
            front_timeout=inherited.front_timeout,
            back_timeout=inherited.back_timeout,
            connect_timeout=inherited.connect_timeout,
            request_timeout=inherited.request_timeout,
        )
        self._add_listener(listener, None)
        return listener

    def _parse_cluster(self, cluster_id: str, table: Table, inherited: _Globals) -> ClusterConfig:
        protocol = ClusterProtocol(
            table.required("protocol", table.choice("protocol", [p.value for p in ClusterProtocol]))
        )
        frontend_tables = table.required("frontends", table.tables("frontends", _FRONTEND_KEYS))
        backend_tables = table.required("backends", table.tables("backends", _BACKEND_KEYS))
        for key in ("sticky_session", "https_redirect", "send_proxy", "http2"):
            table.boolean(key)
        if protocol is ClusterProtocol.TCP:
            for key in table.present(_HTTP_ONLY_CLUSTER_KEYS):
                table.warn(key, "ignored in a tcp cluster")
        elif "send_proxy" in table:
            table.warn("send_proxy", "ignored in an http cluster (only tcp clusters send it)")

        frontends: list[HttpFrontendConfig | TcpFrontendConfig] = []
        proxy_protocol = None
        if protocol is ClusterProtocol.HTTP:
            for frontend_table in frontend_tables:
                frontends.append(self._http_frontend(cluster_id, frontend_table, inherited))
            answer_503_path = _check_file_path(table, "answer_503")
            answer_503 = (
                _read_file(table, "answer_503", answer_503_path) if answer_503_path else None
            )
        else:
            answer_503 = None
            expecting: bool | None = None
            for frontend_table in frontend_tables:
                frontend = self._tcp_frontend(frontend_table, inherited)
                known = self.by_address.get(frontend.address)
                expects = bool(known and known[0].expect_proxy)
                if expecting is not None and expects != expecting:
                    raise frontend_table.error(
                        "address",
                        "the frontends of a tcp cluster must all be on listeners with "
                        "expect_proxy, or all without",
                    )
                expecting = expects
                frontends.append(frontend)
            proxy_protocol = {
                (True, True): "RELAY_HEADER",
                (True, False): "SEND_HEADER",
                (False, True): "EXPECT_HEADER",
            }.get((bool(table.boolean("send_proxy")), bool(expecting)))

        backends = []
        for index, backend_table in enumerate(backend_tables):
            address = backend_table.required("address", backend_table.address("address"))
            backends.append(
                BackendConfig(
                    address=address,
                    backend_id=backend_table.string("backend_id")
                    or f"{cluster_id}-{index}-{address}",
                    weight=_default(backend_table.integer("weight", U8_MAX), 100),
                    sticky_id=backend_table.string("sticky_id"),
                    backup=backend_table.boolean("backup"),
                )
            )

        hashes = table.strings("authorized_hashes")
        is_http = protocol is ClusterProtocol.HTTP
        load_balancing = table.choice("load_balancing", _LOAD_BALANCING) or "ROUND_ROBIN"
        udp = _parse_udp_cluster(table)
        if load_balancing in _UDP_ONLY_LOAD_BALANCING and udp is None:
            raise table.error("load_balancing", udp_only_message(load_balancing))
        return ClusterConfig(
            cluster_id=cluster_id,
            protocol=protocol,
            frontends=tuple(frontends),
            backends=tuple(backends),
            sticky_session=is_http and bool(table.boolean("sticky_session")),
            https_redirect=is_http and bool(table.boolean("https_redirect")),
            proxy_protocol=proxy_protocol,
            load_balancing=load_balancing,
            load_metric=table.choice("load_metric", _LOAD_METRICS),
            answer_503=answer_503,
            http2=table.boolean("http2") if is_http else None,
            answers=_load_answers(table, "answers"),
            https_redirect_port=table.integer("https_redirect_port", U32_MAX),
            authorized_hashes=tuple(hashes) if hashes is not None else (),
            www_authenticate=table.string("www_authenticate"),
            max_connections_per_ip=table.integer("max_connections_per_ip", U64_MAX),
            retry_after=table.integer("retry_after", U32_MAX),
            health_check=_parse_health_check(table),
            udp=udp,
        )

    def _tcp_frontend(self, table: Table, inherited: _Globals) -> TcpFrontendConfig:
        for key in table.present(_TCP_FRONTEND_REFUSED):
            raise table.error(key, "not allowed in a tcp cluster's frontend")
        for key in table.present(_FRONTEND_KEYS - {"address", "tags"}):
            table.warn(key, "ignored in a tcp cluster's frontend")
        address = table.required("address", table.address("address"))
        tags = table.string_map("tags") or {}
        known = self.by_address.get(address)
        if known is None:
            self._default_listener(ListenerProtocol.TCP, address, inherited)
        elif known[0].protocol in (ListenerProtocol.HTTP, ListenerProtocol.HTTPS):
            raise table.error(
                "address",
                f"{address} is an {known[0].protocol} listener ({known[1]}); "
                "a tcp cluster needs a tcp or udp listener",
            )
        udp = known is not None and known[0].protocol is ListenerProtocol.UDP
        return TcpFrontendConfig(address=address, tags=tags, udp=udp)

    def _http_frontend(
        self, cluster_id: str, table: Table, inherited: _Globals
    ) -> HttpFrontendConfig:
        address = table.required("address", table.address("address"))
        hostname = table.required("hostname", table.string("hostname"))
        path = table.string("path")
        path_type = table.choice("path_type", _PATH_TYPES) or "PREFIX"
        if path is None:
            path, path_type = "", "PREFIX"
        elif path_type == "REGEX":
            try:
                re.compile(path)
            except (re.error, OverflowError, RecursionError, ValueError) as error:
                raise table.error("path", f"invalid regular expression: {error}") from None

        certificate = key = None
        chain: tuple[str, ...] = ()
        certificate_path = _check_file_path(table, "certificate")
        key_path = _check_file_path(table, "key")
        chain_path = _check_file_path(table, "certificate_chain")
        if certificate_path is not None and key_path is None:
            raise table.error("certificate", "set without key; a certificate needs its key")
        if certificate_path is None:
            for unused in table.present(("key", "certificate_chain")):
                table.warn(unused, "ignored without certificate")
        else:
            certificate = _read_file(table, "certificate", certificate_path)
        if certificate_path is not None and key_path is not None:
            key = _read_file(table, "key", key_path)
        if certificate_path is not None and chain_path is not None:
            chain = _split_certificate_chain(_read_file(table, "certificate_chain", chain_path))

        known = self.by_address.get(address)
        if known is None:
            protocol = ListenerProtocol.HTTPS if certificate else ListenerProtocol.HTTP
            self._default_listener(protocol, address, inherited)
        else:
            listener, owner = known
            if listener.protocol in (ListenerProtocol.TCP, ListenerProtocol.UDP):
                raise table.error(
                    "address",
                    f"{address} is a {listener.protocol} listener ({owner}); "
                    "an http cluster needs an http or https listener",
                )
            if listener.protocol is ListenerProtocol.HTTP and certificate is not None:
                raise table.error(
                    "certificate",
                    f"{address} is an http listener ({owner}); a certificate needs an https one",
                )
            if listener.protocol is ListenerProtocol.HTTPS and certificate is None:
                if listener.certificate is None or listener.key is None:
                    raise table.error(
                        "address",
                        f"{address} is an https listener ({owner}) without a certificate; "
                        "give this frontend certificate and key",
                    )
                certificate, key = listener.certificate, listener.key
                chain = listener.certificate_chain

        hsts_table = table.table("hsts", _HSTS_KEYS)
        hsts = None
        if hsts_table is not None:
            if certificate is None or key is None:
                raise table.error("hsts", "only valid on an https frontend (RFC 6797 §7.2)")
            hsts = _parse_hsts(hsts_table, f"frontend {cluster_id}/{hostname}")

        headers = []
        for header in table.tables("headers", _HEADER_KEYS) or []:
            position = header.required(
                "position", header.choice("position", tuple(_HEADER_POSITIONS), ignore_case=True)
            )
            name = header.required("key", header.string("key"))
            value = header.required("value", header.string("value"))
            if not is_header_name(name):
                raise header.error("key", f"invalid header name {show(name)}")
            if _FORBIDDEN_HEADER_VALUE.search(value):
                raise header.error("value", "control characters are not allowed in a header")
            headers.append(HeaderEdit(position=_HEADER_POSITIONS[position], key=name, value=value))

        redirect = table.choice("redirect", tuple(_REDIRECTS), ignore_case=True)
        scheme = table.choice("redirect_scheme", tuple(_REDIRECT_SCHEMES), ignore_case=True)
        return HttpFrontendConfig(
            address=address,
            hostname=hostname,
            path=path,
            path_type=path_type,
            method=table.string("method"),
            certificate=certificate,
            key=key,
            certificate_chain=chain,
            tls_versions=tuple(table.choices("tls_versions", tuple(TLS_VERSIONS)) or ()),
            position=table.choice("position", _POSITIONS) or "PRE",
            tags=table.string_map("tags") or {},
            redirect=_REDIRECTS[redirect] if redirect else None,
            redirect_scheme=_REDIRECT_SCHEMES[scheme] if scheme else None,
            redirect_template=table.string("redirect_template"),
            rewrite_host=table.string("rewrite_host"),
            rewrite_path=table.string("rewrite_path"),
            rewrite_port=table.integer("rewrite_port", U32_MAX),
            required_auth=table.boolean("required_auth"),
            headers=tuple(headers),
            hsts=hsts,
        )


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def _parse_listener(table: Table, inherited: _Globals) -> ListenerConfig:
    protocol = ListenerProtocol(
        table.required("protocol", table.choice("protocol", [p.value for p in ListenerProtocol]))
    )
    address = table.required("address", table.address("address"))
    public_address = table.address("public_address")
    expect_proxy = table.boolean("expect_proxy")
    if public_address is not None and expect_proxy:
        raise table.error(
            "public_address", "cannot be combined with expect_proxy (the PROXY header says it)"
        )
    if "hsts" in table and protocol is not ListenerProtocol.HTTPS:
        raise table.error("hsts", "only valid on an https listener (RFC 6797 §7.2)")
    used = _LISTENER_KEYS_BY_PROTOCOL[protocol]
    for key in table.present(_LISTENER_KEYS - used):
        table.warn(key, f"ignored on a {protocol} listener")

    timeouts = {key: table.integer(key, U32_MAX) for key in _LISTENER_TIMEOUTS}
    h2 = {key: table.integer(key, U32_MAX) for key in H2_U32_KNOBS}
    h2.update({key: table.integer(key, U64_MAX) for key in H2_U64_KNOBS})
    sticky_name = table.string("sticky_name") or DEFAULT_STICKY_NAME
    sozu_id_header = table.string("sozu_id_header")
    elide_x_real_ip = bool(table.boolean("elide_x_real_ip"))
    send_x_real_ip = bool(table.boolean("send_x_real_ip"))
    max_rx_datagram_size = table.integer("max_rx_datagram_size", U32_MAX)
    max_flows = table.integer("max_flows", U32_MAX)
    tls = _parse_tls_options(table)

    if protocol is ListenerProtocol.UDP:
        size = _default(max_rx_datagram_size, DEFAULT_UDP_MAX_RX_DATAGRAM_SIZE)
        if size > inherited.buffer_size:
            table.warn(
                "max_rx_datagram_size",
                f"{size} is over buffer_size, lowered to {inherited.buffer_size}",
            )
            size = inherited.buffer_size
        flows = _default(max_flows, 0)
        _warn_on_flow_limit(table, flows)
        return ListenerConfig(
            protocol=protocol,
            address=address,
            public_address=public_address,
            front_timeout=_default(timeouts["front_timeout"], DEFAULT_UDP_TIMEOUT),
            back_timeout=_default(timeouts["back_timeout"], DEFAULT_UDP_TIMEOUT),
            max_rx_datagram_size=size,
            max_flows=flows,
        )

    front = _default(timeouts["front_timeout"], inherited.front_timeout)
    back = _default(timeouts["back_timeout"], inherited.back_timeout)
    connect = _default(timeouts["connect_timeout"], inherited.connect_timeout)
    request = _default(timeouts["request_timeout"], inherited.request_timeout)
    common: dict[str, Any] = dict(
        protocol=protocol,
        address=address,
        public_address=public_address,
        expect_proxy=bool(expect_proxy),
        front_timeout=front,
        back_timeout=back,
        connect_timeout=connect,
        request_timeout=request,
    )
    if protocol is ListenerProtocol.TCP:
        return ListenerConfig(**common)

    custom_answers = {}
    for code in _LEGACY_ANSWER_CODES:
        answer_path = _check_file_path(table, f"answer_{code}")
        if answer_path is not None:
            custom_answers[code] = _read_file(table, f"answer_{code}", answer_path)
    answers = {**custom_answers, **_load_answers(table, "answers")}
    http_values: dict[str, Any] = dict(
        common,
        sticky_name=sticky_name,
        custom_answers=custom_answers,
        answers=answers,
        elide_x_real_ip=elide_x_real_ip,
        send_x_real_ip=send_x_real_ip,
        h2={key: value for key, value in h2.items() if value is not None},
        sozu_id_header=sozu_id_header,
    )
    if protocol is ListenerProtocol.HTTP:
        return ListenerConfig(**http_values)
    return ListenerConfig(**http_values, **_resolve_tls_options(table, tls))


@dataclass
class _TlsOptions:
    """The https-only listener keys, type-checked whatever the protocol."""

    tls_versions: list[str] | None
    cipher_list: list[str] | None
    cipher_suites: list[str] | None
    groups_list: list[str] | None
    certificate: str | None
    certificate_chain: str | None
    key: str | None
    send_tls13_tickets: int | None
    alpn_protocols: list[str] | None
    strict_sni_binding: bool | None
    disable_http11: bool | None


def _parse_tls_options(table: Table) -> _TlsOptions:
    return _TlsOptions(
        tls_versions=table.choices("tls_versions", tuple(TLS_VERSIONS)),
        cipher_list=table.strings("cipher_list"),
        cipher_suites=table.strings("cipher_suites"),
        groups_list=table.strings("groups_list"),
        certificate=_check_file_path(table, "certificate"),
        certificate_chain=_check_file_path(table, "certificate_chain"),
        key=_check_file_path(table, "key"),
        send_tls13_tickets=table.integer("send_tls13_tickets", U64_MAX),
        alpn_protocols=table.choices("alpn_protocols", _ALPN),
        strict_sni_binding=table.boolean("strict_sni_binding"),
        disable_http11=table.boolean("disable_http11"),
    )


def _resolve_tls_options(table: Table, tls: _TlsOptions) -> dict[str, Any]:
    """The https listener fields: defaults filled, files read, ALPN checked."""
    if tls.alpn_protocols:
        alpn = tuple(dict.fromkeys(tls.alpn_protocols))
        if "http/1.1" not in alpn and not tls.disable_http11:
            table.warn(
                "alpn_protocols", "without http/1.1, clients that lack HTTP/2 cannot connect"
            )
    else:
        alpn = DEFAULT_ALPN_PROTOCOLS
    if tls.disable_http11 and "http/1.1" in alpn:
        raise table.error(
            "disable_http11",
            'is true but alpn_protocols offers "http/1.1" (the default does): every client '
            'negotiating it would be refused; remove "http/1.1" from alpn_protocols',
        )
    values: dict[str, Any] = dict(
        tls_versions=(
            tuple(tls.tls_versions) if tls.tls_versions is not None else DEFAULT_TLS_VERSIONS
        ),
        cipher_list=tuple(tls.cipher_list) if tls.cipher_list is not None else DEFAULT_CIPHER_LIST,
        cipher_suites=(
            tuple(tls.cipher_suites) if tls.cipher_suites is not None else DEFAULT_CIPHER_LIST
        ),
        groups_list=tuple(tls.groups_list) if tls.groups_list is not None else DEFAULT_GROUPS_LIST,
        send_tls13_tickets=_default(tls.send_tls13_tickets, DEFAULT_SEND_TLS13_TICKETS),
        alpn_protocols=alpn,
        strict_sni_binding=tls.strict_sni_binding,
        disable_http11=tls.disable_http11,
    )
    if tls.certificate is not None:
        values["certificate"] = _read_file(table, "certificate", tls.certificate)
    if tls.key is not None:
        values["key"] = _read_file(table, "key", tls.key)
    if tls.certificate_chain is not None:
        values["certificate_chain"] = _split_certificate_chain(
            _read_file(table, "certificate_chain", tls.certificate_chain)
        )
    hsts_table = table.table("hsts", _HSTS_KEYS)
    if hsts_table is not None:
        values["hsts"] = _parse_hsts(hsts_table, f"listener {table.path}")
    return values


def _warn_on_flow_limit(table: Table, max_flows: int) -> None:
    if max_flows == 0:
        return
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return
    if soft != resource.RLIM_INFINITY and max_flows > soft * 7 // 10:
        table.warn(
            "max_flows",
            f"{max_flows} is over 70% of the open-file limit ({soft}); flows may hit EMFILE",
        )


def _parse_health_check(cluster: Table) -> HealthCheckConfig | None:
    table = cluster.table("health_check", _HEALTH_CHECK_KEYS)
    if table is None:
        return None
    uri = table.required("uri", table.string("uri"))
    if not uri.startswith("/") or any(ord(c) < 0x20 and c != "\t" for c in uri):
        raise table.error(
            "uri",
            f"invalid value {show(uri)}, expected a path starting with / and no control characters",
        )
    values = {}
    for key, default in (
        ("interval", 10),
        ("timeout", 5),
        ("healthy_threshold", 3),
        ("unhealthy_threshold", 3),
    ):
        values[key] = _default(table.integer(key, U32_MAX, minimum=1), default)
    return HealthCheckConfig(
        uri=uri, expected_status=_default(table.integer("expected_status", U32_MAX), 0), **values
    )


def _parse_udp_cluster(cluster: Table) -> UdpClusterConfig | None:
    table = cluster.table("udp", _UDP_CLUSTER_KEYS)
    if table is None:
        return None
    health = None
    health_table = table.table("health", _UDP_HEALTH_KEYS)
    if health_table is not None:
        health = UdpHealthConfig(
            mode=health_table.choice("mode", _UDP_HEALTH_MODES),
            tcp_port=health_table.integer("tcp_port", U32_MAX),
            rise=health_table.integer("rise", U32_MAX),
            fall=health_table.integer("fall", U32_MAX),
            fail_open=health_table.boolean("fail_open"),
            udp_probe_payload=health_table.string("udp_probe_payload"),
            probe_interval_seconds=health_table.integer("probe_interval_seconds", U32_MAX),
            probe_timeout_seconds=health_table.integer("probe_timeout_seconds", U32_MAX),
        )
    return UdpClusterConfig(
        affinity_key=table.choice("affinity_key", _AFFINITY_KEYS),
        responses=table.integer("responses", U32_MAX),
        requests=table.integer("requests", U32_MAX),
        send_proxy_protocol=table.boolean("send_proxy_protocol"),
        proxy_protocol_every_datagram=table.boolean("proxy_protocol_every_datagram"),
        health=health,
    )


def build_config(document: dict[str, Any], ctx: Context, config_path: Path) -> Config:
    """The Config a parsed document describes; `config_path` must be absolute."""
    return _Builder(ctx, config_path).build(document)
