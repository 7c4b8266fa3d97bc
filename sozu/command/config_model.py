"""The validated configuration: frozen dataclasses, and their translation into protobuf Requests.

`sozu.command.config_build` fills these from a parsed file; everything here is already checked and
resolved (timeouts inherited, certificate and answer files read, default backend ids computed), so
turning a `Config` into its `CONFIG-n` WorkerRequests or its ServerConfig cannot fail. Defaults
are Sōzu 2.x's. This module reads no file and knows no TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sozu.command import addresses
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    CertificateAndKey,
    Cluster,
    CustomHttpAnswers,
    Header,
    HeaderPosition,
    HttpListenerConfig,
    HttpsListenerConfig,
    ListenerType,
    LoadBalancingAlgorithms,
    LoadBalancingParams,
    LoadMetric,
    MetricDetail,
    MetricsConfiguration,
    PathRule,
    PathRuleKind,
    ProtobufAccessLogFormat,
    ProxyProtocolConfig,
    RedirectPolicy,
    RedirectScheme,
    Request,
    RequestHttpFrontend,
    RequestTcpFrontend,
    RequestUdpFrontend,
    RulePosition,
    ServerConfig,
    ServerMetricsConfig,
    TcpListenerConfig,
    TlsVersion,
    UdpAffinityKey,
    UdpHealthMode,
    UdpListenerConfig,
    WorkerRequest,
)
from sozu.command.proto import HealthCheckConfig as HealthCheckProto
from sozu.command.proto import HstsConfig as HstsProto
from sozu.command.proto import UdpClusterConfig as UdpClusterProto
from sozu.command.proto import UdpHealthConfig as UdpHealthProto

# Defaults that are not plain top-level scalars (those live on the dataclasses below).
DEFAULT_STICKY_NAME = "SOZUBALANCEID"
DEFAULT_CIPHER_LIST = (
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
DEFAULT_SIGNATURE_ALGORITHMS = (
    "ECDSA+SHA256",
    "ECDSA+SHA384",
    "ECDSA+SHA512",
    "RSA+SHA256",
    "RSA+SHA384",
    "RSA+SHA512",
    "RSA-PSS+SHA256",
    "RSA-PSS+SHA384",
    "RSA-PSS+SHA512",
)
ACCESS_LOG_FORMATS = ("ascii", "protobuf", "json")
"""`access_logs_format` values: Sōzu's two, and `json`, a sozu-py extension (doc/configure.md)."""
DEFAULT_GROUPS_LIST = ("X25519MLKEM768", "x25519", "P-256", "P-384")
DEFAULT_ALPN_PROTOCOLS = ("h2", "http/1.1")
DEFAULT_TLS_VERSIONS = ("TLS_V12", "TLS_V13")
DEFAULT_SEND_TLS13_TICKETS = 4
DEFAULT_UDP_TIMEOUT = 30
DEFAULT_UDP_MAX_RX_DATAGRAM_SIZE = 1500
DEFAULT_HSTS_MAX_AGE = 31_536_000
DEFAULT_BACKEND_WEIGHT = 100
H2_MIN_BUFFER_SIZE = 16_393
SLAB_ENTRIES_RANGE = (2, 32)

# HTTP/2 tuning of HTTP(S) listeners: the TOML key, the `listener update` flag's dest and the
# protobuf field share the name; u32 and u64 are the integer widths.
H2_U32_KNOBS = (
    "h2_max_rst_stream_per_window",
    "h2_max_ping_per_window",
    "h2_max_settings_per_window",
    "h2_max_empty_data_per_window",
    "h2_max_window_update_stream0_per_window",
    "h2_max_continuation_frames",
    "h2_max_glitch_count",
    "h2_initial_connection_window",
    "h2_max_concurrent_streams",
    "h2_stream_shrink_ratio",
    "h2_max_header_list_size",
    "h2_max_header_table_size",
    "h2_max_header_fields",
    "h2_stream_idle_timeout_seconds",
    "h2_graceful_shutdown_deadline_seconds",
)
H2_U64_KNOBS = (
    "h2_max_rst_stream_lifetime",
    "h2_max_rst_stream_abusive_lifetime",
    "h2_max_rst_stream_emitted_lifetime",
)

# `tls_versions` spellings in TOML -> TlsVersion value names in the protobuf schema.
TLS_VERSIONS = MappingProxyType(
    {
        "SSL_V2": "SSL_V2",
        "SSL_V3": "SSL_V3",
        "TLS_V10": "TLS_V1_0",
        "TLS_V11": "TLS_V1_1",
        "TLS_V12": "TLS_V1_2",
        "TLS_V13": "TLS_V1_3",
    }
)


class ListenerProtocol(StrEnum):
    """The `protocol` of a `[[listeners]]` entry."""

    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"
    UDP = "udp"


class ClusterProtocol(StrEnum):
    """The `protocol` of a `[clusters.NAME]` table; HTTPS frontends belong to http clusters."""

    HTTP = "http"
    TCP = "tcp"


_LISTENER_TYPES = MappingProxyType(
    {
        ListenerProtocol.HTTP: ListenerType.HTTP,
        ListenerProtocol.HTTPS: ListenerType.HTTPS,
        ListenerProtocol.TCP: ListenerType.TCP,
        ListenerProtocol.UDP: ListenerType.UDP,
    }
)


# --------------------------------------------------------------------------------------------
# The validated model


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """`[metrics]`: where workers send statsd metrics."""

    address: str
    tagged_metrics: bool = False
    prefix: str | None = None
    detail: str = "cluster"


@dataclass(frozen=True, kw_only=True)
class HstsConfig:
    """An `hsts` table (listener default or per frontend); `max_age` is filled when enabled."""

    enabled: bool
    max_age: int | None = None
    include_subdomains: bool | None = None
    preload: bool | None = None
    force_replace_backend: bool | None = None

    def to_proto(self) -> HstsProto:
        """The protobuf HstsConfig."""
        return HstsProto(
            enabled=self.enabled,
            max_age=self.max_age,
            include_subdomains=self.include_subdomains,
            preload=self.preload,
            force_replace_backend=self.force_replace_backend,
        )


@dataclass(frozen=True, kw_only=True)
class ListenerConfig:
    """One listener with every value resolved (timeouts inherited, files read).

    Fields that a protocol does not use keep their defaults; `custom_answers` holds the bodies of
    the legacy `answer_NNN` keys by status code and `answers` the merged status -> body map.
    """

    protocol: ListenerProtocol
    address: str
    public_address: str | None = None
    expect_proxy: bool = False
    sticky_name: str = DEFAULT_STICKY_NAME
    front_timeout: int = 60
    back_timeout: int = 30
    connect_timeout: int = 3
    request_timeout: int = 10
    custom_answers: dict[str, str] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    tls_versions: tuple[str, ...] = DEFAULT_TLS_VERSIONS
    cipher_list: tuple[str, ...] = DEFAULT_CIPHER_LIST
    cipher_suites: tuple[str, ...] = DEFAULT_CIPHER_LIST
    signature_algorithms: tuple[str, ...] = DEFAULT_SIGNATURE_ALGORITHMS
    groups_list: tuple[str, ...] = DEFAULT_GROUPS_LIST
    certificate: str | None = None
    certificate_chain: tuple[str, ...] = ()
    key: str | None = None
    send_tls13_tickets: int = DEFAULT_SEND_TLS13_TICKETS
    alpn_protocols: tuple[str, ...] = DEFAULT_ALPN_PROTOCOLS
    strict_sni_binding: bool | None = None
    disable_http11: bool | None = None
    elide_x_real_ip: bool = False
    send_x_real_ip: bool = False
    hsts: HstsConfig | None = None
    h2: dict[str, int] = field(default_factory=dict)
    sozu_id_header: str | None = None
    max_rx_datagram_size: int = DEFAULT_UDP_MAX_RX_DATAGRAM_SIZE
    max_flows: int = 0

    def to_request(self) -> Request:
        """The Add*Listener request (the listener starts inactive)."""
        address = addresses.to_proto(self.address)
        public = addresses.to_proto(self.public_address) if self.public_address else None
        if self.protocol is ListenerProtocol.TCP:
            return Request(
                add_tcp_listener=TcpListenerConfig(
                    address=address,
                    public_address=public,
                    expect_proxy=self.expect_proxy,
                    front_timeout=self.front_timeout,
                    back_timeout=self.back_timeout,
                    connect_timeout=self.connect_timeout,
                    active=False,
                )
            )
        if self.protocol is ListenerProtocol.UDP:
            return Request(
                add_udp_listener=UdpListenerConfig(
                    address=address,
                    public_address=public,
                    front_timeout=self.front_timeout,
                    back_timeout=self.back_timeout,
                    max_rx_datagram_size=self.max_rx_datagram_size,
                    max_flows=self.max_flows,
                    active=False,
                )
            )
        common: dict[str, Any] = dict(
            address=address,
            public_address=public,
            expect_proxy=self.expect_proxy,
            sticky_name=self.sticky_name,
            front_timeout=self.front_timeout,
            back_timeout=self.back_timeout,
            connect_timeout=self.connect_timeout,
            request_timeout=self.request_timeout,
            active=False,
            http_answers=CustomHttpAnswers(
                **{f"answer_{code}": body for code, body in self.custom_answers.items()}
            ),
            answers=self.answers,
            sozu_id_header=self.sozu_id_header,
            elide_x_real_ip=self.elide_x_real_ip,
            send_x_real_ip=self.send_x_real_ip,
            **self.h2,
        )
        if self.protocol is ListenerProtocol.HTTP:
            return Request(add_http_listener=HttpListenerConfig(**common))
        return Request(
            add_https_listener=HttpsListenerConfig(
                **common,
                versions=[TlsVersion.Value(TLS_VERSIONS[v]) for v in self.tls_versions],
                cipher_list=self.cipher_list,
                cipher_suites=self.cipher_suites,
                signature_algorithms=self.signature_algorithms,
                groups_list=self.groups_list,
                certificate=self.certificate,
                certificate_chain=self.certificate_chain,
                key=self.key,
                send_tls13_tickets=self.send_tls13_tickets,
                alpn_protocols=self.alpn_protocols,
                strict_sni_binding=self.strict_sni_binding,
                disable_http11=self.disable_http11,
                hsts=self.hsts.to_proto() if self.hsts else None,
            )
        )

    def activate_request(self) -> Request:
        """The ActivateListener request for this listener."""
        return Request(
            activate_listener=ActivateListener(
                address=addresses.to_proto(self.address),
                proxy=_LISTENER_TYPES[self.protocol],
                from_scm=False,
            )
        )


@dataclass(frozen=True, kw_only=True)
class HeaderEdit:
    """One `headers` entry of a frontend; an empty value deletes the header."""

    position: str  # REQUEST, RESPONSE or BOTH
    key: str
    value: str


@dataclass(frozen=True, kw_only=True)
class HttpFrontendConfig:
    """A frontend of an http cluster; with certificate and key it is an HTTPS frontend."""

    address: str
    hostname: str
    path: str = ""
    path_type: str = "PREFIX"
    method: str | None = None
    certificate: str | None = None
    key: str | None = None
    certificate_chain: tuple[str, ...] = ()
    tls_versions: tuple[str, ...] = ()
    position: str = "PRE"
    tags: dict[str, str] = field(default_factory=dict)
    redirect: str | None = None
    redirect_scheme: str | None = None
    redirect_template: str | None = None
    rewrite_host: str | None = None
    rewrite_path: str | None = None
    rewrite_port: int | None = None
    required_auth: bool | None = None
    headers: tuple[HeaderEdit, ...] = ()
    hsts: HstsConfig | None = None

    @property
    def is_https(self) -> bool:
        """True when the frontend carries its own certificate and key."""
        return self.certificate is not None and self.key is not None

    def to_requests(self, cluster_id: str) -> list[Request]:
        """AddHttpFrontend, or AddCertificate then AddHttpsFrontend."""
        address = addresses.to_proto(self.address)
        frontend = RequestHttpFrontend(
            cluster_id=cluster_id,
            address=address,
            hostname=self.hostname,
            path=PathRule(kind=PathRuleKind.Value(self.path_type), value=self.path),
            method=self.method,
            position=RulePosition.Value(self.position),
            tags=self.tags,
            redirect=RedirectPolicy.Value(self.redirect) if self.redirect else None,
            required_auth=self.required_auth,
            redirect_scheme=(
                RedirectScheme.Value(self.redirect_scheme) if self.redirect_scheme else None
            ),
            redirect_template=self.redirect_template,
            rewrite_host=self.rewrite_host,
            rewrite_path=self.rewrite_path,
            rewrite_port=self.rewrite_port,
            headers=[
                Header(position=HeaderPosition.Value(h.position), key=h.key, val=h.value)
                for h in self.headers
            ],
            hsts=self.hsts.to_proto() if self.hsts else None,
        )
        if not self.is_https:
            return [Request(add_http_frontend=frontend)]
        certificate = AddCertificate(
            address=address,
            certificate=CertificateAndKey(
                certificate=self.certificate,
                certificate_chain=self.certificate_chain,
                key=self.key,
                versions=[TlsVersion.Value(TLS_VERSIONS[v]) for v in self.tls_versions],
                names=[],
            ),
        )
        return [Request(add_certificate=certificate), Request(add_https_frontend=frontend)]


@dataclass(frozen=True, kw_only=True)
class TcpFrontendConfig:
    """A frontend of a tcp cluster; on a udp listener's address it is a UDP frontend."""

    address: str
    tags: dict[str, str] = field(default_factory=dict)
    udp: bool = False

    def to_request(self, cluster_id: str) -> Request:
        """AddTcpFrontend or AddUdpFrontend."""
        address = addresses.to_proto(self.address)
        if self.udp:
            return Request(
                add_udp_frontend=RequestUdpFrontend(
                    cluster_id=cluster_id, address=address, tags=self.tags
                )
            )
        return Request(
            add_tcp_frontend=RequestTcpFrontend(
                cluster_id=cluster_id, address=address, tags=self.tags
            )
        )


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """A backend; `backend_id` defaults to `{cluster}-{index}-{address}`."""

    address: str
    backend_id: str
    weight: int = DEFAULT_BACKEND_WEIGHT
    sticky_id: str | None = None
    backup: bool | None = None

    def to_request(self, cluster_id: str) -> Request:
        """The AddBackend request."""
        return Request(
            add_backend=AddBackend(
                cluster_id=cluster_id,
                backend_id=self.backend_id,
                address=addresses.to_proto(self.address),
                sticky_id=self.sticky_id,
                load_balancing_parameters=LoadBalancingParams(weight=self.weight),
                backup=self.backup,
            )
        )


@dataclass(frozen=True, kw_only=True)
class HealthCheckConfig:
    """A cluster's `health_check` table (active HTTP probes)."""

    uri: str
    interval: int = 10
    timeout: int = 5
    healthy_threshold: int = 3
    unhealthy_threshold: int = 3
    expected_status: int = 0

    def to_proto(self) -> HealthCheckProto:
        """The protobuf HealthCheckConfig."""
        return HealthCheckProto(
            uri=self.uri,
            interval=self.interval,
            timeout=self.timeout,
            healthy_threshold=self.healthy_threshold,
            unhealthy_threshold=self.unhealthy_threshold,
            expected_status=self.expected_status,
        )


@dataclass(frozen=True, kw_only=True)
class UdpHealthConfig:
    """A UDP cluster's `udp.health` table; unset values take the worker's defaults."""

    mode: str | None = None
    tcp_port: int | None = None
    rise: int | None = None
    fall: int | None = None
    fail_open: bool | None = None
    udp_probe_payload: str | None = None
    probe_interval_seconds: int | None = None
    probe_timeout_seconds: int | None = None

    def to_proto(self) -> UdpHealthProto:
        """The protobuf UdpHealthConfig."""
        return UdpHealthProto(
            mode=UdpHealthMode.Value(self.mode) if self.mode else None,
            tcp_port=self.tcp_port,
            rise=self.rise,
            fall=self.fall,
            fail_open=self.fail_open,
            udp_probe_payload=(
                self.udp_probe_payload.encode() if self.udp_probe_payload is not None else None
            ),
            probe_interval_seconds=self.probe_interval_seconds,
            probe_timeout_seconds=self.probe_timeout_seconds,
        )


@dataclass(frozen=True, kw_only=True)
class UdpClusterConfig:
    """A cluster's `udp` table: datagram flow knobs for frontends on udp listeners."""

    affinity_key: str | None = None
    responses: int | None = None
    requests: int | None = None
    send_proxy_protocol: bool | None = None
    proxy_protocol_every_datagram: bool | None = None
    health: UdpHealthConfig | None = None

    def to_proto(self) -> UdpClusterProto:
        """The protobuf UdpClusterConfig."""
        return UdpClusterProto(
            affinity_key=UdpAffinityKey.Value(self.affinity_key) if self.affinity_key else None,
            responses=self.responses,
            requests=self.requests,
            send_proxy_protocol=self.send_proxy_protocol,
            proxy_protocol_every_datagram=self.proxy_protocol_every_datagram,
            health=self.health.to_proto() if self.health else None,
        )


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """A `[clusters.NAME]` table with its frontends (resolved against listeners) and backends."""

    cluster_id: str
    protocol: ClusterProtocol
    frontends: tuple[HttpFrontendConfig | TcpFrontendConfig, ...] = ()
    backends: tuple[BackendConfig, ...] = ()
    sticky_session: bool = False
    https_redirect: bool = False
    proxy_protocol: str | None = None  # EXPECT_HEADER, SEND_HEADER or RELAY_HEADER (tcp only)
    load_balancing: str = "ROUND_ROBIN"
    load_metric: str | None = None
    answer_503: str | None = None
    http2: bool | None = None
    answers: dict[str, str] = field(default_factory=dict)
    https_redirect_port: int | None = None
    authorized_hashes: tuple[str, ...] = ()
    www_authenticate: str | None = None
    max_connections_per_ip: int | None = None
    retry_after: int | None = None
    health_check: HealthCheckConfig | None = None
    udp: UdpClusterConfig | None = None

    def to_requests(self) -> list[Request]:
        """AddCluster, then each frontend's requests, then one AddBackend per backend."""
        cluster = Cluster(
            cluster_id=self.cluster_id,
            sticky_session=self.sticky_session,
            https_redirect=self.https_redirect,
            proxy_protocol=(
                ProxyProtocolConfig.Value(self.proxy_protocol) if self.proxy_protocol else None
            ),
            load_balancing=LoadBalancingAlgorithms.Value(self.load_balancing),
            answer_503=self.answer_503,
            load_metric=LoadMetric.Value(self.load_metric) if self.load_metric else None,
            http2=self.http2,
            answers=self.answers,
            https_redirect_port=self.https_redirect_port,
            authorized_hashes=self.authorized_hashes,
            www_authenticate=self.www_authenticate,
            max_connections_per_ip=self.max_connections_per_ip,
            retry_after=self.retry_after,
            health_check=self.health_check.to_proto() if self.health_check else None,
            udp=self.udp.to_proto() if self.udp else None,
        )
        requests = [Request(add_cluster=cluster)]
        for frontend in self.frontends:
            if isinstance(frontend, HttpFrontendConfig):
                requests.extend(frontend.to_requests(self.cluster_id))
            else:
                requests.append(frontend.to_request(self.cluster_id))
        requests.extend(backend.to_request(self.cluster_id) for backend in self.backends)
        return requests


@dataclass(frozen=True, kw_only=True)
class Config:
    """A loaded, validated configuration; defaults are Sōzu's.

    `listeners` is in request order (http, https, tcp, udp; each in file order followed by the
    listeners created for frontends that had none); `clusters` is in file order. `warnings` holds
    what was accepted but is probably a mistake (unknown top-level keys, ignored options).
    """

    config_path: Path
    command_socket: Path
    command_buffer_size: int = 1_000_000
    max_command_buffer_size: int = 2_000_000
    max_connections: int = 10_000
    min_buffers: int = 1
    max_buffers: int = 1_000
    buffer_size: int = 16_393
    slab_entries_per_connection: int | None = None
    basic_auth_max_credential_bytes: int | None = None
    max_connections_per_ip: int = 0
    retry_after: int = 60
    splice_pipe_capacity_bytes: int | None = None
    command_allowed_uids: tuple[int, ...] | None = None
    saved_state: Path | None = None
    automatic_state_save: bool = False
    log_level: str = "info"
    log_target: str = "stdout"
    log_colored: bool = False
    audit_logs_target: str | None = None
    audit_logs_json_target: str | None = None
    access_logs_target: str | None = None
    access_logs_format: str = "ascii"
    access_logs_colored: bool | None = None
    worker_count: int = 2
    worker_automatic_restart: bool = True
    worker_timeout: int = 10
    metrics: MetricsConfig | None = None
    disable_cluster_metrics: bool = False
    handle_process_affinity: bool = False
    ctl_command_timeout: int = 1_000
    pid_file_path: str | None = None
    activate_listeners: bool = True
    front_timeout: int = 60
    back_timeout: int = 30
    connect_timeout: int = 3
    request_timeout: int = 10
    zombie_check_interval: int = 1_800
    accept_queue_timeout: int = 60
    evict_on_queue_full: bool = False
    listeners: tuple[ListenerConfig, ...] = ()
    clusters: tuple[ClusterConfig, ...] = ()
    warnings: list[str] = field(default_factory=list, compare=False, repr=False)

    def listeners_of(self, protocol: ListenerProtocol) -> tuple[ListenerConfig, ...]:
        """The listeners of one protocol, in request order."""
        return tuple(listener for listener in self.listeners if listener.protocol is protocol)

    def requests(self) -> list[Request]:
        """The Requests that build the initial state, in Sōzu's order."""
        result = [listener.to_request() for listener in self.listeners]
        for cluster in self.clusters:
            result.extend(cluster.to_requests())
        if self.activate_listeners:
            result.extend(listener.activate_request() for listener in self.listeners)
        if self.disable_cluster_metrics:
            result.append(Request(configure_metrics=MetricsConfiguration.DISABLED))
        return result

    def to_requests(self) -> list[WorkerRequest]:
        """`requests()` wrapped in WorkerRequests with ids CONFIG-0, CONFIG-1, ..."""
        return [
            WorkerRequest(id=f"CONFIG-{n}", content=request)
            for n, request in enumerate(self.requests())
        ]

    def worker_arguments(self) -> tuple[str, ...]:
        """`sozu worker` flags beyond Sōzu's, for what ServerConfig cannot carry.

        `access_logs_format = "json"` has no value in ServerConfig's `access_log_format` (the
        schema stays Sōzu's), so it reaches workers as `--access-logs-format json`.
        """
        if self.access_logs_format == "json":
            return ("--access-logs-format", "json")
        return ()

    def server_config(self) -> ServerConfig:
        """The ServerConfig sent first to every worker."""
        metrics = None
        if self.metrics is not None:
            metrics = ServerMetricsConfig(
                address=self.metrics.address,
                tagged_metrics=self.metrics.tagged_metrics,
                prefix=self.metrics.prefix,
                detail=MetricDetail.Value("DETAIL_" + self.metrics.detail.upper()),
            )
        return ServerConfig(
            max_connections=self.max_connections,
            front_timeout=self.front_timeout,
            back_timeout=self.back_timeout,
            connect_timeout=self.connect_timeout,
            zombie_check_interval=self.zombie_check_interval,
            accept_queue_timeout=self.accept_queue_timeout,
            min_buffers=self.min_buffers,
            max_buffers=self.max_buffers,
            buffer_size=self.buffer_size,
            log_level=self.log_level,
            log_target=self.log_target,
            access_logs_target=self.access_logs_target,
            command_buffer_size=self.command_buffer_size,
            max_command_buffer_size=self.max_command_buffer_size,
            metrics=metrics,
            access_log_format=(
                ProtobufAccessLogFormat.Protobuf
                if self.access_logs_format == "protobuf"
                else ProtobufAccessLogFormat.Ascii  # json travels beside: worker_arguments()
            ),
            log_colored=self.log_colored,
            audit_logs_target=self.audit_logs_target,
            audit_logs_json_target=self.audit_logs_json_target,
            slab_entries_per_connection=self.slab_entries_per_connection,
            basic_auth_max_credential_bytes=self.basic_auth_max_credential_bytes,
            evict_on_queue_full=self.evict_on_queue_full,
            max_connections_per_ip=self.max_connections_per_ip,
            retry_after=self.retry_after,
            splice_pipe_capacity_bytes=self.splice_pipe_capacity_bytes,
        )
