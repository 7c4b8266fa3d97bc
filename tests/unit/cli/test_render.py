"""Rendering of sample answers: tables for people, JSON for scripts, one line per event."""

from __future__ import annotations

import json

import trustme

from sozu.cli import render
from sozu.command import addresses
from sozu.command.certificate import fingerprint_hex
from sozu.command.proto import (
    AddBackend,
    AggregatedMetrics,
    AvailableMetrics,
    Bucket,
    CertificateAndKey,
    CertificatesByAddress,
    CertificateSummary,
    CertificatesWithFingerprints,
    Cluster,
    ClusterHashes,
    ClusterInformation,
    ClusterInformations,
    ClusterMetrics,
    Event,
    EventKind,
    FilteredHistogram,
    FilteredMetrics,
    HealthCheckConfig,
    HealthChecksList,
    HttpListenerConfig,
    HttpsListenerConfig,
    ListedFrontends,
    ListenersList,
    ListOfCertificatesByAddress,
    LoadBalancingAlgorithms,
    LoadBalancingParams,
    MaxConnectionsPerIpLimit,
    PathRule,
    PathRuleKind,
    Percentiles,
    RequestCounts,
    RequestHttpFrontend,
    RequestTcpFrontend,
    Response,
    ResponseContent,
    ResponseStatus,
    RulePosition,
    RunState,
    SocketAddress,
    TcpListenerConfig,
    TlsVersion,
    UdpListenerConfig,
    WorkerInfo,
    WorkerInfos,
    WorkerResponses,
)


def addr(text: str) -> SocketAddress:
    return addresses.to_proto(text)


def app_cluster(sticky: bool = False) -> Cluster:
    return Cluster(
        cluster_id="app",
        sticky_session=sticky,
        https_redirect=False,
        load_balancing=LoadBalancingAlgorithms.ROUND_ROBIN,
    )


def answer(content: ResponseContent | None = None, message: str = "done") -> Response:
    response = Response(status=ResponseStatus.OK, message=message)
    if content is not None:
        response.content.CopyFrom(content)
    return response


def test_table_alignment() -> None:
    assert render.table(("a", "long header"), [("x", None), ("wider", 3)]) == (
        "A      LONG HEADER\nx      -\nwider  3"
    )


def test_ok_without_content() -> None:
    assert render.response(answer(message="Saved 3 config messages"), False) == (
        "Saved 3 config messages"
    )
    assert render.response(answer(message=""), False) == "OK"
    assert render.response(answer(), True) == "{}"


def test_status() -> None:
    infos = WorkerInfos(
        vec=[
            WorkerInfo(id=1, pid=11, run_state=RunState.STOPPING),
            WorkerInfo(id=0, pid=10, run_state=RunState.RUNNING),
        ]
    )
    text = render.response(answer(ResponseContent(workers=infos)), False)
    assert text.splitlines() == [
        "WORKER  PID  RUN STATE",
        "0       10   RUNNING",
        "1       11   STOPPING",
    ]
    assert json.loads(render.response(answer(ResponseContent(workers=infos)), True)) == {
        "workers": {
            "vec": [
                {"id": 1, "pid": 11, "run_state": "STOPPING"},
                {"id": 0, "pid": 10, "run_state": "RUNNING"},
            ]
        }
    }


def test_frontend_list() -> None:
    listed = ListedFrontends(
        http_frontends=[
            RequestHttpFrontend(
                cluster_id="app",
                address=addr("127.0.0.1:8080"),
                hostname="example.com",
                path=PathRule(kind=PathRuleKind.PREFIX, value="/api"),
                position=RulePosition.TREE,
                tags={"owner": "alice"},
            ),
            RequestHttpFrontend(
                address=addr("127.0.0.1:8080"),
                hostname="private.example.com",
                path=PathRule(kind=PathRuleKind.EQUALS, value="/admin"),
                method="POST",
                position=RulePosition.PRE,
            ),
        ],
        tcp_frontends=[RequestTcpFrontend(cluster_id="db", address=addr("[::1]:5432"))],
    )
    text = render.content(ResponseContent(frontend_list=listed))
    lines = text.splitlines()
    assert lines[0] == "HTTP frontends"
    assert lines[1].split() == [
        "CLUSTER",
        "ADDRESS",
        "HOSTNAME",
        "PATH",
        "METHOD",
        "POSITION",
        "TAGS",
    ]
    assert lines[2].split() == [
        "app",
        "127.0.0.1:8080",
        "example.com",
        "prefix",
        '"/api"',
        "-",
        "TREE",
        "owner=alice",
    ]
    assert lines[3].split()[:5] == [
        "deny",
        "127.0.0.1:8080",
        "private.example.com",
        "equals",
        '"/admin"',
    ]
    assert "TCP frontends" in lines
    assert lines[-1].split() == ["db", "[::1]:5432", "-"]
    assert render.content(ResponseContent(frontend_list=ListedFrontends())) == "no frontend"


def test_listener_list() -> None:
    listed = ListenersList()
    listed.http_listeners["127.0.0.1:8080"].CopyFrom(
        HttpListenerConfig(
            address=addr("127.0.0.1:8080"),
            expect_proxy=False,
            sticky_name="SOZUBALANCEID",
            front_timeout=60,
            back_timeout=30,
            connect_timeout=3,
            request_timeout=10,
            active=True,
        )
    )
    listed.https_listeners["127.0.0.1:8443"].CopyFrom(
        HttpsListenerConfig(
            address=addr("127.0.0.1:8443"),
            public_address=addr("1.2.3.4:443"),
            expect_proxy=True,
            sticky_name="S",
            front_timeout=60,
            back_timeout=30,
            connect_timeout=3,
            request_timeout=10,
            active=False,
            versions=[TlsVersion.TLS_V1_2, TlsVersion.TLS_V1_3],
            send_tls13_tickets=4,
            alpn_protocols=["h2", "http/1.1"],
        )
    )
    listed.tcp_listeners["127.0.0.1:5432"].CopyFrom(
        TcpListenerConfig(
            address=addr("127.0.0.1:5432"),
            expect_proxy=False,
            front_timeout=60,
            back_timeout=30,
            connect_timeout=3,
            active=True,
        )
    )
    listed.udp_listeners["127.0.0.1:53"].CopyFrom(
        UdpListenerConfig(
            address=addr("127.0.0.1:53"),
            front_timeout=30,
            back_timeout=30,
            max_rx_datagram_size=1500,
            max_flows=0,
            active=False,
        )
    )
    text = render.content(ResponseContent(listeners_list=listed))
    blocks = text.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [
        "HTTP listeners",
        "HTTPS listeners",
        "TCP listeners",
        "UDP listeners",
    ]
    assert blocks[0].splitlines()[2].split() == [
        "127.0.0.1:8080",
        "-",
        "yes",
        "no",
        "SOZUBALANCEID",
        "60",
        "30",
        "3",
        "10",
    ]
    https_row = blocks[1].splitlines()[2].split()
    assert https_row[:3] == ["127.0.0.1:8443", "1.2.3.4:443", "no"]
    assert https_row[-2:] == ["TLS_V1_2,TLS_V1_3", "h2,http/1.1"]
    assert render.content(ResponseContent(listeners_list=ListenersList())) == "no listener"


def test_cluster_hashes_across_processes() -> None:
    def hashes(**values: int) -> ResponseContent:
        return ResponseContent(cluster_hashes=ClusterHashes(map=values))

    gathered = WorkerResponses(
        map={
            "1": hashes(app=1, api=2),
            "main": hashes(app=1, api=2),
            "0": hashes(app=1, api=3),
        }
    )
    lines = render.content(ResponseContent(worker_responses=gathered)).splitlines()
    assert lines[0].split() == ["CLUSTER", "MAIN", "WORKER", "0", "WORKER", "1", "IN", "SYNC"]
    assert lines[1].split() == [
        "api",
        "0000000000000002",
        "0000000000000003",
        "0000000000000002",
        "no",
    ]
    assert lines[2].split()[-1] == "yes"
    empty = WorkerResponses(map={"main": hashes()})
    assert render.content(ResponseContent(worker_responses=empty)) == "no cluster found"


def test_cluster_informations_across_processes() -> None:
    backend = AddBackend(
        cluster_id="app",
        backend_id="app-0",
        address=addr("127.0.0.1:9000"),
        load_balancing_parameters=LoadBalancingParams(weight=100),
    )
    front = RequestHttpFrontend(
        cluster_id="app",
        address=addr("127.0.0.1:8080"),
        hostname="example.com",
        path=PathRule(kind=PathRuleKind.PREFIX, value=""),
        position=RulePosition.TREE,
    )
    same = ClusterInformation(
        configuration=app_cluster(), http_frontends=[front], backends=[backend]
    )
    drifted = ClusterInformation(configuration=app_cluster(sticky=True), backends=[backend])
    gathered = WorkerResponses(
        map={
            "main": ResponseContent(clusters=ClusterInformations(vec=[same])),
            "0": ResponseContent(clusters=ClusterInformations(vec=[same])),
            "1": ResponseContent(clusters=ClusterInformations(vec=[drifted])),
        }
    )
    text = render.content(ResponseContent(worker_responses=gathered))
    assert "clusters\nCLUSTER" in text
    assert "main, 0" in text and "HTTP frontends" in text and "backends" in text
    backend_row = [
        line for line in text.splitlines() if line.startswith("app  ") and "app-0" in line
    ]
    assert backend_row and backend_row[0].split()[-1] == "all"
    assert text.endswith("warning: the processes do not all hold the same configuration")
    direct = render.content(ResponseContent(clusters=ClusterInformations(vec=[same])))
    assert "warning" not in direct and "all" in direct
    nothing = WorkerResponses(map={"main": ResponseContent(clusters=ClusterInformations())})
    assert render.content(ResponseContent(worker_responses=nothing)) == "no cluster found"


def test_certificates() -> None:
    ca = trustme.CA()
    pem = ca.issue_cert("example.com").cert_chain_pems[0].bytes().decode()
    fingerprint = fingerprint_hex(pem)
    certs = CertificatesWithFingerprints()
    certs.certs[fingerprint].CopyFrom(
        CertificateAndKey(certificate=pem, key="k", names=["example.com"])
    )
    lines = render.content(ResponseContent(certificates_with_fingerprints=certs)).splitlines()
    assert lines[0].split() == ["FINGERPRINT", "NOT", "BEFORE", "NOT", "AFTER", "NAMES"]
    row = lines[1].split()
    assert row[0] == fingerprint and row[1].endswith("Z") and row[-1] == "example.com"
    empty = ResponseContent(certificates_with_fingerprints=CertificatesWithFingerprints())
    assert render.content(empty) == "no certificate matches"

    by_address = ListOfCertificatesByAddress(
        certificates=[
            CertificatesByAddress(
                address=addr("127.0.0.1:8443"),
                certificate_summaries=[
                    CertificateSummary(domain="example.com", fingerprint="ab12")
                ],
            )
        ]
    )
    per_worker = WorkerResponses(
        map={
            "0": ResponseContent(certificates_by_address=by_address),
            "1": ResponseContent(certificates_by_address=ListOfCertificatesByAddress()),
        }
    )
    text = render.content(ResponseContent(worker_responses=per_worker))
    assert text.splitlines() == [
        "worker 0:",
        "  127.0.0.1:8443",
        "  FINGERPRINT  DOMAIN",
        "  ab12         example.com",
        "",
        "worker 1:",
        "  no certificate",
    ]


def test_small_contents() -> None:
    counts = ResponseContent(request_counts=RequestCounts(map={"status": 3, "add_cluster": 1}))
    assert render.content(counts).splitlines() == [
        "REQUEST      COUNT",
        "add_cluster  1",
        "status       3",
    ]
    unlimited = ResponseContent(max_connections_per_ip_limit=MaxConnectionsPerIpLimit(limit=0))
    assert render.content(unlimited).endswith("unlimited (0)")
    checks = HealthChecksList()
    checks.map["app"].CopyFrom(
        HealthCheckConfig(
            uri="/health",
            interval=10,
            timeout=5,
            healthy_threshold=3,
            unhealthy_threshold=3,
            expected_status=0,
        )
    )
    lines = render.content(ResponseContent(health_checks_list=checks)).splitlines()
    assert lines[1].split() == ["app", "/health", "10s", "5s", "3", "3", "any", "2xx"]
    available = AvailableMetrics(proxy_metrics=["accept"], cluster_metrics=["bytes_in"])
    assert render.content(ResponseContent(available_metrics=available)) == (
        "proxy metrics:\n  accept\ncluster metrics:\n  bytes_in"
    )


def test_metrics() -> None:
    metrics = AggregatedMetrics()
    metrics.main["sozu.gauge\tx"].CopyFrom(FilteredMetrics(gauge=3))
    metrics.proxying["requests"].CopyFrom(FilteredMetrics(count=12))
    metrics.proxying["latency"].CopyFrom(
        FilteredMetrics(
            percentiles=Percentiles(
                samples=2, p_50=1, p_90=2, p_99=3, p_99_9=4, p_99_99=5, p_99_999=6, p_100=7, sum=9
            )
        )
    )
    cluster = ClusterMetrics()
    cluster.cluster["response_time_histogram"].CopyFrom(
        FilteredMetrics(
            histogram=FilteredHistogram(
                sum=10, count=3, buckets=[Bucket(count=1, le=1), Bucket(count=3, le=3)]
            )
        )
    )
    metrics.clusters["app"].CopyFrom(cluster)
    text = render.content(ResponseContent(metrics=metrics))
    assert "main process\nMETRIC" in text
    assert "sozu.gauge.x  gauge  3" in text
    assert "requests  count  12" in text
    assert "latency" in text and "P99.999" in text
    assert "cluster app" in text
    assert "response_time   10   3      1:1 3:2" in text


def test_event_lines() -> None:
    event = Event(
        kind=EventKind.BACKEND_UP,
        cluster_id="app",
        backend_id="app-0",
        address=addr("127.0.0.1:9000"),
    )
    streamed = Response(status=ResponseStatus.PROCESSING, message="0")
    streamed.content.event.CopyFrom(event)
    assert render.event_line(streamed, False) == (
        "0: backend up cluster=app backend=app-0 address=127.0.0.1:9000"
    )
    as_json = json.loads(render.event_line(streamed, True) or "")
    assert as_json["origin"] == "0"
    assert as_json["event"]["kind"] == "BACKEND_UP"
    assert as_json["event"]["cluster_id"] == "app"
    assert render.event_line(Response(status=ResponseStatus.PROCESSING, message="x"), False) is None
