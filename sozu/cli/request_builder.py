"""Parsed command-line words -> the protobuf `Request` the supervisor receives.

One function per leaf command, chosen by the `action` the parser stores (`"cluster.add"`,
`"listener.https.update"`, ...). The Request shapes, defaults and input checks are those of
Sōzu's `sozu` command line, so a state built with this CLI equals one built with Sōzu's. The
functions read the files an operator names (certificates, keys, answer templates) but open no
socket: sending belongs to `sozu.cli.client`, printing to `sozu.cli.render`.

Commands that take several exchanges (`upgrade` without `--worker`, `cluster h2`) are driven by
`sozu.cli.main`; the pieces they need (`cluster_with_http2`, `worker_ids`) live here so they are
tested like the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sozu.command import addresses
from sozu.command import certificate as certificates
from sozu.command.config import Config, ListenerConfig, ListenerProtocol
from sozu.command.config_model import (
    DEFAULT_HSTS_MAX_AGE,
    DEFAULT_STICKY_NAME,
    DEFAULT_UDP_MAX_RX_DATAGRAM_SIZE,
    DEFAULT_UDP_TIMEOUT,
    H2_U32_KNOBS,
    H2_U64_KNOBS,
    TLS_VERSIONS,
)
from sozu.command.errors import SozuError
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    AlpnProtocols,
    CertificateAndKey,
    Cluster,
    CountRequests,
    CustomHttpAnswers,
    DeactivateListener,
    FrontendFilters,
    HardStop,
    Header,
    HeaderPosition,
    HealthCheckConfig,
    HstsConfig,
    ListenerType,
    ListListeners,
    ListWorkers,
    LoadBalancingAlgorithms,
    LoadBalancingParams,
    MetricsConfiguration,
    PathRule,
    PathRuleKind,
    ProxyProtocolConfig,
    QueryCertificatesFilters,
    QueryClusterByDomain,
    QueryClustersHashes,
    QueryHealthChecks,
    QueryMaxConnectionsPerIp,
    QueryMetricsOptions,
    RedirectPolicy,
    RedirectScheme,
    RemoveBackend,
    RemoveCertificate,
    RemoveListener,
    ReplaceCertificate,
    Request,
    RequestHttpFrontend,
    RequestTcpFrontend,
    RequestUdpFrontend,
    Response,
    ResponseContent,
    RulePosition,
    RunState,
    SetHealthCheck,
    SoftStop,
    Status,
    SubscribeEvents,
    TlsVersion,
    UpdateHttpListenerConfig,
    UpdateHttpsListenerConfig,
    UpdateTcpListenerConfig,
    UpdateUdpListenerConfig,
    UpgradeMain,
)
from sozu.command.state import StateError, check_health_check, is_header_name


class InvalidInput(SozuError):
    """Words that parse but cannot become a Request (bad value, unreadable file, ...)."""


Builder = Callable[[argparse.Namespace, Config | None], Request]

# --------------------------------------------------------------------------------------------
# Value spellings accepted on the command line (shared with the parser for its help texts)

LOAD_BALANCING_POLICIES = {
    "round_robin": LoadBalancingAlgorithms.ROUND_ROBIN,
    "roundrobin": LoadBalancingAlgorithms.ROUND_ROBIN,
    "random": LoadBalancingAlgorithms.RANDOM,
    "least_loaded": LoadBalancingAlgorithms.LEAST_LOADED,
    "power_of_two": LoadBalancingAlgorithms.POWER_OF_TWO,
    "hrw": LoadBalancingAlgorithms.HRW,
    "maglev": LoadBalancingAlgorithms.MAGLEV,
}

# Sōzu's TlsVersion spellings on the command line -> the config file's (ListenerConfig's) names.
TLS_VERSION_NAMES = {
    "SSL_V2": "SSL_V2",
    "SSL_V3": "SSL_V3",
    "TLSv1": "TLS_V10",
    "TLS_V10": "TLS_V10",
    "TLS_V11": "TLS_V11",
    "TLS_V12": "TLS_V12",
    "TLS_V13": "TLS_V13",
}
_DEPRECATED_TLS = {"SSL_V2", "SSL_V3", "TLS_V10", "TLS_V11"}

REDIRECT_POLICIES = {
    "forward": RedirectPolicy.FORWARD,
    "permanent": RedirectPolicy.PERMANENT,
    "unauthorized": RedirectPolicy.UNAUTHORIZED,
    "found": RedirectPolicy.FOUND,
    "permanent-redirect": RedirectPolicy.PERMANENT_REDIRECT,
    "permanent_redirect": RedirectPolicy.PERMANENT_REDIRECT,
}
REDIRECT_SCHEMES = {
    "use-same": RedirectScheme.USE_SAME,
    "use_same": RedirectScheme.USE_SAME,
    "use-http": RedirectScheme.USE_HTTP,
    "use_http": RedirectScheme.USE_HTTP,
    "use-https": RedirectScheme.USE_HTTPS,
    "use_https": RedirectScheme.USE_HTTPS,
}
_HEADER_POSITIONS = {
    "request": HeaderPosition.REQUEST,
    "response": HeaderPosition.RESPONSE,
    "both": HeaderPosition.BOTH,
}
_HEX = frozenset("0123456789abcdef")

LISTENER_TYPES = {
    "http": ListenerType.HTTP,
    "https": ListenerType.HTTPS,
    "tcp": ListenerType.TCP,
    "udp": ListenerType.UDP,
}

UPDATE_ANSWER_CODES = ("301", "401", "404", "408", "413", "421", "429", "502", "503", "504", "507")

# The config file's top-level defaults (Sōzu's), used when the CLI runs without a config file.
_CONFIG_DEFAULTS = {
    item.name: item.default
    for item in dataclasses.fields(Config)
    if item.default is not dataclasses.MISSING
}


# --------------------------------------------------------------------------------------------
# Small parsers, usable as argparse `type=` (they raise ArgumentTypeError, a ValueError)


def address_text(text: str) -> str:
    """`IP:PORT` checked and normalised (`argparse` type)."""
    try:
        return addresses.normalize(text)
    except SozuError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def load_balancing_policy(text: str) -> int:
    """A `--load-balancing-policy` name, case-insensitive (`argparse` type)."""
    try:
        return LOAD_BALANCING_POLICIES[text.lower()]
    except KeyError:
        names = ", ".join(n for n in LOAD_BALANCING_POLICIES if n != "roundrobin")
        raise argparse.ArgumentTypeError(
            f"unknown load balancing policy {text!r} (expected one of {names})"
        ) from None


def tls_version(text: str) -> str:
    """A `--tls-versions` value (Sōzu's spellings: TLSv1, TLS_V11, TLS_V12, TLS_V13)."""
    try:
        return TLS_VERSION_NAMES[text]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unrecognized TLS version: {text} (expected TLS_V12 or TLS_V13; TLSv1 and "
            "TLS_V11 are accepted but deprecated)"
        ) from None


def boolean(text: str) -> bool:
    """`true` or `false` (`argparse` type, as clap's bool parser)."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected true or false")


def tags(text: str) -> dict[str, str]:
    """`key=value, other=value` -> a dict, as Sōzu's `--tags`."""
    result: dict[str, str] = {}
    for entry in text.split(","):
        key, sep, value = entry.strip().partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(
                f"cannot parse the tags {text!r}: each tag is key=value, separated by commas"
            )
        result[key] = value
    return result


def comma_list(text: str) -> list[str]:
    """`a,b,c` -> ["a", "b", "c"] (empty items dropped)."""
    return [item for item in text.split(",") if item]


def u32(text: str) -> int:
    return _bounded_int(text, 0, 2**32 - 1)


def u64(text: str) -> int:
    return _bounded_int(text, 0, 2**64 - 1)


def _bounded_int(text: str, low: int, high: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is out of range ({low}..{high})")
    return value


# --------------------------------------------------------------------------------------------
# Helpers


def _flatten(values: Iterable[Iterable[str]] | None) -> list[str]:
    """Repeated options whose values may also be comma-separated."""
    return [item for group in values or () for item in group]


def _read_text(path: str, what: str) -> str:
    try:
        # Bytes as they are: no newline translation, an answer template keeps its CRLFs.
        return Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InvalidInput(f"cannot read the {what} {path}: {reason}") from None


def _absolute(path: str) -> str:
    """A path given on the command line, made absolute against the CLI's directory."""
    return os.path.abspath(path)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _tls_versions(names: list[str], default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Config-file TLS names, warning about the deprecated ones (RFC 8996)."""
    if not names:
        return default
    for name in dict.fromkeys(names):
        if name in _DEPRECATED_TLS:
            _warn(f"{name} is deprecated and insecure (RFC 8996)")
    return tuple(names)


def _tls_values(names: Iterable[str]) -> list[TlsVersion.ValueType]:
    return [TlsVersion.Value(TLS_VERSIONS[name]) for name in names]


def path_rule(args: argparse.Namespace) -> PathRule:
    """-p/--path-prefix wins over --path-regex, which wins over --path-equals; none = prefix ""."""
    if args.path_prefix is not None:
        return PathRule(kind=PathRuleKind.PREFIX, value=args.path_prefix)
    if args.path_regex is not None:
        return PathRule(kind=PathRuleKind.REGEX, value=args.path_regex)
    if args.path_equals is not None:
        return PathRule(kind=PathRuleKind.EQUALS, value=args.path_equals)
    return PathRule(kind=PathRuleKind.PREFIX, value="")


def _route(args: argparse.Namespace) -> str | None:
    """`id <CLUSTER_ID>` -> the cluster id; `deny` -> None (a deny rule)."""
    return args.cluster_id if args.route == "id" else None


def _has_control_byte(value: str) -> bool:
    return any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)


def headers(raw_headers: list[str] | None) -> list[Header]:
    """`--header position=name=value` entries (an empty value deletes the header)."""
    result = []
    for index, raw in enumerate(raw_headers or ()):
        position, sep, rest = raw.partition("=")
        key, sep2, value = rest.partition("=")
        if not sep or not sep2:
            raise InvalidInput(f"--header {raw!r}: expected <position>=<name>=<value>")
        kind = _HEADER_POSITIONS.get(position.lower())
        if kind is None:
            raise InvalidInput(
                f"--header[{index}]: position {position!r} is not request, response or both"
            )
        if not is_header_name(key):
            raise InvalidInput(
                f"--header[{index}]: {key!r} is not a valid header name (RFC 9110 token)"
            )
        if _has_control_byte(value):
            raise InvalidInput(f"--header[{index}]: the value holds a control character")
        result.append(Header(position=kind, key=key, val=value))
    return result


def hsts(args: argparse.Namespace) -> HstsConfig | None:
    """The --hsts-* flags: None inherits the listener's policy, `--hsts-disabled` turns it off."""
    enabling = (
        args.hsts_max_age is not None
        or args.hsts_include_subdomains
        or args.hsts_preload
        or args.hsts_force_replace_backend
    )
    if args.hsts_disabled and enabling:
        raise InvalidInput(
            "--hsts-disabled cannot be combined with --hsts-max-age, --hsts-include-subdomains, "
            "--hsts-preload or --hsts-force-replace-backend"
        )
    if args.hsts_disabled:
        return HstsConfig(enabled=False)
    if not enabling:
        return None
    return HstsConfig(
        enabled=True,
        max_age=args.hsts_max_age if args.hsts_max_age is not None else DEFAULT_HSTS_MAX_AGE,
        include_subdomains=True if args.hsts_include_subdomains else None,
        preload=True if args.hsts_preload else None,
        force_replace_backend=True if args.hsts_force_replace_backend else None,
    )


def _port(value: int | None, flag: str) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        raise InvalidInput(f"{flag} must be a TCP port in 1..65535, got {value}")
    return value


def looks_like_authorized_hash(text: str) -> bool:
    """`user:<64 lower-case hex digits>`, user made of letters, digits, `_` and `-`."""
    user, sep, digest = text.partition(":")
    return (
        bool(sep)
        and bool(user)
        and all((c.isascii() and c.isalnum()) or c in "_-" for c in user)
        and len(digest) == 64
        and all(c in _HEX for c in digest)
    )


def _answer_entries(entries: list[str] | None) -> dict[str, str]:
    """`--answer CODE=BODY` or `CODE=file://PATH` entries -> status -> template."""
    answers: dict[str, str] = {}
    for entry in entries or ():
        code, sep, value = entry.partition("=")
        if not sep or not value:
            raise InvalidInput(
                f"--answer {entry!r}: expected <code>=<body> or <code>=file://<path>"
            )
        if value.startswith("file://"):
            value = _read_text(value.removeprefix("file://"), "answer file")
        answers[code] = value
    return answers


def _http_answers(args: argparse.Namespace) -> CustomHttpAnswers | None:
    """`--answer-NNN FILE` flags of `listener ... update`; None when none was given."""
    given = {code: getattr(args, f"answer_{code}") for code in UPDATE_ANSWER_CODES}
    if all(path is None for path in given.values()):
        return None
    return CustomHttpAnswers(
        **{
            f"answer_{code}": _read_text(path, f"{code} answer file")
            for code, path in given.items()
            if path is not None
        }
    )


def _h2_knobs(args: argparse.Namespace) -> dict[str, Any]:
    knobs = {name: getattr(args, name) for name in (*H2_U32_KNOBS, *H2_U64_KNOBS)}
    return {name: value for name, value in knobs.items() if value is not None}


def _timeouts(
    args: argparse.Namespace, config: Config | None, names: Iterable[str]
) -> dict[str, Any]:
    """Listener timeouts: the flag, else the config file's global value, else Sōzu's default."""
    result = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            value = getattr(config, name) if config is not None else _CONFIG_DEFAULTS[name]
        result[name] = value
    return result


# --------------------------------------------------------------------------------------------
# Builders, one per leaf command


def shutdown(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(hard_stop=HardStop()) if args.hard else Request(soft_stop=SoftStop())


def upgrade_worker(args: argparse.Namespace, config: Config | None) -> Request:
    """`upgrade --worker N`; a whole upgrade (no --worker) is several requests, see main.py."""
    if args.worker is None:
        raise InvalidInput("a full upgrade is UpgradeMain then UpgradeWorker for each worker")
    return Request(upgrade_worker=args.worker)


def upgrade_main() -> Request:
    return Request(upgrade_main=UpgradeMain())


def list_workers() -> Request:
    return Request(list_workers=ListWorkers())


def status(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(status=Status())


def metrics_configure(args: argparse.Namespace, config: Config | None) -> Request:
    value = {
        "enable": MetricsConfiguration.ENABLED,
        "disable": MetricsConfiguration.DISABLED,
        "clear": MetricsConfiguration.CLEAR,
    }[args.metrics_command]
    return Request(configure_metrics=value)


def metrics_get(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        query_metrics=QueryMetricsOptions(
            list=args.list,
            cluster_ids=_flatten(args.clusters),
            backend_ids=_flatten(args.backends),
            metric_names=_flatten(args.names),
            no_clusters=args.no_clusters,
            workers=args.workers,
        )
    )


def logging_filter(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(Logging=args.filter)


def state_save(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(save_state=_absolute(args.file))


def state_load(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(load_state=_absolute(args.file))


def state_stats(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(count_requests=CountRequests())


def reload(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(reload_configuration=_absolute(args.file) if args.file else "")


def cluster_list(args: argparse.Namespace, config: Config | None) -> Request:
    if args.id is not None and args.domain is not None:
        raise InvalidInput("give either a cluster id (-i) or a domain (-d), not both")
    if args.id is not None:
        return Request(query_cluster_by_id=args.id)
    if args.domain is not None:
        hostname, sep, path = args.domain.partition("/")
        if not hostname:
            raise InvalidInput("the domain cannot be empty")
        return Request(
            query_clusters_by_domain=QueryClusterByDomain(
                hostname=hostname, path=f"/{path}" if sep else None
            )
        )
    return Request(query_clusters_hashes=QueryClustersHashes())


def cluster_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(remove_cluster=args.id)


def cluster_add(args: argparse.Namespace, config: Config | None) -> Request:
    proxy_protocol = {
        (True, True): ProxyProtocolConfig.RELAY_HEADER,
        (True, False): ProxyProtocolConfig.SEND_HEADER,
        (False, True): ProxyProtocolConfig.EXPECT_HEADER,
    }.get((args.send_proxy, args.expect_proxy))
    hashes = list(args.authorized_hash or ())
    for value in hashes:
        if not looks_like_authorized_hash(value):
            raise InvalidInput(
                f"--authorized-hash {value!r}: expected user:hex(sha256(password)), 64 "
                "lower-case hex digits (printf '%s' PASSWORD | sha256sum)"
            )
    return Request(
        add_cluster=Cluster(
            cluster_id=args.id,
            sticky_session=args.sticky_session,
            https_redirect=args.https_redirect,
            proxy_protocol=proxy_protocol,
            load_balancing=args.load_balancing_policy,
            http2=True if args.http2 else None,
            answers=_answer_entries(args.answer),
            https_redirect_port=_port(args.https_redirect_port, "--https-redirect-port"),
            authorized_hashes=hashes,
            www_authenticate=args.www_authenticate,
        )
    )


def health_check_set(args: argparse.Namespace, config: Config | None) -> Request:
    check = HealthCheckConfig(
        uri=args.uri,
        interval=args.interval,
        timeout=args.hc_timeout,
        healthy_threshold=args.healthy_threshold,
        unhealthy_threshold=args.unhealthy_threshold,
        expected_status=args.expected_status,
    )
    try:
        check_health_check(check)
    except StateError as error:
        raise InvalidInput(error.message) from None
    if check.timeout >= check.interval:
        _warn(
            f"health check timeout ({check.timeout}s) >= interval ({check.interval}s), "
            "checks may overlap"
        )
    return Request(set_health_check=SetHealthCheck(cluster_id=args.id, config=check))


def health_check_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(remove_health_check=args.id)


def health_check_list(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(query_health_checks=QueryHealthChecks(cluster_id=args.id))


def backend_add(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        add_backend=AddBackend(
            cluster_id=args.id,
            backend_id=args.backend_id,
            address=addresses.to_proto(args.address),
            sticky_id=args.sticky_id,
            load_balancing_parameters=LoadBalancingParams(weight=args.weight),
            backup=args.backup,
        )
    )


def backend_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        remove_backend=RemoveBackend(
            cluster_id=args.id,
            backend_id=args.backend_id,
            address=addresses.to_proto(args.address),
        )
    )


def http_frontend(args: argparse.Namespace) -> RequestHttpFrontend:
    """The RequestHttpFrontend of `frontend http|https add` (position TREE, as Sōzu's CLI)."""
    redirect = None
    if args.redirect is not None:
        redirect = REDIRECT_POLICIES.get(args.redirect.lower())
        if redirect is None:
            raise InvalidInput(
                f"--redirect {args.redirect!r}: expected forward, permanent or unauthorized"
            )
    scheme = None
    if args.redirect_scheme is not None:
        scheme = REDIRECT_SCHEMES.get(args.redirect_scheme.lower())
        if scheme is None:
            raise InvalidInput(
                f"--redirect-scheme {args.redirect_scheme!r}: expected use-same, use-http or "
                "use-https"
            )
    return RequestHttpFrontend(
        **_http_frontend_match(args),
        tags=args.tags or {},
        redirect=redirect,
        redirect_scheme=scheme,
        redirect_template=args.redirect_template,
        rewrite_host=args.rewrite_host,
        rewrite_path=args.rewrite_path,
        rewrite_port=_port(args.rewrite_port, "--rewrite-port"),
        required_auth=True if args.required_auth else None,
        headers=headers(args.header),
        hsts=hsts(args),
    )


def _http_frontend_match(args: argparse.Namespace) -> dict[str, Any]:
    """The fields that name an HTTP(S) frontend: all that `frontend http|https remove` sends."""
    return dict(
        cluster_id=_route(args),
        address=addresses.to_proto(args.address),
        hostname=args.hostname,
        path=path_rule(args),
        method=args.method,
        position=RulePosition.TREE,
    )


def _removed_http_frontend(args: argparse.Namespace) -> RequestHttpFrontend:
    return RequestHttpFrontend(**_http_frontend_match(args))


def frontend_http_add(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(add_http_frontend=http_frontend(args))


def frontend_https_add(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(add_https_frontend=http_frontend(args))


def frontend_http_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(remove_http_frontend=_removed_http_frontend(args))


def frontend_https_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(remove_https_frontend=_removed_http_frontend(args))


def frontend_tcp_add(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        add_tcp_frontend=RequestTcpFrontend(
            cluster_id=args.id, address=addresses.to_proto(args.address), tags=args.tags or {}
        )
    )


def frontend_tcp_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        remove_tcp_frontend=RequestTcpFrontend(
            cluster_id=args.id, address=addresses.to_proto(args.address)
        )
    )


def frontend_udp_add(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        add_udp_frontend=RequestUdpFrontend(
            cluster_id=args.id, address=addresses.to_proto(args.address), tags=args.tags or {}
        )
    )


def frontend_udp_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        remove_udp_frontend=RequestUdpFrontend(
            cluster_id=args.id, address=addresses.to_proto(args.address)
        )
    )


def frontend_list(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        list_frontends=FrontendFilters(
            http=args.http, https=args.https, tcp=args.tcp, domain=args.domain
        )
    )


def _listener_answers(args: argparse.Namespace) -> dict[str, str]:
    answers = {}
    for code in ("404", "503"):
        path = getattr(args, f"answer_{code}")
        if path is not None:
            answers[code] = _read_text(path, f"{code} answer file")
    return answers


def _http_listener(
    args: argparse.Namespace, config: Config | None, protocol: ListenerProtocol, **tls: Any
) -> Request:
    """The AddHttpListener / AddHttpsListener of `listener http|https add`."""
    answers = _listener_answers(args)
    listener = ListenerConfig(
        protocol=protocol,
        address=args.address,
        public_address=args.public_address,
        expect_proxy=args.expect_proxy,
        sticky_name=args.sticky_name or DEFAULT_STICKY_NAME,
        custom_answers=answers,
        answers=dict(answers),
        **tls,
        **_timeouts(
            args, config, ("front_timeout", "back_timeout", "connect_timeout", "request_timeout")
        ),
    )
    return listener.to_request()


def listener_http_add(args: argparse.Namespace, config: Config | None) -> Request:
    return _http_listener(args, config, ListenerProtocol.HTTP)


def listener_https_add(args: argparse.Namespace, config: Config | None) -> Request:
    tls: dict[str, Any] = {}
    versions = _tls_versions(_flatten(args.tls_versions), None)
    if versions is not None:
        tls["tls_versions"] = versions
    ciphers = _flatten(args.cipher_list)
    if ciphers:
        tls["cipher_list"] = tuple(ciphers)
    return _http_listener(args, config, ListenerProtocol.HTTPS, **tls)


def listener_tcp_add(args: argparse.Namespace, config: Config | None) -> Request:
    listener = ListenerConfig(
        protocol=ListenerProtocol.TCP,
        address=args.address,
        public_address=args.public_address,
        expect_proxy=args.expect_proxy,
        **_timeouts(args, config, ("front_timeout", "back_timeout", "connect_timeout")),
    )
    return listener.to_request()


def listener_udp_add(args: argparse.Namespace, config: Config | None) -> Request:
    size = args.max_rx_datagram_size
    if size is None:
        size = DEFAULT_UDP_MAX_RX_DATAGRAM_SIZE
    buffer_size = config.buffer_size if config is not None else _CONFIG_DEFAULTS["buffer_size"]
    if size > buffer_size:
        _warn(f"max_rx_datagram_size {size} is over buffer_size, lowered to {buffer_size}")
        size = buffer_size
    listener = ListenerConfig(
        protocol=ListenerProtocol.UDP,
        address=args.address,
        public_address=args.public_address,
        front_timeout=args.front_timeout if args.front_timeout is not None else DEFAULT_UDP_TIMEOUT,
        back_timeout=args.back_timeout if args.back_timeout is not None else DEFAULT_UDP_TIMEOUT,
        max_rx_datagram_size=size,
        max_flows=args.max_flows if args.max_flows is not None else 0,
    )
    return listener.to_request()


def listener_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        remove_listener=RemoveListener(
            address=addresses.to_proto(args.address), proxy=LISTENER_TYPES[args.listener_kind]
        )
    )


def listener_activate(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        activate_listener=ActivateListener(
            address=addresses.to_proto(args.address),
            proxy=LISTENER_TYPES[args.listener_kind],
            from_scm=False,
        )
    )


def listener_deactivate(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        deactivate_listener=DeactivateListener(
            address=addresses.to_proto(args.address),
            proxy=LISTENER_TYPES[args.listener_kind],
            to_scm=False,
        )
    )


def _public(args: argparse.Namespace) -> Any:
    return addresses.to_proto(args.public_address) if args.public_address else None


def _http_update_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields that `listener http update` and `listener https update` share."""
    return dict(
        address=addresses.to_proto(args.address),
        public_address=_public(args),
        expect_proxy=args.expect_proxy,
        sticky_name=args.sticky_name,
        front_timeout=args.front_timeout,
        back_timeout=args.back_timeout,
        connect_timeout=args.connect_timeout,
        request_timeout=args.request_timeout,
        http_answers=_http_answers(args),
        sozu_id_header=args.sozu_id_header,
        **_h2_knobs(args),
    )


def listener_http_update(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(update_http_listener=UpdateHttpListenerConfig(**_http_update_fields(args)))


def listener_https_update(args: argparse.Namespace, config: Config | None) -> Request:
    if args.reset_alpn and args.alpn_protocols is not None:
        raise InvalidInput("--alpn-protocols and --reset-alpn cannot be combined")
    alpn = None
    if args.reset_alpn:
        alpn = AlpnProtocols()
    elif args.alpn_protocols is not None:
        alpn = AlpnProtocols(values=_flatten(args.alpn_protocols))
    return Request(
        update_https_listener=UpdateHttpsListenerConfig(
            alpn_protocols=alpn,
            strict_sni_binding=args.strict_sni_binding,
            disable_http11=args.disable_http11,
            hsts=hsts(args),
            **_http_update_fields(args),
        )
    )


def listener_tcp_update(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        update_tcp_listener=UpdateTcpListenerConfig(
            address=addresses.to_proto(args.address),
            public_address=_public(args),
            expect_proxy=args.expect_proxy,
            front_timeout=args.front_timeout,
            back_timeout=args.back_timeout,
            connect_timeout=args.connect_timeout,
        )
    )


def listener_udp_update(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        update_udp_listener=UpdateUdpListenerConfig(
            address=addresses.to_proto(args.address),
            public_address=_public(args),
            front_timeout=args.front_timeout,
            back_timeout=args.back_timeout,
            max_rx_datagram_size=args.max_rx_datagram_size,
            max_flows=args.max_flows,
        )
    )


def listener_list(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(list_listeners=ListListeners())


def certificate_list(args: argparse.Namespace, config: Config | None) -> Request:
    filters = QueryCertificatesFilters(domain=args.domain, fingerprint=args.fingerprint)
    if args.workers:
        return Request(query_certificates_from_workers=filters)
    return Request(query_certificates_from_the_state=filters)


def _certificate_and_key(
    certificate: str, chain: str, key: str, versions: list[str]
) -> CertificateAndKey:
    return CertificateAndKey(
        certificate=_read_text(certificate, "certificate"),
        certificate_chain=certificates.split_chain(_read_text(chain, "certificate chain")),
        key=_read_text(key, "key"),
        versions=_tls_values(_tls_versions(versions, ()) or ()),
    )


def _fingerprint(certificate_path: str | None, fingerprint: str | None, what: str) -> str:
    """The hex fingerprint from exactly one of a certificate file and a hex fingerprint."""
    if (certificate_path is None) == (fingerprint is None):
        raise InvalidInput(f"give either {what} or its fingerprint (-f), exactly one of them")
    try:
        if certificate_path is not None:
            return certificates.fingerprint_hex(_read_text(certificate_path, "certificate"))
        assert fingerprint is not None
        return certificates.decode_fingerprint(fingerprint).hex()
    except certificates.CertificateError as error:
        raise InvalidInput(str(error)) from None


def certificate_add(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        add_certificate=AddCertificate(
            address=addresses.to_proto(args.address),
            certificate=_certificate_and_key(
                args.certificate, args.certificate_chain, args.key, _flatten(args.tls_versions)
            ),
        )
    )


def certificate_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(
        remove_certificate=RemoveCertificate(
            address=addresses.to_proto(args.address),
            fingerprint=_fingerprint(args.certificate, args.fingerprint, "the certificate file"),
        )
    )


def certificate_replace(args: argparse.Namespace, config: Config | None) -> Request:
    old = _fingerprint(args.old_certificate, args.fingerprint, "the old certificate file")
    return Request(
        replace_certificate=ReplaceCertificate(
            address=addresses.to_proto(args.address),
            new_certificate=_certificate_and_key(
                args.new_certificate,
                args.new_certificate_chain,
                args.new_key,
                _flatten(args.tls_versions),
            ),
            old_fingerprint=old,
        )
    )


def events(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(subscribe_events=SubscribeEvents())


def connection_limit_set(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(set_max_connections_per_ip=args.limit)


def connection_limit_remove(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(set_max_connections_per_ip=0)


def connection_limit_show(args: argparse.Namespace, config: Config | None) -> Request:
    return Request(query_max_connections_per_ip=QueryMaxConnectionsPerIp())


def cluster_query(args: argparse.Namespace, config: Config | None) -> Request:
    """First step of `cluster h2 enable|disable`: the cluster's current configuration."""
    return Request(query_cluster_by_id=args.id)


BUILDERS: dict[str, Builder] = {
    "shutdown": shutdown,
    "upgrade": upgrade_worker,
    "status": status,
    "metrics.configure": metrics_configure,
    "metrics.get": metrics_get,
    "logging": logging_filter,
    "state.save": state_save,
    "state.load": state_load,
    "state.stats": state_stats,
    "reload": reload,
    "cluster.list": cluster_list,
    "cluster.remove": cluster_remove,
    "cluster.add": cluster_add,
    "cluster.h2": cluster_query,
    "cluster.health-check.set": health_check_set,
    "cluster.health-check.remove": health_check_remove,
    "cluster.health-check.list": health_check_list,
    "backend.add": backend_add,
    "backend.remove": backend_remove,
    "frontend.http.add": frontend_http_add,
    "frontend.http.remove": frontend_http_remove,
    "frontend.https.add": frontend_https_add,
    "frontend.https.remove": frontend_https_remove,
    "frontend.tcp.add": frontend_tcp_add,
    "frontend.tcp.remove": frontend_tcp_remove,
    "frontend.udp.add": frontend_udp_add,
    "frontend.udp.remove": frontend_udp_remove,
    "frontend.list": frontend_list,
    "listener.http.add": listener_http_add,
    "listener.https.add": listener_https_add,
    "listener.tcp.add": listener_tcp_add,
    "listener.udp.add": listener_udp_add,
    "listener.remove": listener_remove,
    "listener.activate": listener_activate,
    "listener.deactivate": listener_deactivate,
    "listener.http.update": listener_http_update,
    "listener.https.update": listener_https_update,
    "listener.tcp.update": listener_tcp_update,
    "listener.udp.update": listener_udp_update,
    "listener.list": listener_list,
    "certificate.list": certificate_list,
    "certificate.add": certificate_add,
    "certificate.remove": certificate_remove,
    "certificate.replace": certificate_replace,
    "events": events,
    "connection-limit.set": connection_limit_set,
    "connection-limit.remove": connection_limit_remove,
    "connection-limit.show": connection_limit_show,
}


def build_request(args: argparse.Namespace, config: Config | None = None) -> Request:
    """The Request of the leaf command in `args` (`args.action` names it)."""
    try:
        builder = BUILDERS[args.action]
    except (AttributeError, KeyError):
        raise InvalidInput(f"{getattr(args, 'action', '?')!r} does not send a request") from None
    return builder(args, config)


# --------------------------------------------------------------------------------------------
# Multi-step commands


def cluster_with_http2(response: Response, cluster_id: str, enable: bool) -> Request:
    """`cluster h2 enable|disable`: the AddCluster that re-sends the queried cluster with http2.

    The answer to QueryClusterById is either ClusterInformations or WorkerResponses; the main
    process's view ("main") is preferred, a worker's is used only when main did not answer.
    """
    found = _find_cluster(response.content, cluster_id) if response.HasField("content") else None
    if found is None:
        raise InvalidInput(f"cluster {cluster_id!r} not found")
    updated = Cluster()
    updated.CopyFrom(found)
    updated.http2 = enable
    return Request(add_cluster=updated)


def _find_cluster(content: ResponseContent, cluster_id: str) -> Cluster | None:
    kind = content.WhichOneof("content_type")
    if kind == "clusters":
        for info in content.clusters.vec:
            if info.HasField("configuration") and info.configuration.cluster_id == cluster_id:
                return info.configuration
        return None
    if kind == "worker_responses":
        answers = content.worker_responses.map
        if "main" in answers:
            return _find_cluster(answers["main"], cluster_id)
        for key in sorted(answers):
            found = _find_cluster(answers[key], cluster_id)
            if found is not None:
                return found
    return None


def worker_ids(response: Response) -> list[int]:
    """The ids of the live workers (running or not answering) of a ListWorkers answer, in
    order; the list also keeps stopping and stopped workers a while: nothing to upgrade there."""
    if not response.HasField("content") or response.content.WhichOneof("content_type") != "workers":
        raise InvalidInput("unexpected answer to ListWorkers: no worker list")
    return sorted(
        worker.id
        for worker in response.content.workers.vec
        if worker.run_state in (RunState.RUNNING, RunState.NOT_ANSWERING)
    )
