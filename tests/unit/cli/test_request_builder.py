"""Command-line words -> the exact Request Sōzu's CLI sends, one test per command."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from sozu.cli import request_builder as rb
from sozu.cli.parser import build_parser
from sozu.command import addresses
from sozu.command.certificate import fingerprint_hex, split_chain
from sozu.command.config import Config, load_config
from sozu.command.config_model import (
    DEFAULT_ALPN_PROTOCOLS,
    DEFAULT_CIPHER_LIST,
    DEFAULT_GROUPS_LIST,
    DEFAULT_SIGNATURE_ALGORITHMS,
)
from sozu.command.proto import (
    ActivateListener,
    AddBackend,
    AddCertificate,
    AlpnProtocols,
    CertificateAndKey,
    ClusterInformation,
    ClusterInformations,
    CountRequests,
    CustomHttpAnswers,
    DeactivateListener,
    FrontendFilters,
    HardStop,
    Header,
    HeaderPosition,
    HealthCheckConfig,
    HstsConfig,
    HttpListenerConfig,
    HttpsListenerConfig,
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
    ResponseStatus,
    RulePosition,
    RunState,
    SetHealthCheck,
    SocketAddress,
    SoftStop,
    Status,
    SubscribeEvents,
    TcpListenerConfig,
    TlsVersion,
    UdpListenerConfig,
    UpdateHttpListenerConfig,
    UpdateHttpsListenerConfig,
    UpdateTcpListenerConfig,
    UpdateUdpListenerConfig,
    UpgradeMain,
    WorkerInfo,
    WorkerInfos,
    WorkerResponses,
)
from sozu.command.proto import Cluster as ClusterProto

HASH = "admin:" + "ab" * 32


def build(*words: str, config: Config | None = None) -> Request:
    args = build_parser().parse_args(list(words))
    request = rb.build_request(args, config)
    assert request.IsInitialized(), request.FindInitializationErrors()  # type: ignore[attr-defined]
    return request


def addr(text: str) -> SocketAddress:
    return addresses.to_proto(text)


def cluster(**fields: object) -> ClusterProto:
    values: dict[str, object] = dict(
        sticky_session=False,
        https_redirect=False,
        load_balancing=LoadBalancingAlgorithms.ROUND_ROBIN,
    )
    values.update(fields)
    return ClusterProto(**values)  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(
        "front_timeout = 61\nback_timeout = 31\nconnect_timeout = 4\nrequest_timeout = 11\n"
    )
    return load_config(path)


# -- process-level commands ---------------------------------------------------------------------


def test_shutdown_soft_and_hard() -> None:
    assert build("shutdown") == Request(soft_stop=SoftStop())
    assert build("shutdown", "--hard") == Request(hard_stop=HardStop())


def test_status_and_upgrade_worker() -> None:
    assert build("status") == Request(status=Status())
    assert build("upgrade", "--worker", "1") == Request(upgrade_worker=1)
    assert rb.upgrade_main() == Request(upgrade_main=UpgradeMain())
    assert rb.list_workers() == Request(list_workers=ListWorkers())


def test_logging_filter() -> None:
    assert build("logging", "info,sozu=debug") == Request(Logging="info,sozu=debug")


def test_state_save_load_stats_use_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert build("state", "save", "-f", "state.json") == Request(
        save_state=str(tmp_path / "state.json")
    )
    assert build("state", "load", "--file", "/abs/state.json") == Request(
        load_state="/abs/state.json"
    )
    assert build("state", "stats") == Request(count_requests=CountRequests())


def test_reload_without_and_with_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert build("reload") == Request(reload_configuration="")
    assert build("reload", "-f", "other.toml") == Request(
        reload_configuration=str(tmp_path / "other.toml")
    )


def test_events_and_connection_limit() -> None:
    assert build("events") == Request(subscribe_events=SubscribeEvents())
    assert build("connection-limit", "set", "12") == Request(set_max_connections_per_ip=12)
    assert build("connection-limit", "remove") == Request(set_max_connections_per_ip=0)
    assert build("connection-limit", "show") == Request(
        query_max_connections_per_ip=QueryMaxConnectionsPerIp()
    )


def test_metrics_configure_and_get() -> None:
    assert build("metrics", "enable") == Request(configure_metrics=MetricsConfiguration.ENABLED)
    assert build("metrics", "disable") == Request(configure_metrics=MetricsConfiguration.DISABLED)
    assert build("metrics", "clear") == Request(configure_metrics=MetricsConfiguration.CLEAR)
    assert build("metrics", "get") == Request(
        query_metrics=QueryMetricsOptions(list=False, no_clusters=False, workers=False)
    )
    assert build(
        "metrics",
        "get",
        "-l",
        "-n",
        "a,b",
        "--names",
        "c",
        "-k",
        "app",
        "-b",
        "app-0,app-1",
        "--no-clusters",
        "-w",
    ) == Request(
        query_metrics=QueryMetricsOptions(
            list=True,
            metric_names=["a", "b", "c"],
            cluster_ids=["app"],
            backend_ids=["app-0", "app-1"],
            no_clusters=True,
            workers=True,
        )
    )


# -- clusters -------------------------------------------------------------------------------------


def test_cluster_list_variants() -> None:
    assert build("cluster", "list") == Request(query_clusters_hashes=QueryClustersHashes())
    assert build("cluster", "list", "-i", "app") == Request(query_cluster_by_id="app")
    assert build("cluster", "list", "-d", "example.com") == Request(
        query_clusters_by_domain=QueryClusterByDomain(hostname="example.com")
    )
    assert build("cluster", "list", "--domain", "example.com/api/v1") == Request(
        query_clusters_by_domain=QueryClusterByDomain(hostname="example.com", path="/api/v1")
    )
    with pytest.raises(rb.InvalidInput, match="not both"):
        build("cluster", "list", "-i", "app", "-d", "example.com")


def test_cluster_remove() -> None:
    assert build("cluster", "remove", "-i", "app") == Request(remove_cluster="app")


def test_cluster_add_minimal() -> None:
    assert build("cluster", "add", "-i", "app", "--load-balancing-policy", "round_robin") == (
        Request(add_cluster=cluster(cluster_id="app"))
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("round_robin", LoadBalancingAlgorithms.ROUND_ROBIN),
        ("ROUNDROBIN", LoadBalancingAlgorithms.ROUND_ROBIN),
        ("Random", LoadBalancingAlgorithms.RANDOM),
        ("least_loaded", LoadBalancingAlgorithms.LEAST_LOADED),
        ("POWER_OF_TWO", LoadBalancingAlgorithms.POWER_OF_TWO),
        ("hrw", LoadBalancingAlgorithms.HRW),
        ("maglev", LoadBalancingAlgorithms.MAGLEV),
    ],
)
def test_cluster_add_policies(name: str, value: int) -> None:
    request = build("cluster", "add", "-i", "a", "--load-balancing-policy", name)
    assert request.add_cluster.load_balancing == value


def test_cluster_add_every_option(tmp_path: Path) -> None:
    body = tmp_path / "503.http"
    body.write_text("HTTP/1.1 503 Busy\r\n\r\n")
    request = build(
        "cluster",
        "add",
        "-i",
        "app",
        "-s",
        "-r",
        "--send-proxy",
        "--expect-proxy",
        "--load-balancing-policy",
        "random",
        "--http2",
        "--https-redirect-port",
        "8443",
        "--www-authenticate",
        "realm",
        "--authorized-hash",
        HASH,
        "--authorized-hash",
        HASH,
        "--answer",
        "404=not here",
        "--answer",
        f"503=file://{body}",
    )
    assert request == Request(
        add_cluster=cluster(
            cluster_id="app",
            sticky_session=True,
            https_redirect=True,
            proxy_protocol=ProxyProtocolConfig.RELAY_HEADER,
            load_balancing=LoadBalancingAlgorithms.RANDOM,
            http2=True,
            https_redirect_port=8443,
            www_authenticate="realm",
            authorized_hashes=[HASH, HASH],
            answers={"404": "not here", "503": "HTTP/1.1 503 Busy\r\n\r\n"},
        )
    )


def test_cluster_add_proxy_protocol_alone() -> None:
    base = ("cluster", "add", "-i", "a", "--load-balancing-policy", "random")
    assert (
        build(*base, "--send-proxy").add_cluster.proxy_protocol == ProxyProtocolConfig.SEND_HEADER
    )
    assert (
        build(*base, "--expect-proxy").add_cluster.proxy_protocol
        == ProxyProtocolConfig.EXPECT_HEADER
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--authorized-hash", "admin:DEADBEEF"), "authorized-hash"),
        (("--authorized-hash", "admin:" + "AB" * 32), "authorized-hash"),
        (("--https-redirect-port", "70000"), "1..65535"),
        (("--https-redirect-port", "0"), "1..65535"),
        (("--answer", "503"), "--answer"),
        (("--answer", "503=file:///nonexistent/answer"), "cannot read"),
    ],
)
def test_cluster_add_refuses_bad_values(extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(rb.InvalidInput, match=message):
        build("cluster", "add", "-i", "a", "--load-balancing-policy", "random", *extra)


def test_unknown_policy_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build("cluster", "add", "-i", "a", "--load-balancing-policy", "leastconnections")
    assert exit_info.value.code == 2
    assert "unknown load balancing policy" in capsys.readouterr().err


def test_health_check_set_remove_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert build("cluster", "health-check", "set", "-i", "app", "-u", "/health") == Request(
        set_health_check=SetHealthCheck(
            cluster_id="app",
            config=HealthCheckConfig(
                uri="/health",
                interval=10,
                timeout=5,
                healthy_threshold=3,
                unhealthy_threshold=3,
                expected_status=0,
            ),
        )
    )
    request = build(
        "cluster",
        "health-check",
        "set",
        "-i",
        "app",
        "--uri",
        "/h",
        "--interval",
        "2",
        "--timeout",
        "3",
        "--healthy-threshold",
        "1",
        "--unhealthy-threshold",
        "4",
        "--expected-status",
        "204",
        "-t",
        "500",
    )
    assert request.set_health_check.config == HealthCheckConfig(
        uri="/h",
        interval=2,
        timeout=3,
        healthy_threshold=1,
        unhealthy_threshold=4,
        expected_status=204,
    )
    assert "checks may overlap" in capsys.readouterr().err
    assert build("cluster", "health-check", "remove", "-i", "app") == Request(
        remove_health_check="app"
    )
    assert build("cluster", "health-check", "list") == Request(
        query_health_checks=QueryHealthChecks()
    )
    assert build("cluster", "health-check", "list", "-i", "app") == Request(
        query_health_checks=QueryHealthChecks(cluster_id="app")
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("-u", "health"), "start with '/'"),
        (("-u", "/a\r\nb"), "control"),
        (("-u", "/h", "--interval", "0"), "interval must be > 0"),
        (("-u", "/h", "--healthy-threshold", "0"), "healthy_threshold must be > 0"),
    ],
)
def test_health_check_refuses_bad_values(extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(rb.InvalidInput, match=message):
        build("cluster", "health-check", "set", "-i", "app", *extra)


def test_cluster_h2_queries_then_re_adds_the_cluster_from_main() -> None:
    assert build("cluster", "h2", "enable", "-i", "app") == Request(query_cluster_by_id="app")
    worker_view = ClusterInformation(configuration=cluster(cluster_id="app", sticky_session=True))
    main_view = ClusterInformation(configuration=cluster(cluster_id="app"))
    answer = Response(
        status=ResponseStatus.OK,
        message="",
        content=ResponseContent(
            worker_responses=WorkerResponses(
                map={
                    "0": ResponseContent(clusters=ClusterInformations(vec=[worker_view])),
                    "main": ResponseContent(clusters=ClusterInformations(vec=[main_view])),
                }
            )
        ),
    )
    assert rb.cluster_with_http2(answer, "app", True) == Request(
        add_cluster=cluster(cluster_id="app", http2=True)
    )
    assert rb.cluster_with_http2(answer, "app", False).add_cluster.http2 is False
    with pytest.raises(rb.InvalidInput, match="not found"):
        rb.cluster_with_http2(answer, "other", True)


def test_worker_ids_of_a_list_workers_answer() -> None:
    answer = Response(
        status=ResponseStatus.OK,
        message="",
        content=ResponseContent(
            workers=WorkerInfos(
                vec=[
                    WorkerInfo(id=2, pid=20, run_state=RunState.RUNNING),
                    WorkerInfo(id=0, pid=10, run_state=RunState.RUNNING),
                    WorkerInfo(id=1, pid=11, run_state=RunState.STOPPED),
                    WorkerInfo(id=3, pid=12, run_state=RunState.STOPPING),
                ]
            )
        ),
    )
    assert rb.worker_ids(answer) == [0, 2]
    with pytest.raises(rb.InvalidInput):
        rb.worker_ids(Response(status=ResponseStatus.OK, message=""))


# -- backends -------------------------------------------------------------------------------------


def test_backend_add_and_remove() -> None:
    assert build(
        "backend", "add", "-i", "app", "--backend-id", "app-0", "-a", "127.0.0.1:9000"
    ) == Request(
        add_backend=AddBackend(
            cluster_id="app",
            backend_id="app-0",
            address=addr("127.0.0.1:9000"),
            load_balancing_parameters=LoadBalancingParams(weight=100),
        )
    )
    assert build(
        "backend",
        "add",
        "--id",
        "app",
        "--backend-id",
        "b",
        "--address",
        "[::1]:80",
        "-s",
        "sticky",
        "-b",
        "true",
        "--weight",
        "7",
    ) == Request(
        add_backend=AddBackend(
            cluster_id="app",
            backend_id="b",
            address=addr("[::1]:80"),
            sticky_id="sticky",
            load_balancing_parameters=LoadBalancingParams(weight=7),
            backup=True,
        )
    )
    assert build(
        "backend", "remove", "-i", "app", "--backend-id", "app-0", "-a", "127.0.0.1:9000"
    ) == Request(
        remove_backend=RemoveBackend(
            cluster_id="app", backend_id="app-0", address=addr("127.0.0.1:9000")
        )
    )


def test_bad_address_and_bool_are_usage_errors() -> None:
    with pytest.raises(SystemExit):
        build("backend", "add", "-i", "a", "--backend-id", "b", "-a", "localhost:80")
    with pytest.raises(SystemExit):
        build("backend", "add", "-i", "a", "--backend-id", "b", "-a", "1.2.3.4:80", "-b", "yes")


# -- frontends ------------------------------------------------------------------------------------


def http_front(**fields: object) -> RequestHttpFrontend:
    values: dict[str, object] = dict(
        address=addr("127.0.0.1:8080"),
        hostname="example.com",
        path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        position=RulePosition.TREE,
    )
    values.update(fields)
    return RequestHttpFrontend(**values)  # type: ignore[arg-type]


def test_frontend_http_add_minimal_and_deny() -> None:
    base = ("frontend", "http", "add", "-a", "127.0.0.1:8080", "--hostname", "example.com")
    assert build(*base, "id", "app") == Request(add_http_frontend=http_front(cluster_id="app"))
    assert build(*base, "deny") == Request(add_http_frontend=http_front())


def test_frontend_host_alias_and_path_kinds() -> None:
    base = ("frontend", "https", "add", "-a", "127.0.0.1:8080", "--host", "example.com")
    assert build(*base, "-p", "/api", "id", "app") == Request(
        add_https_frontend=http_front(
            cluster_id="app", path=PathRule(kind=PathRuleKind.PREFIX, value="/api")
        )
    )
    regex = build(*base, "--path-regex", "^/v[0-9]+", "id", "app")
    assert regex.add_https_frontend.path == PathRule(kind=PathRuleKind.REGEX, value="^/v[0-9]+")
    equals = build(*base, "--path-equals", "/health", "--path-regex", "x", "id", "app")
    assert equals.add_https_frontend.path == PathRule(kind=PathRuleKind.REGEX, value="x")
    only_equals = build(*base, "--path-equals", "/health", "id", "app")
    assert only_equals.add_https_frontend.path == PathRule(
        kind=PathRuleKind.EQUALS, value="/health"
    )


def test_frontend_add_every_option() -> None:
    request = build(
        "frontend",
        "https",
        "add",
        "-a",
        "127.0.0.1:8443",
        "--hostname",
        "*.example.com",
        "-m",
        "GET",
        "--tags",
        "owner=alice, env=prod=1",
        "--redirect",
        "permanent",
        "--redirect-scheme",
        "use-https",
        "--redirect-template",
        "tpl",
        "--rewrite-host",
        "$HOST[1].internal",
        "--rewrite-path",
        "/x$PATH[1]",
        "--rewrite-port",
        "8080",
        "--required-auth",
        "--header",
        "request=X-Env=prod",
        "--header",
        "both=Server=",
        "--hsts-include-subdomains",
        "id",
        "app",
        "--json",
    )
    assert request == Request(
        add_https_frontend=http_front(
            cluster_id="app",
            address=addr("127.0.0.1:8443"),
            hostname="*.example.com",
            method="GET",
            tags={"owner": "alice", "env": "prod=1"},
            redirect=RedirectPolicy.PERMANENT,
            redirect_scheme=RedirectScheme.USE_HTTPS,
            redirect_template="tpl",
            rewrite_host="$HOST[1].internal",
            rewrite_path="/x$PATH[1]",
            rewrite_port=8080,
            required_auth=True,
            headers=[
                Header(position=HeaderPosition.REQUEST, key="X-Env", val="prod"),
                Header(position=HeaderPosition.BOTH, key="Server", val=""),
            ],
            hsts=HstsConfig(enabled=True, max_age=31_536_000, include_subdomains=True),
        )
    )


def test_frontend_hsts_variants() -> None:
    base = ("frontend", "https", "add", "-a", "127.0.0.1:8443", "--hostname", "h")
    assert build(*base, "--hsts-disabled", "deny").add_https_frontend.hsts == HstsConfig(
        enabled=False
    )
    assert build(
        *base, "--hsts-max-age", "0", "--hsts-preload", "--hsts-force-replace-backend", "deny"
    ).add_https_frontend.hsts == HstsConfig(
        enabled=True, max_age=0, preload=True, force_replace_backend=True
    )
    with pytest.raises(rb.InvalidInput, match="hsts-disabled"):
        build(*base, "--hsts-disabled", "--hsts-preload", "deny")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--header", "request=X-A"), "position"),
        (("--header", "sideways=X-A=1"), "position"),
        (("--header", "request=X A=1"), "header name"),
        (("--header", "request=X-A=a\r\nInjected: 1"), "control"),
        (("--rewrite-port", "0"), "1..65535"),
        (("--redirect", "elsewhere"), "--redirect"),
        (("--redirect-scheme", "ftp"), "--redirect-scheme"),
    ],
)
def test_frontend_add_refuses_bad_values(extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(rb.InvalidInput, match=message):
        build("frontend", "http", "add", "-a", "127.0.0.1:80", "--hostname", "h", *extra, "deny")


def test_bad_tags_are_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        build("frontend", "tcp", "add", "-i", "a", "-a", "127.0.0.1:80", "--tags", "novalue")


def test_frontend_http_and_https_remove() -> None:
    base = ("-a", "127.0.0.1:8080", "--hostname", "example.com", "-p", "/api", "-m", "POST")
    expected = http_front(
        cluster_id="app", path=PathRule(kind=PathRuleKind.PREFIX, value="/api"), method="POST"
    )
    assert build("frontend", "http", "remove", *base, "id", "app") == Request(
        remove_http_frontend=expected
    )
    assert build("frontend", "https", "remove", *base, "id", "app") == Request(
        remove_https_frontend=expected
    )
    denied = build("frontend", "http", "remove", *base, "deny")
    assert not denied.remove_http_frontend.HasField("cluster_id")


def test_frontend_tcp_and_udp() -> None:
    assert build("frontend", "tcp", "add", "-i", "db", "-a", "127.0.0.1:5432", "--tags", "a=b") == (
        Request(
            add_tcp_frontend=RequestTcpFrontend(
                cluster_id="db", address=addr("127.0.0.1:5432"), tags={"a": "b"}
            )
        )
    )
    assert build("frontend", "tcp", "remove", "-i", "db", "-a", "127.0.0.1:5432") == Request(
        remove_tcp_frontend=RequestTcpFrontend(cluster_id="db", address=addr("127.0.0.1:5432"))
    )
    assert build("frontend", "udp", "add", "-i", "dns", "-a", "127.0.0.1:53") == Request(
        add_udp_frontend=RequestUdpFrontend(cluster_id="dns", address=addr("127.0.0.1:53"))
    )
    assert build("frontend", "udp", "remove", "--id", "dns", "--address", "127.0.0.1:53") == (
        Request(
            remove_udp_frontend=RequestUdpFrontend(cluster_id="dns", address=addr("127.0.0.1:53"))
        )
    )


def test_frontend_list() -> None:
    assert build("frontend", "list") == Request(
        list_frontends=FrontendFilters(http=False, https=False, tcp=False)
    )
    assert build("frontend", "list", "--http", "--tcp", "-d", "example") == Request(
        list_frontends=FrontendFilters(http=True, https=False, tcp=True, domain="example")
    )


# -- listeners ------------------------------------------------------------------------------------


def test_listener_http_add_defaults_without_config() -> None:
    assert build("listener", "http", "add", "-a", "127.0.0.1:8080") == Request(
        add_http_listener=HttpListenerConfig(
            address=addr("127.0.0.1:8080"),
            expect_proxy=False,
            sticky_name="SOZUBALANCEID",
            front_timeout=60,
            back_timeout=30,
            connect_timeout=3,
            request_timeout=10,
            active=False,
            http_answers=CustomHttpAnswers(),
            elide_x_real_ip=False,
            send_x_real_ip=False,
        )
    )


def test_listener_http_add_takes_timeouts_from_the_config_and_flags(
    config: Config, tmp_path: Path
) -> None:
    answer = tmp_path / "404.http"
    answer.write_text("HTTP/1.1 404 Nope\r\n\r\n")
    request = build(
        "listener",
        "http",
        "add",
        "--address",
        "0.0.0.0:80",
        "--public-address",
        "1.2.3.4:80",
        "--answer-404",
        str(answer),
        "--expect-proxy",
        "--sticky-name",
        "S",
        "--back-timeout",
        "5",
        config=config,
    )
    assert request == Request(
        add_http_listener=HttpListenerConfig(
            address=addr("0.0.0.0:80"),
            public_address=addr("1.2.3.4:80"),
            expect_proxy=True,
            sticky_name="S",
            front_timeout=61,
            back_timeout=5,
            connect_timeout=4,
            request_timeout=11,
            active=False,
            http_answers=CustomHttpAnswers(answer_404="HTTP/1.1 404 Nope\r\n\r\n"),
            answers={"404": "HTTP/1.1 404 Nope\r\n\r\n"},
            elide_x_real_ip=False,
            send_x_real_ip=False,
        )
    )


def test_listener_https_add(capsys: pytest.CaptureFixture[str]) -> None:
    expected = HttpsListenerConfig(
        address=addr("127.0.0.1:8443"),
        expect_proxy=False,
        sticky_name="SOZUBALANCEID",
        front_timeout=60,
        back_timeout=30,
        connect_timeout=3,
        request_timeout=10,
        active=False,
        versions=[TlsVersion.TLS_V1_2, TlsVersion.TLS_V1_3],
        cipher_list=DEFAULT_CIPHER_LIST,
        cipher_suites=DEFAULT_CIPHER_LIST,
        signature_algorithms=DEFAULT_SIGNATURE_ALGORITHMS,
        groups_list=DEFAULT_GROUPS_LIST,
        send_tls13_tickets=4,
        http_answers=CustomHttpAnswers(),
        alpn_protocols=DEFAULT_ALPN_PROTOCOLS,
        elide_x_real_ip=False,
        send_x_real_ip=False,
    )
    assert build("listener", "https", "add", "-a", "127.0.0.1:8443") == Request(
        add_https_listener=expected
    )
    custom = build(
        "listener",
        "https",
        "add",
        "-a",
        "127.0.0.1:8443",
        "--tls-versions",
        "TLS_V13",
        "--tls-versions",
        "TLSv1",
        "--tls-cipher-list",
        "A,B",
        "--tls-cipher-list",
        "C",
    ).add_https_listener
    assert list(custom.versions) == [TlsVersion.TLS_V1_3, TlsVersion.TLS_V1_0]
    assert list(custom.cipher_list) == ["A", "B", "C"]
    assert list(custom.cipher_suites) == list(DEFAULT_CIPHER_LIST)
    assert "deprecated" in capsys.readouterr().err


def test_listener_tcp_and_udp_add(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    assert build("listener", "tcp", "add", "-a", "127.0.0.1:5432", "--expect-proxy") == Request(
        add_tcp_listener=TcpListenerConfig(
            address=addr("127.0.0.1:5432"),
            expect_proxy=True,
            front_timeout=60,
            back_timeout=30,
            connect_timeout=3,
            active=False,
        )
    )
    with_config = build("listener", "tcp", "add", "-a", "127.0.0.1:5432", config=config)
    assert with_config.add_tcp_listener.front_timeout == 61
    assert build("listener", "udp", "add", "-a", "127.0.0.1:53", config=config) == Request(
        add_udp_listener=UdpListenerConfig(
            address=addr("127.0.0.1:53"),
            front_timeout=30,
            back_timeout=30,
            max_rx_datagram_size=1500,
            max_flows=0,
            active=False,
        )
    )
    big = build(
        "listener",
        "udp",
        "add",
        "-a",
        "127.0.0.1:53",
        "--max-rx-datagram-size",
        "70000",
        "--max-flows",
        "10",
        "--front-timeout",
        "5",
        config=config,
    ).add_udp_listener
    assert (big.max_rx_datagram_size, big.max_flows, big.front_timeout) == (16_393, 10, 5)
    assert "lowered to 16393" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kind", "proxy"),
    [
        ("http", ListenerType.HTTP),
        ("https", ListenerType.HTTPS),
        ("tcp", ListenerType.TCP),
        ("udp", ListenerType.UDP),
    ],
)
def test_listener_remove_activate_deactivate(kind: str, proxy: int) -> None:
    where = addr("127.0.0.1:8080")
    assert build("listener", kind, "remove", "-a", "127.0.0.1:8080") == Request(
        remove_listener=RemoveListener(address=where, proxy=proxy)  # type: ignore[arg-type]
    )
    assert build("listener", kind, "activate", "--address", "127.0.0.1:8080") == Request(
        activate_listener=ActivateListener(address=where, proxy=proxy, from_scm=False)  # type: ignore[arg-type]
    )
    assert build("listener", kind, "deactivate", "-a", "127.0.0.1:8080") == Request(
        deactivate_listener=DeactivateListener(address=where, proxy=proxy, to_scm=False)  # type: ignore[arg-type]
    )


def test_listener_http_update(tmp_path: Path) -> None:
    assert build("listener", "http", "update", "-a", "127.0.0.1:80") == Request(
        update_http_listener=UpdateHttpListenerConfig(address=addr("127.0.0.1:80"))
    )
    answer = tmp_path / "503"
    answer.write_text("busy")
    assert build(
        "listener",
        "http",
        "update",
        "-a",
        "127.0.0.1:80",
        "--public-address",
        "1.1.1.1:80",
        "--expect-proxy",
        "--no-expect-proxy",
        "--sticky-name",
        "S",
        "--front-timeout",
        "1",
        "--back-timeout",
        "2",
        "--connect-timeout",
        "3",
        "--request-timeout",
        "4",
        "--h2-max-ping-per-window",
        "9",
        "--h2-max-rst-stream-lifetime",
        "99",
        "--sozu-id-header",
        "X-Id",
        "--answer-503",
        str(answer),
    ) == Request(
        update_http_listener=UpdateHttpListenerConfig(
            address=addr("127.0.0.1:80"),
            public_address=addr("1.1.1.1:80"),
            expect_proxy=False,
            sticky_name="S",
            front_timeout=1,
            back_timeout=2,
            connect_timeout=3,
            request_timeout=4,
            h2_max_ping_per_window=9,
            h2_max_rst_stream_lifetime=99,
            sozu_id_header="X-Id",
            http_answers=CustomHttpAnswers(answer_503="busy"),
        )
    )


def test_listener_https_update() -> None:
    assert build(
        "listener",
        "https",
        "update",
        "-a",
        "127.0.0.1:443",
        "--no-strict-sni-binding",
        "--disable-http11",
        "--alpn-protocols",
        "h2",
        "--hsts-max-age",
        "60",
        "--expect-proxy",
    ) == Request(
        update_https_listener=UpdateHttpsListenerConfig(
            address=addr("127.0.0.1:443"),
            expect_proxy=True,
            strict_sni_binding=False,
            disable_http11=True,
            alpn_protocols=AlpnProtocols(values=["h2"]),
            hsts=HstsConfig(enabled=True, max_age=60),
        )
    )
    reset = build("listener", "https", "update", "-a", "127.0.0.1:443", "--reset-alpn")
    assert reset.update_https_listener.HasField("alpn_protocols")
    assert list(reset.update_https_listener.alpn_protocols.values) == []
    with pytest.raises(rb.InvalidInput):
        build(
            "listener",
            "https",
            "update",
            "-a",
            "127.0.0.1:443",
            "--reset-alpn",
            "--alpn-protocols",
            "h2",
        )


def test_listener_tcp_and_udp_update() -> None:
    assert build(
        "listener", "tcp", "update", "-a", "127.0.0.1:1", "--front-timeout", "5", "--expect-proxy"
    ) == Request(
        update_tcp_listener=UpdateTcpListenerConfig(
            address=addr("127.0.0.1:1"), front_timeout=5, expect_proxy=True
        )
    )
    assert build(
        "listener",
        "udp",
        "update",
        "-a",
        "127.0.0.1:1",
        "--max-flows",
        "3",
        "--max-rx-datagram-size",
        "512",
    ) == Request(
        update_udp_listener=UpdateUdpListenerConfig(
            address=addr("127.0.0.1:1"), max_flows=3, max_rx_datagram_size=512
        )
    )


def test_listener_list() -> None:
    assert build("listener", "list") == Request(list_listeners=ListListeners())


# -- certificates ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    leaf = ca.issue_cert("example.com")
    other = ca.issue_cert("other.example.com")
    files = {
        "cert": leaf.cert_chain_pems[0].bytes(),
        "chain": b"".join(blob.bytes() for blob in leaf.cert_chain_pems[1:]) + ca.cert_pem.bytes(),
        "key": leaf.private_key_pem.bytes(),
        "other": other.cert_chain_pems[0].bytes(),
        "other_key": other.private_key_pem.bytes(),
    }
    paths = {}
    for name, data in files.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return paths


def test_certificate_add(pems: dict[str, Path]) -> None:
    request = build(
        "certificate",
        "add",
        "-a",
        "127.0.0.1:8443",
        "--certificate",
        str(pems["cert"]),
        "--certificate-chain",
        str(pems["chain"]),
        "--key",
        str(pems["key"]),
        "--tls-versions",
        "TLS_V12",
    )
    assert request == Request(
        add_certificate=AddCertificate(
            address=addr("127.0.0.1:8443"),
            certificate=CertificateAndKey(
                certificate=pems["cert"].read_text(),
                certificate_chain=split_chain(pems["chain"].read_text()),
                key=pems["key"].read_text(),
                versions=[TlsVersion.TLS_V1_2],
            ),
        )
    )
    assert len(request.add_certificate.certificate.certificate_chain) == 1


def test_certificate_remove_by_file_or_fingerprint(pems: dict[str, Path]) -> None:
    fingerprint = fingerprint_hex(pems["cert"].read_text())
    expected = Request(
        remove_certificate=RemoveCertificate(
            address=addr("127.0.0.1:8443"), fingerprint=fingerprint
        )
    )
    assert build("certificate", "remove", "-a", "127.0.0.1:8443", "--cert", str(pems["cert"])) == (
        expected
    )
    assert build("certificate", "remove", "-a", "127.0.0.1:8443", "-f", fingerprint.upper()) == (
        expected
    )
    with pytest.raises(rb.InvalidInput, match="exactly one"):
        build("certificate", "remove", "-a", "127.0.0.1:8443")
    with pytest.raises(rb.InvalidInput, match="exactly one"):
        build(
            "certificate",
            "remove",
            "-a",
            "127.0.0.1:8443",
            "-f",
            fingerprint,
            "--certificate",
            str(pems["cert"]),
        )
    with pytest.raises(rb.InvalidInput, match="fingerprint"):
        build("certificate", "remove", "-a", "127.0.0.1:8443", "-f", "xyz")


def test_certificate_replace(pems: dict[str, Path]) -> None:
    request = build(
        "certificate",
        "replace",
        "-a",
        "127.0.0.1:8443",
        "--new-certificate",
        str(pems["other"]),
        "--new-certificate-chain",
        str(pems["chain"]),
        "--new-key",
        str(pems["other_key"]),
        "--old-cert",
        str(pems["cert"]),
    )
    assert request == Request(
        replace_certificate=ReplaceCertificate(
            address=addr("127.0.0.1:8443"),
            new_certificate=CertificateAndKey(
                certificate=pems["other"].read_text(),
                certificate_chain=split_chain(pems["chain"].read_text()),
                key=pems["other_key"].read_text(),
            ),
            old_fingerprint=fingerprint_hex(pems["cert"].read_text()),
        )
    )


def test_certificate_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(rb.InvalidInput, match="cannot read the certificate"):
        build(
            "certificate",
            "add",
            "-a",
            "127.0.0.1:8443",
            "--certificate",
            str(tmp_path / "no"),
            "--certificate-chain",
            str(tmp_path / "no"),
            "--key",
            str(tmp_path / "no"),
        )


def test_certificate_list() -> None:
    assert build("certificate", "list") == Request(
        query_certificates_from_the_state=QueryCertificatesFilters()
    )
    assert build("certificate", "list", "-d", "example.com", "-w") == Request(
        query_certificates_from_workers=QueryCertificatesFilters(domain="example.com")
    )
    assert build("certificate", "list", "-f", "ab12") == Request(
        query_certificates_from_the_state=QueryCertificatesFilters(fingerprint="ab12")
    )


# -- the tree as a whole ------------------------------------------------------------------------


def test_global_flags_anywhere() -> None:
    parser = build_parser()
    before = parser.parse_args(["-c", "a.toml", "-t", "5", "-j", "status"])
    after = parser.parse_args(["status", "-c", "a.toml", "--timeout", "5", "--json"])
    nested = parser.parse_args(
        [
            "frontend",
            "http",
            "add",
            "-a",
            "1.2.3.4:80",
            "--hostname",
            "h",
            "id",
            "x",
            "-j",
            "-t",
            "0",
        ]
    )
    for args in (before, after):
        assert (args.config, args.timeout, args.json) == ("a.toml", 5, True)
    assert (nested.config, nested.timeout, nested.json, nested.cluster_id) == (None, 0, True, "x")
    plain = parser.parse_args(["status"])
    assert (plain.config, plain.timeout, plain.json) == (None, None, False)


SAMPLES = [
    "shutdown",
    "upgrade --worker 0",
    "status",
    "metrics enable",
    "metrics get",
    "logging info",
    "state save -f s",
    "state load -f s",
    "state stats",
    "reload",
    "cluster list",
    "cluster remove -i a",
    "cluster add -i a --load-balancing-policy random",
    "cluster h2 enable -i a",
    "cluster health-check set -i a -u /h",
    "cluster health-check remove -i a",
    "cluster health-check list",
    "backend add -i a --backend-id b -a 127.0.0.1:1",
    "backend remove -i a --backend-id b -a 127.0.0.1:1",
    "frontend http add -a 127.0.0.1:1 --hostname h deny",
    "frontend http remove -a 127.0.0.1:1 --hostname h deny",
    "frontend https add -a 127.0.0.1:1 --hostname h deny",
    "frontend https remove -a 127.0.0.1:1 --hostname h deny",
    "frontend tcp add -i a -a 127.0.0.1:1",
    "frontend tcp remove -i a -a 127.0.0.1:1",
    "frontend udp add -i a -a 127.0.0.1:1",
    "frontend udp remove -i a -a 127.0.0.1:1",
    "frontend list",
    "listener http add -a 127.0.0.1:1",
    "listener https add -a 127.0.0.1:1",
    "listener tcp add -a 127.0.0.1:1",
    "listener udp add -a 127.0.0.1:1",
    "listener tcp remove -a 127.0.0.1:1",
    "listener udp activate -a 127.0.0.1:1",
    "listener http deactivate -a 127.0.0.1:1",
    "listener http update -a 127.0.0.1:1",
    "listener https update -a 127.0.0.1:1",
    "listener tcp update -a 127.0.0.1:1",
    "listener udp update -a 127.0.0.1:1",
    "listener list",
    "certificate list",
    "certificate remove -a 127.0.0.1:1 -f ab",
    "events",
    "connection-limit set 1",
    "connection-limit remove",
    "connection-limit show",
]


def test_every_builder_has_a_word_and_builds_an_initialized_request() -> None:
    seen = {build(*sample.split()).WhichOneof("request_type") for sample in SAMPLES}
    assert None not in seen
    parser = build_parser()
    actions = {parser.parse_args(sample.split()).action for sample in SAMPLES}
    # certificate add/replace need files: their builders are exercised above.
    assert set(rb.BUILDERS) - actions == {"certificate.add", "certificate.replace"}
